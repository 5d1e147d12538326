//! Build tests from the YAML fixtures in `operator/tests/fixtures/`: every object, the
//! defaults, TLS on and off, ACL rendering, the config hash, and invalid specs.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::*;
use crate::render::parse_clusters;
use crate::validate::{self, InvalidSpec};

const MINIMAL: &str = include_str!("../../tests/fixtures/minimal.yaml");
const FULL: &str = include_str!("../../tests/fixtures/full.yaml");
const WEBSOCKET: &str = include_str!("../../tests/fixtures/websocket.yaml");

fn cluster(text: &str) -> MqttCluster {
    parse_clusters(text).unwrap().remove(0)
}

fn rendered(cluster: &MqttCluster) -> Result<Rendered, InvalidSpec> {
    validate::render(&cluster.name_any(), &namespace(cluster), &cluster.spec)
}

fn desired(cluster: &MqttCluster, secrets_hash: Option<&str>) -> Desired {
    let rendered = rendered(cluster).unwrap();
    build(
        cluster,
        Inputs {
            rendered: &rendered,
            secrets_hash,
            service_monitor_crd: true,
        },
    )
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.template.spec.as_ref().unwrap()
}

fn broker(sts: &StatefulSet) -> &Container {
    &pod(sts).containers[0]
}

fn config_json(desired: &Desired) -> serde_json::Value {
    let text = &desired.config_map.data.as_ref().unwrap()["hmq.config"];
    serde_json::from_str(text).unwrap()
}

#[test]
fn minimal_cluster_gets_the_defaults() {
    let c = cluster(MINIMAL);
    let d = desired(&c, Some("abc"));
    assert_eq!(d.config_map.metadata.name.as_deref(), Some("mqtt-config"));
    assert_eq!(d.config_map.metadata.namespace.as_deref(), Some("iot"));
    let config = config_json(&d);
    assert_eq!(config["port"], 1883);
    assert_eq!(config["httpPort"], 8080);
    assert_eq!(config["router"], "mqtt-headless.iot.svc.cluster.local");
    assert_eq!(config["cluster"]["port"], 1993);
    assert_eq!(config["cluster"]["secretFile"], "/etc/hmq/cluster/secret");
    assert_eq!(config["cluster"]["name"], serde_json::Value::Null);
    assert_eq!(config["tlsPort"], serde_json::Value::Null);
    assert_eq!(config["acl"], false);
    assert_eq!(config["allowAnonymous"], true);

    let headless = d.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let client = d.client_service.spec.as_ref().unwrap();
    assert_eq!(client.type_.as_deref(), Some("ClusterIP"));
    let ports: Vec<_> = client
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [1883]);

    let sts = &d.stateful_set;
    assert_eq!(sts.spec.replicas, Some(3));
    assert_eq!(sts.spec.service_name.as_deref(), Some("mqtt-headless"));
    let container = broker(sts);
    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/hmq-rs/hmq:{}", crate::VERSION).as_str())
    );
    assert_eq!(
        container.command.as_deref().unwrap(),
        ["/hmq", "-c", "/etc/hmq/hmq.config"]
    );
    let env = &container.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "HMQ_NODE_NAME");
    let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "metadata.name");
    let requests = container
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    let probe = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    let live = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    let sleep = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .unwrap();
    assert_eq!(sleep.seconds, 5);
    // preStop 5 + shutdownTimeout 25 + the session handover 5 + 5.
    assert_eq!(pod(sts).termination_grace_period_seconds, Some(40));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let pod_security = pod(sts).security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let spread = pod(sts).topology_spread_constraints.as_ref().unwrap();
    assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
    let mounts: Vec<_> = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["/etc/hmq", "/tmp", "/etc/hmq/cluster", "/var/lib/hmq"]
    );
    let annotations = sts
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations[CONFIG_HASH_ANNOTATION].len(), 16);
    assert_eq!(annotations[SECRETS_HASH_ANNOTATION], "abc");

    let pdb = d
        .pod_disruption_budget
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert!(d.service_monitor.is_none());
}

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[test]
fn tls_listeners_client_certificates_and_overrides() {
    let c = cluster(FULL);
    let d = desired(&c, None);
    let config = config_json(&d);
    assert_eq!(config["tlsPort"], 8883);
    assert_eq!(config["wsPort"], 8084);
    assert_eq!(config["wsTLS"], true);
    assert_eq!(config["tlsInfo"]["certFile"], "/etc/hmq/tls/tls.crt");
    assert_eq!(config["tlsInfo"]["keyFile"], "/etc/hmq/tls/tls.key");
    assert_eq!(config["tlsInfo"]["caFile"], "/etc/hmq/tls/ca.crt");
    assert_eq!(config["tlsInfo"]["verify"], true);
    assert_eq!(config["passwordFile"], "/etc/hmq/auth/passwordFile");
    assert_eq!(config["allowAnonymous"], false);
    assert_eq!(config["httpPort"], 9100);
    assert_eq!(config["maxConnections"], 50000);

    let client = d.client_service.spec.as_ref().unwrap();
    assert_eq!(client.type_.as_deref(), Some("LoadBalancer"));
    let ports: Vec<_> = client
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port, p.node_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("mqtt".into(), 1883, None),
            ("mqtts".into(), 8883, Some(30883)),
            ("wss".into(), 8084, None)
        ]
    );
    let annotations = d.client_service.metadata.annotations.as_ref().unwrap();
    assert!(annotations.contains_key("service.beta.kubernetes.io/aws-load-balancer-type"));

    let sts = &d.stateful_set;
    let mounts: Vec<_> = broker(sts)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/etc/hmq/tls") && mounts.contains(&"/etc/hmq/auth"));
    // shutdownTimeout 40 from the config.
    assert_eq!(pod(sts).termination_grace_period_seconds, Some(55));
    // The spec's spread constraint replaces the default one.
    let spread = pod(sts).topology_spread_constraints.as_ref().unwrap();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    // Overrides keep the fields they do not set.
    let security = pod(sts).security_context.as_ref().unwrap();
    assert_eq!(security.run_as_user, Some(10001));
    assert_eq!(security.run_as_non_root, Some(true));
    let labels = sts
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["team"], "iot");
    assert_eq!(labels["app.kubernetes.io/name"], "hmq");
    assert!(
        !sts.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(SECRETS_HASH_ANNOTATION)
    );

    let pdb = d
        .pod_disruption_budget
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(3)));
    assert_eq!(pdb.max_unavailable, None);
    let monitor = d.service_monitor.as_ref().unwrap();
    assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        monitor.metadata.labels.as_ref().unwrap()["release"],
        "prometheus"
    );
}

#[test]
fn tls_off_mounts_and_configures_no_certificate() {
    let d = desired(&cluster(WEBSOCKET), None);
    let config = config_json(&d);
    assert_eq!(config["tlsInfo"]["certFile"], serde_json::Value::Null);
    assert_eq!(config["wsPort"], 8083);
    assert_eq!(config["wsTLS"], false);
    let volumes = pod(&d.stateful_set).volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.name != "tls" && v.name != "auth"));
    assert!(d.pod_disruption_budget.is_none());
    let client = d.client_service.spec.as_ref().unwrap();
    assert_eq!(client.type_.as_deref(), Some("NodePort"));
    assert_eq!(client.ports.as_ref().unwrap()[1].node_port, Some(30083));
}

#[test]
fn acl_rules_and_raw_text_render_to_acl_conf() {
    let d = desired(&cluster(FULL), None);
    let acl = &d.config_map.data.as_ref().unwrap()["acl.conf"];
    let lines: Vec<_> = acl.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "allow username admin 3 #",
            "allow clientid * 1 devices/%c/up",
            "allow clientid * 2 devices/%c/down,broadcast/#",
            "allow ip 10.0.0.0/8 2 $SYS/#",
            "deny clientid * 3 #",
        ]
    );
    assert_eq!(config_json(&d)["aclConf"], "/etc/hmq/acl.conf");
    let web = desired(&cluster(WEBSOCKET), None);
    let raw = &web.config_map.data.as_ref().unwrap()["acl.conf"];
    assert!(raw.starts_with("# browsers may only read\nallow clientid * 2 public/#\n"));
    let minimal = desired(&cluster(MINIMAL), None);
    assert!(minimal.config_map.data.as_ref().unwrap()["acl.conf"].starts_with('#'));
}

#[test]
fn config_hash_follows_hmq_config_only() {
    let base = cluster(MINIMAL);
    let hash = |c: &MqttCluster| rendered(c).unwrap().config_hash;
    let original = hash(&base);
    assert_eq!(hash(&base), original, "deterministic");

    let mut scaled = base.clone();
    scaled.spec.replicas = 7;
    scaled.spec.pod.labels.insert("x".into(), "y".into());
    assert_eq!(
        hash(&scaled),
        original,
        "replicas and pod metadata are not config"
    );

    let mut acl = base.clone();
    acl.spec.acl = cluster(WEBSOCKET).spec.acl;
    // Turning the ACL on changes hmq.config (acl, aclConf); editing its rules afterwards does not.
    let with_acl = hash(&acl);
    assert_ne!(with_acl, original);
    let mut edited = acl.clone();
    if let Some(raw) = edited.spec.acl.as_mut().and_then(|a| a.raw.as_mut()) {
        raw.push_str("allow clientid admin 3 #\n");
    }
    assert_eq!(
        hash(&edited),
        with_acl,
        "the broker reloads acl.conf itself"
    );

    let mut tuned = base.clone();
    tuned
        .spec
        .config
        .0
        .insert("maxInflight".into(), serde_json::json!(64));
    assert_ne!(hash(&tuned), original);
    let mut default_written = base.clone();
    default_written
        .spec
        .config
        .0
        .insert("maxInflight".into(), serde_json::json!(32));
    assert_eq!(
        hash(&default_written),
        original,
        "writing a default out does not change the rendered file"
    );
}

#[test]
fn persistence_is_on_by_default_a_volume_per_pod_with_the_broker_keys() {
    let c = cluster(MINIMAL);
    let d = desired(&c, None);
    let config = config_json(&d);
    assert_eq!(config["persistence"]["dir"], "/var/lib/hmq");
    // 90% of the default 1Gi volume.
    assert_eq!(config["persistence"]["maxDiskBytes"], (1u64 << 30) / 10 * 9);
    let sts = &d.stateful_set;
    let spec = &sts.spec;
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(
        claim.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_owned()][..])
    );
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "1Gi"
    );
    assert_eq!(claim.storage_class_name, None);
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let data = broker(sts)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "data")
        .unwrap();
    assert_eq!(data.mount_path, "/var/lib/hmq");
    assert_eq!(data.read_only, Some(false));
    // The volume is writable by the broker's group.
    assert_eq!(
        pod(sts).security_context.as_ref().unwrap().fs_group,
        Some(65532)
    );
}

#[test]
fn persistence_follows_the_spec_and_can_be_turned_off() {
    let c = cluster(
        "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {name: m, namespace: n}\n\
         spec:\n  persistence: {size: 20Gi, storageClassName: fast, whenDeleted: Delete, \
         whenScaled: Delete}\n  config: {persistence: {sync: always, maxDiskBytes: 1000000}}\n",
    );
    let d = desired(&c, None);
    let config = config_json(&d);
    assert_eq!(config["persistence"]["sync"], "always");
    assert_eq!(
        config["persistence"]["maxDiskBytes"], 1_000_000,
        "the user's value wins"
    );
    let spec = &d.stateful_set.spec;
    let claim = spec.volume_claim_templates.as_ref().unwrap()[0]
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "20Gi"
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));

    let off = cluster(
        "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {name: m, namespace: n}\n\
         spec: {persistence: {enabled: false}}\n",
    );
    let d = desired(&off, None);
    let config = config_json(&d);
    assert_eq!(
        config["persistence"]["dir"],
        serde_json::Value::Null,
        "state in memory"
    );
    assert_eq!(config["persistence"]["maxDiskBytes"], 0);
    let spec = &d.stateful_set.spec;
    assert!(spec.volume_claim_templates.is_none());
    assert!(spec.persistent_volume_claim_retention_policy.is_none());
    assert!(
        !broker(&d.stateful_set)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "data")
    );

    // The directory is the operator's; a size it cannot read is refused.
    for (spec, field, message) in [
        (
            "{config: {persistence: {dir: /tmp/x}}}",
            "spec.config.persistence.dir",
            "set by the operator",
        ),
        (
            "{persistence: {size: lots}}",
            "spec.persistence.size",
            "is not a size",
        ),
    ] {
        let text = format!(
            "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {{name: m, namespace: n}}\nspec: {spec}\n"
        );
        let err = rendered(&cluster(&text)).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(message), "{err}");
    }
}

#[test]
fn a_changed_claim_template_is_seen_but_the_default_class_is_not_a_change() {
    let with = desired(&cluster(MINIMAL), None).stateful_set;
    let off = cluster(
        "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {name: mqtt, namespace: iot}\n\
         spec: {persistence: {enabled: false}}\n",
    );
    let without = desired(&off, None).stateful_set;
    assert!(claims_differ(&without, &with), "persistence turned on");
    assert!(claims_differ(&with, &without), "persistence turned off");
    assert!(!claims_differ(&with, &with.clone()));
    // The API server fills in the default StorageClass: the same template.
    let mut served = with.clone();
    let claim = &mut served.spec.volume_claim_templates.as_mut().unwrap()[0];
    claim.spec.as_mut().unwrap().storage_class_name = Some("standard".into());
    assert!(!claims_differ(&served, &with));
    // Another size is a change.
    let bigger = cluster(
        "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {name: mqtt, namespace: iot}\n\
         spec: {persistence: {size: 5Gi}}\n",
    );
    assert!(claims_differ(&with, &desired(&bigger, None).stateful_set));
}

#[test]
fn volume_sizes_are_read_as_kubernetes_writes_them() {
    use crate::validate::quantity_bytes;
    assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
    assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
    assert_eq!(quantity_bytes("10G"), Some(10_000_000_000));
    assert_eq!(quantity_bytes("1000"), Some(1000));
    for bad in [
        "",
        "0",
        "1.5Gi",
        "Gi",
        "1gi",
        "-1Gi",
        "99999999999999999999Pi",
    ] {
        assert_eq!(quantity_bytes(bad), None, "{bad}");
    }
}

#[test]
fn invalid_specs_are_rejected_with_the_parsers_message() {
    let cases = [
        (
            include_str!("../../tests/fixtures/invalid/acl-bad-access.yaml"),
            "spec.acl.raw (line 2)",
            "unknown access \"4\"",
        ),
        (
            include_str!("../../tests/fixtures/invalid/acl-bad-rule.yaml"),
            "spec.acl.rules[1]",
            "bad IP address \"10.0.0.300\"",
        ),
        (
            include_str!("../../tests/fixtures/invalid/config-range.yaml"),
            "spec.config.maxPacketSize",
            "must be between 16 and 268435460",
        ),
        (
            include_str!("../../tests/fixtures/invalid/config-managed-key.yaml"),
            "spec.config.tlsPort",
            "set by the operator",
        ),
        (
            include_str!("../../tests/fixtures/invalid/tls-listener-without-tls.yaml"),
            "spec.tls",
            "is required",
        ),
        (
            include_str!("../../tests/fixtures/invalid/anonymous-without-passwords.yaml"),
            "spec.auth.allowAnonymous",
            "requires passwordFile",
        ),
    ];
    for (text, field, message) in cases {
        let err = rendered(&cluster(text)).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(message), "{err}");
    }
}

#[test]
fn unknown_config_keys_are_reported_by_the_broker_parser() {
    let mut c = cluster(MINIMAL);
    c.spec
        .config
        .0
        .insert("maxInflite".into(), serde_json::json!(5));
    let err = rendered(&c).unwrap_err();
    assert_eq!(err.field, "spec.config.maxInflite");
    assert!(err.message.contains("unknown key"), "{err}");
}

#[test]
fn rendered_config_is_what_the_broker_reads() {
    for text in [MINIMAL, FULL, WEBSOCKET] {
        let c = cluster(text);
        let r = rendered(&c).unwrap();
        let parsed = hmq_model::config::Config::from_json(&r.hmq_config, "hmq.config").unwrap();
        assert_eq!(parsed, r.config);
        hmq_model::acl::Acl::parse(&r.acl_conf, "acl.conf").unwrap();
    }
}

#[test]
fn cluster_secret_is_random_hex() {
    let c = cluster(MINIMAL);
    let secret = cluster_secret(&c, &[0xab; 32]);
    assert_eq!(secret.metadata.name.as_deref(), Some("mqtt-cluster"));
    let value = &secret.data.as_ref().unwrap()[paths::CLUSTER_SECRET_KEY];
    assert_eq!(value.0.len(), 64);
    assert!(creates_cluster_secret(&c));
    assert_eq!(cluster_secret_name(&c), "mqtt-cluster");
}

#[test]
fn referenced_secrets_are_the_mounted_ones() {
    assert_eq!(referenced_secrets(&cluster(MINIMAL)), ["mqtt-cluster"]);
    assert_eq!(
        referenced_secrets(&cluster(FULL)),
        ["edge-cluster", "edge-tls", "edge-passwords"]
    );
}
