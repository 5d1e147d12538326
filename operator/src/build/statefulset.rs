//! The StatefulSet of brokers: the container, its volumes, probes, shutdown and security.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::service::client_listeners;
use super::{
    CONFIG_HASH_ANNOTATION, SECRETS_HASH_ANNOTATION, cluster_secret_name, labels, metadata, names,
    paths, selector_labels,
};
use crate::crd::MqttCluster;
use crate::validate::Rendered;

/// The uid and gid the broker runs as (the distroless "nonroot" user).
pub const BROKER_UID: i64 = 65532;
/// Seconds the preStop hook waits, so endpoints drop the pod before the broker drains.
pub const PRE_STOP_SECONDS: i64 = 5;

/// Seconds a leaving broker has, at least, after its drain to hand its persistent sessions to
/// the other pods (the broker's own minimum; the handover usually takes well under a second).
pub const HANDOVER_SECONDS: i64 = 5;

/// Grace period: the preStop sleep, the broker's `shutdownTimeout` (the drain of its clients),
/// the session handover after it, and a margin of 5 seconds.
pub fn termination_grace_seconds(rendered: &Rendered) -> i64 {
    let shutdown = i64::try_from(rendered.config.shutdown_timeout).unwrap_or(3600);
    PRE_STOP_SECONDS + shutdown + HANDOVER_SECONDS + 5
}

/// The default broker image: the one released with this operator.
pub fn default_image() -> String {
    format!("ghcr.io/hmq-rs/hmq:{}", crate::VERSION)
}

/// The StatefulSet. `secrets_hash` (the referenced Secrets' data) and the config hash are pod
/// template annotations, so a change to either rolls the pods.
pub fn stateful_set(
    cluster: &MqttCluster,
    rendered: &Rendered,
    secrets_hash: Option<&str>,
) -> StatefulSet {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let mut pod_labels = spec.pod.labels.clone();
    pod_labels.extend(labels(cluster));
    let mut annotations = spec.pod.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), rendered.config_hash.clone());
    if let Some(hash) = secrets_hash {
        annotations.insert(SECRETS_HASH_ANNOTATION.into(), hash.to_owned());
    }
    let spread = spec.pod.affinity.is_none() && spec.pod.topology_spread_constraints.is_empty();
    let topology_spread_constraints = if spread {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    } else {
        spec.pod.topology_spread_constraints.clone()
    };
    let pod = PodSpec {
        containers: vec![container(cluster)],
        volumes: Some(volumes(cluster)),
        security_context: Some(overlay(
            pod_security_context(),
            spec.pod.security_context.as_ref(),
        )),
        termination_grace_period_seconds: Some(termination_grace_seconds(rendered)),
        image_pull_secrets: non_empty(spec.image_pull_secrets.clone()),
        node_selector: non_empty_map(spec.pod.node_selector.clone()),
        tolerations: non_empty(spec.pod.tolerations.clone()),
        affinity: spec.pod.affinity.clone(),
        topology_spread_constraints: non_empty(topology_spread_constraints),
        priority_class_name: spec.pod.priority_class_name.clone(),
        // The broker needs no Kubernetes API access.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    StatefulSet {
        metadata: metadata(cluster, names::main(&name)),
        spec: StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names::headless(&name)),
            // Brokers do not depend on each other to start: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: spec.persistence.enabled.then(|| vec![data_claim(cluster)]),
            persistent_volume_claim_retention_policy: spec.persistence.enabled.then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.persistence.when_deleted.as_str().into()),
                    when_scaled: Some(spec.persistence.when_scaled.as_str().into()),
                }
            }),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// Whether `existing`'s volume claim templates differ from `desired`'s in what the spec sets
/// (names, access modes, size, class). A StatefulSet's claim templates cannot be changed in
/// place: such a StatefulSet is deleted with its pods orphaned and applied again.
pub fn claims_differ(existing: &StatefulSet, desired: &StatefulSet) -> bool {
    /// Name, access modes, size, class.
    type Claim = (
        Option<String>,
        Option<Vec<String>>,
        Option<String>,
        Option<String>,
    );
    fn key(sts: &StatefulSet) -> Vec<Claim> {
        sts.spec
            .volume_claim_templates
            .as_ref()
            .map(|claims| {
                claims
                    .iter()
                    .map(|c| {
                        let spec = c.spec.as_ref();
                        (
                            c.metadata.name.clone(),
                            spec.and_then(|s| s.access_modes.clone()),
                            spec.and_then(|s| s.resources.as_ref())
                                .and_then(|r| r.requests.as_ref())
                                .and_then(|r| r.get("storage"))
                                .map(|q| q.0.clone()),
                            spec.and_then(|s| s.storage_class_name.clone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    let (mut have, want) = (key(existing), key(desired));
    // A claim without a class gets the default class from the API server: not a change.
    for (h, w) in have.iter_mut().zip(&want) {
        if w.3.is_none() {
            h.3 = None;
        }
    }
    have != want
}

/// The claim template of the durable state's volume (`data-<pod>` once made).
fn data_claim(cluster: &MqttCluster) -> PersistentVolumeClaim {
    let p = &cluster.spec.persistence;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector_labels(cluster)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: p.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(p.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn container(cluster: &MqttCluster) -> Container {
    let spec = &cluster.spec;
    let mut ports: Vec<ContainerPort> = client_listeners(cluster)
        .into_iter()
        .map(|(name, listener)| container_port(name, listener.port))
        .collect();
    ports.push(container_port("cluster", i32::from(paths::CLUSTER_PORT)));
    ports.push(container_port("http", spec.metrics.port));
    let mut mounts = vec![
        mount("config", paths::CONFIG_DIR),
        mount("tmp", "/tmp"),
        mount("cluster-secret", paths::CLUSTER_DIR),
    ];
    if spec.tls.is_some() {
        mounts.push(mount("tls", paths::TLS_DIR));
    }
    if spec.auth.password_secret_name.is_some() {
        mounts.push(mount("auth", paths::AUTH_DIR));
    }
    if spec.persistence.enabled {
        mounts.push(mount("data", paths::DATA_DIR));
    }
    let probe = |path: &str, failure_threshold| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    };
    Container {
        name: "hmq".into(),
        image: Some(spec.image.clone().unwrap_or_else(default_image)),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["/hmq".into(), "-c".into(), paths::CONFIG_FILE.into()]),
        env: Some(vec![EnvVar {
            // The broker's node name in the cluster: the stable pod name.
            name: "HMQ_NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(ports),
        volume_mounts: Some(mounts),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: Some(probe("/healthz", 3)),
        readiness_probe: Some(probe("/readyz", 2)),
        startup_probe: Some(Probe {
            period_seconds: Some(2),
            failure_threshold: Some(30),
            ..probe("/healthz", 30)
        }),
        lifecycle: Some(Lifecycle {
            // The image has no shell: the kubelet's own sleep, not `sh -c sleep`.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(overlay(
            container_security_context(),
            spec.pod.container_security_context.as_ref(),
        )),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(volume != "tmp" && volume != "data"),
        ..VolumeMount::default()
    }
}

/// Secret files readable by the broker's group only.
const SECRET_MODE: i32 = 0o440;

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(SECRET_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn volumes(cluster: &MqttCluster) -> Vec<Volume> {
    let spec = &cluster.spec;
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&cluster.name_any()),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("cluster-secret", &cluster_secret_name(cluster)),
    ];
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume("tls", &tls.secret_name));
    }
    if let Some(secret) = &spec.auth.password_secret_name {
        volumes.push(secret_volume("auth", secret));
    }
    volumes
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("128Mi".into())),
        ])),
        ..ResourceRequirements::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(BROKER_UID),
        run_as_group: Some(BROKER_UID),
        fs_group: Some(BROKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// `base` with the fields set in `overrides` replaced (recursively for nested objects).
fn overlay<T: Serialize + DeserializeOwned + Clone>(base: T, overrides: Option<&T>) -> T {
    let Some(overrides) = overrides else {
        return base;
    };
    let (Ok(mut merged), Ok(top)) = (serde_json::to_value(&base), serde_json::to_value(overrides))
    else {
        return base;
    };
    merge(&mut merged, top);
    serde_json::from_value(merged).unwrap_or(base)
}

fn merge(base: &mut serde_json::Value, top: serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(base), serde_json::Value::Object(top)) => {
            for (key, value) in top {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, top) => *base = top,
    }
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}
