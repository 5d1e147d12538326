//! The PROXY protocol header (v1 and v2) in front of MQTT, over real sockets: the header is
//! consumed, MQTT right behind it works, the client address it names is the one the broker uses,
//! and anything else ends the connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/logs.rs"]
mod logs;

use common::*;
use std::time::Duration;

/// A v2 `PROXY` header over TCP/IPv4 from 192.0.2.10:4711 to 198.51.100.1:1883, with an
/// AUTHORITY TLV (skipped by the broker).
fn v2_header(command: u8) -> Vec<u8> {
    let mut body = vec![192, 0, 2, 10, 198, 51, 100, 1];
    body.extend_from_slice(&4711u16.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    body.extend_from_slice(&[0x02, 0x00, 11]);
    body.extend_from_slice(b"example.com");
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(0x11);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// Sends `header` and CONNECT in one write; returns the client and what it got.
async fn connect_behind(addr: std::net::SocketAddr, header: &[u8], id: &str) -> (Client, Pkt) {
    let mut c = Client::raw(addr).await;
    let mut bytes = header.to_vec();
    bytes.extend(connect_bytes(&Opts::id(id)));
    c.send(&bytes).await;
    let ack = c.recv().await;
    (c, ack)
}

const OK: Pkt = Pkt::ConnAck {
    session_present: false,
    code: 0,
};

#[tokio::test]
async fn v1_header_then_mqtt() {
    logs::install();
    let b = TestBroker::start_with(|c| c.proxy_protocol = true).await;
    let (mut c, ack) =
        connect_behind(b.addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n", "pp-v1").await;
    assert_eq!(ack, OK);
    assert_eq!(logs::connected_peer("pp-v1").await, "1.2.3.4:111");
    // MQTT goes on normally.
    assert_eq!(c.subscribe(&[("pp/#", 1)]).await, [1]);
    c.publish("pp/x", b"hi", 1, false).await;
    assert_eq!(c.recv_publish().await.payload, &b"hi"[..]);

    let (_c6, ack) = connect_behind(
        b.addr,
        b"PROXY TCP6 2001:db8::5 2001:db8::1 4242 1883\r\n",
        "pp-v1-6",
    )
    .await;
    assert_eq!(ack, OK);
    assert_eq!(logs::connected_peer("pp-v1-6").await, "[2001:db8::5]:4242");

    // UNKNOWN: the socket peer stands.
    let (_c, ack) = connect_behind(b.addr, b"PROXY UNKNOWN\r\n", "pp-unknown").await;
    assert_eq!(ack, OK);
    assert!(
        logs::connected_peer("pp-unknown")
            .await
            .starts_with("127.0.0.1:")
    );
    b.stop().await;
}

#[tokio::test]
async fn v2_header_then_mqtt() {
    logs::install();
    let b = TestBroker::start_with(|c| c.proxy_protocol = true).await;
    let (mut c, ack) = connect_behind(b.addr, &v2_header(1), "pp-v2").await;
    assert_eq!(ack, OK);
    assert_eq!(logs::connected_peer("pp-v2").await, "192.0.2.10:4711");
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);

    // LOCAL (the proxy's own health check): the socket peer stands.
    let (_c, ack) = connect_behind(b.addr, &v2_header(0), "pp-v2-local").await;
    assert_eq!(ack, OK);
    assert!(
        logs::connected_peer("pp-v2-local")
            .await
            .starts_with("127.0.0.1:")
    );
    b.stop().await;
}

#[tokio::test]
async fn header_in_pieces() {
    let b = TestBroker::start_with(|c| c.proxy_protocol = true).await;
    let mut c = Client::raw(b.addr).await;
    let h = v2_header(1);
    c.send(&h[..5]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&h[5..20]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut rest = h[20..].to_vec();
    rest.extend(connect_bytes(&Opts::id("pp-pieces")));
    c.send(&rest).await;
    assert_eq!(c.recv().await, OK);

    let mut c = Client::raw(b.addr).await;
    c.send(b"PROXY TCP4 1.2.3.4 ").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"5.6.7.8 111 222\r").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut rest = b"\n".to_vec();
    rest.extend(connect_bytes(&Opts::id("pp-pieces-v1")));
    c.send(&rest).await;
    assert_eq!(c.recv().await, OK);
    b.stop().await;
}

#[tokio::test]
async fn malformed_or_missing_headers_close_the_connection() {
    let b = TestBroker::start_with(|c| c.proxy_protocol = true).await;
    let mut bad_version = v2_header(1);
    bad_version[12] = 0x11;
    let cases: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 1.2.3.4 5.6.7.8 111\r\n".to_vec(),
        b"PROXY TCP4 999.2.3.4 5.6.7.8 111 222\r\n".to_vec(),
        format!("PROXY TCP4 {}\r\n", "9".repeat(120)).into_bytes(),
        bad_version,
        // No header at all: a plain MQTT client on a PROXY-protocol listener.
        Vec::new(),
    ];
    for (i, header) in cases.iter().enumerate() {
        let mut c = Client::raw(b.addr).await;
        let mut bytes = header.clone();
        bytes.extend(connect_bytes(&Opts::id(&format!("pp-bad-{i}"))));
        c.send(&bytes).await;
        let seen = c.expect_closed().await;
        assert!(seen.is_empty(), "case {i}: got {seen:?}");
    }
    for _ in 0..100 {
        if b.metric("hmq_connects_refused_total", "transport_handshake") >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.metric("hmq_connects_refused_total", "transport_handshake"),
        5.0
    );
    b.stop().await;
}

#[tokio::test]
async fn without_proxy_protocol_a_header_is_a_malformed_packet() {
    // Off (the default): the header is read as MQTT. A v2 header starts with 0x0D, packet type
    // 0, which is refused at once. A v1 header starts with "PR": a PUBREC (not CONNECT) with a
    // remaining length of 82; the connection ends when those bytes are in, or at the connect
    // deadline if the client sends no more. Either way there is no CONNACK.
    let b = TestBroker::start_with(|c| c.connect_timeout = 2).await;
    let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n".to_vec();
    let mut padded = v1.clone();
    padded.extend(connect_bytes(&Opts::id("pp-off")));
    padded.resize(100, 0);
    for (header, within) in [
        (v2_header(1), Duration::from_secs(1)),
        (padded, Duration::from_secs(1)),
        (v1, Duration::from_secs(4)),
    ] {
        let mut c = Client::raw(b.addr).await;
        let mut bytes = header;
        bytes.extend(connect_bytes(&Opts::id("pp-off")));
        c.send(&bytes).await;
        let seen = c.expect_closed_within(within).await;
        assert!(seen.is_empty(), "got {seen:?}");
    }
    b.stop().await;
}
