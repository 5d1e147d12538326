//! Malformed input over real sockets: a malformed packet or a bad CONNECT closes that connection
//! (with nothing sent back unless the specification says so), other clients never notice, and
//! the broker keeps serving. MQTT 3.1.1 sections 1.5.3, 2.2, 3.1, 3.3, 3.8, 3.10.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/bad_input.rs"]
mod bad_input;
mod common;

use bad_input::*;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    let b = TestBroker::start().await;
    let mut by = Bystander::new(b.addr).await;
    let publish_qos3 = {
        let mut p = publish_bytes("a/b", b"x", 2, false, false, 1);
        p[0] |= 0b0110;
        p
    };
    let cases = vec![
        // [MQTT-2.2.2-2] / reserved types.
        case("reserved packet type 0", vec![0x00, 0x00]),
        case("reserved packet type 15", vec![0xF0, 0x00]),
        // [MQTT-2.2.2-1]: fixed-header flags.
        case("PUBREL with flags 0000", vec![0x60, 2, 0, 1]),
        case("SUBSCRIBE with flags 0000", {
            let mut s = subscribe_bytes(1, &[("a", 0)]);
            s[0] = 0x80;
            s
        }),
        case("UNSUBSCRIBE with flags 0000", {
            let mut s = unsubscribe_bytes(1, &["a"]);
            s[0] = 0xA0;
            s
        }),
        case("PINGREQ with flags 0001", vec![0xC1, 0]),
        case("PUBACK with flags 0010", vec![0x42, 2, 0, 1]),
        case("DISCONNECT with flags 0001", vec![0xE1, 0]),
        // PUBLISH [MQTT-3.3.1-4], [MQTT-3.3.1-2], [MQTT-2.3.1-1].
        case("PUBLISH QoS 3", publish_qos3),
        case(
            "PUBLISH QoS 0 with DUP",
            publish_bytes("a/b", b"x", 0, false, true, 0),
        ),
        case(
            "PUBLISH QoS 1 with packet id 0",
            publish_bytes("a/b", b"x", 1, false, false, 0),
        ),
        case(
            "PUBLISH QoS 2 with packet id 0",
            publish_bytes("a/b", b"x", 2, false, false, 0),
        ),
        case(
            "PUBLISH to an empty topic",
            publish_bytes("", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH to a topic with +",
            publish_bytes("a/+", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH to a topic with #",
            publish_bytes("a/#", b"x", 1, false, false, 3),
        ),
        case(
            "PUBLISH QoS 1 without room for the packet id",
            frame(0x32, &[0, 1, b'a', 0]),
        ),
        // SUBSCRIBE [MQTT-3.8.3-3], [MQTT-3.8.3-4], [MQTT-2.3.1-1].
        case("SUBSCRIBE with no filters", frame(0x82, &[0, 1])),
        case(
            "SUBSCRIBE requesting QoS 3",
            subscribe_bytes(1, &[("a", 3)]),
        ),
        case(
            "SUBSCRIBE with reserved bits in the QoS byte",
            subscribe_bytes(1, &[("a", 0x41)]),
        ),
        case(
            "SUBSCRIBE with packet id 0",
            subscribe_bytes(0, &[("a", 0)]),
        ),
        case(
            "SUBSCRIBE filter without its QoS byte",
            frame(0x82, &[0, 1, 0, 1, b'a']),
        ),
        // UNSUBSCRIBE [MQTT-3.10.3-2].
        case("UNSUBSCRIBE with no filters", frame(0xA2, &[0, 1])),
        case("UNSUBSCRIBE with packet id 0", unsubscribe_bytes(0, &["a"])),
        // Framing and strings [MQTT-1.5.3-1/2].
        case(
            "remaining length of 5 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        case(
            "topic length crossing the packet end",
            frame(0x30, &[0, 10, b'a', b'b']),
        ),
        case(
            "filter length crossing the packet end",
            frame(0x82, &[0, 1, 0, 9, b'a', 0]),
        ),
        case(
            "invalid UTF-8 topic",
            frame(0x30, &[0, 3, 0xFF, 0xFE, b'a', b'x']),
        ),
        case(
            "UTF-16 surrogate encoded in a topic",
            frame(0x30, &[0, 3, 0xED, 0xA0, 0x80, b'x']),
        ),
        case(
            "U+0000 in a topic",
            publish_bytes("a\0b", b"x", 0, false, false, 0),
        ),
        case(
            "invalid UTF-8 filter",
            frame(0x82, &[0, 1, 0, 2, 0xC3, 0x28, 0]),
        ),
        case("U+0000 in a filter", subscribe_bytes(1, &[("a\0b", 0)])),
        case(
            "invalid UTF-8 in an UNSUBSCRIBE filter",
            frame(0xA2, &[0, 1, 0, 2, 0xC3, 0x28]),
        ),
        case(
            "U+0000 in an UNSUBSCRIBE filter",
            unsubscribe_bytes(1, &["a\0b"]),
        ),
        // [MQTT-3.1.0-2]: a second CONNECT.
        case("second CONNECT", connect_bytes(&Opts::id("again"))),
        // Server-to-client packets from a client.
        case("CONNACK from a client", vec![0x20, 2, 0, 0]),
        case("SUBACK from a client", vec![0x90, 3, 0, 1, 0]),
        case("UNSUBACK from a client", vec![0xB0, 2, 0, 1]),
        case("PINGRESP from a client", vec![0xD0, 0]),
        // Fixed-size packets with a wrong remaining length.
        case("PUBACK with remaining length 3", vec![0x40, 3, 0, 1, 0]),
        case("PUBREL with remaining length 1", vec![0x62, 1, 0]),
        case("PINGREQ with remaining length 1", vec![0xC0, 1, 0]),
        case("DISCONNECT with remaining length 1", vec![0xE0, 1, 0]),
    ];
    run_cases(&b, &mut by, true, cases, vec![], PROTOCOL_ERROR).await;
    assert_eq!(
        b.metric("hmq_connections_current", ""),
        2.0,
        "only the bystanders are left"
    );
    b.stop().await;
}

/// A CONNECT body with the given protocol name and level, connect flags, keepalive and payload
/// (client id etc., already encoded).
fn connect_with(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// An encoded MQTT string.
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = vec![(v.len() >> 8) as u8, v.len() as u8];
    out.extend_from_slice(v);
    out
}

#[tokio::test]
async fn bad_connects_are_closed_without_connack() {
    let b = TestBroker::start().await;
    let mut by = Bystander::new(b.addr).await;
    let id = s(b"cid");
    let cases = vec![
        // [MQTT-3.1.0-1]: the first packet must be CONNECT.
        case("PINGREQ before CONNECT", vec![0xC0, 0]),
        case(
            "PUBLISH before CONNECT",
            publish_bytes("a", b"x", 1, false, false, 1),
        ),
        case("SUBSCRIBE before CONNECT", subscribe_bytes(1, &[("a", 0)])),
        case("DISCONNECT before CONNECT", vec![0xE0, 0]),
        case("garbage before CONNECT", vec![0x00, 0x00]),
        // [MQTT-3.1.2-1]: unknown protocol name.
        case("protocol name MQTX", connect_with(b"MQTX", 4, 0x02, &id)),
        case("protocol name mqtt", connect_with(b"mqtt", 4, 0x02, &id)),
        // [MQTT-3.1.2-3]: reserved flag.
        case("reserved connect flag", connect_with(b"MQTT", 4, 0x03, &id)),
        // [MQTT-3.1.2-14]: will QoS 3.
        case(
            "will QoS 3",
            connect_bytes(&Opts::id("w").will("w/t", b"x", 3, false)),
        ),
        // [MQTT-3.1.2-11/13/15]: will QoS or retain without the will flag.
        case(
            "will QoS without will flag",
            connect_with(b"MQTT", 4, 0x02 | 0x08, &id),
        ),
        case(
            "will retain without will flag",
            connect_with(b"MQTT", 4, 0x02 | 0x20, &id),
        ),
        // [MQTT-3.1.2-22]: password without user name.
        case(
            "password without user name",
            connect_bytes(&Opts {
                password: Some(b"pw".to_vec()),
                ..Opts::id("pw")
            }),
        ),
        case("password flag without user name, no password field", {
            connect_with(b"MQTT", 4, 0x02 | 0x40, &id)
        }),
        case("user name flag without the field", {
            connect_with(b"MQTT", 4, 0x02 | 0x80, &id)
        }),
        case(
            "will flag without will topic",
            connect_with(b"MQTT", 4, 0x06, &id),
        ),
        case("will topic with a wildcard", {
            let mut p = id.clone();
            p.extend(s(b"w/#"));
            p.extend(s(b"bye"));
            connect_with(b"MQTT", 4, 0x06, &p)
        }),
        case(
            "client id not UTF-8",
            connect_with(b"MQTT", 4, 0x02, &s(&[0xC3, 0x28])),
        ),
        case(
            "client id with U+0000",
            connect_with(b"MQTT", 4, 0x02, &s(b"a\0b")),
        ),
        case("CONNECT with fixed-header flags", {
            let mut c = connect_bytes(&Opts::id("f"));
            c[0] = 0x11;
            c
        }),
        case(
            "CONNECT truncated before keepalive",
            frame(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 4, 2]),
        ),
        case("CONNECT with trailing bytes", {
            let mut p = id.clone();
            p.push(0);
            connect_with(b"MQTT", 4, 0x02, &p)
        }),
    ];
    run_cases(&b, &mut by, false, cases, vec![], BAD_CONNECT).await;
    b.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1_then_close() {
    let b = TestBroker::start().await;
    let mut by = Bystander::new(b.addr).await;
    let id = s(b"cid");
    let cases = vec![
        case("MQTT level 5", connect_with(b"MQTT", 5, 0x02, &id)),
        case("MQTT level 3", connect_with(b"MQTT", 3, 0x02, &id)),
        case("MQTT level 0", connect_with(b"MQTT", 0, 0x02, &id)),
    ];
    // [MQTT-3.1.2-2]: CONNACK 0x01, then disconnect.
    run_cases(
        &b,
        &mut by,
        false,
        cases,
        vec![Pkt::ConnAck {
            session_present: false,
            code: 1,
        }],
        ("hmq_connects_refused_total", "reason=\"protocol_version\""),
    )
    .await;
    b.stop().await;
}

// MQTT 3.1.1 section 3.1.4: "Clients are allowed to send further Control Packets immediately
// after sending a CONNECT Packet; Clients need not wait for a CONNACK Packet to arrive from the
// Server." Such packets usually arrive in the same TCP segment as the CONNECT.

#[tokio::test]
async fn subscribe_pipelined_behind_connect_is_handled() {
    let b = TestBroker::start().await;
    let mut c = Client::raw(b.addr).await;
    let mut bytes = connect_bytes(&Opts::id("pipe-ok"));
    bytes.extend(subscribe_bytes(1, &[("pipe/t", 1)]));
    c.send(&bytes).await;
    assert_eq!(
        c.recv().await,
        Pkt::ConnAck {
            session_present: false,
            code: 0
        }
    );
    assert_eq!(
        c.recv().await,
        Pkt::SubAck {
            pkid: 1,
            codes: vec![1]
        },
        "SUBSCRIBE sent with the CONNECT"
    );
    let mut p = Client::new(b.addr, "pipe-pub").await;
    p.publish("pipe/t", b"x", 1, false).await;
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("pipe/t", &b"x"[..]));
    b.stop().await;
}

#[tokio::test]
async fn malformed_packet_pipelined_behind_connect_closes() {
    let b = TestBroker::start().await;
    let mut by = Bystander::new(b.addr).await;
    let before = b.metric(PROTOCOL_ERROR.0, PROTOCOL_ERROR.1);
    let mut c = Client::raw(b.addr).await;
    let mut bytes = connect_bytes(&Opts::id("pipe-bad"));
    bytes.extend_from_slice(&[0x00, 0x00]);
    c.send(&bytes).await;
    assert_eq!(
        c.expect_closed().await,
        [Pkt::ConnAck {
            session_present: false,
            code: 0
        }],
        "a malformed packet behind the CONNECT closes the connection"
    );
    assert_eq!(b.metric(PROTOCOL_ERROR.0, PROTOCOL_ERROR.1) - before, 1.0);
    by.check().await;
    b.stop().await;
}

/// xorshift64*: a fixed-seed generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Whether `data` (packets from the broker, possibly ending mid-packet) contains an UNSUBACK
/// with packet id `pkid`.
fn has_unsuback(data: &[u8], pkid: u16) -> bool {
    let mut i = 0;
    while i + 1 < data.len() {
        let byte1 = data[i];
        let (mut len, mut shift, mut j) = (0usize, 0, i + 1);
        loop {
            let Some(&b) = data.get(j) else { return false };
            len |= ((b & 0x7F) as usize) << shift;
            j += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if j + len > data.len() {
            return false;
        }
        if byte1 == 0xB0 && len == 2 && data[j..j + 2] == pkid.to_be_bytes() {
            return true;
        }
        i = j + len;
    }
    false
}

/// Reads until the broker closes the connection, failing after `WAIT`.
async fn wait_closed(c: &mut Client, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match tokio::time::timeout_at(deadline, c.stream.read_buf(&mut sink)).await {
            Err(_) => panic!("{what}: connection still open after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

const FUZZ_MAX_PACKET: u32 = 512;
const PROBE_PKID: u16 = 0xBEEF;

/// Sends `garbage` then an UNSUBSCRIBE probe. Returns true if the probe was answered within
/// `patience` (the connection is usable; it is then closed with DISCONNECT), false if the broker
/// closed the connection. A connection left waiting for the rest of a packet is fed zeros beyond
/// the packet size limit, which must make the broker close it.
async fn poke(c: &mut Client, garbage: &[u8], patience: Duration, what: &str) -> bool {
    let mut data = garbage.to_vec();
    data.extend(unsubscribe_bytes(PROBE_PKID, &["probe"]));
    if c.stream.write_all(&data).await.is_err() {
        wait_closed(c, what).await;
        return false;
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if has_unsuback(&seen, PROBE_PKID) {
            let _ = c.stream.write_all(&[0xE0, 0]).await;
            wait_closed(c, what).await;
            return true;
        }
        match tokio::time::timeout_at(deadline, c.stream.read_buf(&mut seen)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    // Neither answered nor closed: the broker waits for the rest of a packet, which is at most
    // FUZZ_MAX_PACKET bytes long. Zeros complete it and then form a reserved packet type.
    let _ = c
        .stream
        .write_all(&vec![0u8; FUZZ_MAX_PACKET as usize + 8])
        .await;
    wait_closed(c, what).await;
    false
}

#[tokio::test]
async fn garbage_after_connect_never_disturbs_other_clients() {
    let b = TestBroker::start_with(|c| c.max_packet_size = FUZZ_MAX_PACKET).await;
    let mut by = Bystander::new(b.addr).await;
    let templates: Vec<Vec<u8>> = vec![
        connect_bytes(&Opts::id("fz")),
        publish_bytes("fz/a", b"p", 0, false, false, 0),
        publish_bytes("fz/a", b"p", 1, true, false, 7),
        publish_bytes("fz/a", b"p", 2, false, false, 8),
        subscribe_bytes(3, &[("fz/#", 1), ("fz/+", 2)]),
        unsubscribe_bytes(4, &["fz/#"]),
        ack_bytes(0x40, 1),
        ack_bytes(0x50, 2),
        ack_bytes(0x62, 3),
        ack_bytes(0x70, 4),
        vec![0xC0, 0],
        vec![0xE0, 0],
    ];
    let first_bytes: [u8; 23] = [
        0x10, 0x20, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3B, 0x3C, 0x3D, 0x40, 0x50, 0x62,
        0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut usable, mut closed) = (0, 0);
    for i in 0..200 {
        let garbage = match i % 4 {
            // Random bytes.
            0 => {
                let n = 1 + rng.below(64);
                rng.bytes(n)
            }
            // A plausible fixed header with a consistent length and a random body.
            1 => {
                let byte1 = first_bytes[rng.below(first_bytes.len())];
                let n = rng.below(48);
                frame(byte1, &rng.bytes(n))
            }
            // A few valid packets (no CONNECT or DISCONNECT) in a row: must stay usable.
            2 => {
                let mut t = Vec::new();
                for _ in 0..1 + rng.below(4) {
                    t.extend(&templates[1 + rng.below(templates.len() - 2)]);
                }
                t
            }
            // A valid packet with a few bytes changed, sometimes truncated.
            _ => {
                let mut t = templates[rng.below(templates.len())].clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(t.len());
                    t[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    t.truncate(1 + rng.below(t.len()));
                }
                t
            }
        };
        let what = format!("iteration {i}, garbage {garbage:02x?}");
        let before = b.metric("hmq_disconnects_total", "");
        let mut c = Client::new(b.addr, &format!("fuzz-{i}")).await;
        // Valid packets must be answered: wait as long as it takes. Otherwise a short wait, then
        // the zero padding settles it either way.
        let patience = if i % 4 == 2 {
            WAIT
        } else {
            Duration::from_millis(250)
        };
        if poke(&mut c, &garbage, patience, &what).await {
            usable += 1;
        } else {
            assert_ne!(i % 4, 2, "{what}: valid packets closed the connection");
            closed += 1;
        }
        // Every connection that ends is counted; a panicking connection task would not be.
        assert_eq!(
            b.metric("hmq_disconnects_total", "") - before,
            1.0,
            "{what}: connection end not counted"
        );
        if i % 20 == 19 {
            by.check().await;
        }
    }
    eprintln!("fuzz: {usable} connections stayed usable, {closed} were closed");
    assert!(
        usable >= 50 && closed > 100,
        "the inputs should exercise both outcomes: {usable} usable, {closed} closed"
    );
    by.check().await;
    let mut fresh = Client::new(b.addr, "after-fuzz").await;
    assert_eq!(fresh.subscribe(&[("after/t", 1)]).await, [1]);
    sync(&mut fresh).await;
    assert_eq!(
        b.metric("hmq_connections_current", ""),
        3.0,
        "only the bystanders and the fresh client are connected"
    );
    b.stop().await;
}
