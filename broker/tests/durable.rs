//! Durable state over real sockets: a broker with `persistence.dir` is stopped and started
//! again on the same directory, and its clients find their sessions (subscriptions, queued
//! messages, in-flight messages with their packet ids and DUP, QoS 2 ids awaiting PUBREL),
//! retained messages and expiry as they were. Also: netting (what is acknowledged within a
//! commit never reaches the disk), the disk limit, and damaged stores refused with an error.
//! SIGKILL of a real broker process is in `crash.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hmq::config::{Config, SyncPolicy};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh directory under the test target directory.
fn store_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("durable")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn durable(dir: &Path, sync: SyncPolicy) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.persistence.dir = Some(dir.to_path_buf());
        c.persistence.sync = sync;
    }
}

async fn start(dir: &Path, sync: SyncPolicy) -> TestBroker {
    TestBroker::start_with(durable(dir, sync)).await
}

/// A PINGREQ/PINGRESP round trip: everything sent before it has been handled.
async fn round_trip(c: &mut Client) {
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
}

/// A persistent subscriber `id` on `filter` at QoS `qos`, disconnected again.
async fn offline_subscriber(b: &TestBroker, id: &str, filter: &str, qos: u8) {
    let (mut s, present) = Client::connect(b.addr, &Opts::id(id).persistent()).await;
    assert!(!present);
    assert_eq!(s.subscribe(&[(filter, qos)]).await, [qos]);
    s.disconnect().await;
    // Offline for sure before anything is published to it (else the first message might go
    // out on the closing connection, and rightly come back with DUP).
    let deadline = std::time::Instant::now() + WAIT;
    while b.broker.sessions.get(id).is_some_and(|s| s.is_online()) {
        assert!(std::time::Instant::now() < deadline, "{id} still online");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_offline_queue_survives_a_restart_under_every_policy() {
    for sync in [SyncPolicy::Always, SyncPolicy::Interval, SyncPolicy::None] {
        let dir = store_dir(&format!("queue-{sync:?}"));
        // One message in flight at a time, so that the test client's QoS 2 flow (PUBREC, then
        // PUBREL expected next) is not interleaved with the next PUBLISH.
        let start = |dir: &Path, sync| {
            let dir = dir.to_path_buf();
            TestBroker::start_with(move |c| {
                c.persistence.dir = Some(dir);
                c.persistence.sync = sync;
                c.max_inflight = 1;
            })
        };
        let b = start(&dir, sync).await;
        offline_subscriber(&b, "sub", "d/#", 2).await;
        let mut p = Client::new(b.addr, "pub").await;
        for i in 0..40u32 {
            let qos = 1 + (i % 2) as u8;
            p.publish(&format!("d/{i}"), format!("m{i}").as_bytes(), qos, false)
                .await;
        }
        p.disconnect().await;
        b.stop().await;

        let b = start(&dir, sync).await;
        assert_eq!(
            b.metric("hmq_sessions", "state=\"offline\""),
            1.0,
            "{sync:?}"
        );
        let (mut s, present) = Client::connect(b.addr, &Opts::id("sub").persistent()).await;
        assert!(present, "{sync:?}: session present after the restart");
        for i in 0..40u32 {
            let m = s.recv_publish().await;
            assert_eq!(
                (m.topic.as_str(), &m.payload[..], m.qos, m.dup),
                (
                    format!("d/{i}").as_str(),
                    format!("m{i}").as_bytes(),
                    1 + (i % 2) as u8,
                    false
                ),
                "{sync:?}: message {i}"
            );
            s.ack(&m).await;
        }
        s.expect_silence().await;
        // The subscription came back too: a new message is routed to it.
        let mut p = Client::new(b.addr, "pub").await;
        p.publish("d/new", b"after", 1, false).await;
        let m = s.recv_publish().await;
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("d/new", &b"after"[..]));
        s.ack(&m).await;
        // Before the broker is stopped: a PUBACK still unread at the shutdown would (rightly)
        // leave the message in flight.
        round_trip(&mut s).await;
        s.disconnect().await;
        b.stop().await;

        // Everything was acknowledged: a third start finds the session with an empty queue.
        let b = start(&dir, sync).await;
        let (mut s, present) = Client::connect(b.addr, &Opts::id("sub").persistent()).await;
        assert!(present);
        if let Some(p) = s.recv_within(QUIET).await {
            panic!("{sync:?}: after everything was acknowledged: {p:?}");
        }
        assert_eq!(b.metric("hmq_queued_messages", ""), 0.0);
        b.stop().await;
    }
}

#[tokio::test]
async fn in_flight_messages_come_back_with_dup_and_their_packet_ids() {
    let dir = store_dir("inflight");
    let b = start(&dir, SyncPolicy::Interval).await;
    let (mut s, _) = Client::connect(b.addr, &Opts::id("s").persistent()).await;
    assert_eq!(s.subscribe(&[("t/#", 2)]).await, [2]);
    let mut p = Client::new(b.addr, "p").await;
    p.publish("t/1", b"one", 1, false).await;
    p.publish("t/2", b"two", 2, false).await;
    p.publish("t/3", b"three", 2, false).await;
    p.publish("t/4", b"four", 1, false).await;
    let one = s.recv_publish().await;
    let two = s.recv_publish().await;
    let three = s.recv_publish().await;
    let four = s.recv_publish().await;
    // "one": never acknowledged. "two": PUBREC sent, PUBCOMP not. "three": acknowledged in full.
    // "four": acknowledged.
    s.send(&ack_bytes(0x50, two.pkid)).await;
    assert_eq!(s.recv().await, Pkt::PubRel(two.pkid));
    s.ack(&three).await;
    s.send(&ack_bytes(0x40, four.pkid)).await;
    round_trip(&mut s).await;
    drop(s); // a network drop: no DISCONNECT
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stop().await;

    let b = start(&dir, SyncPolicy::Interval).await;
    let (mut s, present) = Client::connect(b.addr, &Opts::id("s").persistent()).await;
    assert!(present);
    let again = s.recv_publish().await;
    assert_eq!(
        (again.topic.as_str(), again.pkid, again.dup, again.qos),
        ("t/1", one.pkid, true, 1),
        "unacknowledged QoS 1 resent with DUP and its packet id"
    );
    assert_eq!(
        s.recv().await,
        Pkt::PubRel(two.pkid),
        "QoS 2 past PUBREC: PUBREL again with its packet id"
    );
    s.send(&ack_bytes(0x40, one.pkid)).await;
    s.send(&ack_bytes(0x70, two.pkid)).await;
    s.expect_silence().await;
    let _ = (three, four);
    b.stop().await;
}

#[tokio::test]
async fn a_qos2_id_awaiting_pubrel_survives_so_a_retransmission_is_not_routed_again() {
    let dir = store_dir("awaiting");
    let b = start(&dir, SyncPolicy::Always).await;
    offline_subscriber(&b, "s", "q2", 2).await;
    let (mut p, _) = Client::connect(b.addr, &Opts::id("p").persistent()).await;
    p.send(&publish_bytes("q2", b"once", 2, false, false, 7))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(7));
    drop(p);
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stop().await;

    let b = start(&dir, SyncPolicy::Always).await;
    let (mut p, present) = Client::connect(b.addr, &Opts::id("p").persistent()).await;
    assert!(present);
    // The client did not see PUBREC for sure: it sends the PUBLISH again with DUP.
    p.send(&publish_bytes("q2", b"once", 2, false, true, 7))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(7));
    p.send(&ack_bytes(0x62, 7)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(7));
    let (mut s, present) = Client::connect(b.addr, &Opts::id("s").persistent()).await;
    assert!(present);
    let m = s.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("q2", &b"once"[..]));
    s.ack(&m).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_survive_and_deletions_too() {
    let dir = store_dir("retained");
    let b = start(&dir, SyncPolicy::Interval).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("r/a", b"A", 1, true).await;
    p.publish("r/b", b"B", 0, true).await;
    p.publish("r/c", b"C", 1, true).await;
    p.publish("r/c", b"", 1, true).await; // deletes r/c
    p.publish("r/a", b"A2", 1, true).await; // replaces r/a
    p.disconnect().await;
    b.stop().await;

    let b = start(&dir, SyncPolicy::Interval).await;
    assert_eq!(b.metric("hmq_retained_messages", ""), 2.0);
    let mut s = Client::new(b.addr, "s").await;
    assert_eq!(s.subscribe(&[("r/#", 1)]).await, [1]);
    let mut got = vec![s.recv_publish().await, s.recv_publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        got.iter()
            .map(|m| (m.topic.as_str(), &m.payload[..], m.retain))
            .collect::<Vec<_>>(),
        [("r/a", &b"A2"[..], true), ("r/b", &b"B"[..], true)]
    );
    for m in &got {
        s.ack(m).await;
    }
    round_trip(&mut s).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn a_clean_session_discards_the_stored_one_for_good() {
    let dir = store_dir("clean");
    let b = start(&dir, SyncPolicy::Interval).await;
    offline_subscriber(&b, "c", "x", 1).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("x", b"1", 1, false).await;
    let (s, present) = Client::connect(b.addr, &Opts::id("c")).await; // clean session 1
    assert!(!present);
    s.disconnect().await;
    b.stop().await;

    let b = start(&dir, SyncPolicy::Interval).await;
    assert_eq!(b.metric("hmq_sessions", "state=\"offline\""), 0.0);
    let (mut s, present) = Client::connect(b.addr, &Opts::id("c").persistent()).await;
    assert!(!present, "the discarded session did not come back");
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn the_offline_time_of_a_session_survives_a_restart() {
    let dir = store_dir("expiry");
    let with_expiry = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |c: &mut Config| {
            c.persistence.dir = Some(dir);
            c.session_expiry = 3600;
        }
    };
    let b = TestBroker::start_with(with_expiry(&dir)).await;
    offline_subscriber(&b, "e", "x", 1).await;
    b.stop().await;
    let b = TestBroker::start_with(with_expiry(&dir)).await;
    let now = std::time::Instant::now();
    assert_eq!(
        b.broker.expire_sessions_at(now + Duration::from_secs(3590)),
        0
    );
    // The hour counts from the first disconnect, not from the restart.
    assert_eq!(
        b.broker.expire_sessions_at(now + Duration::from_secs(3601)),
        1
    );
    b.stop().await;
    let b = TestBroker::start_with(with_expiry(&dir)).await;
    assert_eq!(
        b.metric("hmq_sessions", "state=\"offline\""),
        0.0,
        "expired for good"
    );
    b.stop().await;
}

#[tokio::test]
async fn what_is_acknowledged_within_a_commit_never_reaches_the_disk() {
    let dir = store_dir("netting");
    // One commit a minute: everything below happens between two commits.
    let b = TestBroker::start_with(|c| {
        c.persistence.dir = Some(dir.clone());
        c.persistence.sync_interval_ms = 60_000;
    })
    .await;
    let (mut s, _) = Client::connect(b.addr, &Opts::id("s").persistent()).await;
    assert_eq!(s.subscribe(&[("n", 1)]).await, [1]);
    let mut p = Client::new(b.addr, "p").await;
    for i in 0..200u32 {
        p.publish("n", &i.to_be_bytes(), 1, false).await;
        let m = s.recv_publish().await;
        s.ack(&m).await;
    }
    round_trip(&mut s).await;
    // Each message: queue entry and message written, then both cancelled by the PUBACK.
    assert_eq!(
        b.metric("hmq_persist_changes_total", "effect=\"netted\""),
        400.0
    );
    s.disconnect().await;
    p.disconnect().await;
    let written = b.broker.metrics.persist.written.puts.clone();
    b.stop().await;
    // Only the session record reached the disk, with the store's clean-stop mark (at the final
    // commit of the shutdown).
    assert_eq!(written.get(), 2, "keys written");
}

#[tokio::test]
async fn a_full_disk_refuses_new_messages_for_persistent_sessions_and_counts_them() {
    let dir = store_dir("full");
    let b = TestBroker::start_with(|c| {
        c.persistence.dir = Some(dir.clone());
        c.persistence.max_disk_bytes = 1; // already over
    })
    .await;
    offline_subscriber(&b, "s", "f", 1).await;
    let mut p = Client::new(b.addr, "p").await;
    // The disk is measured once a second: wait until the refusal is in force.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        p.publish("f", b"x", 1, false).await;
        if b.metric("hmq_publish_dropped_total", "reason=\"disk_full\"") > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no disk_full refusal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A clean session is not affected.
    let mut c = Client::new(b.addr, "clean").await;
    assert_eq!(c.subscribe(&[("f", 1)]).await, [1]);
    p.publish("f", b"y", 1, false).await;
    assert_eq!(&c.recv_publish().await.payload[..], b"y");
    b.stop().await;
}

#[tokio::test]
async fn a_damaged_store_is_refused_with_an_error_naming_it() {
    let dir = store_dir("damaged");
    let b = start(&dir, SyncPolicy::Always).await;
    offline_subscriber(&b, "s", "d", 1).await;
    let mut p = Client::new(b.addr, "p").await;
    for i in 0..50u32 {
        p.publish("d", &[i as u8; 200], 1, false).await;
    }
    b.stop().await;
    // A record no release of hmq wrote: a session key whose value is garbage.
    {
        let mut store = hmq::persist::backend::Fjall::open(&dir).unwrap();
        hmq::persist::backend::Backend::apply(
            &mut store,
            &[(
                hmq::persist::record::Key::Session(999).encode(),
                Some(vec![1, 0xFF, 0xFF]),
            )],
            true,
        )
        .unwrap();
    }
    let mut config = Config {
        host: "127.0.0.1".into(),
        port: hmq::config::Port(0),
        http_port: None,
        ..Config::default()
    };
    config.persistence.dir = Some(dir.clone());
    let err = hmq::server::Server::bind(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("record S"), "{err}");
}

#[tokio::test]
async fn a_second_broker_cannot_open_a_store_in_use() {
    let dir = store_dir("locked");
    let b = start(&dir, SyncPolicy::Interval).await;
    let mut config = Config {
        host: "127.0.0.1".into(),
        port: hmq::config::Port(0),
        http_port: None,
        ..Config::default()
    };
    config.persistence.dir = Some(dir.clone());
    let err = hmq::server::Server::bind(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    b.stop().await;
    // Released at the stop: the next broker opens it.
    let b = start(&dir, SyncPolicy::Interval).await;
    b.stop().await;
}
