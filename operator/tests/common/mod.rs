//! The fake API server of the operator's tests: a tower-test mock service behind a real
//! `kube::Client` (or a plain HTTP server on 127.0.0.1 for the binary), answering GET, LIST,
//! WATCH, POST, server-side apply and DELETE from a map of objects by path, and recording every
//! request with the client that made it. `coordination.k8s.io` Leases get the semantics
//! kube-lease-manager relies on: field ownership per field manager, so an apply that changes a
//! field another manager set fails with 409 Conflict; strategic merge patches that take
//! ownership (and remove fields set to null); and a resourceVersion bumped on every write, with
//! 409 Conflict for a write that carries a stale one.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
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
    /// Which client made it (`fake_api` is 0, `connect(.., id)` is `id`).
    pub client: usize,
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
    /// Clients cut off from the API server: their requests fail with 503.
    pub cut: BTreeSet<usize>,
    /// Owner (field manager) of each field of each Lease's spec, by path.
    pub owners: BTreeMap<String, BTreeMap<String, String>>,
    /// The last resourceVersion given out.
    pub revision: u64,
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

    /// The holder of a Lease, if it has one.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Option<String> {
        self.object(&lease_path(namespace, name))["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }

    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }
}

/// Where a Lease is.
pub fn lease_path(namespace: &str, name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
}

/// One request, as the fake sees it.
struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    content_type: &'a str,
    body: Value,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn answer(fake: &mut Fake, request: Incoming<'_>) -> (u16, Value) {
    if request.path == "/version" {
        return (
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                   "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                   "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        );
    }
    if request.path.contains("/coordination.k8s.io/") {
        return lease(fake, request);
    }
    let Incoming {
        method, path, body, ..
    } = request;
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

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Leases: GET, POST, PATCH (server-side apply or strategic merge) and DELETE, with field
/// ownership per field manager (a simplification of the API server's managedFields: owners are
/// tracked by manager name only, for the fields of `spec`).
fn lease(fake: &mut Fake, request: Incoming<'_>) -> (u16, Value) {
    let Incoming {
        method,
        path,
        query,
        content_type,
        body,
    } = request;
    match method {
        "GET" => match fake.objects.get(path) {
            Some(object) => (200, object.clone()),
            None => (404, status(404, "NotFound")),
        },
        "POST" => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = format!("{path}/{name}");
            if fake.objects.contains_key(&key) {
                return (409, status(409, "AlreadyExists"));
            }
            let mut object = body;
            let namespace = path.split('/').nth(5).unwrap_or_default();
            object["metadata"]["namespace"] = json!(namespace);
            object["metadata"]["resourceVersion"] = json!(fake.next_revision());
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            fake.objects.insert(key, object.clone());
            (201, object)
        }
        "PATCH" => {
            let Some(mut object) = fake.objects.get(path).cloned() else {
                return (404, status(404, "NotFound"));
            };
            if let Some(expected) = body["metadata"]["resourceVersion"].as_str()
                && object["metadata"]["resourceVersion"].as_str() != Some(expected)
            {
                return (409, status(409, "Conflict"));
            }
            let manager = query_param(query, "fieldManager")
                .unwrap_or_default()
                .to_owned();
            let force = query_param(query, "force") == Some("true");
            let apply = content_type.starts_with("application/apply-patch");
            let fields = body["spec"].as_object().cloned().unwrap_or_default();
            let owners = fake.owners.entry(path.to_owned()).or_default();
            if apply && !force {
                let conflicts: Vec<String> = fields
                    .iter()
                    .filter(|(field, value)| {
                        let current = &object["spec"][field.as_str()];
                        !current.is_null()
                            && current != *value
                            && owners.get(*field).is_some_and(|owner| *owner != manager)
                    })
                    .map(|(field, _)| format!(".spec.{field}"))
                    .collect();
                if !conflicts.is_empty() {
                    let mut answer = status(409, "Conflict");
                    answer["message"] = json!(format!(
                        "Apply failed with {} conflicts: {}",
                        conflicts.len(),
                        conflicts.join(", ")
                    ));
                    return (409, answer);
                }
            }
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            let spec = object["spec"].as_object_mut().unwrap();
            for (field, value) in fields {
                if value.is_null() {
                    spec.remove(&field);
                    owners.remove(&field);
                } else {
                    spec.insert(field.clone(), value);
                    owners.insert(field, manager.clone());
                }
            }
            object["metadata"]["resourceVersion"] = json!(fake.next_revision());
            fake.objects.insert(path.to_owned(), object.clone());
            (200, object)
        }
        "DELETE" => {
            fake.owners.remove(path);
            match fake.objects.remove(path) {
                Some(object) => (200, object),
                None => (404, status(404, "NotFound")),
            }
        }
        _ => (405, status(405, "MethodNotAllowed")),
    }
}

/// What the fake answers `client`'s request: `None` for a watch (answered later, empty).
fn handle(
    state: &Mutex<Fake>,
    client: usize,
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    bytes: &[u8],
) -> Option<(u16, Value)> {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let mut fake = state.lock().unwrap();
    if fake.cut.contains(&client) {
        return Some((503, status(503, "ServiceUnavailable")));
    }
    if query.contains("watch=true") {
        return None;
    }
    fake.calls.push(Call {
        client,
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        body: body.clone(),
    });
    let request = Incoming {
        method,
        path,
        query,
        content_type,
        body,
    };
    Some(answer(&mut fake, request))
}

/// A watch that sees no change ends (empty) after a while, so the watcher comes back at a slow
/// pace instead of spinning.
const WATCH_PAUSE: Duration = Duration::from_millis(300);

/// A client whose requests the fake answers, and the fake.
pub fn fake_api() -> (Client, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake::default()));
    (connect(&fake, 0), fake)
}

/// Another client of the same fake, whose calls are recorded as `id`'s.
pub fn connect(fake: &Arc<Mutex<Fake>>, id: usize) -> Client {
    let (service, mut requests) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let state = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = requests.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let content_type = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let answer = handle(&state, id, &method, &path, &query, &content_type, &bytes);
            let Some((code, reply)) = answer else {
                tokio::spawn(async move {
                    tokio::time::sleep(WATCH_PAUSE).await;
                    let response = Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(Vec::new()))
                        .unwrap();
                    send.send_response(response);
                });
                continue;
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    Client::new(service, "default")
}

/// Serves the fake over plain HTTP on 127.0.0.1 (for the binary, through a kubeconfig); its
/// calls are recorded as `id`'s.
pub async fn serve_http(fake: &Arc<Mutex<Fake>>, id: usize) -> std::net::SocketAddr {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = fake.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let method = request.method().to_string();
                            let path = request.uri().path().to_owned();
                            let query = request.uri().query().unwrap_or_default().to_owned();
                            let content_type = request
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let bytes = request.into_body().collect().await?.to_bytes();
                            let answer =
                                handle(&state, id, &method, &path, &query, &content_type, &bytes);
                            let response = match answer {
                                None => {
                                    tokio::time::sleep(WATCH_PAUSE).await;
                                    Response::builder()
                                        .status(StatusCode::OK)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap()
                                }
                                Some((code, reply)) => Response::builder()
                                    .status(StatusCode::from_u16(code).unwrap())
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(
                                        serde_json::to_vec(&reply).unwrap(),
                                    )))
                                    .unwrap(),
                            };
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
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
