//! The operator process, in-process on the fake API server: `/healthz`, `/readyz` and
//! `/metrics` over HTTP, leader election between two replicas (only the leader reconciles), and
//! shutdown when the stop token is cancelled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{CLUSTERS, cluster, connect, fake_api};
use hmq_operator::controller::{RunError, RunOptions, run_with};
use hmq_operator::leader::{LEASE_NAME, MIN_LEASE_SECONDS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "hmq-system";

/// `GET path` on `addr`: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .map_err(|_| std::io::Error::other("HTTP request timed out"))??;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `bound`.
pub async fn eventually<T, F, Fut>(bound: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Replica {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

async fn start(fake: &std::sync::Arc<std::sync::Mutex<common::Fake>>, id: usize) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = RunOptions {
        http_addr: addr,
        lease_namespace: Some(NS.into()),
        lease_duration: MIN_LEASE_SECONDS,
        identity: Some(format!("replica-{id}")),
        ..RunOptions::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_with(options, connect(fake, id), listener, stop.clone()));
    Replica { addr, stop, task }
}

async fn body_of(addr: SocketAddr, path: &str, code: u16, contains: &str) -> Option<String> {
    match get(addr, path).await {
        Ok((c, body)) if c == code && body.contains(contains) => Some(body),
        _ => None,
    }
}

#[tokio::test]
async fn probes_metrics_leader_hand_over_and_shutdown() {
    let (_, fake) = fake_api();
    fake.lock().unwrap().objects.insert(
        format!("{CLUSTERS}/iot/mqttclusters/mqtt"),
        serde_json::to_value(cluster("minimal.yaml")).unwrap(),
    );
    let bound = Duration::from_secs(10);

    // Replica 1 leads and reconciles the cluster.
    let one = start(&fake, 1).await;
    assert_eq!(get(one.addr, "/healthz").await.unwrap().0, 200);
    eventually(bound, "replica 1 ready as the leader", || {
        body_of(one.addr, "/readyz", 200, "ready (leader)")
    })
    .await;
    let metrics = eventually(bound, "a reconcile counted in /metrics", || {
        body_of(
            one.addr,
            "/metrics",
            200,
            "hmq_operator_reconciles_total{result=\"ok\"}",
        )
    })
    .await;
    assert!(
        metrics.contains("hmq_operator_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        fake.lock()
            .unwrap()
            .objects
            .contains_key("/apis/apps/v1/namespaces/iot/statefulsets/mqtt")
    );
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME).as_deref(),
        Some("replica-1")
    );

    // Replica 2 is a ready standby that does not reconcile (nor even watch).
    let two = start(&fake, 2).await;
    eventually(bound, "replica 2 ready as a standby", || {
        body_of(two.addr, "/readyz", 200, "ready (standby)")
    })
    .await;
    assert_eq!(get(two.addr, "/healthz").await.unwrap().0, 200);
    tokio::time::sleep(Duration::from_secs(2 * MIN_LEASE_SECONDS)).await;
    let (_, standby_metrics) = get(two.addr, "/metrics").await.unwrap();
    assert!(
        !standby_metrics.contains("hmq_operator_reconciles_total{"),
        "{standby_metrics}"
    );
    let standby_api_calls = |fake: &common::Fake| {
        fake.calls
            .iter()
            .filter(|c| c.client == 2 && !c.path.contains("/leases/") && c.path != "/version")
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        standby_api_calls(&fake.lock().unwrap()),
        Vec::<String>::new()
    );
    assert!(
        get(two.addr, "/readyz")
            .await
            .unwrap()
            .1
            .contains("standby")
    );

    // Replica 1 stops when told to, promptly, and gives the lease up.
    let stopping = Instant::now();
    one.stop.cancel();
    tokio::time::timeout(bound, one.task)
        .await
        .expect("replica 1 did not stop")
        .unwrap()
        .unwrap();
    eprintln!("replica 1 stopped in {:?}", stopping.elapsed());
    assert!(
        get(one.addr, "/healthz").await.is_err(),
        "replica 1 still serves HTTP after it stopped"
    );

    // Replica 2 takes over and reconciles.
    eventually(bound, "replica 2 leads", || {
        body_of(two.addr, "/readyz", 200, "ready (leader)")
    })
    .await;
    eventually(bound, "replica 2 reconciles", || {
        body_of(
            two.addr,
            "/metrics",
            200,
            "hmq_operator_reconciles_total{result=\"ok\"}",
        )
    })
    .await;
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME).as_deref(),
        Some("replica-2")
    );
    assert!(
        fake.lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.client == 2 && c.path == "/apis/hmq.io/v1alpha1/mqttclusters")
    );

    two.stop.cancel();
    tokio::time::timeout(bound, two.task)
        .await
        .expect("replica 2 did not stop")
        .unwrap()
        .unwrap();
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME),
        None,
        "the last leader did not give the lease up"
    );
}

#[tokio::test]
async fn a_standby_stops_on_request_and_an_unreachable_api_server_is_an_error() {
    let (_, fake) = fake_api();
    let one = start(&fake, 1).await;
    eventually(Duration::from_secs(10), "replica 1 leads", || {
        body_of(one.addr, "/readyz", 200, "leader")
    })
    .await;
    let two = start(&fake, 2).await;
    eventually(Duration::from_secs(10), "replica 2 waits", || {
        body_of(two.addr, "/readyz", 200, "standby")
    })
    .await;
    two.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), two.task)
        .await
        .expect("the standby did not stop")
        .unwrap()
        .unwrap();
    assert!(get(two.addr, "/readyz").await.is_err());

    // A replica cut off from the API server fails (the kubelet restarts it) and stops serving.
    fake.lock().unwrap().cut.insert(3);
    let three = start(&fake, 3).await;
    let result = tokio::time::timeout(Duration::from_secs(10), three.task)
        .await
        .expect("a replica without an API server did not give up")
        .unwrap();
    assert!(matches!(result, Err(RunError::Client(_))), "{result:?}");
    assert!(get(three.addr, "/healthz").await.is_err());
    one.stop.cancel();
}
