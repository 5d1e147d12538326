//! The cluster outboxes are durable: two real `hmq` processes with `persistence.dir` and
//! `sync: "always"`. A persistent subscriber's session is on node B. B is killed (SIGKILL), and a
//! publisher sends QoS 1 messages to node A, which acknowledges them (its outbox copy for B is
//! on disk first) and keeps them for B. A is killed too, then both start again on their
//! directories, B first: A sends what its outbox held, and the subscriber gets every
//! acknowledged message on B, with DUP (A cannot know whether B had processed them). After
//! that, A stops cleanly and starts once more: nothing is sent twice, so B's acknowledgements
//! reached A's disk.
//!
//! Without a durable outbox every message of this test would be lost: its PUBACK went out, and
//! the only copy was in the memory of the killed process.
//!
//! All traffic on 127.0.0.1; every loop is bounded in time and count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Messages published while B is frozen.
const MESSAGES: u32 = 200;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    addr: SocketAddr,
    http: u16,
}

impl Node {
    fn start(dir: &Path, name: &str, port: u16, http: u16, cluster: u16, peer: u16) -> Node {
        let config = dir.join(format!("{name}.config"));
        let store = dir.join(name);
        std::fs::write(
            &config,
            format!(
                r#"{{"host": "127.0.0.1", "port": {port}, "httpHost": "127.0.0.1",
                   "httpPort": {http}, "sysInterval": 0,
                   "cluster": {{"host": "127.0.0.1", "port": {cluster}, "name": "{name}",
                                "peers": ["127.0.0.1:{peer}"], "secret": "crash-cluster-secret",
                                "discoveryInterval": 1, "syncTimeout": 5}},
                   "persistence": {{"dir": {store:?}, "sync": "always"}}}}"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log.{}", now_ms()))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hmq"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hmq");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { child, addr, http }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// A metric's value from /metrics (summed over the series whose labels contain
    /// `labels`), None if absent.
    async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let body = http_get(self.http, "/metrics").await?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                *series == name
                    || (series.starts_with(&format!("{name}{{")) && series.contains(labels))
            })
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    async fn wait_metric(&self, name: &str, labels: &str, what: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.metric(name, labels).await.is_some_and(&ok) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "hmq did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body))
        .await
        .ok()?
        .ok()?;
    String::from_utf8(body).ok()
}

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("crash-cluster")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Reads and acknowledges until nothing comes for `quiet`: payload → DUP flags of each copy.
async fn consume(c: &mut Client, got: &mut BTreeMap<String, Vec<bool>>, quiet: Duration) {
    for _ in 0..10 * MESSAGES {
        match c.next_within(quiet).await {
            Ok(Some(Pkt::Publish(m))) => {
                got.entry(String::from_utf8(m.payload.to_vec()).unwrap())
                    .or_default()
                    .push(m.dup);
                if m.qos > 0 {
                    c.send(&ack_bytes(0x40, m.pkid)).await;
                }
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(()) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_for_a_peer_survive_sigkill_of_the_sending_node() {
    let d = dir();
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:>6} ms  {what}", t0.elapsed().as_millis());
    let (a_port, a_http, a_cluster) = (free_port(), free_port(), free_port());
    let (b_port, b_http, b_cluster) = (free_port(), free_port(), free_port());
    let start_a = || Node::start(&d, "node-a", a_port, a_http, a_cluster, b_cluster);
    let start_b = || Node::start(&d, "node-b", b_port, b_http, b_cluster, a_cluster);
    let a = start_a();
    let b = start_b();

    // The subscriber's persistent session lives on B, offline.
    let (mut sub, _) = Client::connect(b.addr, &Opts::id("sub").persistent()).await;
    assert_eq!(sub.subscribe(&[("o/#", 1)]).await, [1]);
    sub.disconnect().await;
    a.wait_metric("hmq_cluster_routes", "", "A to learn B's route", |v| {
        v >= 1.0
    })
    .await;
    a.wait_metric("hmq_cluster_peers", "linked", "A linked to B", |v| v >= 1.0)
        .await;

    // B gone: A acknowledges each message (its outbox copy is on disk first) and keeps it for
    // B, whose routes it remembers.
    b.kill();
    let (mut publisher, _) = Client::connect(a.addr, &Opts::id("pub")).await;
    for n in 0..MESSAGES {
        let pkid = (n + 1) as u16;
        publisher
            .send(&publish_bytes(
                "o/t",
                format!("m{n}").as_bytes(),
                1,
                false,
                false,
                pkid,
            ))
            .await;
        match publisher.recv().await {
            Pkt::PubAck(p) => assert_eq!(p, pkid),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }
    let queued = a.metric("hmq_cluster_queued_messages", "").await;
    assert_eq!(
        queued,
        Some(f64::from(MESSAGES)),
        "A holds every message for B"
    );
    phase("published; killing A");
    a.kill();
    let b = start_b();

    // A again, on its directory: it sends what it held.
    let a = start_a();
    a.wait_metric(
        "hmq_cluster_queued_messages",
        "",
        "A's outbox to empty",
        |v| v == 0.0,
    )
    .await;
    phase("A's outbox empty");
    let (mut sub, present) = Client::connect(b.addr, &Opts::id("sub").persistent()).await;
    assert!(present, "the session on B is still there");
    let mut got = BTreeMap::new();
    consume(&mut sub, &mut got, Duration::from_secs(2)).await;
    let lost: Vec<_> = (0..MESSAGES)
        .map(|n| format!("m{n}"))
        .filter(|m| !got.contains_key(m))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert_eq!(got.len(), MESSAGES as usize, "only what was published");
    let unmarked: Vec<_> = got
        .iter()
        .filter(|(_, dups)| dups.iter().any(|dup| !dup))
        .map(|(m, _)| m.clone())
        .collect();
    assert!(
        unmarked.is_empty(),
        "messages resent after the restart carry DUP: {unmarked:?}"
    );

    // B acknowledged them to A, and A deleted its copies: a clean restart of A sends nothing.
    phase("consumed; stopping A");
    a.stop();
    let a = start_a();
    a.wait_metric("hmq_cluster_peers", "linked", "A linked to B again", |v| {
        v >= 1.0
    })
    .await;
    assert_eq!(a.metric("hmq_cluster_queued_messages", "").await, Some(0.0));
    phase("A linked again");
    let mut again = BTreeMap::new();
    consume(&mut sub, &mut again, Duration::from_secs(2)).await;
    assert!(again.is_empty(), "sent twice: {again:?}");
    sub.disconnect().await;
    a.stop();
    b.stop();
}
