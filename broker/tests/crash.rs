//! A real `hmq` process with `persistence.dir`, killed with SIGKILL while publishers are
//! sending QoS 1 messages to an online and an offline persistent subscriber, then started again
//! on the same directory:
//!
//! * `sync: "always"`: no message whose PUBACK the broker sent is lost, for either subscriber;
//!   a message the online subscriber had received but not acknowledged comes again with DUP.
//! * `sync: "interval"`: what is lost was acknowledged within the sync interval (plus the time
//!   a commit takes) before the kill; the test prints how many.
//!
//! All traffic on 127.0.0.1; every loop is bounded in time and count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PUBLISHERS: u32 = 8;
/// How long the publishers run before the kill.
const LOAD: Duration = Duration::from_millis(1500);
/// At most this many messages per publisher (a bound on the load loop).
const MAX_PER_PUBLISHER: u32 = 20_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Child,
    addr: SocketAddr,
}

fn start(dir: &Path, sync: &str, port: u16) -> Broker {
    let config = dir.join("hmq.config");
    let store = dir.join("store");
    std::fs::write(
        &config,
        format!(
            r#"{{"host": "127.0.0.1", "port": {port}, "httpPort": "", "sysInterval": 0,
               "maxQueuedMessages": 1000000, "maxInflight": 100,
               "persistence": {{"dir": {store:?}, "sync": "{sync}", "syncIntervalMs": 10}}}}"#
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hmq"))
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hmq");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "hmq did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, addr }
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("crash")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the publishers saw: message → when its PUBACK arrived.
type Acked = Arc<Mutex<BTreeMap<String, Instant>>>;

/// One publisher: QoS 1 messages one after the other (each waits for its PUBACK), payload
/// "<publisher>:<n>", until the broker dies or the count is reached.
async fn publisher(addr: SocketAddr, id: u32, acked: Acked) {
    let (mut c, _) = Client::connect(addr, &Opts::id(&format!("pub{id}"))).await;
    for n in 0..MAX_PER_PUBLISHER {
        let payload = format!("{id}:{n}");
        let pkid = (n % 60_000 + 1) as u16;
        c.send(&publish_bytes(
            "c/t",
            payload.as_bytes(),
            1,
            false,
            false,
            pkid,
        ))
        .await;
        match c.next_within(WAIT).await {
            Ok(Some(Pkt::PubAck(p))) if p == pkid => {
                acked.lock().unwrap().insert(payload, Instant::now());
            }
            _ => return, // the broker is gone
        }
    }
}

/// Received messages: payload → DUP flags of every copy.
type Seen = Arc<Mutex<BTreeMap<String, Vec<bool>>>>;

/// Reads and acknowledges until the connection ends or nothing comes for `quiet`.
async fn consume(c: &mut Client, seen: &Seen, quiet: Duration) {
    loop {
        match c.next_within(quiet).await {
            Ok(Some(Pkt::Publish(m))) => {
                seen.lock()
                    .unwrap()
                    .entry(String::from_utf8(m.payload.to_vec()).unwrap())
                    .or_default()
                    .push(m.dup);
                c.send(&ack_bytes(0x40, m.pkid)).await;
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(()) => return,
        }
    }
}

struct Outcome {
    acked: BTreeMap<String, Instant>,
    killed_at: Instant,
    online: BTreeMap<String, Vec<bool>>,
    offline: BTreeMap<String, Vec<bool>>,
}

async fn run(sync: &str) -> Outcome {
    let d = dir(sync);
    let port = free_port();
    let mut broker = start(&d, sync, port);
    // The offline subscriber: subscribed, then gone.
    let (mut off, _) = Client::connect(broker.addr, &Opts::id("off").persistent()).await;
    assert_eq!(off.subscribe(&[("c/#", 1)]).await, [1]);
    off.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The online subscriber: reads and acknowledges as fast as it can.
    let (mut on, _) = Client::connect(broker.addr, &Opts::id("on").persistent()).await;
    assert_eq!(on.subscribe(&[("c/#", 1)]).await, [1]);
    let online: Seen = Arc::default();
    let reader = {
        let online = online.clone();
        tokio::spawn(async move { consume(&mut on, &online, Duration::from_secs(30)).await })
    };
    let acked: Acked = Arc::default();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| tokio::spawn(publisher(broker.addr, i, acked.clone())))
        .collect();
    tokio::time::sleep(LOAD).await;
    broker.child.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    broker.child.wait().unwrap();
    for p in publishers {
        let _ = p.await;
    }
    let _ = reader.await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too little load before the kill: {}",
        acked.len()
    );

    let mut broker = start(&d, sync, port);
    let (mut on, present) = Client::connect(broker.addr, &Opts::id("on").persistent()).await;
    assert!(present, "{sync}: the online subscriber's session survived");
    consume(&mut on, &online, Duration::from_secs(1)).await;
    let offline: Seen = Arc::default();
    let (mut off, present) = Client::connect(broker.addr, &Opts::id("off").persistent()).await;
    assert!(present, "{sync}: the offline subscriber's session survived");
    consume(&mut off, &offline, Duration::from_secs(1)).await;
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let online = online.lock().unwrap().clone();
    let offline = offline.lock().unwrap().clone();
    Outcome {
        acked,
        killed_at,
        online,
        offline,
    }
}

/// Messages acknowledged to a publisher that a subscriber never got.
fn lost(o: &Outcome, got: &BTreeMap<String, Vec<bool>>) -> Vec<String> {
    o.acked
        .keys()
        .filter(|k| !got.contains_key(*k))
        .cloned()
        .collect()
}

/// Every second copy of a message came with DUP set.
fn duplicates_are_marked(got: &BTreeMap<String, Vec<bool>>) -> usize {
    let mut dups = 0;
    for (k, flags) in got {
        for (i, dup) in flags.iter().enumerate().skip(1) {
            assert!(*dup, "{k}: copy {} without DUP", i + 1);
            dups += 1;
        }
    }
    dups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_with_sync_always() {
    let o = run("always").await;
    let lost_online = lost(&o, &o.online);
    let lost_offline = lost(&o, &o.offline);
    let dup_online = duplicates_are_marked(&o.online);
    let dup_offline = duplicates_are_marked(&o.offline);
    println!(
        "always: {} acknowledged; online subscriber got {} ({} redelivered with DUP), offline \
         got {} ({} with DUP); lost {} / {}",
        o.acked.len(),
        o.online.len(),
        dup_online,
        o.offline.len(),
        dup_offline,
        lost_online.len(),
        lost_offline.len()
    );
    assert!(
        lost_online.is_empty(),
        "online subscriber lost {lost_online:?}"
    );
    assert!(
        lost_offline.is_empty(),
        "offline subscriber lost {lost_offline:?}"
    );
    // The offline subscriber gets each message once: nothing was in flight to it.
    assert_eq!(dup_offline, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_at_most_the_sync_interval_with_sync_interval() {
    let o = run("interval").await;
    // A commit is taken every 10 ms; an fsync on a busy machine can take much longer. Anything
    // lost must have been acknowledged in the last interval plus that allowance.
    let window = Duration::from_millis(10) + Duration::from_secs(2);
    let mut report = BTreeSet::new();
    for (name, got) in [("online", &o.online), ("offline", &o.offline)] {
        let lost = lost(&o, got);
        let mut oldest = Duration::ZERO;
        for k in &lost {
            let acked_at = o.acked[k];
            let before_kill = o.killed_at.saturating_duration_since(acked_at);
            oldest = oldest.max(before_kill);
            assert!(
                before_kill <= window,
                "{name}: {k} acknowledged {before_kill:?} before the kill and lost"
            );
        }
        duplicates_are_marked(got);
        report.insert(format!(
            "{name} lost {} (acknowledged at most {oldest:?} before the kill)",
            lost.len()
        ));
    }
    println!(
        "interval: {} acknowledged; {}",
        o.acked.len(),
        report.into_iter().collect::<Vec<_>>().join(", ")
    );
}
