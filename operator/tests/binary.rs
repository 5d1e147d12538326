//! The `hmq-operator` binary against the fake API server served over HTTP on 127.0.0.1 (through
//! a kubeconfig): it logs JSON lines, leads, reconciles, serves its probes, and on SIGTERM stops
//! within a bound, gives the lease up and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{CLUSTERS, cluster, fake_api, serve_http};
use hmq_operator::leader::LEASE_NAME;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let line = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(line.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        Some((code, response.split_once("\r\n\r\n")?.1.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn the_binary_runs_on_a_kubeconfig_and_stops_on_sigterm() {
    let (_, fake) = fake_api();
    fake.lock().unwrap().objects.insert(
        format!("{CLUSTERS}/iot/mqttclusters/mqtt"),
        serde_json::to_value(cluster("minimal.yaml")).unwrap(),
    );
    let api = serve_http(&fake, 9).await;
    let dir = std::env::temp_dir().join(format!("hmq-operator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"http://{api}\"}}}}]\n\
             users: [{{name: test, user: {{token: test}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: test}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hmq-operator"))
        .args([
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "hmq-system",
            "--identity",
            "binary",
            "--lease-duration",
            "2",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("HMQ_OPERATOR_LOG_FORMAT")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log: Vec<Value> = Vec::new();

    // Every log line is a JSON object; one of them says where the HTTP endpoint listens.
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the operator exited");
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            log.push(entry.clone());
            if entry["message"] == "listening for HTTP (/metrics, /healthz, /readyz)" {
                return entry["addr"].as_str().unwrap().parse().unwrap();
            }
        }
    })
    .await
    .expect("the operator did not log its HTTP address");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = get(addr, "/readyz").await;
        let metrics = get(addr, "/metrics").await;
        if ready.is_some_and(|(c, b)| c == 200 && b.contains("leader"))
            && metrics
                .is_some_and(|(_, b)| b.contains("hmq_operator_reconciles_total{result=\"ok\"}"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator did not lead and reconcile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
    assert_eq!(
        fake.lock()
            .unwrap()
            .lease_holder("hmq-system", LEASE_NAME)
            .as_deref(),
        Some("binary")
    );

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(serde_json::from_str(&line).unwrap());
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("the operator did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
    let messages: Vec<&str> = log.iter().filter_map(|e| e["message"].as_str()).collect();
    for expected in [
        "connected to the API server",
        "leader lease acquired",
        "shutting down",
        "controller stopped",
        "leader lease released",
        "stopped",
    ] {
        assert!(
            messages.contains(&expected),
            "{expected:?} not in {messages:?}"
        );
    }
    assert!(
        log.iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string())
    );
    assert_eq!(
        fake.lock().unwrap().lease_holder("hmq-system", LEASE_NAME),
        None
    );
    assert!(get(addr, "/healthz").await.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
