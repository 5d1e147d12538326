//! Flow control over real sockets: many publishers feeding one subscriber are slowed down to
//! what it drains (nothing dropped, nothing stuck), while a subscriber that does not read never
//! holds up a publisher whose messages also go elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// Sends `n` QoS 1 PUBLISHes in one write, then reads the `n` PUBACKs.
async fn burst(c: &mut Client, topic: &str, n: u16) {
    let mut bytes = Vec::new();
    for i in 1..=n {
        bytes.extend(publish_bytes(topic, &i.to_be_bytes(), 1, false, false, i));
    }
    c.send(&bytes).await;
    for _ in 0..n {
        match c.recv().await {
            Pkt::PubAck(_) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_is_slowed_to_the_subscriber_not_dropped() {
    // A queue far smaller than what the publishers send at once: without flow control most of
    // it would overflow.
    let b = TestBroker::start_with(|c| c.max_queued_messages = 2000).await;
    let (mut sub, _) = Client::connect(b.addr, &Opts::id("sink")).await;
    sub.subscribe(&[("in/+", 1)]).await;
    const PUBLISHERS: usize = 20;
    const EACH: u16 = 1000;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let addr = b.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(addr, &format!("pub{p}")).await;
            burst(&mut c, &format!("in/{p}"), EACH).await;
        }));
    }
    // Receive everything, in order per publisher.
    let mut next = [1u16; PUBLISHERS];
    for _ in 0..PUBLISHERS * usize::from(EACH) {
        let m = sub.recv_publish().await;
        let p: usize = m.topic["in/".len()..].parse().unwrap();
        let seq = u16::from_be_bytes([m.payload[0], m.payload[1]]);
        assert_eq!(seq, next[p], "publisher {p} out of order");
        next[p] += 1;
        sub.ack(&m).await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"queue_full\""),
        0.0
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_hold_up_a_publisher_with_other_subscribers() {
    let b = TestBroker::start_with(|c| c.max_queued_messages = 500).await;
    // One subscriber that never reads, one that does.
    let (mut stuck, _) = Client::connect(b.addr, &Opts::id("stuck")).await;
    stuck.subscribe(&[("t", 1)]).await;
    let (mut live, _) = Client::connect(b.addr, &Opts::id("live")).await;
    live.subscribe(&[("t", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    let publisher = tokio::spawn(async move {
        for _ in 0..5 {
            burst(&mut p, "t", 1000).await;
        }
    });
    // The publisher gets all its acknowledgements although one subscriber reads nothing: the
    // stuck subscriber's queue overflows and the overflow is counted.
    let mut received = 0;
    while let Some(Pkt::Publish(m)) = live.recv_within(Duration::from_secs(2)).await {
        live.ack(&m).await;
        received += 1;
    }
    tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        received >= 500,
        "the live subscriber kept receiving: {received}"
    );
    assert!(b.metric("hmq_publish_dropped_total", "reason=\"queue_full\"") > 0.0);
    drop(stuck);
    b.stop().await;
}
