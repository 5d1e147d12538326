//! The controller loop against the fake API server: it lists the MqttClusters and the objects
//! it watches, reconciles what it finds, and stops when told to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{CLUSTERS, cluster, fake_api};
use hmq_operator::controller::run_controller;
use hmq_operator::metrics::Metrics;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn controller_reconciles_listed_clusters_and_stops_on_request() {
    let (client, fake) = fake_api();
    let c = cluster("minimal.yaml");
    fake.lock().unwrap().objects.insert(
        format!("{CLUSTERS}/iot/mqttclusters/mqtt"),
        serde_json::to_value(&c).unwrap(),
    );
    let stop = CancellationToken::new();
    let metrics = Metrics::new();
    let controller = tokio::spawn(run_controller(
        client,
        metrics.clone(),
        "test".into(),
        stop.clone(),
    ));

    let sts = "/apis/apps/v1/namespaces/iot/statefulsets/mqtt";
    let mut applied = false;
    for _ in 0..100 {
        if fake.lock().unwrap().objects.contains_key(sts) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        applied,
        "the controller did not reconcile the listed cluster"
    );
    {
        let f = fake.lock().unwrap();
        // Everything it watches was listed: the clusters, owned objects and Secrets.
        for collection in [
            "/apis/hmq.io/v1alpha1/mqttclusters",
            "/apis/apps/v1/statefulsets",
            "/api/v1/configmaps",
            "/api/v1/services",
            "/apis/policy/v1/poddisruptionbudgets",
            "/api/v1/secrets",
        ] {
            assert!(
                f.calls
                    .iter()
                    .any(|c| c.method == "GET" && c.path == collection),
                "{collection} not listed"
            );
        }
        let owned = f
            .calls
            .iter()
            .find(|c| c.path == "/apis/apps/v1/statefulsets")
            .unwrap();
        assert!(
            owned.query.contains("managed-by%3Dhmq-operator")
                || owned.query.contains("managed-by=hmq-operator"),
            "{}",
            owned.query
        );
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller did not stop")
        .unwrap();
    assert!(
        metrics
            .render()
            .contains("hmq_operator_reconciles_total{result=\"ok\"}")
    );
}
