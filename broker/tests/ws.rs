//! MQTT over WebSocket, over real sockets: the upgrade (path, subprotocols, HTTP refusals), MQTT
//! bytes in binary frames however they are split, text/ping/close frames, size limits, and the
//! client address from `X-Forwarded-For`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/tls.rs"]
mod tls;
#[path = "common/ws_client.rs"]
mod ws_client;

use common::{Client, Opts, ack_bytes, connect_bytes, publish_bytes, subscribe_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_client::{
    PATH, WsBroker, WsClient, chosen_protocol, client_frame, http_exchange, open, open_on,
    parse_publish, upgrade_request,
};

const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

fn suback(pkid: u16, codes: &[u8]) -> Vec<u8> {
    let mut p = vec![0x90, 2 + codes.len() as u8];
    p.extend_from_slice(&pkid.to_be_bytes());
    p.extend_from_slice(codes);
    p
}

/// Connects over WebSocket with `id` and checks the CONNACK.
async fn ws_connect(b: &WsBroker, id: &str) -> WsClient {
    let mut c = WsClient::new(b.ws).await;
    c.send(&connect_bytes(&Opts::id(id))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    c
}

#[tokio::test]
async fn mqtt_round_trip_over_websocket() {
    let b = WsBroker::start().await;
    let mut ws = ws_connect(&b, "ws-sub").await;
    ws.send(&subscribe_bytes(1, &[("rt/#", 2)])).await;
    assert_eq!(ws.recv().await, suback(1, &[2]));

    // TCP → WebSocket, QoS 0, 1 and 2.
    let mut tcp = Client::new(b.tcp, "tcp-pub").await;
    for qos in 0..=2u8 {
        tcp.publish(
            &format!("rt/{qos}"),
            format!("m{qos}").as_bytes(),
            qos,
            false,
        )
        .await;
        let m = ws.recv_publish().await;
        assert_eq!(
            (m.topic.as_str(), m.payload.as_slice(), m.qos),
            (
                format!("rt/{qos}").as_str(),
                format!("m{qos}").as_bytes(),
                qos
            )
        );
        match qos {
            0 => {}
            1 => ws.send(&ack_bytes(0x40, m.pkid)).await,
            _ => {
                ws.send(&ack_bytes(0x50, m.pkid)).await;
                assert_eq!(ws.recv().await, ack_bytes(0x62, m.pkid));
                ws.send(&ack_bytes(0x70, m.pkid)).await;
            }
        }
    }

    // WebSocket → TCP, QoS 1 and 2 (the publisher's side of the flows over WebSocket).
    assert_eq!(tcp.subscribe(&[("back/#", 2)]).await, [2]);
    ws.send(&publish_bytes("back/1", b"one", 1, false, false, 5))
        .await;
    assert_eq!(ws.recv().await, ack_bytes(0x40, 5));
    ws.send(&publish_bytes("back/2", b"two", 2, false, false, 6))
        .await;
    assert_eq!(ws.recv().await, ack_bytes(0x50, 6));
    ws.send(&ack_bytes(0x62, 6)).await;
    assert_eq!(ws.recv().await, ack_bytes(0x70, 6));
    let m = tcp.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("back/1", &b"one"[..]));
    tcp.ack(&m).await;
    let m = tcp.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("back/2", &b"two"[..]));
    tcp.ack(&m).await;

    // PINGREQ, then DISCONNECT: the broker ends the WebSocket.
    ws.send(&[0xC0, 0]).await;
    assert_eq!(ws.recv().await, [0xD0, 0]);
    ws.send(&[0xE0, 0]).await;
    ws.expect_closed().await;
    assert_eq!(b.metric("hmq_connections_total", "listener=\"ws\""), 1.0);
    b.stop().await;
}

#[tokio::test]
async fn packets_span_frames_and_frames_hold_several_packets() {
    let b = WsBroker::start().await;
    let mut c = WsClient::new(b.ws).await;
    // CONNECT in two frames, split inside the fixed header, then one byte per frame.
    let connect = connect_bytes(&Opts::id("split"));
    c.send(&connect[..1]).await;
    c.send(&connect[1..]).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    let sub = subscribe_bytes(1, &[("s/t", 1)]);
    for byte in &sub {
        c.send(&[*byte]).await;
    }
    assert_eq!(c.recv().await, suback(1, &[1]));

    // SUBSCRIBE + PUBLISH + PINGREQ in one frame: each one is handled.
    let mut frame = subscribe_bytes(2, &[("s/u", 0)]);
    frame.extend(publish_bytes("s/t", b"hello", 1, false, false, 9));
    frame.extend([0xC0, 0]);
    c.send(&frame).await;
    assert_eq!(c.recv().await, suback(2, &[0]));
    // The PUBACK, the PINGRESP and our own message come back; their order among each other is
    // the broker's business.
    let mut got = [c.recv().await, c.recv().await, c.recv().await];
    got.sort_by_key(|p| p[0]);
    let m = parse_publish(&got[0]);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("s/t", &b"hello"[..], 1)
    );
    c.send(&ack_bytes(0x40, m.pkid)).await;
    assert_eq!(got[1], ack_bytes(0x40, 9));
    assert_eq!(got[2], [0xD0, 0]);

    // The second half of one packet together with the first half of the next.
    let p1 = publish_bytes("s/u", b"first", 0, false, false, 0);
    let p2 = publish_bytes("s/u", b"second", 0, false, false, 0);
    let mut both = p1.clone();
    both.extend(&p2);
    c.send(&both[..3]).await;
    c.send(&both[3..p1.len() + 4]).await;
    c.send(&both[p1.len() + 4..]).await;
    assert_eq!(c.recv_publish().await.payload, b"first");
    assert_eq!(c.recv_publish().await.payload, b"second");
    b.stop().await;
}

#[tokio::test]
async fn large_packets_and_bursts_reach_websocket_clients() {
    let b = WsBroker::start().await;
    let mut ws = ws_connect(&b, "big-sub").await;
    ws.send(&subscribe_bytes(1, &[("big/#", 0)])).await;
    assert_eq!(ws.recv().await, suback(1, &[0]));
    let mut tcp = Client::new(b.tcp, "big-pub").await;
    // Larger than one outgoing frame (64 KiB): it arrives in several frames.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tcp.publish("big/one", &big, 0, false).await;
    let m = ws.recv_publish().await;
    assert_eq!(m.topic, "big/one");
    assert!(m.payload == big, "payload differs");
    // A burst of small and large messages, in order.
    for i in 0..200u32 {
        let payload = if i % 50 == 0 {
            vec![i as u8; 5000]
        } else {
            i.to_string().into_bytes()
        };
        tcp.publish("big/burst", &payload, 0, false).await;
    }
    for i in 0..200u32 {
        let m = ws.recv_publish().await;
        let want = if i % 50 == 0 {
            vec![i as u8; 5000]
        } else {
            i.to_string().into_bytes()
        };
        assert_eq!(m.payload, want, "message {i}");
    }
    // And a large one from the WebSocket side (several client frames, one message).
    assert_eq!(tcp.subscribe(&[("up/#", 0)]).await, [0]);
    let packet = publish_bytes("up/big", &big, 0, false, false, 0);
    ws.send(&packet[..100_000]).await;
    ws.send(&packet[100_000..]).await;
    let m = tcp.recv_publish().await;
    assert!(m.payload == big, "payload differs");
    b.stop().await;
}

#[tokio::test]
async fn several_subprotocols_offered_pick_mqtt() {
    let b = WsBroker::start().await;
    let cases: &[(&[&str], &str)] = &[
        (&["mqttv3.1, mqtt"], "mqtt"),
        (&["mqtt, mqttv3.1"], "mqtt"),
        (&["mqttv3.1"], "mqttv3.1"),
        (&["chat, mqttv3.1"], "mqttv3.1"),
        (&["mqtt"], "mqtt"),
    ];
    for (i, (offered, want)) in cases.iter().enumerate() {
        let (mut c, response) = open(b.ws, PATH, offered, &[])
            .await
            .unwrap_or_else(|e| panic!("{offered:?}: {e}"));
        assert_eq!(
            chosen_protocol(&response).as_deref(),
            Some(*want),
            "{offered:?}"
        );
        c.send(&connect_bytes(&Opts::id(&format!("proto-{i}"))))
            .await;
        assert_eq!(c.recv().await, CONNACK_OK, "{offered:?}");
    }
    // Offers in several headers (tungstenite's client only checks the first header against
    // the answer, so this one is raw).
    let request = upgrade_request(
        PATH,
        "Sec-WebSocket-Protocol: mqttv3.1\r\nSec-WebSocket-Protocol: mqtt\r\n",
    );
    let answer = http_exchange_open(b.ws, &request).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nsec-websocket-protocol: mqtt\r\n"),
        "{answer}"
    );
    b.stop().await;
}

#[tokio::test]
async fn clients_offering_no_known_subprotocol_get_none() {
    let b = WsBroker::start().await;
    // Offering nothing: served without the header (and MQTT works).
    let (mut c, response) = open(b.ws, PATH, &[], &[]).await.unwrap();
    assert_eq!(chosen_protocol(&response), None);
    c.send(&connect_bytes(&Opts::id("no-proto"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    // Offering only unknown ones: also answered without the header (a strict client, like a
    // browser, then gives up by itself).
    let answer = http_exchange_open(
        b.ws,
        &upgrade_request(PATH, "Sec-WebSocket-Protocol: chat\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol"),
        "{answer}"
    );
    b.stop().await;
}

/// Sends `request` and returns the HTTP answer head, without waiting for the connection to end.
async fn http_exchange_open(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(common::WAIT, s.read(&mut chunk))
            .await
            .expect("answer within WAIT")
            .unwrap();
        assert!(n > 0, "closed before the answer head");
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn http_refusals() {
    let b = WsBroker::start().await;
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or_default().to_owned();
    // Wrong path, with and without an upgrade.
    let a = http_exchange(b.ws, upgrade_request("/other", "").as_bytes()).await;
    assert_eq!(status(&a), "404", "{a}");
    let a = http_exchange(b.ws, upgrade_request("/mqtt/x", "").as_bytes()).await;
    assert_eq!(status(&a), "404", "{a}");
    let a = http_exchange(b.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&a), "404", "{a}");
    // The right path without an upgrade: 426 naming what to upgrade to.
    let a = http_exchange(b.ws, b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&a), "426", "{a}");
    assert!(a.contains("Upgrade: websocket\r\n"), "{a}");
    // Other methods, and things that are not HTTP at all.
    let a = http_exchange(b.ws, b"POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&a), "405", "{a}");
    let a = http_exchange(b.ws, &connect_bytes(&Opts::id("raw-mqtt"))).await;
    assert!(a.is_empty() || status(&a) == "400", "{a}");
    let a = http_exchange(b.ws, b"GARBAGE\r\n\r\n").await;
    assert_eq!(status(&a), "400", "{a}");
    // An oversized request head.
    let huge = format!(
        "GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let a = http_exchange(b.ws, huge.as_bytes()).await;
    assert_eq!(status(&a), "431", "{a}");
    // None of these got as far as MQTT (counted just after the answer is sent).
    let refused = || {
        b.metric(
            "hmq_connects_refused_total",
            "reason=\"transport_handshake\"",
        )
    };
    for _ in 0..100 {
        if refused() >= 8.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(refused(), 8.0);
    b.stop().await;
}

#[tokio::test]
async fn frames_sent_right_behind_the_request_are_read() {
    // A client may send its first frame without waiting for the 101.
    let b = WsBroker::start().await;
    let mut s = TcpStream::connect(b.ws).await.unwrap();
    let mut bytes = upgrade_request(PATH, "Sec-WebSocket-Protocol: mqtt\r\n").into_bytes();
    bytes.extend(client_frame(0x2, &connect_bytes(&Opts::id("eager"))));
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    let want_tail = [0x82, 4, 0x20, 2, 0, 0];
    while !out.ends_with(&want_tail) {
        let n = tokio::time::timeout(common::WAIT, s.read(&mut chunk))
            .await
            .expect("answer within WAIT")
            .unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    assert!(out.starts_with(b"HTTP/1.1 101"));
    b.stop().await;
}

#[tokio::test]
async fn text_frame_closes_the_connection() {
    let b = WsBroker::start().await;
    let mut c = ws_connect(&b, "texter").await;
    c.send_message(Message::text("hello")).await;
    let close = c.expect_closed().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Unsupported);
    // Also before CONNECT.
    let mut c = WsClient::new(b.ws).await;
    c.send_message(Message::text("hello")).await;
    let close = c.expect_closed().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Unsupported);
    b.stop().await;
}

#[tokio::test]
async fn the_broker_ends_a_session_with_a_close_frame() {
    let b = WsBroker::start().await;
    // An MQTT protocol error inside a binary frame: the broker closes the session, and says so
    // with a WebSocket close frame rather than just dropping the TCP connection.
    let mut c = ws_connect(&b, "bad").await;
    c.send(&[0xF0, 0x00]).await;
    assert!(
        matches!(c.next_control().await, Some(Message::Close(_))),
        "a close frame"
    );
    b.stop().await;
}

#[tokio::test]
async fn pings_are_answered_and_close_frames_end_the_session() {
    let b = WsBroker::start().await;
    let mut watcher = Client::new(b.tcp, "watcher").await;
    assert_eq!(watcher.subscribe(&[("will/#", 0)]).await, [0]);

    let mut c = WsClient::new(b.ws).await;
    c.send(&connect_bytes(&Opts::id("closer").will(
        "will/closer",
        b"gone",
        0,
        false,
    )))
    .await;
    assert_eq!(c.recv().await, CONNACK_OK);
    c.send_message(Message::Ping(b"are you there".to_vec().into()))
        .await;
    match c.next_control().await {
        Some(Message::Pong(p)) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // MQTT still works after the ping.
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, [0xD0, 0]);
    // A close frame without DISCONNECT: answered, the connection ends, and as for a dropped
    // TCP connection, the will is published.
    c.send_message(Message::Close(None)).await;
    assert!(matches!(
        c.next_control().await,
        Some(Message::Close(_)) | None
    ));
    c.expect_closed().await;
    let m = watcher.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/closer", &b"gone"[..])
    );
    b.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    // With a small maxPacketSize, messages are capped at 64 KiB (several small packets may
    // share a frame); a larger frame is refused before it is read.
    let b = WsBroker::start_with(|c| c.max_packet_size = 1024).await;
    let mut c = ws_connect(&b, "big-frame").await;
    c.send(&vec![0u8; 70 * 1024]).await;
    let close = c.expect_closed().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size);
    // Under the cap, the MQTT packet limit applies as on TCP.
    let mut c = ws_connect(&b, "big-packet").await;
    c.send(&publish_bytes("t", &[0u8; 2000], 0, false, false, 0))
        .await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_when_enabled() {
    logs::install();
    let b = WsBroker::start_with(|c| c.ws_forwarded_for = true).await;
    let xff = [("X-Forwarded-For", "10.1.2.3, 203.0.113.9")];
    let (mut c, _) = open(b.ws, PATH, &["mqtt"], &xff).await.unwrap();
    c.send(&connect_bytes(&Opts::id("xff-on"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    let peer = logs::connected_peer("xff-on").await;
    assert!(peer.starts_with("203.0.113.9:"), "{peer}");
    // Missing, or not an address: the socket peer.
    let bad = [("X-Forwarded-For", "203.0.113.9, unknown")];
    let (mut c, _) = open(b.ws, PATH, &["mqtt"], &bad).await.unwrap();
    c.send(&connect_bytes(&Opts::id("xff-bad"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    assert!(
        logs::connected_peer("xff-bad")
            .await
            .starts_with("127.0.0.1:")
    );
    let mut c = WsClient::new(b.ws).await;
    c.send(&connect_bytes(&Opts::id("xff-none"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    assert!(
        logs::connected_peer("xff-none")
            .await
            .starts_with("127.0.0.1:")
    );
    b.stop().await;

    // Off (the default): the header is ignored.
    let b = WsBroker::start().await;
    let (mut c, _) = open(b.ws, PATH, &["mqtt"], &xff).await.unwrap();
    c.send(&connect_bytes(&Opts::id("xff-off"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    assert!(
        logs::connected_peer("xff-off")
            .await
            .starts_with("127.0.0.1:")
    );
    b.stop().await;
}

#[tokio::test]
async fn slow_upgrades_count_against_the_connect_timeout() {
    let b = WsBroker::start_with(|c| c.connect_timeout = 1).await;
    let mut s = TcpStream::connect(b.ws).await.unwrap();
    s.write_all(b"GET /mqtt HTTP/1.1\r\n").await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(common::WAIT, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection still open after {:?}", common::WAIT);
    b.stop().await;
}

#[tokio::test]
async fn wss_with_client_certificates() {
    // WSS = TLS (the tlsInfo certificate, with tlsInfo.verify asking for client certificates),
    // then the same WebSocket upgrade.
    let pki = tls::Pki::new();
    let b = WsBroker::start_with(|c| {
        c.ws_tls = true;
        c.tls_info = pki.tls_info(true);
    })
    .await;
    let mut tcp = Client::new(b.tcp, "wss-peer").await;
    assert_eq!(tcp.subscribe(&[("wss/#", 1)]).await, [1]);

    let cert = pki.client("wss-device");
    let stream = tls::handshake(b.ws, pki.client_config(Some(&cert), &[]))
        .await
        .expect("TLS handshake");
    let (mut c, response) = open_on(stream, b.ws, PATH, &["mqttv3.1, mqtt"], &[])
        .await
        .expect("upgrade over TLS");
    assert_eq!(chosen_protocol(&response).as_deref(), Some("mqtt"));
    c.send(&connect_bytes(&Opts::id("wss-client"))).await;
    assert_eq!(c.recv().await, CONNACK_OK);
    c.send(&subscribe_bytes(1, &[("wss/#", 0)])).await;
    assert_eq!(c.recv().await, suback(1, &[0]));
    c.send(&publish_bytes("wss/up", b"secure", 1, false, false, 3))
        .await;
    assert_eq!(c.recv().await, ack_bytes(0x40, 3));
    let m = tcp.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("wss/up", &b"secure"[..])
    );
    tcp.ack(&m).await;
    assert_eq!(c.recv_publish().await.payload, b"secure");
    assert_eq!(b.metric("hmq_connections_total", "listener=\"wss\""), 1.0);

    // Without a client certificate: no WebSocket (TLS 1.3 reports the refusal on the first
    // read, so either the handshake or the upgrade fails).
    let refused = match tls::handshake(b.ws, pki.client_config(None, &[])).await {
        Err(_) => true,
        Ok(stream) => open_on(stream, b.ws, PATH, &["mqtt"], &[]).await.is_err(),
    };
    assert!(refused, "a client without a certificate got a WebSocket");
    // Plain WebSocket on the WSS port: no upgrade either.
    assert!(open(b.ws, PATH, &["mqtt"], &[]).await.is_err());
    b.stop().await;
}
