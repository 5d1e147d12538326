//! PUBLISH over real sockets: QoS 0/1/2 in both directions, the QoS downgrade, exactly-once
//! inbound QoS 2, per-subscriber packet ids, the in-flight window and the bounded queue behind it,
//! slow subscribers, RETAIN on live delivery, `$` topics, payloads and invalid topic names
//! (MQTT 3.1.1 sections 3.3 to 3.7, 4.3, 4.4, 4.6 and 4.7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::HashSet;

const QUEUE_FULL: &str = "reason=\"queue_full\"";
const SYS_TOPIC: &str = "reason=\"sys_topic\"";
const DROPPED: &str = "hmq_publish_dropped_total";

/// A clean-session client subscribed to `filters`, asserting every requested QoS is granted.
async fn subscriber(b: &TestBroker, id: &str, filters: &[(&str, u8)]) -> Client {
    let mut c = Client::new(b.addr, id).await;
    let granted = c.subscribe(filters).await;
    let wanted: Vec<u8> = filters.iter().map(|f| f.1).collect();
    assert_eq!(granted, wanted, "SUBACK for {filters:?}");
    c
}

/// Awaits `fut`, failing the test after `WAIT` with `what`.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {WAIT:?}"),
    }
}

#[tokio::test]
async fn delivered_qos_is_min_of_published_and_granted_for_all_nine_combinations() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("m/0", 0), ("m/1", 1), ("m/2", 2)]).await;
    // `Client::publish` checks the publisher's side: nothing for QoS 0, PUBACK for QoS 1,
    // PUBREC -> PUBREL -> PUBCOMP for QoS 2, all with the publisher's packet id.
    let mut p = Client::new(b.addr, "p").await;
    for granted in 0..3u8 {
        for published in 0..3u8 {
            let topic = format!("m/{granted}");
            let payload = format!("published {published} granted {granted}");
            p.publish(&topic, payload.as_bytes(), published, false)
                .await;
            let m = s.recv_publish().await;
            assert_eq!(m.topic, topic);
            assert_eq!(&m.payload[..], payload.as_bytes());
            assert_eq!(
                m.qos,
                published.min(granted),
                "published at QoS {published}, granted QoS {granted}"
            );
            assert!(!m.retain && !m.dup, "{m:?}");
            if m.qos > 0 {
                assert_ne!(
                    m.pkid, 0,
                    "QoS > 0 needs a non-zero packet id [MQTT-2.3.1-1]"
                );
            }
            // QoS 2 outbound: PUBREC -> PUBREL (checked by `ack`) -> PUBCOMP.
            s.ack(&m).await;
        }
    }
    // Exactly one copy each, and no stray acks to the publisher.
    s.expect_silence().await;
    p.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn publisher_acks_carry_the_publishers_packet_ids() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    // QoS 0 is not acknowledged: the first packet back is the PUBACK of the QoS 1 message.
    p.send(&publish_bytes("nobody/listens", b"q0", 0, false, false, 0))
        .await;
    p.send(&publish_bytes(
        "nobody/listens",
        b"q1",
        1,
        false,
        false,
        0xBEEF,
    ))
    .await;
    assert_eq!(p.recv().await, Pkt::PubAck(0xBEEF));
    p.send(&publish_bytes(
        "nobody/listens",
        b"q2",
        2,
        false,
        false,
        0x0102,
    ))
    .await;
    assert_eq!(p.recv().await, Pkt::PubRec(0x0102));
    p.send(&ack_bytes(0x62, 0x0102)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(0x0102));
    // A PUBREL is always answered with a PUBCOMP carrying its packet id [MQTT-4.3.3-2 Method]:
    // even for an id the broker no longer knows (a retried PUBREL after a lost PUBCOMP).
    p.send(&ack_bytes(0x62, 0x0102)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(0x0102));
    p.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn qos2_retransmission_before_pubrel_is_delivered_exactly_once() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("x/t", 2)]).await;
    let mut p = Client::new(b.addr, "p").await;

    p.send(&publish_bytes("x/t", b"first", 2, false, false, 9))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(9));
    // The publisher did not see the PUBREC (as far as the broker knows) and retries with DUP=1.
    p.send(&publish_bytes("x/t", b"first", 2, false, true, 9))
        .await;
    assert_eq!(
        p.recv().await,
        Pkt::PubRec(9),
        "a retransmission is acknowledged again"
    );
    p.send(&ack_bytes(0x62, 9)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(9));

    let m = s.recv_publish().await;
    assert_eq!((&m.payload[..], m.qos), (&b"first"[..], 2));
    s.ack(&m).await;
    s.expect_silence().await; // no second copy

    // After PUBCOMP the id is free: a new message with the same id is a new message.
    p.send(&publish_bytes("x/t", b"second", 2, false, false, 9))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(9));
    p.send(&ack_bytes(0x62, 9)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(9));
    let m = s.recv_publish().await;
    assert_eq!(&m.payload[..], b"second");
    s.ack(&m).await;

    // Two QoS 2 messages in flight at once from one publisher, each retried: one copy each.
    for id in [10u16, 11] {
        let body = format!("m{id}");
        p.send(&publish_bytes("x/t", body.as_bytes(), 2, false, false, id))
            .await;
        assert_eq!(p.recv().await, Pkt::PubRec(id));
    }
    for id in [10u16, 11] {
        let body = format!("m{id}");
        p.send(&publish_bytes("x/t", body.as_bytes(), 2, false, true, id))
            .await;
        assert_eq!(p.recv().await, Pkt::PubRec(id));
    }
    for id in [10u16, 11] {
        p.send(&ack_bytes(0x62, id)).await;
        assert_eq!(p.recv().await, Pkt::PubComp(id));
    }
    let (m10, m11) = (s.recv_publish().await, s.recv_publish().await);
    s.ack(&m10).await;
    s.ack(&m11).await;
    let mut got = vec![m10.payload, m11.payload];
    got.sort();
    assert_eq!(got, [&b"m10"[..], &b"m11"[..]]);
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn qos2_exactly_once_holds_across_a_publisher_reconnect() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("eo/t", 2)]).await;
    let opts = Opts::id("p").persistent();
    let (mut p, _) = Client::connect(b.addr, &opts).await;
    p.send(&publish_bytes("eo/t", b"once", 2, false, false, 5))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(5));
    // The connection drops before the publisher saw the PUBREC (as far as it knows): on the
    // resumed session it sends the PUBLISH again with DUP=1 [MQTT-4.4.0-1].
    drop(p);
    let (mut p, present) = Client::connect(b.addr, &opts).await;
    assert!(present);
    p.send(&publish_bytes("eo/t", b"once", 2, false, true, 5))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(5));
    p.send(&ack_bytes(0x62, 5)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(5));

    let m = s.recv_publish().await;
    assert_eq!(&m.payload[..], b"once");
    s.ack(&m).await;
    s.expect_silence().await; // exactly once
    b.stop().await;
}

#[tokio::test]
async fn incoming_dup_flag_is_not_propagated_to_subscribers() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("dup/t", 2)]).await;
    let mut p = Client::new(b.addr, "p").await;
    // [MQTT-3.3.1-3]: the DUP flag of an incoming PUBLISH is not propagated.
    p.send(&publish_bytes("dup/t", b"d1", 1, false, true, 3))
        .await;
    assert_eq!(p.recv().await, Pkt::PubAck(3));
    p.send(&publish_bytes("dup/t", b"d2", 2, false, true, 4))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(4));
    p.send(&ack_bytes(0x62, 4)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(4));
    for (payload, qos) in [(&b"d1"[..], 1), (&b"d2"[..], 2)] {
        let m = s.recv_publish().await;
        assert_eq!((&m.payload[..], m.qos, m.dup), (payload, qos, false));
        s.ack(&m).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn qos2_outbound_flow_and_window_until_pubcomp() {
    let b = TestBroker::start_with(|c| c.max_inflight = 1).await;
    let mut s = subscriber(&b, "s", &[("o/t", 2)]).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("o/t", b"one", 2, false).await;
    p.publish("o/t", b"two", 2, false).await;

    let m = s.recv_publish().await;
    assert_eq!((&m.payload[..], m.qos, m.dup), (&b"one"[..], 2, false));
    assert_ne!(m.pkid, 0);
    s.expect_silence().await; // window of 1
    s.send(&ack_bytes(0x50, m.pkid)).await; // PUBREC
    assert_eq!(s.recv().await, Pkt::PubRel(m.pkid));
    s.send(&ack_bytes(0x70, m.pkid)).await; // PUBCOMP completes it
    let m2 = s.recv_publish().await;
    assert_eq!((&m2.payload[..], m2.qos), (&b"two"[..], 2));
    assert_ne!(m2.pkid, 0);
    s.ack(&m2).await;
    s.expect_silence().await; // completed messages are not sent again
    b.stop().await;
}

#[tokio::test]
async fn qos2_outbound_resumes_with_dup_publish_or_pubrel_after_reconnect() {
    let b = TestBroker::start().await;
    let opts = Opts::id("s").persistent();
    let (mut s, _) = Client::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(&[("r/+", 2)]).await, [2]);
    let mut p = Client::new(b.addr, "p").await;
    p.publish("r/released", b"a", 2, false).await;
    p.publish("r/unacked", b"b", 2, false).await;
    let a = s.recv_publish().await;
    let u = s.recv_publish().await;
    assert_eq!((&a.payload[..], &u.payload[..]), (&b"a"[..], &b"b"[..]));
    // PUBREC the first (the broker answers PUBREL), leave the second unacknowledged.
    s.send(&ack_bytes(0x50, a.pkid)).await;
    assert_eq!(s.recv().await, Pkt::PubRel(a.pkid));
    s.disconnect().await;

    let (mut s, present) = Client::connect(b.addr, &opts).await;
    assert!(present);
    // [MQTT-4.4.0-1]: PUBREL again for the message past PUBREC, the PUBLISH again with DUP=1
    // and the same packet id for the other.
    assert_eq!(s.recv().await, Pkt::PubRel(a.pkid));
    let again = s.recv_publish().await;
    assert!(again.dup, "redelivery must set DUP: {again:?}");
    assert_eq!(
        (&again.payload[..], again.pkid, again.qos),
        (&b"b"[..], u.pkid, 2)
    );
    s.send(&ack_bytes(0x70, a.pkid)).await;
    s.ack(&again).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn packet_ids_are_per_subscriber_and_unique_in_flight() {
    let b = TestBroker::start().await;
    let mut a = subscriber(&b, "a", &[("ids/t", 1)]).await;
    let mut c = subscriber(&b, "c", &[("ids/t", 2), ("ids/warmup", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    // Put c's packet id counter somewhere else than a's.
    p.publish("ids/warmup", b"w", 1, false).await;
    let w = c.recv_publish().await;
    assert_ne!(w.pkid, 0);

    // The publisher uses the same packet id for every message (legal once each is acked).
    for i in 0..5u8 {
        p.send(&publish_bytes("ids/t", &[i], 1, false, false, 0x4242))
            .await;
        assert_eq!(p.recv().await, Pkt::PubAck(0x4242));
    }
    // Neither subscriber acks: all their messages are in flight at once.
    let mut a_ids = HashSet::new();
    let mut c_ids = HashSet::from([w.pkid]);
    for i in 0..5u8 {
        let m = a.recv_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&[i][..], 1));
        assert_ne!(m.pkid, 0);
        assert!(
            a_ids.insert(m.pkid),
            "a got packet id {} twice in flight",
            m.pkid
        );
        let m = c.recv_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&[i][..], 1));
        assert_ne!(m.pkid, 0);
        assert!(
            c_ids.insert(m.pkid),
            "c got packet id {} twice in flight",
            m.pkid
        );
    }
    a.expect_silence().await;
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn inflight_window_holds_back_messages_until_acked_in_order() {
    let b = TestBroker::start_with(|c| c.max_inflight = 2).await;
    let mut s = subscriber(&b, "s", &[("w/t", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    for i in 1..=4u8 {
        p.publish("w/t", &[i], 1, false).await;
    }
    let m1 = s.recv_publish().await;
    let m2 = s.recv_publish().await;
    assert_eq!((&m1.payload[..], &m2.payload[..]), (&[1u8][..], &[2u8][..]));
    s.expect_silence().await; // window full
    s.ack(&m1).await;
    let m3 = s.recv_publish().await;
    assert_eq!(&m3.payload[..], &[3u8]);
    s.expect_silence().await; // full again (m2 and m3)
    s.ack(&m3).await;
    let m4 = s.recv_publish().await;
    assert_eq!(&m4.payload[..], &[4u8]);
    s.ack(&m2).await;
    s.ack(&m4).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn bounded_queue_behind_the_window_drops_and_counts_overflow() {
    let b = TestBroker::start_with(|c| {
        c.max_inflight = 1;
        c.max_queued_messages = 3;
    })
    .await;
    let mut s = subscriber(&b, "s", &[("q/t", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    let before = b.metric(DROPPED, QUEUE_FULL);

    p.publish("q/t", &[1], 1, false).await;
    let first = s.recv_publish().await; // in flight, not acked: the window is full
    assert_eq!(&first.payload[..], &[1u8]);
    for i in 2..=10u8 {
        // The publisher is acknowledged whatever happens to the message downstream.
        p.publish("q/t", &[i], 1, false).await;
    }
    assert_eq!(
        b.metric(DROPPED, QUEUE_FULL) - before,
        6.0,
        "3 queued behind the window, 6 dropped"
    );

    let mut got = vec![first.payload[0]];
    let mut last = first;
    for _ in 0..3 {
        s.ack(&last).await;
        last = s.recv_publish().await;
        got.push(last.payload[0]);
    }
    s.ack(&last).await;
    s.expect_silence().await;
    assert_eq!(got, [1, 2, 3, 4]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_subscriber_does_not_block_publisher_or_other_subscribers() {
    const N: usize = 2000;
    const SIZE: usize = 4096;
    const STEP: usize = 50;
    let b = TestBroker::start_with(|c| c.max_queued_messages = 100).await;
    // Subscribes, then never reads its socket again.
    let slow = subscriber(&b, "slow", &[("bulk/t", 0)]).await;
    let fast = subscriber(&b, "fast", &[("bulk/t", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let reader = tokio::spawn(async move {
        let mut fast = fast;
        for i in 0..N {
            let m = fast.recv_publish().await;
            assert_eq!(m.payload.len(), SIZE);
            assert_eq!(
                m.payload[..8],
                (i as u64).to_be_bytes(),
                "message {i} in order"
            );
            if (i + 1) % STEP == 0 {
                tx.send(i + 1).unwrap();
            }
        }
        fast
    });

    let mut payload = vec![0xA5u8; SIZE];
    for batch in 0..N / STEP {
        let mut bytes = Vec::with_capacity(STEP * (SIZE + 16));
        for j in 0..STEP {
            let i = batch * STEP + j;
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            bytes.extend(publish_bytes("bulk/t", &payload, 0, false, false, 0));
        }
        within("the broker reading the publisher", p.send(&bytes)).await;
        // The publisher's QoS 1 flow keeps going...
        let id = batch as u16 + 1;
        p.send(&publish_bytes("other/t", b"", 1, false, false, id))
            .await;
        assert_eq!(p.recv().await, Pkt::PubAck(id), "batch {batch}");
        // ...and so does the other subscriber.
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(n)) => assert_eq!(n, (batch + 1) * STEP),
            Ok(None) => match reader.await {
                Err(e) => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => unreachable!("the reader reports every batch"),
            },
            Err(_) => panic!("the fast subscriber stalled in batch {batch}"),
        }
    }
    let mut fast = reader.await.unwrap();
    fast.expect_silence().await;
    assert!(
        b.metric(DROPPED, QUEUE_FULL) > 0.0,
        "the slow subscriber's backlog is bounded: overflow is dropped and counted"
    );
    drop(slow);
    b.stop().await;
}

#[tokio::test]
async fn pipelined_publishes_are_acked_and_delivered_in_order() {
    const N: u16 = 200;
    let b = TestBroker::start().await;
    let mut s1 = subscriber(&b, "s1", &[("pipe/t", 1)]).await;
    let mut s2 = subscriber(&b, "s2", &[("pipe/t", 2)]).await;
    let mut p = Client::new(b.addr, "p").await;
    // Everything in one write, no waiting for acks: QoS 1 then QoS 2 on one topic.
    let mut bytes = Vec::new();
    for id in 1..=N {
        let qos = if id <= N / 2 { 1 } else { 2 };
        bytes.extend(publish_bytes(
            "pipe/t",
            &id.to_be_bytes(),
            qos,
            false,
            false,
            id,
        ));
    }
    p.send(&bytes).await;
    for id in 1..=N {
        let want = if id <= N / 2 {
            Pkt::PubAck(id)
        } else {
            Pkt::PubRec(id)
        };
        assert_eq!(p.recv().await, want);
    }
    let rels: Vec<u8> = (N / 2 + 1..=N).flat_map(|id| ack_bytes(0x62, id)).collect();
    p.send(&rels).await;
    for id in N / 2 + 1..=N {
        assert_eq!(p.recv().await, Pkt::PubComp(id));
    }

    // The QoS 1 subscriber: everything at QoS 1, in order, through a window smaller than N.
    for id in 1..=N {
        let m = s1.recv_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&id.to_be_bytes()[..], 1));
        s1.ack(&m).await;
    }
    // The QoS 2 subscriber: PUBRELs interleave with the next PUBLISH packets, so answer packets
    // as they come.
    let mut next = 1u16;
    let mut open = HashSet::new();
    while next <= N || !open.is_empty() {
        match s2.recv().await {
            Pkt::Publish(m) => {
                assert_eq!(&m.payload[..], &next.to_be_bytes(), "in order");
                assert_eq!(m.qos, if next <= N / 2 { 1 } else { 2 });
                next += 1;
                if m.qos == 1 {
                    s2.send(&ack_bytes(0x40, m.pkid)).await;
                } else {
                    assert!(open.insert(m.pkid), "packet id {} reused in flight", m.pkid);
                    s2.send(&ack_bytes(0x50, m.pkid)).await;
                }
            }
            Pkt::PubRel(id) => {
                assert!(open.remove(&id), "PUBREL for {id}, not awaiting one");
                s2.send(&ack_bytes(0x70, id)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    s1.expect_silence().await;
    s2.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn a_publisher_subscribed_to_its_topic_gets_its_own_message() {
    let b = TestBroker::start().await;
    let mut c = subscriber(&b, "c", &[("self/t", 1)]).await;
    c.send(&publish_bytes("self/t", b"me", 1, false, false, 5))
        .await;
    // MQTT 3.1.1 has no "no local": the PUBACK and the PUBLISH both come, in either order.
    let (a, m) = match (c.recv().await, c.recv().await) {
        (Pkt::PubAck(5), Pkt::Publish(m)) | (Pkt::Publish(m), Pkt::PubAck(5)) => (5, m),
        other => panic!("expected PUBACK 5 and the PUBLISH, got {other:?}"),
    };
    assert_eq!(a, 5);
    assert_eq!((&m.payload[..], m.qos), (&b"me"[..], 1));
    c.ack(&m).await;
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn retain_flag_is_cleared_on_live_delivery() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("rl/t", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("rl/t", b"kept", 1, true).await;
    let m = s.recv_publish().await;
    assert_eq!(&m.payload[..], b"kept");
    assert!(
        !m.retain,
        "live delivery carries RETAIN=0 [MQTT-3.3.1-9]: {m:?}"
    );
    // Control: it was retained, and a new subscription gets it with RETAIN=1.
    let mut late = Client::new(b.addr, "late").await;
    assert_eq!(late.subscribe(&[("rl/t", 1)]).await, [1]);
    let m = late.recv_publish().await;
    assert!(m.retain && &m.payload[..] == b"kept", "{m:?}");
    b.stop().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards_and_sys_is_read_only() {
    let b = TestBroker::start().await;
    let mut all = subscriber(&b, "all", &[("#", 1)]).await;
    let mut plus = subscriber(&b, "plus", &[("+/x", 1), ("+/+/x", 1)]).await;
    let mut dollar = subscriber(&b, "dollar", &[("$foo/#", 1)]).await;
    let mut sys = subscriber(&b, "sys", &[("$SYS/x", 1), ("$SYS/y/#", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    let sys_before = b.metric(DROPPED, SYS_TOPIC);

    p.publish("$foo/x", b"foo", 1, false).await;
    p.publish("$foo/a/x", b"foo2", 1, false).await;
    let m = dollar.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("$foo/x", &b"foo"[..]));
    assert_eq!(dollar.recv_publish().await.topic, "$foo/a/x");

    // Clients cannot publish to $SYS: acknowledged (QoS 1 and 2) but never delivered.
    p.publish("$SYS/x", b"forged", 1, false).await;
    p.publish("$SYS/y/z", b"forged", 2, false).await;
    // Nor stored when retained.
    p.publish("$SYS/x", b"forged", 1, true).await;
    assert_eq!(b.metric(DROPPED, SYS_TOPIC) - sys_before, 3.0);
    let mut late = Client::new(b.addr, "late").await;
    assert_eq!(late.subscribe(&[("$SYS/x", 1)]).await, [1]);
    late.expect_silence().await;

    // Control: the wildcard subscriptions are live. In-order delivery means that had any `$`
    // message reached them, it would come first.
    p.publish("foo/x", b"plain", 1, false).await;
    for c in [&mut all, &mut plus] {
        let m = c.recv_publish().await;
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("foo/x", &b"plain"[..]));
        c.ack(&m).await;
        c.expect_silence().await;
    }
    dollar.expect_silence().await;
    sys.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn large_and_binary_payloads_round_trip_intact() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("big/t", 2)]).await;
    let mut p = Client::new(b.addr, "p").await;

    let big: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let cases: [(&[u8], u8); 5] = [
        (&big, 1),
        (&big, 2),
        (&every_byte, 0),
        (&every_byte, 2),
        (b"", 1),
    ];
    for (payload, qos) in cases {
        p.publish("big/t", payload, qos, false).await;
        let m = s.recv_publish().await;
        assert_eq!(m.qos, qos);
        assert_eq!(m.payload.len(), payload.len());
        assert!(
            m.payload[..] == payload[..],
            "payload of {} bytes altered",
            payload.len()
        );
        s.ack(&m).await;
    }
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn invalid_publish_closes_only_that_connection() {
    let b = TestBroker::start().await;
    let mut watcher = subscriber(&b, "watcher", &[("#", 1)]).await;
    let mut bystander = Client::new(b.addr, "bystander").await;

    let mut bad_utf8 = vec![0, 3, b'a', 0xC3, 0x28, 0, 1];
    bad_utf8.extend_from_slice(b"payload");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("+ in topic", publish_bytes("a/+", b"x", 1, false, false, 1)),
        ("# in topic", publish_bytes("a/#", b"x", 1, false, false, 1)),
        ("topic #", publish_bytes("#", b"x", 0, false, false, 0)),
        ("topic +", publish_bytes("+", b"x", 1, false, false, 1)),
        (
            "wildcard inside a level",
            publish_bytes("a/b+c", b"x", 1, false, false, 1),
        ),
        ("empty topic", publish_bytes("", b"x", 1, false, false, 1)),
        (
            "U+0000 in topic",
            publish_bytes("a\0b", b"x", 1, false, false, 1),
        ),
        ("invalid UTF-8 topic", frame(0x32, &bad_utf8)),
        // [MQTT-3.3.1-4]: both QoS bits set.
        ("QoS 3", publish_bytes("a/b", b"x", 3, false, false, 1)),
        // [MQTT-2.3.1-1]: QoS > 0 needs a non-zero packet id.
        (
            "packet id 0",
            publish_bytes("a/b", b"x", 1, false, false, 0),
        ),
    ];
    for (i, (case, bytes)) in cases.iter().enumerate() {
        let mut c = Client::new(b.addr, &format!("bad{i}")).await;
        c.send(bytes).await;
        eprintln!("case: {case}"); // names the case if `expect_closed` fails
        let seen = c.expect_closed().await;
        assert!(
            seen.is_empty(),
            "{case}: expected a close only, got {seen:?}"
        );
    }

    // Everyone else is unaffected, and nothing from the bad publishes was routed.
    bystander.send(&[0xC0, 0]).await;
    assert_eq!(bystander.recv().await, Pkt::PingResp);
    let mut p = Client::new(b.addr, "p").await;
    p.publish("ok/t", b"fine", 1, false).await;
    let m = watcher.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ok/t", &b"fine"[..]));
    watcher.ack(&m).await;
    watcher.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn a_retained_message_nobody_subscribes_to_is_not_counted_as_dropped() {
    let b = TestBroker::start().await;
    let dropped = || b.metric("hmq_publish_dropped_total", "reason=\"no_subscriber\"");
    let mut p = Client::new(b.addr, "retainer").await;
    p.publish("nobody/kept", b"state", 1, true).await;
    p.publish("nobody/kept", b"", 1, true).await; // deletes it
    assert_eq!(dropped(), 0.0, "stored and deleted, not lost");
    p.publish("nobody/live", b"x", 1, false).await;
    assert_eq!(dropped(), 1.0, "a plain message nobody receives is");
    b.stop().await;
}
