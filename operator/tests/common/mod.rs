//! The fake API server of the operator's tests: a tower-test mock service behind a real
//! `kube::Client`, answering GET, LIST, WATCH, POST, server-side apply and DELETE from a map of
//! objects by path, and recording every request.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmq_operator::MqttCluster;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// The fake API server's state.
#[derive(Debug, Default)]
pub struct Fake {
    pub objects: BTreeMap<String, Value>,
    pub calls: Vec<Call>,
    /// readyReplicas the fake StatefulSet controller reports (default: all).
    pub ready: Option<i64>,
    pub service_monitor_crd: bool,
    /// Requests whose path contains this fail with 500.
    pub fail: Option<String>,
}

impl Fake {
    pub fn calls(&self, method: &str, fragment: &str) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| c.method == method && c.path.contains(fragment))
            .cloned()
            .collect()
    }

    pub fn object(&self, path: &str) -> Value {
        self.objects.get(path).cloned().unwrap_or(Value::Null)
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn answer(fake: &mut Fake, method: &str, path: &str, body: Value) -> (u16, Value) {
    if fake
        .fail
        .as_ref()
        .is_some_and(|f| path.contains(f.as_str()))
    {
        return (500, status(500, "InternalError"));
    }
    if path == "/apis/monitoring.coreos.com/v1" {
        return if fake.service_monitor_crd {
            (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1",
                       "groupVersion": "monitoring.coreos.com/v1",
                       "resources": [{"name": "servicemonitors", "singularName": "servicemonitor",
                                      "namespaced": true, "kind": "ServiceMonitor", "verbs": ["get"]}]}),
            )
        } else {
            (404, status(404, "NotFound"))
        };
    }
    match method {
        "GET" if !fake.objects.contains_key(path) && is_collection(path) => {
            let plural = path.rsplit('/').next().unwrap_or_default();
            let items: Vec<Value> = fake
                .objects
                .iter()
                .filter(|(key, _)| key.contains(&format!("/{plural}/")))
                .map(|(_, object)| object.clone())
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "List",
                         "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        "GET" => match fake.objects.get(path) {
            Some(object) => (200, object.clone()),
            None => (404, status(404, "NotFound")),
        },
        "POST" => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or("event")
                .to_owned();
            let key = format!("{path}/{name}");
            if fake.objects.contains_key(&key) {
                return (409, status(409, "AlreadyExists"));
            }
            fake.objects.insert(key, body.clone());
            (201, body)
        }
        "PATCH" => {
            if let Some(main) = path.strip_suffix("/status") {
                let parts: Vec<&str> = main.rsplit('/').collect();
                let (name, namespace) = (parts[0], parts[2]);
                let mut object = fake.objects.get(main).cloned().unwrap_or(json!({
                    "apiVersion": "hmq.io/v1alpha1", "kind": "MqttCluster",
                    "metadata": {"name": name, "namespace": namespace}, "spec": {}
                }));
                object["status"] = body["status"].clone();
                fake.objects.insert(main.to_owned(), object.clone());
                return (200, object);
            }
            let mut object = body;
            if path.contains("/statefulsets/") {
                let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(1);
                object["status"] = json!({
                    "replicas": replicas,
                    "readyReplicas": fake.ready.unwrap_or(replicas),
                    "updatedReplicas": replicas,
                    "observedGeneration": 1,
                    "currentRevision": "r1",
                    "updateRevision": "r1",
                });
            }
            fake.objects.insert(path.to_owned(), object.clone());
            (200, object)
        }
        "DELETE" => match fake.objects.remove(path) {
            Some(object) => (200, object),
            None => (404, status(404, "NotFound")),
        },
        _ => (405, status(405, "MethodNotAllowed")),
    }
}

/// A client whose requests the fake answers, and the fake.
pub fn fake_api() -> (Client, Arc<Mutex<Fake>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = Arc::new(Mutex::new(Fake::default()));
    let state = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let query_for_log = query.clone();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if query.contains("watch=true") {
                // A watch that sees no change: answer (end of stream) after a while, so the
                // watcher comes back at a slow pace instead of spinning.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let response = Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(Vec::new()))
                        .unwrap();
                    send.send_response(response);
                });
                continue;
            }
            let (code, reply) = {
                let mut fake = state.lock().unwrap();
                fake.calls.push(Call {
                    method: method.clone(),
                    path: path.clone(),
                    query: query_for_log,
                    body: body.clone(),
                });
                answer(&mut fake, &method, &path, body)
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), fake)
}

/// Where MqttClusters are, by namespace.
pub const CLUSTERS: &str = "/apis/hmq.io/v1alpha1/namespaces";

/// A fixture from `tests/fixtures/`, with a uid and a generation as the API server gives.
pub fn cluster(fixture: &str) -> MqttCluster {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut cluster = hmq_operator::render::parse_clusters(&text)
        .unwrap()
        .remove(0);
    cluster.metadata.uid = Some("uid-1".into());
    cluster.metadata.generation = Some(1);
    cluster
}

/// Whether `path` names a collection (`.../<plural>`) rather than one object.
fn is_collection(path: &str) -> bool {
    const PLURALS: &[&str] = &[
        "mqttclusters",
        "statefulsets",
        "configmaps",
        "services",
        "poddisruptionbudgets",
        "secrets",
        "servicemonitors",
    ];
    PLURALS
        .iter()
        .any(|plural| path.ends_with(&format!("/{plural}")))
}
