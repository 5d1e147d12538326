//! Limits over real sockets: the CONNECT timeout, the packet size (from the fixed header), the
//! connection count, topic length and depth, and QoS 2 messages awaiting PUBREL. A breach closes
//! that connection, other clients never notice, and the broker keeps serving. MQTT 3.1.1
//! sections 3.1, 3.3, 4.8.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/bad_input.rs"]
mod bad_input;
mod common;
#[path = "common/logs.rs"]
mod logs;

use bad_input::*;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connect_timeout_closes_silent_and_stalled_connections() {
    let b = TestBroker::start_with(|c| c.connect_timeout = 1).await;
    let mut by = Bystander::new(b.addr).await;
    let label = ("hmq_connects_refused_total", "reason=\"connect_timeout\"");
    let before = b.metric(label.0, label.1);

    let start = Instant::now();
    let mut silent = Client::raw(b.addr).await;
    let mut stalled = Client::raw(b.addr).await;
    let connect = connect_bytes(&Opts::id("stalled"));
    stalled.send(&connect[..connect.len() / 2]).await;

    let limit = Duration::from_secs(4);
    assert_eq!(
        silent.expect_closed_within(limit).await,
        [],
        "nothing sent to a silent connection"
    );
    let t = start.elapsed();
    assert!(
        t >= Duration::from_millis(900),
        "silent connection closed after {t:?}, before the 1 s connect timeout"
    );
    assert_eq!(stalled.expect_closed_within(limit).await, []);
    let t = start.elapsed();
    assert!(
        t >= Duration::from_millis(900),
        "stalled closed after {t:?}"
    );
    assert_eq!(b.metric(label.0, label.1) - before, 2.0);

    // Connected clients (older than the timeout by now) are not affected.
    by.check().await;
    b.stop().await;
}

#[tokio::test]
async fn connect_sent_in_pieces_within_the_timeout_is_accepted() {
    let b = TestBroker::start_with(|c| c.connect_timeout = 2).await;
    let mut c = Client::raw(b.addr).await;
    let connect = connect_bytes(&Opts::id("pieces"));
    let (first, rest) = connect.split_at(3);
    c.send(first).await;
    c.expect_silence().await; // also paces the second write
    c.send(rest).await;
    assert_eq!(
        c.recv().await,
        Pkt::ConnAck {
            session_present: false,
            code: 0
        }
    );
    sync(&mut c).await;
    b.stop().await;
}

#[tokio::test]
async fn max_packet_size_is_enforced_from_the_fixed_header() {
    let b = TestBroker::start_with(|c| c.max_packet_size = 1024).await;
    let mut by = Bystander::new(b.addr).await;
    let mut sub = Client::new(b.addr, "big-sub").await;
    assert_eq!(sub.subscribe(&[("big", 0)]).await, [0]);
    let mut p = Client::new(b.addr, "big-pub").await;

    // Whole packet sizes (fixed header included) 1000 and exactly 1024: accepted and delivered.
    for total in [1000usize, 1024] {
        let packet = publish_bytes("big", &vec![7; total - 8], 0, false, false, 0);
        assert_eq!(packet.len(), total);
        p.send(&packet).await;
        let m = sub.recv_publish().await;
        assert_eq!((m.topic.as_str(), m.payload.len()), ("big", total - 8));
    }
    sync(&mut p).await;

    let cases = vec![
        case(
            "1025-byte PUBLISH",
            publish_bytes("big", &[7; 1017], 0, false, false, 0),
        ),
        case(
            "2000-byte PUBLISH",
            publish_bytes("big", &[7; 1992], 1, false, false, 1),
        ),
        case(
            "2000-byte SUBSCRIBE",
            subscribe_bytes(1, &[("f".repeat(1990).as_str(), 0)]),
        ),
    ];
    let limit_before = b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1);
    run_cases(&b, &mut by, true, cases, vec![], ANY_DISCONNECT).await;
    let limit_moved = b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1) - limit_before;
    sub.expect_silence().await;

    // Only a fixed header announcing ~192 MiB: closed at once, without waiting for (or
    // allocating) the body. keepalive is 60 s, so an open connection would stay open.
    let huge = [0x30, 0x80, 0x80, 0x80, 0x60];
    let quick = Duration::from_secs(1);
    let mut c = Client::new(b.addr, "huge").await;
    c.send(&huge).await;
    assert_eq!(c.expect_closed_within(quick).await, []);
    // The same before CONNECT, and for a CONNECT announcing 2000 bytes.
    let mut c = Client::raw(b.addr).await;
    c.send(&huge).await;
    assert_eq!(c.expect_closed_within(quick).await, []);
    let mut c = Client::raw(b.addr).await;
    c.send(&[0x10, 0xD0, 0x0F]).await;
    assert_eq!(c.expect_closed_within(quick).await, []);
    by.check().await;
    // maxPacketSize is a configured limit: `Close::Limit` ("the client exceeded a configured
    // limit"), counted as limit_exceeded, not as a protocol error.
    assert_eq!(
        limit_moved, 3.0,
        "oversized packets must be counted as hmq_disconnects_total{{reason=\"limit_exceeded\"}}"
    );
    b.stop().await;
}

/// Opens a connection and sends CONNECT: `Some` on CONNACK 0, `None` if the broker closed the
/// connection instead.
async fn try_connect(addr: SocketAddr, id: &str) -> Option<Client> {
    let mut c = Client::raw(addr).await;
    if c.stream
        .write_all(&connect_bytes(&Opts::id(id)))
        .await
        .is_err()
    {
        return None;
    }
    let mut ack = [0u8; 4];
    match tokio::time::timeout(WAIT, c.stream.read_exact(&mut ack)).await {
        Err(_) => panic!("{id}: neither CONNACK nor close within {WAIT:?}"),
        Ok(Err(_)) => None,
        Ok(Ok(_)) => {
            assert_eq!(ack, [0x20, 2, 0, 0], "{id}: CONNACK");
            Some(c)
        }
    }
}

#[tokio::test]
async fn max_connections_refuses_extra_connections_until_one_leaves() {
    let b = TestBroker::start_with(|c| c.max_connections = 2).await;
    let label = ("hmq_connects_refused_total", "reason=\"max_connections\"");
    let mut c1 = Client::new(b.addr, "mc1").await;
    let mut c2 = Client::new(b.addr, "mc2").await;

    let before = b.metric(label.0, label.1);
    assert!(
        try_connect(b.addr, "mc3").await.is_none(),
        "third connection accepted"
    );
    assert_eq!(b.metric(label.0, label.1) - before, 1.0);
    sync(&mut c1).await;
    sync(&mut c2).await;

    c1.send(&[0xE0, 0]).await;
    assert_eq!(c1.expect_closed().await, []);
    // The slot is freed just after the socket closes: poll briefly.
    let mut c3 = None;
    for _ in 0..100 {
        c3 = try_connect(b.addr, "mc3").await;
        if c3.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c3 = c3.expect("a connection is accepted once one of the two has left");
    sync(&mut c3).await;
    sync(&mut c2).await;
    assert!(
        try_connect(b.addr, "mc4").await.is_none(),
        "limit applies again"
    );
    b.stop().await;
}

#[tokio::test]
async fn topic_length_and_depth_limits() {
    let b = TestBroker::start_with(|c| {
        c.max_topic_length = 10;
        c.max_topic_levels = 3;
    })
    .await;
    let mut by = Bystander::new(b.addr).await;
    let mut sub = Client::new(b.addr, "tl-sub").await;
    assert_eq!(
        sub.subscribe(&[
            ("abcdefghij", 1),  // 10 bytes: at the limit
            ("a/b/c", 1),       // 3 levels: at the limit
            ("abcdefghijk", 1), // 11 bytes
            ("a/b/c/d", 1),     // 4 levels
            ("a/+/+/#", 1),     // 4 levels
            ("a/b/#", 1),
        ])
        .await,
        [1, 1, 0x80, 0x80, 0x80, 1],
        "too long or too deep filters are refused with 0x80 [MQTT-3.9.3-2]"
    );
    sync(&mut sub).await; // a refused filter does not close the connection

    let mut p = Client::new(b.addr, "tl-pub").await;
    p.publish("abcdefghij", b"ten", 1, false).await;
    p.publish("a/b/c", b"three", 1, false).await;
    let m = sub.recv_publish().await;
    assert_eq!(m.topic, "abcdefghij");
    sub.ack(&m).await;
    // a/b/c matches both a/b/c and a/b/#: one copy.
    let m = sub.recv_publish().await;
    assert_eq!(m.topic, "a/b/c");
    sub.ack(&m).await;
    sub.expect_silence().await;

    let cases = vec![
        case(
            "PUBLISH to an 11-byte topic",
            publish_bytes("abcdefghijk", b"x", 1, false, false, 1),
        ),
        case(
            "PUBLISH to a 4-level topic",
            publish_bytes("a/b/c/d", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH to a 4-level topic of empty levels",
            publish_bytes("///", b"x", 0, false, false, 0),
        ),
    ];
    let limit_before = b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1);
    run_cases(&b, &mut by, true, cases, vec![], ANY_DISCONNECT).await;
    let limit_moved = b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1) - limit_before;
    sub.expect_silence().await;

    // A will topic beyond the limits refuses the CONNECT.
    let before = b.metric(BAD_CONNECT.0, BAD_CONNECT.1);
    let mut c = Client::raw(b.addr).await;
    c.send(&connect_bytes(
        &Opts::id("tl-will").will("a/b/c/d", b"x", 0, false),
    ))
    .await;
    let got = c.expect_closed().await;
    assert!(
        !got.contains(&Pkt::ConnAck {
            session_present: false,
            code: 0
        }),
        "CONNECT with a will topic beyond the limits accepted: {got:?}"
    );
    assert_eq!(b.metric(BAD_CONNECT.0, BAD_CONNECT.1) - before, 1.0);
    by.check().await;
    // maxTopicLength and maxTopicLevels are configured limits: counted as limit_exceeded.
    assert_eq!(
        limit_moved, 3.0,
        "topics beyond the limits must be counted as hmq_disconnects_total{{reason=\"limit_exceeded\"}}"
    );
    b.stop().await;
}

#[tokio::test]
async fn max_awaiting_rel_closes_the_connection() {
    let b = TestBroker::start_with(|c| c.max_awaiting_rel = 2).await;
    let mut by = Bystander::new(b.addr).await;
    let mut sub = Client::new(b.addr, "ar-sub").await;
    assert_eq!(sub.subscribe(&[("ar/#", 2)]).await, [2]);

    let before = b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1);
    let mut c = Client::new(b.addr, "ar").await;
    for id in [1u16, 2] {
        c.send(&publish_bytes("ar/t", &[id as u8], 2, false, false, id))
            .await;
        assert_eq!(c.recv().await, Pkt::PubRec(id));
    }
    // A retransmission of an id already held is not a new message: no breach.
    c.send(&publish_bytes("ar/t", &[1], 2, false, true, 1))
        .await;
    assert_eq!(c.recv().await, Pkt::PubRec(1));
    // A third id awaiting PUBREL breaches the limit.
    c.send(&publish_bytes("ar/t", &[3], 2, false, false, 3))
        .await;
    assert_eq!(c.expect_closed().await, []);
    assert_eq!(b.metric(LIMIT_EXCEEDED.0, LIMIT_EXCEEDED.1) - before, 1.0);

    // The subscriber got messages 1 and 2 once each, and not the refused one.
    let got = [sub.recv_publish().await, sub.recv_publish().await];
    assert_eq!(
        got.iter().map(|m| m.payload.to_vec()).collect::<Vec<_>>(),
        [[1], [2]]
    );
    for m in &got {
        sub.ack(m).await;
    }
    sub.expect_silence().await;
    by.check().await;
    b.stop().await;
}

#[tokio::test]
async fn pubrel_makes_room_under_max_awaiting_rel() {
    let b = TestBroker::start_with(|c| c.max_awaiting_rel = 2).await;
    let mut c = Client::new(b.addr, "ar2").await;
    for id in [1u16, 2] {
        c.send(&publish_bytes("ar2/t", b"x", 2, false, false, id))
            .await;
        assert_eq!(c.recv().await, Pkt::PubRec(id));
    }
    c.send(&ack_bytes(0x62, 1)).await;
    assert_eq!(c.recv().await, Pkt::PubComp(1));
    c.send(&publish_bytes("ar2/t", b"x", 2, false, false, 3))
        .await;
    assert_eq!(c.recv().await, Pkt::PubRec(3));
    sync(&mut c).await;
    b.stop().await;
}

#[tokio::test]
async fn a_refused_huge_topic_is_logged_as_a_bounded_prefix_and_its_length() {
    logs::install();
    let b = TestBroker::start_with(|c| c.max_topic_levels = 3).await;
    let topic = "a/".repeat(20_000); // 40,000 bytes, 20,001 levels
    let mut c = Client::new(b.addr, "huge-topic").await;
    c.send(&publish_bytes(&topic, b"x", 1, false, false, 1))
        .await;
    c.expect_closed().await;
    let line = logs::wait_for(&["huge-topic", "client disconnected"]).await;
    assert!(
        line.len() < 1_000,
        "{} bytes of log: {}",
        line.len(),
        &line[..300]
    );
    assert!(line.contains("(40000 bytes)"), "{line}");
    assert!(!line.contains("Shown"), "{line}");
    b.stop().await;
}
