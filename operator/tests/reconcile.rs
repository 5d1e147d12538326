//! Reconcile scenarios against a fake API server (a tower-test mock service behind a real
//! `kube::Client`, the kube-rs pattern): create, config update, invalid spec, scale, Secret
//! rotation, a missing Secret, pruning, and a transient error with backoff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CLUSTERS, Fake, cluster, fake_api};
use hmq_operator::MqttCluster;
use hmq_operator::metrics::Metrics;
use hmq_operator::reconcile::{Context, error_policy, reconcile};
use kube::Client;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(client, Metrics::new(), Some("test".into())))
}

/// The cluster with the status the fake holds, as the next watch event would bring it.
fn refreshed(cluster: &MqttCluster, fake: &Fake) -> MqttCluster {
    let path = format!(
        "{CLUSTERS}/{}/mqttclusters/{}",
        cluster.metadata.namespace.as_deref().unwrap(),
        cluster.metadata.name.as_deref().unwrap()
    );
    let mut next = cluster.clone();
    next.status = serde_json::from_value(fake.object(&path)["status"].clone()).ok();
    next
}

fn cluster_status(fake: &Fake, namespace: &str, name: &str) -> Value {
    fake.object(&format!("{CLUSTERS}/{namespace}/mqttclusters/{name}"))["status"].clone()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

fn sts_annotation(fake: &Fake, path: &str, key: &str) -> String {
    fake.object(path)["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const STS: &str = "/apis/apps/v1/namespaces/iot/statefulsets/mqtt";

#[tokio::test]
async fn create_applies_every_object_with_owner_references_and_writes_status() {
    let (client, fake) = fake_api();
    let ctx = context(client);
    let c = cluster("minimal.yaml");
    let action = reconcile(Arc::new(c.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    let next = {
        let f = fake.lock().unwrap();
        // The cluster Secret is created once, with 32 random bytes as hex.
        let created = f.calls("POST", "/api/v1/namespaces/iot/secrets");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].body["metadata"]["name"], "mqtt-cluster");
        let applied: Vec<String> = f
            .calls
            .iter()
            .filter(|c| c.method == "PATCH" && !c.path.ends_with("/status"))
            .map(|c| {
                assert!(c.query.contains("fieldManager=hmq-operator"), "{}", c.query);
                assert!(c.query.contains("force=true"), "{}", c.query);
                let owner = &c.body["metadata"]["ownerReferences"][0];
                assert_eq!(owner["uid"], "uid-1", "{}", c.path);
                assert_eq!(owner["controller"], true);
                assert_eq!(owner["kind"], "MqttCluster");
                c.path.clone()
            })
            .collect();
        assert_eq!(
            applied,
            [
                "/api/v1/namespaces/iot/configmaps/mqtt-config",
                "/api/v1/namespaces/iot/services/mqtt-headless",
                "/api/v1/namespaces/iot/services/mqtt",
                STS,
                "/apis/policy/v1/namespaces/iot/poddisruptionbudgets/mqtt",
            ]
        );
        let status = cluster_status(&f, "iot", "mqtt");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["readyReplicas"], 3);
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["endpoint"], "mqtt.iot.svc:1883");
        assert_eq!(
            status["configHash"].as_str().unwrap(),
            sts_annotation(&f, STS, "hmq.io/config-hash")
        );
        for (type_, expected) in [
            ("Ready", "True"),
            ("Progressing", "False"),
            ("ConfigValid", "True"),
            ("Degraded", "False"),
        ] {
            assert_eq!(condition(&status, type_)["status"], expected, "{type_}");
        }
        assert!(!sts_annotation(&f, STS, "hmq.io/secrets-hash").is_empty());

        // A second pass with nothing changed: no new Secret, no status write.
        refreshed(&c, &f)
    };
    let before = fake.lock().unwrap().calls.len();
    reconcile(Arc::new(next), ctx).await.unwrap();
    let f = fake.lock().unwrap();
    let new_calls = &f.calls[before..];
    assert!(
        new_calls.iter().all(|c| c.method != "POST"),
        "{new_calls:?}"
    );
    assert!(new_calls.iter().all(|c| !c.path.ends_with("/status")));
}

#[tokio::test]
async fn config_change_rolls_the_pods_and_scaling_does_not() {
    let (client, fake) = fake_api();
    let ctx = context(client);
    let c = cluster("minimal.yaml");
    reconcile(Arc::new(c.clone()), ctx.clone()).await.unwrap();
    let first = sts_annotation(&fake.lock().unwrap(), STS, "hmq.io/config-hash");

    let mut scaled = refreshed(&c, &fake.lock().unwrap());
    scaled.spec.replicas = 5;
    scaled.metadata.generation = Some(2);
    reconcile(Arc::new(scaled.clone()), ctx.clone())
        .await
        .unwrap();
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.object(STS)["spec"]["replicas"], 5);
        assert_eq!(sts_annotation(&f, STS, "hmq.io/config-hash"), first);
        assert_eq!(cluster_status(&f, "iot", "mqtt")["replicas"], 5);
    }

    let mut tuned = refreshed(&scaled, &fake.lock().unwrap());
    tuned.spec.config.0.insert("maxInflight".into(), json!(100));
    tuned.metadata.generation = Some(3);
    reconcile(Arc::new(tuned), ctx).await.unwrap();
    let f = fake.lock().unwrap();
    let second = sts_annotation(&f, STS, "hmq.io/config-hash");
    assert_ne!(second, first);
    let config = f.object("/api/v1/namespaces/iot/configmaps/mqtt-config")["data"]["hmq.config"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(config.contains("\"maxInflight\": 100"));
    assert_eq!(cluster_status(&f, "iot", "mqtt")["configHash"], second);
    assert_eq!(cluster_status(&f, "iot", "mqtt")["observedGeneration"], 3);
    let events = f.calls("POST", "/events");
    assert!(
        events.iter().any(|e| e.body["reason"] == "ConfigChanged"),
        "{events:?}"
    );
}

#[tokio::test]
async fn invalid_spec_changes_nothing_and_reports_the_parser_message() {
    let (client, fake) = fake_api();
    let ctx = context(client);
    let good = cluster("minimal.yaml");
    reconcile(Arc::new(good.clone()), ctx.clone())
        .await
        .unwrap();
    let applied_before = fake
        .lock()
        .unwrap()
        .calls("PATCH", "/namespaces/iot/")
        .len();

    let mut bad = refreshed(&good, &fake.lock().unwrap());
    bad.spec.acl = cluster("invalid/acl-bad-access.yaml").spec.acl;
    bad.metadata.generation = Some(2);
    let action = reconcile(Arc::new(bad.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let again = {
        let f = fake.lock().unwrap();
        let patches = f.calls("PATCH", "/namespaces/iot/");
        // Only the status was written.
        assert_eq!(patches.len(), applied_before + 1);
        assert!(
            patches
                .last()
                .unwrap()
                .path
                .ends_with("/mqttclusters/mqtt/status")
        );
        let status = cluster_status(&f, "iot", "mqtt");
        assert_eq!(status["phase"], "Invalid");
        let valid = condition(&status, "ConfigValid");
        assert_eq!(valid["status"], "False");
        assert_eq!(valid["reason"], "InvalidSpec");
        assert!(
            valid["message"]
                .as_str()
                .unwrap()
                .contains("spec.acl.raw (line 2): unknown access \"4\"")
        );
        // What runs is still reported as running.
        assert_eq!(condition(&status, "Ready")["status"], "True");
        let events = f.calls("POST", "/apis/events.k8s.io/v1/namespaces/iot/events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].body["reason"], "InvalidSpec");
        assert_eq!(events[0].body["type"], "Warning");

        // The same invalid spec again: no second Event.
        refreshed(&bad, &f)
    };
    reconcile(Arc::new(again), ctx).await.unwrap();
    assert_eq!(fake.lock().unwrap().calls("POST", "/events").len(), 1);
}

const ALICE: &str = "alice:$7$210000$5qUZI1GHiChrkyVl$VDNs6IhPPh9FUjEeB3JPuQfThI7Q9TIXJmoqPcawVTLiZKx3Uf/VkF5zX63ZqEh2HRHAsx+GGBhu0JGBCHtAKA==\n";

fn secret(fake: &Arc<Mutex<Fake>>, name: &str, data: &[(&str, &str)]) {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    fake.lock().unwrap().objects.insert(
        format!("/api/v1/namespaces/iot/secrets/{name}"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "iot"},
               "data": data}),
    );
}

const EDGE_STS: &str = "/apis/apps/v1/namespaces/iot/statefulsets/edge";

#[tokio::test]
async fn renewed_certificate_and_new_password_file_roll_nothing_and_a_missing_secret_waits() {
    let (client, fake) = fake_api();
    let ctx = context(client);
    let c = cluster("full.yaml");
    secret(&fake, "edge-passwords", &[("passwordFile", ALICE)]);

    // The TLS Secret does not exist yet: nothing is applied, the status says why.
    let action = reconcile(Arc::new(c.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    {
        let f = fake.lock().unwrap();
        assert!(f.calls("PATCH", "/statefulsets/").is_empty());
        let progressing = condition(&cluster_status(&f, "iot", "edge"), "Progressing");
        assert_eq!(progressing["reason"], "SecretNotFound");
        assert!(
            f.calls("POST", "/events")
                .iter()
                .any(|e| e.body["reason"] == "SecretNotFound")
        );
    }

    let pem = [
        ("tls.crt", "cert-1"),
        ("tls.key", "key-1"),
        ("ca.crt", "ca-1"),
    ];
    secret(&fake, "edge-tls", &pem);
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), ctx.clone()).await.unwrap();
    let (config_hash, secrets_hash) = {
        let f = fake.lock().unwrap();
        (
            sts_annotation(&f, EDGE_STS, "hmq.io/config-hash"),
            sts_annotation(&f, EDGE_STS, "hmq.io/secrets-hash"),
        )
    };
    assert!(!secrets_hash.is_empty());

    // cert-manager renews the certificate: the broker reloads it (client listeners and the
    // cluster links), nothing rolls.
    secret(
        &fake,
        "edge-tls",
        &[
            ("tls.crt", "cert-2"),
            ("tls.key", "key-2"),
            ("ca.crt", "ca-1"),
        ],
    );
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), ctx.clone()).await.unwrap();
    {
        let f = fake.lock().unwrap();
        assert_eq!(
            sts_annotation(&f, EDGE_STS, "hmq.io/secrets-hash"),
            secrets_hash
        );
        assert_eq!(
            sts_annotation(&f, EDGE_STS, "hmq.io/config-hash"),
            config_hash
        );
    }

    // A new password file: the broker reloads it, nothing rolls.
    let rolled = sts_annotation(&fake.lock().unwrap(), EDGE_STS, "hmq.io/secrets-hash");
    let two_users = format!("{ALICE}{}", ALICE.replacen("alice", "bob", 1));
    secret(&fake, "edge-passwords", &[("passwordFile", &two_users)]);
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), ctx.clone()).await.unwrap();
    assert_eq!(
        sts_annotation(&fake.lock().unwrap(), EDGE_STS, "hmq.io/secrets-hash"),
        rolled
    );

    // A password file the broker cannot read is an invalid spec, reported with its message.
    secret(
        &fake,
        "edge-passwords",
        &[("passwordFile", "alice:plaintext\n")],
    );
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), ctx).await.unwrap();
    let f = fake.lock().unwrap();
    let valid = condition(&cluster_status(&f, "iot", "edge"), "ConfigValid");
    assert_eq!(valid["status"], "False");
    assert!(
        valid["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.auth.passwordSecretName: Secret edge-passwords: passwordFile:1:"),
        "{valid}"
    );
}

#[tokio::test]
async fn objects_the_spec_no_longer_asks_for_are_deleted() {
    let (client, fake) = fake_api();
    fake.lock().unwrap().service_monitor_crd = true;
    let ctx = context(client);
    let mut c = cluster("full.yaml");
    secret(&fake, "edge-passwords", &[("passwordFile", ALICE)]);
    secret(
        &fake,
        "edge-tls",
        &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "a")],
    );
    reconcile(Arc::new(c.clone()), ctx.clone()).await.unwrap();
    let monitor = "/apis/monitoring.coreos.com/v1/namespaces/iot/servicemonitors/edge";
    let pdb = "/apis/policy/v1/namespaces/iot/poddisruptionbudgets/edge";
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.object(monitor)["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(f.object(pdb)["spec"]["minAvailable"], 3);
        // A listener's port is in the client Service.
        let ports = &f.object("/api/v1/namespaces/iot/services/edge")["spec"]["ports"];
        assert_eq!(ports.as_array().unwrap().len(), 3);
    }

    c = refreshed(&c, &fake.lock().unwrap());
    c.spec.metrics.service_monitor = false;
    c.spec.pod_disruption_budget.enabled = false;
    c.spec.listeners.mqtts = None;
    reconcile(Arc::new(c), ctx).await.unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(f.calls("DELETE", "/servicemonitors/edge").len(), 1);
    assert_eq!(f.calls("DELETE", "/poddisruptionbudgets/edge").len(), 1);
    assert_eq!(f.object(monitor), Value::Null);
    // The removed listener is gone from the applied Service (server-side apply drops the fields
    // this field manager no longer sets).
    let ports = &f.object("/api/v1/namespaces/iot/services/edge")["spec"]["ports"];
    let names: Vec<_> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("mqtt"), json!("wss")]);
}

#[tokio::test]
async fn transient_errors_retry_with_backoff_and_mark_the_cluster_degraded() {
    let (client, fake) = fake_api();
    fake.lock().unwrap().fail = Some("/statefulsets/".into());
    let ctx = context(client);
    let c = Arc::new(cluster("minimal.yaml"));
    let err = reconcile(c.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(
        error_policy(c.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let err = reconcile(c.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(
        error_policy(c.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    {
        let f = fake.lock().unwrap();
        let degraded = condition(&cluster_status(&f, "iot", "mqtt"), "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "ApplyFailed");
    }
    // Recovery resets the backoff.
    fake.lock().unwrap().fail = None;
    reconcile(c.clone(), ctx.clone()).await.unwrap();
    let err = {
        fake.lock().unwrap().fail = Some("/statefulsets/".into());
        reconcile(c.clone(), ctx.clone()).await.unwrap_err()
    };
    assert_eq!(
        error_policy(c, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("hmq_operator_reconcile_errors_total{reason=\"api\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hmq_operator_reconciles_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_monitor_without_its_crd_is_reported_in_the_status() {
    let (client, fake) = fake_api();
    let c = cluster("full.yaml");
    assert!(c.spec.metrics.service_monitor);
    secret(&fake, "edge-passwords", &[("passwordFile", ALICE)]);
    secret(
        &fake,
        "edge-tls",
        &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "a")],
    );
    let monitor = "/apis/monitoring.coreos.com/v1/namespaces/iot/servicemonitors/edge";

    // No CRD: the brokers run, Degraded says why there is no ServiceMonitor, and an Event too.
    reconcile(Arc::new(c.clone()), context(client.clone()))
        .await
        .unwrap();
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.object(monitor), Value::Null);
        let status = cluster_status(&f, "iot", "edge");
        assert_eq!(status["phase"], "Running", "{status}");
        assert_eq!(condition(&status, "Ready")["status"], "True");
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded["status"], "True", "{status}");
        assert_eq!(degraded["reason"], "ServiceMonitorUnavailable");
        assert!(
            degraded["message"]
                .as_str()
                .unwrap()
                .contains("monitoring.coreos.com/v1"),
            "{degraded}"
        );
        let events = f.calls("POST", "/events");
        assert!(
            events
                .iter()
                .any(|e| e.body["reason"] == "ServiceMonitorUnavailable"
                    && e.body["type"] == "Warning"),
            "{events:?}"
        );
    }

    // Brokers that are not ready are the bigger problem: Degraded reports them first.
    fake.lock().unwrap().ready = Some(1);
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), context(client.clone()))
        .await
        .unwrap();
    {
        let f = fake.lock().unwrap();
        let degraded = condition(&cluster_status(&f, "iot", "edge"), "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "BrokersNotReady", "{degraded}");
    }

    // The CRD installed (seen by a new discovery): the ServiceMonitor exists, Degraded clears.
    {
        let mut f = fake.lock().unwrap();
        f.ready = None;
        f.service_monitor_crd = true;
    }
    let next = refreshed(&c, &fake.lock().unwrap());
    reconcile(Arc::new(next), context(client)).await.unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(f.object(monitor)["kind"], "ServiceMonitor");
    let degraded = condition(&cluster_status(&f, "iot", "edge"), "Degraded");
    assert_eq!(degraded["status"], "False", "{degraded}");
    assert_eq!(degraded["reason"], "AsExpected");
}
