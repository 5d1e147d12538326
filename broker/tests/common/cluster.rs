//! Shared by the cluster tests: nodes on 127.0.0.1-n sharing a port, and waits on their state.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::{self, Client, TestBroker};

pub const SECRET: &str = "cluster-test-secret";

/// A port free on 127.0.0.1 (and so, almost surely, on .2 and .3).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn ip(n: u8) -> String {
    format!("127.0.0.{n}")
}

/// Starts node `n` (127.0.0.n:port) with the given peers.
pub async fn node(n: u8, port: u16, peers: Vec<String>) -> TestBroker {
    node_with(n, port, peers, |_| {}).await
}

pub async fn node_with(
    n: u8,
    port: u16,
    peers: Vec<String>,
    tweak: impl FnOnce(&mut hmq::config::Config),
) -> TestBroker {
    TestBroker::start_with(|c| {
        c.cluster.host = ip(n);
        c.cluster.port = Some(hmq::config::Port(port));
        c.cluster.name = Some(format!("node-{n}"));
        c.cluster.peers = peers;
        c.cluster.secret = Some(SECRET.into());
        c.cluster.discovery_interval = 1;
        c.cluster.sync_timeout = 5;
        tweak(c);
    })
    .await
}

pub fn all_peers(port: u16, n: u8) -> Vec<String> {
    (1..=n).map(|i| format!("{}:{port}", ip(i))).collect()
}

/// A gauge or counter from a full scrape (scrape-time gauges included); labels as `k="v"`.
pub fn metric(b: &TestBroker, name: &str, labels: &str) -> f64 {
    b.broker
        .render_metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            *series == name || (series.starts_with(&format!("{name}{{")) && series.contains(labels))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node is linked to every other and has their route tables.
pub async fn wait_mesh(nodes: &[&TestBroker]) {
    let others = (nodes.len() - 1) as f64;
    for (i, b) in nodes.iter().enumerate() {
        wait_until(&format!("node {} linked to all", i + 1), || {
            metric(b, "hmq_cluster_peers", "state=\"linked\"") == others
                && b.broker.cluster_synced()
        })
        .await;
    }
}

/// Three nodes on 127.0.0.1-3 sharing a free port, fully linked. Returns the port too (a node
/// restarted later uses it).
pub async fn three_nodes() -> (u16, TestBroker, TestBroker, TestBroker) {
    let port = free_port();
    let n1 = node(1, port, all_peers(port, 3)).await;
    let n2 = node(2, port, all_peers(port, 3)).await;
    let n3 = node(3, port, all_peers(port, 3)).await;
    wait_mesh(&[&n1, &n2, &n3]).await;
    (port, n1, n2, n3)
}

/// Waits until `b` knows `n` routes from its peers.
pub async fn wait_routes(b: &TestBroker, n: f64) {
    wait_until(&format!("{n} routes"), || {
        metric(b, "hmq_cluster_routes", "") == n
    })
    .await;
}

/// Receives exactly `n` PUBLISH packets (acknowledging them), then nothing more.
pub async fn recv_n(c: &mut Client, n: usize) -> Vec<common::Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = c.recv_publish().await;
        c.ack(&m).await;
        out.push(m);
    }
    c.expect_silence().await;
    out
}
