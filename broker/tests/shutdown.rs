//! Graceful shutdown of the real `hmq` binary: SIGTERM or SIGINT with clients connected marks
//! the broker not ready (`/readyz` 503) while clients are still connected, stops accepting, then
//! disconnects the clients at `drainRate` per second (all at once with 0, whatever is left at
//! `shutdownTimeout`), without publishing wills and with an offline notification for each, and
//! the process exits with status 0 within the deadline.
//!
//! The broker runs as a child process with a configuration file in a temporary directory, port 0
//! for MQTT and HTTP (the bound addresses are read from its JSON log lines on stderr), and
//! `hmq::connection` at debug level, so that a will being published would show in the log too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Presence notification topics.
const PRESENCE: &str = "$SYS/broker/connection/clients/";
/// Where the will would go; every client subscribes to it.
const WILL_TOPIC: &str = "drain/will";
/// A password the broker must never log.
const SECRET: &str = "s3cret-do-not-log";
/// How long the binary gets to start and print its listening addresses.
const START: Duration = Duration::from_secs(15);

/// A broker process, killed (SIGKILL) if a test fails before it exits.
struct Process {
    child: Child,
    mqtt: SocketAddr,
    http: SocketAddr,
    /// Every stderr line, parsed as JSON when it is (log lines are).
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_addr(v: &serde_json::Value) -> Option<SocketAddr> {
    v.get("addr")?.as_str()?.parse().ok()
}

/// Starts `hmq -c <dir>/hmq.config --log-format json` with the given drain settings.
fn start_broker(name: &str, drain_rate: u32, shutdown_timeout: u64) -> Process {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shutdown-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hmq.config");
    let json = serde_json::json!({
        "host": "127.0.0.1",
        "port": 0,
        "httpHost": "127.0.0.1",
        "httpPort": 0,
        "drainRate": drain_rate,
        "shutdownTimeout": shutdown_timeout,
        "sysInterval": 0,
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmq"))
        .arg("-c")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info,hmq::connection=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hmq");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or(serde_json::Value::String(line));
                let _ = tx.send(v.clone());
                logs.lock().unwrap().push(v);
            }
        })
    };
    let (mut mqtt, mut http) = (None, None);
    let deadline = Instant::now() + START;
    while mqtt.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("hmq did not report its listeners within {START:?}: {e}"));
        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
        if message == "listening for MQTT" && v["listener"] == "tcp" {
            mqtt = log_addr(&v);
        } else if message.starts_with("listening for HTTP") {
            http = log_addr(&v);
        }
    }
    Process {
        child,
        mqtt: mqtt.unwrap(),
        http: http.unwrap(),
        logs,
        reader: Some(reader),
        dir,
    }
}

impl Process {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig}");
    }

    /// Waits for the process to exit, at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hmq still running {limit:?} after the signal"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }
}

/// `GET path` with `Connection: close`: the status, or `None` if the HTTP listener is gone.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

/// What one client saw: when the broker closed its connection and what it received before.
#[derive(Debug)]
struct Closed {
    id: String,
    at: Instant,
    received: Vec<Pkt>,
}

/// A presence notification: (client id, online).
fn presence(p: &Pkt) -> Option<(String, bool)> {
    let Pkt::Publish(m) = p else { return None };
    let id = m.topic.strip_prefix(PRESENCE)?;
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["clientID"], id, "{v}");
    Some((id.to_owned(), v["online"].as_bool().unwrap()))
}

/// The outcome of one shutdown run.
#[derive(Debug)]
struct Run {
    signalled: Instant,
    /// Clients closed before `/readyz` first answered 503 (`None`: it never did, the HTTP
    /// listener was gone first).
    closed_when_unready: Option<usize>,
    closes: Vec<Closed>,
    exited: Instant,
    status: ExitStatus,
    logs: Vec<serde_json::Value>,
    watcher: String,
    will_client: String,
}

impl Run {
    fn first_close(&self) -> Instant {
        self.closes.iter().map(|c| c.at).min().unwrap()
    }
    fn last_close(&self) -> Instant {
        self.closes.iter().map(|c| c.at).max().unwrap()
    }
    fn messages(&self, message: &str) -> Vec<&serde_json::Value> {
        self.logs
            .iter()
            .filter(|v| v.get("message").and_then(|m| m.as_str()) == Some(message))
            .collect()
    }
}

/// Starts a broker, connects a watcher (subscribed to the presence topics and the will topic)
/// and `clients` more clients (one with a will, one with a password, all subscribed to the
/// will topic), sends `sig` and records what happens until the process exits.
async fn shutdown_run(
    name: &str,
    sig: &str,
    clients: usize,
    drain_rate: u32,
    shutdown_timeout: u64,
) -> Run {
    let mut p = start_broker(name, drain_rate, shutdown_timeout);
    // Ready once the listeners serve (the log lines come a moment before).
    let deadline = Instant::now() + WAIT;
    while http_status(p.http, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "/readyz not 200 within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(http_status(p.http, "/healthz").await, Some(200));

    let watcher_id = format!("{name}-watcher");
    let will_id = format!("{name}-client-0");
    let mut connected = Vec::new();
    let (mut watcher, _) = Client::connect(p.mqtt, &Opts::id(&watcher_id)).await;
    assert_eq!(
        watcher
            .subscribe(&[(&format!("{PRESENCE}+"), 0), (WILL_TOPIC, 0)])
            .await,
        [0, 0]
    );
    connected.push((watcher_id.clone(), watcher));
    for i in 0..clients {
        let id = format!("{name}-client-{i}");
        let mut opts = Opts::id(&id);
        if i == 0 {
            opts = opts.will(WILL_TOPIC, b"crashed", 0, false);
        }
        if i == 1 {
            opts.username = Some("drain-user".into());
            opts.password = Some(SECRET.as_bytes().to_vec());
        }
        let (mut c, _) = Client::connect(p.mqtt, &opts).await;
        assert_eq!(c.subscribe(&[(WILL_TOPIC, 0)]).await, [0]);
        connected.push((id, c));
    }
    let total = connected.len();

    // Every client reads until the broker closes its connection (bounded).
    let limit = Duration::from_secs(shutdown_timeout + 10);
    let closed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (id, mut c) in connected {
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let received = c.expect_closed_within(limit).await;
            let at = Instant::now();
            closed.fetch_add(1, Ordering::SeqCst);
            Closed { id, at, received }
        }));
    }

    p.signal(sig);
    let signalled = Instant::now();

    // Not ready right away, while the clients are still connected (with `drainRate` 0 the
    // whole shutdown can be over, HTTP listener included, before a probe gets in).
    let mut closed_when_unready = None;
    for _ in 0..200 {
        let before = closed.load(Ordering::SeqCst);
        match http_status(p.http, "/readyz").await {
            Some(503) => {
                closed_when_unready = Some(before);
                break;
            }
            None => break,
            Some(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // No new MQTT connections: the listener is closed (bounded wait: it closes right after the
    // broker marks itself not ready).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(p.mqtt).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("unexpected connect error {e}"),
            Ok(s) => drop(s),
        }
        assert!(
            Instant::now() < deadline,
            "the MQTT listener still accepts during the drain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut closes = Vec::new();
    for t in tasks {
        closes.push(t.await.expect("client task"));
    }
    assert_eq!(closes.len(), total);
    let status = p.wait_exit(Duration::from_secs(shutdown_timeout + 5)).await;
    let exited = Instant::now();
    Run {
        signalled,
        closed_when_unready,
        closes,
        exited,
        status,
        logs: p.logs(),
        watcher: watcher_id,
        will_client: will_id,
    }
}

/// What holds for every shutdown: exit 0 within the deadline, every client closed, no will,
/// offline notifications, the log lines, no secret in the log.
fn check_common(r: &Run, sig_name: &str, shutdown_timeout: u64) {
    assert!(
        r.status.success(),
        "exit status {:?}; log: {:#?}",
        r.status,
        r.logs
    );
    let took = r.exited - r.signalled;
    assert!(
        took <= Duration::from_secs(shutdown_timeout) + Duration::from_secs(3),
        "exit {took:?} after the signal (shutdownTimeout {shutdown_timeout} s)"
    );

    // No will: nobody received anything on the will topic, and it was not published.
    for c in &r.closes {
        for p in &c.received {
            if let Pkt::Publish(m) = p {
                assert_ne!(
                    m.topic, WILL_TOPIC,
                    "{} received the will of {}",
                    c.id, r.will_client
                );
            }
        }
    }
    assert!(
        r.messages("publishing will").is_empty(),
        "a will was published at shutdown"
    );

    // The watcher was told, cleanly, about every client the broker closed before it (well
    // before: a notification queued in the very last moments before the watcher's own close
    // may not be written).
    let watcher = r.closes.iter().find(|c| c.id == r.watcher).unwrap();
    let offline: Vec<String> = watcher
        .received
        .iter()
        .filter_map(presence)
        .filter(|(_, online)| !online)
        .map(|(id, _)| id)
        .collect();
    let unique: BTreeSet<&String> = offline.iter().collect();
    assert_eq!(
        unique.len(),
        offline.len(),
        "one offline notification per client: {offline:?}"
    );
    let mut before = 0;
    for c in &r.closes {
        if c.id != r.watcher && c.at + Duration::from_millis(50) < watcher.at {
            before += 1;
            assert!(
                offline.contains(&c.id),
                "no offline notification for {}, closed {:?} before the watcher; got {offline:?}",
                c.id,
                watcher.at - c.at
            );
        }
    }
    eprintln!(
        "{sig_name}: {before} clients closed before the watcher; it saw {} offline notifications",
        offline.len()
    );

    // The log: the signal, the drain, one disconnect line per client with the shutdown reason,
    // the end; and no password.
    assert_eq!(r.messages(&format!("{sig_name} received")).len(), 1);
    assert_eq!(r.messages("shutting down: draining connections").len(), 1);
    assert_eq!(r.messages("broker stopped").len(), 1);
    let disconnects: BTreeMap<String, String> = r
        .messages("client disconnected")
        .into_iter()
        .map(|v| {
            assert!(v.get("peer").is_some() && v["listener"] == "tcp", "{v}");
            (
                v["client_id"].as_str().unwrap().to_owned(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for c in &r.closes {
        assert_eq!(
            disconnects.get(&c.id).map(String::as_str),
            Some("broker shutting down"),
            "{}",
            c.id
        );
    }
    let text: String = r.logs.iter().map(|v| v.to_string()).collect();
    assert!(!text.contains(SECRET), "the password is in the log");
}

/// SIGTERM with 16 clients and `drainRate` 5: about 3 s of progressive disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_progressively_and_exits_zero() {
    let r = shutdown_run("term", "TERM", 15, 5, 10).await;
    check_common(&r, "SIGTERM", 10);
    check_progressive(&r);
}

/// SIGINT does what SIGTERM does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigint_drains_progressively_and_exits_zero() {
    let r = shutdown_run("int", "INT", 15, 5, 10).await;
    check_common(&r, "SIGINT", 10);
    check_progressive(&r);
}

/// With 16 clients at 5 per second: `/readyz` 503 while they are connected, not all closed at
/// once, at most about 5 in any second, and done well within the 10 s deadline.
fn check_progressive(r: &Run) {
    check_unready_while_connected(r);
    let spread = r.last_close() - r.first_close();
    assert!(
        spread >= Duration::from_millis(1500),
        "16 clients at drainRate 5 closed within {spread:?}: not progressive"
    );
    assert!(
        spread <= Duration::from_secs(6),
        "16 clients at drainRate 5 took {spread:?}"
    );
    let mut at: Vec<Instant> = r.closes.iter().map(|c| c.at).collect();
    at.sort();
    for (i, t) in at.iter().enumerate() {
        let in_a_second = at[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_a_second <= 7,
            "{in_a_second} clients closed within one second at drainRate 5"
        );
    }
}

/// `/readyz` answered 503 while clients were still connected.
fn check_unready_while_connected(r: &Run) {
    let closed = r
        .closed_when_unready
        .expect("/readyz did not answer 503 after the signal");
    assert!(
        closed < r.closes.len(),
        "/readyz turned 503 only after every client was closed"
    );
}

/// `drainRate` 0: everyone at once, and a quick exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_rate_zero_closes_everyone_at_once() {
    let r = shutdown_run("zero", "TERM", 15, 0, 10).await;
    check_common(&r, "SIGTERM", 10);
    let spread = r.last_close() - r.first_close();
    assert!(
        spread < Duration::from_millis(500),
        "drainRate 0 closed clients over {spread:?}"
    );
    let took = r.exited - r.signalled;
    assert!(took < Duration::from_secs(3), "exit {took:?} after SIGTERM");
}

/// A drain slower than `shutdownTimeout`: at the deadline the clients still connected are
/// closed at once (still no will) and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deadline_closes_what_the_drain_has_not_reached() {
    let r = shutdown_run("deadline", "TERM", 9, 1, 2).await;
    check_common(&r, "SIGTERM", 2);
    check_unready_while_connected(&r);
    let first = r.first_close() - r.signalled;
    let last = r.last_close() - r.signalled;
    assert!(
        last >= Duration::from_millis(1500),
        "10 clients at drainRate 1 were all closed {last:?} after SIGTERM, before the 2 s deadline"
    );
    assert!(
        last <= Duration::from_millis(4500),
        "the last client closed {last:?} after SIGTERM (deadline 2 s)"
    );
    // At 1 per second, at most 3 are closed before the deadline; the rest together at it.
    let early = r
        .closes
        .iter()
        .filter(|c| c.at - r.signalled < Duration::from_millis(1800))
        .count();
    assert!(
        early <= 3,
        "{early} clients closed before the deadline at drainRate 1 (first at {first:?})"
    );
}
