//! Idle plain-TCP connections park without a task (`connection/park.rs`) and come back for
//! everything a connected client is owed: messages, PINGREQ, acknowledgements, keepalive expiry,
//! takeover, a network close (will), the connection limit and the shutdown drain. Each test
//! checks with `hmq_connections_parked` that the connection really was parked at the moment
//! that matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a connection takes to park after its last activity: two quiet periods of
/// `PARK_AFTER` (2 s) plus slack.
const PARK_WAIT: Duration = Duration::from_secs(8);

fn parked(b: &TestBroker) -> i64 {
    b.broker.metrics.connections_parked.get()
}

/// Waits until exactly `n` connections are parked.
async fn wait_parked(b: &TestBroker, n: i64) {
    let deadline = tokio::time::Instant::now() + PARK_WAIT;
    while parked(b) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections parked, expected {n}",
            parked(b)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PINGREQ/PINGRESP round trip.
async fn ping(c: &mut Client) {
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
}

#[tokio::test]
async fn a_fresh_idle_connection_parks_and_answers_when_spoken_to() {
    let b = TestBroker::start().await;
    let mut c = Client::new(b.addr, "p1").await;
    // Idle right after its CONNACK: parked at once.
    wait_parked(&b, 1).await;
    assert_eq!(b.metric("hmq_connections_current", "listener=\"tcp\""), 1.0);
    ping(&mut c).await;
    // Spoken to, it is a task again until it has been quiet for a while.
    assert_eq!(parked(&b), 0);
    wait_parked(&b, 1).await;
    assert_eq!(c.subscribe(&[("a/b", 1)]).await, vec![1]);
    wait_parked(&b, 1).await;
    ping(&mut c).await;
    c.disconnect().await;
    wait_parked(&b, 0).await;
    b.stop().await;
}

#[tokio::test]
async fn a_parked_subscriber_gets_its_messages_once_and_in_order() {
    let b = TestBroker::start().await;
    let mut sub = Client::new(b.addr, "sub").await;
    assert_eq!(sub.subscribe(&[("t/#", 1)]).await, vec![1]);
    wait_parked(&b, 1).await;
    let mut publisher = Client::new(b.addr, "pub").await;
    wait_parked(&b, 2).await;
    for i in 0..20u8 {
        publisher.publish("t/x", &[i], 1, false).await;
    }
    for i in 0..20u8 {
        let m = sub.recv_publish().await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            ("t/x", &[i][..], 1)
        );
        sub.ack(&m).await;
    }
    sub.expect_silence().await;
    // Both park again, and the next message still arrives.
    wait_parked(&b, 2).await;
    publisher.publish("t/y", b"again", 0, false).await;
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("t/y", &b"again"[..]));
    b.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_sent_to_a_parked_connection_is_handled() {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, &Opts::id("s").persistent()).await.0;
    sub.subscribe(&[("q", 1)]).await;
    let mut publisher = Client::new(b.addr, "pub").await;
    publisher.publish("q", b"m1", 1, false).await;
    let m = sub.recv_publish().await;
    // Parks with the message in flight (unacknowledged).
    wait_parked(&b, 2).await;
    let session = b.broker.sessions.get("s").unwrap();
    assert_eq!(session.inflight(), 1);
    sub.ack(&m).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while session.inflight() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "PUBACK not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Acknowledged: a reconnect gets no redelivery.
    sub.disconnect().await;
    let (mut again, present) = Client::connect(b.addr, &Opts::id("s").persistent()).await;
    assert!(present);
    again.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn keepalive_expiry_closes_a_parked_connection_and_publishes_its_will() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("will/#", 1)]).await;
    let (mut quiet, _) = Client::connect(
        b.addr,
        &Opts::id("quiet")
            .keep_alive(1)
            .will("will/quiet", b"gone", 1, false),
    )
    .await;
    let start = tokio::time::Instant::now();
    // Parked while silent (the watcher may or may not have parked yet).
    let deadline = start + Duration::from_millis(1000);
    while parked(&b) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    quiet.expect_keepalive_close(start).await;
    let will = watcher.recv_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("will/quiet", &b"gone"[..])
    );
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"keepalive_timeout\""),
        1.0
    );
    b.stop().await;
}

#[tokio::test]
async fn a_parked_connection_closed_by_the_network_publishes_its_will() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("will/#", 1)]).await;
    let (mut c, _) = Client::connect(
        b.addr,
        &Opts::id("leaver").will("will/leaver", b"lost", 1, false),
    )
    .await;
    wait_parked(&b, 2).await;
    c.stream.shutdown().await.unwrap();
    assert_eq!(c.expect_closed().await, []);
    let will = watcher.recv_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("will/leaver", &b"lost"[..])
    );
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"peer_closed\""),
        1.0
    );
    assert_eq!(b.metric("hmq_connections_current", "listener=\"tcp\""), 1.0);
    b.stop().await;
}

#[tokio::test]
async fn a_parked_connection_is_taken_over() {
    let b = TestBroker::start().await;
    let (mut old, _) = Client::connect(b.addr, &Opts::id("dev").persistent()).await;
    old.subscribe(&[("cmd/dev", 1)]).await;
    wait_parked(&b, 1).await;
    let (mut new, present) = Client::connect(b.addr, &Opts::id("dev").persistent()).await;
    assert!(present, "the session moved to the new connection");
    assert_eq!(old.expect_closed().await, []);
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"takeover\""),
        1.0
    );
    let mut publisher = Client::new(b.addr, "pub").await;
    publisher.publish("cmd/dev", b"on", 1, false).await;
    let m = new.recv_publish().await;
    assert_eq!(&m.payload[..], b"on");
    b.stop().await;
}

#[tokio::test]
async fn shutdown_drains_parked_connections() {
    let b = TestBroker::start().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(Client::new(b.addr, &format!("c{i}")).await);
    }
    wait_parked(&b, 5).await;
    let stopping = tokio::spawn(b.stop());
    for mut c in clients {
        assert_eq!(c.expect_closed().await, []);
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn parked_connections_keep_their_place_under_max_connections() {
    let b = TestBroker::start_with(|c| c.max_connections = 2).await;
    let mut c1 = Client::new(b.addr, "m1").await;
    let _c2 = Client::new(b.addr, "m2").await;
    wait_parked(&b, 2).await;
    let refused = b.metric("hmq_connects_refused_total", "reason=\"max_connections\"");
    let mut c3 = Client::raw(b.addr).await;
    let _ = c3.stream.write_all(&connect_bytes(&Opts::id("m3"))).await;
    assert_eq!(c3.expect_closed().await, [], "third connection refused");
    assert_eq!(
        b.metric("hmq_connects_refused_total", "reason=\"max_connections\"") - refused,
        1.0
    );
    // A parked connection that leaves gives its place back.
    c1.send(&[0xE0, 0]).await;
    assert_eq!(c1.expect_closed().await, []);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Client::raw(b.addr).await;
        let _ = c.stream.write_all(&connect_bytes(&Opts::id("m4"))).await;
        let mut ack = [0u8; 4];
        match tokio::time::timeout(WAIT, c.stream.read_exact(&mut ack)).await {
            Ok(Ok(_)) => {
                assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
                break;
            }
            Ok(Err(_)) => {} // refused: the place is not free yet
            Err(_) => panic!("neither CONNACK nor close"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;
}
