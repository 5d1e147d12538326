//! CONNECT handling, client ids, keepalive, takeover and wills, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn connect_and_ping() {
    let b = TestBroker::start().await;
    let (mut c, present) = Client::connect(b.addr, &Opts::id("a")).await;
    assert!(!present);
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
    c.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt31_clients_are_served() {
    let b = TestBroker::start().await;
    let opts = Opts {
        protocol: ("MQIsdp", 3),
        ..Opts::id("old-client")
    };
    let (mut sub, _) = Client::connect(b.addr, &opts).await;
    assert_eq!(sub.subscribe(&[("t", 1)]).await, [1]);
    let mut publ = Client::connect(
        b.addr,
        &Opts {
            client_id: "old-pub".into(),
            ..opts.clone()
        },
    )
    .await
    .0;
    publ.publish("t", b"hi", 1, false).await;
    let m = sub.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("t", &b"hi"[..], 1)
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt31_connack_has_no_session_present_flag() {
    // In 3.1 the first CONNACK byte is reserved (0); the flag exists from 3.1.1 on. The session
    // itself is resumed: what was queued arrives.
    let b = TestBroker::start().await;
    let opts = Opts {
        protocol: ("MQIsdp", 3),
        ..Opts::id("old-persistent").persistent()
    };
    let (mut c, _) = Client::connect(b.addr, &opts).await;
    assert_eq!(c.subscribe(&[("q", 1)]).await, [1]);
    c.disconnect().await;
    let mut p = Client::new(b.addr, "old-feeder").await;
    p.publish("q", b"kept", 1, false).await;
    let (mut c, ack) = Client::connect_opts(b.addr, &opts).await;
    assert_eq!(
        ack,
        Pkt::ConnAck {
            session_present: false,
            code: 0
        }
    );
    assert_eq!(&c.recv_publish().await.payload[..], b"kept");
    // The same resume at 3.1.1 says so.
    let v311 = Opts::id("new-persistent").persistent();
    let (c2, _) = Client::connect(b.addr, &v311).await;
    c2.disconnect().await;
    let (_, ack) = Client::connect_opts(b.addr, &v311).await;
    assert_eq!(
        ack,
        Pkt::ConnAck {
            session_present: true,
            code: 0
        }
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt31_client_id_rules() {
    let b = TestBroker::start().await;
    let v31 = |id: &str| Opts {
        protocol: ("MQIsdp", 3),
        ..Opts::id(id)
    };
    // MQTT 3.1 requires 1 to 23 characters.
    for id in ["", "123456789012345678901234"] {
        let (mut c, ack) = Client::connect_opts(b.addr, &v31(id)).await;
        assert_eq!(
            ack,
            Pkt::ConnAck {
                session_present: false,
                code: 2
            },
            "id {id:?}"
        );
        c.expect_closed().await;
    }
    Client::connect(b.addr, &v31("12345678901234567890123")).await;
    // 3.1.1 accepts long ids.
    Client::connect(b.addr, &Opts::id(&"x".repeat(200))).await;
    assert_eq!(
        b.metric(
            "hmq_connects_refused_total",
            "reason=\"identifier_rejected\""
        ),
        2.0
    );
    b.stop().await;
}

#[tokio::test]
async fn empty_client_id_gets_a_unique_id_with_clean_session_only() {
    let b = TestBroker::start().await;
    // Two anonymous clients coexist (hmq kicked one out: both shared one key).
    let (mut a, _) = Client::connect(b.addr, &Opts::default()).await;
    let (mut c, _) = Client::connect(b.addr, &Opts::default()).await;
    a.subscribe(&[("t", 0)]).await;
    c.subscribe(&[("t", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("t", b"x", 0, false).await;
    assert_eq!(a.recv_publish().await.payload, &b"x"[..]);
    assert_eq!(c.recv_publish().await.payload, &b"x"[..]);
    // Persistent session without id: identifier rejected [MQTT-3.1.3-8].
    let (mut d, ack) = Client::connect_opts(b.addr, &Opts::default().persistent()).await;
    assert_eq!(
        ack,
        Pkt::ConnAck {
            session_present: false,
            code: 2
        }
    );
    d.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1() {
    let b = TestBroker::start().await;
    for protocol in [("MQTT", 5), ("MQTT", 3), ("MQIsdp", 4)] {
        let opts = Opts {
            protocol,
            ..Opts::id("v")
        };
        let (mut c, ack) = Client::connect_opts(b.addr, &opts).await;
        assert_eq!(
            ack,
            Pkt::ConnAck {
                session_present: false,
                code: 1
            },
            "{protocol:?}"
        );
        c.expect_closed().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn takeover_closes_old_connection_publishes_its_will_and_moves_the_session() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("will/#", 1), ("data", 1)]).await;

    let opts = Opts::id("dup")
        .persistent()
        .will("will/dup", b"gone", 1, false);
    let (mut old, present) = Client::connect(b.addr, &opts).await;
    assert!(!present);
    old.subscribe(&[("data", 1)]).await;

    let (mut new, present) = Client::connect(b.addr, &Opts::id("dup").persistent()).await;
    assert!(present, "the new connection takes over the stored session");
    old.expect_closed().await;
    let will = watcher.recv_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("will/dup", &b"gone"[..])
    );
    watcher.ack(&will).await;

    // The subscription moved with the session.
    let mut p = Client::new(b.addr, "p").await;
    p.publish("data", b"1", 1, false).await;
    let m = new.recv_publish().await;
    assert_eq!(&m.payload[..], b"1");
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"takeover\""),
        1.0
    );
    b.stop().await;
}

#[tokio::test]
async fn takeover_with_clean_session_discards_the_old_session() {
    let b = TestBroker::start().await;
    let (mut old, _) = Client::connect(b.addr, &Opts::id("c").persistent()).await;
    old.subscribe(&[("data", 1)]).await;
    let (mut new, present) = Client::connect(b.addr, &Opts::id("c")).await;
    assert!(!present);
    old.expect_closed().await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("data", b"1", 1, false).await;
    new.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn keepalive_timeout_closes_and_publishes_will() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("will/+", 2)]).await;
    let (mut quiet, _) = Client::connect(
        b.addr,
        &Opts::id("quiet")
            .keep_alive(1)
            .will("will/quiet", b"timeout", 2, false),
    )
    .await;
    let start = tokio::time::Instant::now();
    quiet.expect_keepalive_close(start).await;
    let will = watcher.recv_publish().await;
    assert_eq!((will.topic.as_str(), will.qos), ("will/quiet", 2));
    watcher.ack(&will).await;
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"keepalive_timeout\""),
        1.0
    );
    b.stop().await;
}

#[tokio::test]
async fn keepalive_is_reset_by_any_packet_and_zero_disables_it() {
    let b = TestBroker::start().await;
    let (mut pinging, _) = Client::connect(b.addr, &Opts::id("ping").keep_alive(1)).await;
    let (mut idle, _) = Client::connect(b.addr, &Opts::id("idle").keep_alive(0)).await;
    // Keepalive is about elapsed time, so this test lets real time pass: 4 × 0.7 s is well past
    // 1.5 × 1 s, which would have closed a client that sent nothing.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        pinging.send(&[0xC0, 0]).await;
        assert_eq!(pinging.recv().await, Pkt::PingResp);
    }
    // 2.8 s later both are still connected.
    idle.send(&[0xC0, 0]).await;
    assert_eq!(idle.recv().await, Pkt::PingResp);
    b.stop().await;
}

#[tokio::test]
async fn will_qos_and_retain_are_honoured() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("status/w", 2)]).await;
    let (c, _) =
        Client::connect(b.addr, &Opts::id("w").will("status/w", b"offline", 1, true)).await;
    drop(c); // network close without DISCONNECT
    let live = watcher.recv_publish().await;
    assert_eq!(
        (live.qos, live.retain, &live.payload[..]),
        (1, false, &b"offline"[..])
    );
    watcher.ack(&live).await;
    // The will was retained: a later subscriber gets it with RETAIN set.
    let mut later = Client::new(b.addr, "later").await;
    later.subscribe(&[("status/w", 2)]).await;
    let m = later.recv_publish().await;
    assert_eq!(
        (m.qos, m.retain, &m.payload[..]),
        (1, true, &b"offline"[..])
    );
    b.stop().await;
}

#[tokio::test]
async fn no_will_after_disconnect_but_will_after_protocol_error() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "watcher").await;
    watcher.subscribe(&[("will/#", 0)]).await;

    let (polite, _) = Client::connect(
        b.addr,
        &Opts::id("polite").will("will/polite", b"x", 0, false),
    )
    .await;
    polite.disconnect().await;
    watcher.expect_silence().await;

    let (mut rude, _) =
        Client::connect(b.addr, &Opts::id("rude").will("will/rude", b"y", 0, false)).await;
    rude.send(&[0xF0, 0x00]).await; // reserved packet type
    rude.expect_closed().await;
    assert_eq!(watcher.recv_publish().await.topic, "will/rude");

    let (mut twice, _) = Client::connect(
        b.addr,
        &Opts::id("twice").will("will/twice", b"z", 0, false),
    )
    .await;
    twice.send(&connect_bytes(&Opts::id("twice"))).await;
    twice.expect_closed().await;
    assert_eq!(watcher.recv_publish().await.topic, "will/twice");
    assert_eq!(
        b.metric("hmq_disconnects_total", "reason=\"protocol_error\""),
        2.0
    );
    b.stop().await;
}

#[tokio::test]
async fn will_with_invalid_topic_is_refused() {
    let b = TestBroker::start().await;
    let mut c = Client::raw(b.addr).await;
    c.send(&connect_bytes(
        &Opts::id("bad").will("will/#", b"x", 0, false),
    ))
    .await;
    assert!(
        c.expect_closed().await.is_empty(),
        "no CONNACK for a malformed CONNECT"
    );
    b.stop().await;
}

#[tokio::test]
async fn binary_password_is_accepted() {
    let b = TestBroker::start().await;
    let opts = Opts {
        username: Some("u".into()),
        password: Some(vec![0xFF, 0x00, 0xC3, 0x28]),
        ..Opts::id("pw")
    };
    Client::connect(b.addr, &opts).await;
    b.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_without_wills() {
    let b = TestBroker::start().await;
    let (mut a, _) = Client::connect(b.addr, &Opts::id("a").will("will/a", b"x", 0, false)).await;
    let addr = b.addr;
    b.stop().await;
    a.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn connect_split_across_many_writes() {
    let b = TestBroker::start().await;
    let mut c = Client::raw(b.addr).await;
    for byte in connect_bytes(&Opts::id("slow")) {
        c.stream.write_all(&[byte]).await.unwrap();
        c.stream.flush().await.unwrap();
    }
    assert_eq!(
        c.recv().await,
        Pkt::ConnAck {
            session_present: false,
            code: 0
        }
    );
    b.stop().await;
}
