//! The MQTT 3.1/3.1.1 wire codec: the only module that touches the `mqttbytes` crate.
//!
//! Framing (`mqttbytes::check`, which refuses an oversized remaining length before the body is
//! buffered) and most packet bodies come from `mqttbytes::v4`. Around it this module adds what the
//! crate does not do, each for a stated reason:
//!
//! * **Fixed-header flags** are checked here ([MQTT-2.2.2-1/2], [MQTT-3.3.1-2], [MQTT-3.6.1-1],
//!   [MQTT-3.8.1-1], [MQTT-3.10.1-1]); the crate ignores them.
//! * **Exact lengths** of the fixed-size packets (acks 2 bytes, PINGREQ/DISCONNECT 0) are checked;
//!   the crate accepts trailing garbage.
//! * **CONNECT is parsed by hand**: the crate accepts only protocol name `MQTT` (MQTT 3.1's
//!   `MQIsdp` clients would be refused), reads passwords as `String` (MQTT passwords are binary),
//!   ignores the reserved flag bit and cannot report "unsupported protocol level" separately from
//!   "malformed", which need different answers (CONNACK 1 versus closing the connection).
//! * **SUBSCRIBE is parsed by hand**: the crate masks away the reserved bits of the requested-QoS
//!   byte, which must be zero [MQTT-3.8.3-4], and accepts a SUBSCRIBE with no filters.
//! * **Outgoing PUBLISH is encoded here**: the crate's `Publish::write` copies the payload into the
//!   output buffer; we write the per-subscriber header (flags, packet id) and hand the shared
//!   payload `Bytes` to the write queue, so a fan-out never re-serialises or copies a large payload.
//! * Small fixed server packets (CONNACK, acks, PINGRESP) are written directly: they are 2 or 4
//!   constant-layout bytes and the crate's writers return a `Result` that cannot fail for them.
//!
//! Client-side helpers (`encode_connect`, `encode_subscribe`, ...) serve `hmq-bench` and tools.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes::v4;

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// Fire and forget.
    #[default]
    AtMostOnce = 0,
    /// Acknowledged with PUBACK.
    AtLeastOnce = 1,
    /// Four-step handshake, delivered once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Maps 0, 1, 2 to a QoS.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    fn from_crate(q: mqttbytes::QoS) -> QoS {
        match q {
            mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
            mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
            mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    fn to_crate(self) -> mqttbytes::QoS {
        match self {
            QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
            QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
            QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
        }
    }
}

/// The protocol revision a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
}

/// CONNACK return codes (MQTT 3.1.1 table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectCode {
    /// Connection accepted.
    Accepted = 0,
    /// The server does not support the requested protocol level.
    UnacceptableProtocol = 1,
    /// The client identifier is not allowed.
    IdentifierRejected = 2,
    /// The server cannot take the connection now.
    ServerUnavailable = 3,
    /// Malformed or wrong user name or password.
    BadUsernamePassword = 4,
    /// The client is not authorised to connect.
    NotAuthorized = 5,
}

/// A will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name (validated by the connection against the topic rules).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS to publish it with.
    pub qos: QoS,
    /// Whether it is published as a retained message.
    pub retain: bool,
}

/// A decoded CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol revision.
    pub protocol: Protocol,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keepalive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Will message, if any.
    pub will: Option<Will>,
    /// User name, if the flag was set.
    pub username: Option<String>,
    /// Password, if the flag was set. Binary; never logged.
    pub password: Option<Bytes>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will_topic", &self.will.as_ref().map(|w| &w.topic))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (UTF-8 checked; topic rules are checked by the caller with its limits).
    pub topic: String,
    /// Packet identifier, 0 for QoS 0.
    pub pkid: u16,
    /// Payload.
    pub payload: Bytes,
}

/// Any MQTT 3.1/3.1.1 control packet, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client → server.
    Connect(Box<Connect>),
    /// Server → client.
    ConnAck {
        /// Session present flag.
        session_present: bool,
        /// Return code.
        code: u8,
    },
    /// Both directions.
    Publish(Publish),
    /// Both directions.
    PubAck(u16),
    /// Both directions.
    PubRec(u16),
    /// Both directions.
    PubRel(u16),
    /// Both directions.
    PubComp(u16),
    /// Client → server: packet id and (filter, requested QoS) pairs, at least one.
    Subscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters with their requested QoS.
        filters: Vec<(String, QoS)>,
    },
    /// Server → client.
    SubAck {
        /// Packet identifier.
        pkid: u16,
        /// Granted QoS per filter, 0x80 for failure.
        codes: Vec<u8>,
    },
    /// Client → server: packet id and filters, at least one.
    Unsubscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// Server → client.
    UnsubAck(u16),
    /// Client → server.
    PingReq,
    /// Server → client.
    PingResp,
    /// Client → server.
    Disconnect,
}

impl Packet {
    /// The packet's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck { .. } => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe { .. } => "SUBSCRIBE",
            Packet::SubAck { .. } => "SUBACK",
            Packet::Unsubscribe { .. } => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect => "DISCONNECT",
        }
    }
}

/// Why bytes could not be decoded into a packet. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is larger than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced size (fixed header + remaining length, lower bound).
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The bytes violate the protocol.
    #[error("malformed {packet}: {reason}")]
    Malformed {
        /// Packet type, or "packet" when the type itself is bad.
        packet: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// CONNECT with a protocol name we recognise at a level we do not support: answer CONNACK 1.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocol(u8),
}

fn malformed(packet: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        packet,
        reason: reason.into(),
    }
}

/// Payloads up to this size are copied out of the read buffer so that a queued or retained
/// message does not keep a whole read buffer alive; larger ones are shared zero-copy.
const COPY_PAYLOAD_MAX: usize = 512;

const NAMES: [&str; 16] = [
    "reserved(0)",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved(15)",
];

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), `Ok(Some(packet))` after
/// consuming exactly one packet, or an error (the connection must be closed). `max_packet_size`
/// bounds the whole packet and is enforced from the fixed header, before the body is buffered.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let kind = byte1 >> 4;
    let flags = byte1 & 0x0F;
    let name = NAMES[kind as usize];
    // Check the type and flags before waiting for the body: garbage is refused at once.
    let expected_flags = match kind {
        0 | 15 => return Err(malformed("packet", format!("reserved packet type {kind}"))),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(malformed(name, "QoS 3"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(malformed(name, "DUP set on a QoS 0 message"));
            }
            flags
        }
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(malformed(name, format!("reserved flags {flags:#06b}")));
    }

    let header = match mqttbytes::check(buf.iter(), max_packet_size) {
        Ok(h) => h,
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
            return Err(DecodeError::TooLarge {
                size,
                max: max_packet_size,
            });
        }
        Err(e) => return Err(malformed(name, format!("{e:?}"))),
    };
    let frame_len = header.frame_length();
    if frame_len > max_packet_size {
        return Err(DecodeError::TooLarge {
            size: frame_len,
            max: max_packet_size,
        });
    }
    let header_len = frame_len - remaining_of(buf, frame_len);
    let remaining = frame_len - header_len;

    let exact = |want: usize| -> Result<(), DecodeError> {
        if remaining == want {
            Ok(())
        } else {
            Err(malformed(
                name,
                format!("remaining length {remaining}, expected {want}"),
            ))
        }
    };
    match kind {
        2 | 4..=7 | 11 => exact(2)?,
        12..=14 => exact(0)?,
        _ => {}
    }

    // From here on the whole frame is in `buf`: take it.
    let frame = buf.split_to(frame_len).freeze();
    let packet = match kind {
        1 => Packet::Connect(Box::new(parse_connect(frame.slice(header_len..))?)),
        3 => {
            let p = v4::Publish::read(header, frame).map_err(|e| crate_err(name, e))?;
            let payload = if p.payload.len() <= COPY_PAYLOAD_MAX {
                Bytes::copy_from_slice(&p.payload)
            } else {
                p.payload
            };
            Packet::Publish(Publish {
                dup: p.dup,
                qos: QoS::from_crate(p.qos),
                retain: p.retain,
                topic: p.topic,
                pkid: p.pkid,
                payload,
            })
        }
        2 => {
            let c = v4::ConnAck::read(header, frame).map_err(|e| crate_err(name, e))?;
            Packet::ConnAck {
                session_present: c.session_present,
                code: c.code as u8,
            }
        }
        4 => Packet::PubAck(
            v4::PubAck::read(header, frame)
                .map_err(|e| crate_err(name, e))?
                .pkid,
        ),
        5 => Packet::PubRec(
            v4::PubRec::read(header, frame)
                .map_err(|e| crate_err(name, e))?
                .pkid,
        ),
        6 => Packet::PubRel(
            v4::PubRel::read(header, frame)
                .map_err(|e| crate_err(name, e))?
                .pkid,
        ),
        7 => Packet::PubComp(
            v4::PubComp::read(header, frame)
                .map_err(|e| crate_err(name, e))?
                .pkid,
        ),
        8 => parse_subscribe(frame.slice(header_len..))?,
        9 => {
            let s = v4::SubAck::read(header, frame).map_err(|e| crate_err(name, e))?;
            let codes = s
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => *q as u8,
                    v4::SubscribeReasonCode::Failure => 0x80,
                })
                .collect();
            Packet::SubAck {
                pkid: s.pkid,
                codes,
            }
        }
        10 => {
            let u = v4::Unsubscribe::read(header, frame).map_err(|e| crate_err(name, e))?;
            if u.pkid == 0 {
                return Err(malformed(name, "packet identifier 0"));
            }
            if u.topics.is_empty() {
                return Err(malformed(name, "no topic filters")); // [MQTT-3.10.3-2]
            }
            // The crate checks UTF-8 but not U+0000 [MQTT-1.5.3-2].
            if u.topics.iter().any(|t| t.contains('\0')) {
                return Err(malformed(name, "string contains U+0000"));
            }
            Packet::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            }
        }
        11 => Packet::UnsubAck(
            v4::UnsubAck::read(header, frame)
                .map_err(|e| crate_err(name, e))?
                .pkid,
        ),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        _ => Packet::Disconnect,
    };
    Ok(Some(packet))
}

/// Remaining length of the frame at the front of `buf`, given its total length: derived from the
/// number of length bytes, which `check` already validated.
fn remaining_of(buf: &BytesMut, frame_len: usize) -> usize {
    let len_bytes = buf[1..]
        .iter()
        .take(4)
        .take_while(|b| *b & 0x80 != 0)
        .count()
        + 1;
    frame_len - 1 - len_bytes
}

fn crate_err(packet: &'static str, e: mqttbytes::Error) -> DecodeError {
    let reason = match e {
        mqttbytes::Error::TopicNotUtf8 => "string is not valid UTF-8".to_string(),
        mqttbytes::Error::PacketIdZero => "packet identifier 0".to_string(),
        mqttbytes::Error::BoundaryCrossed(n) => {
            format!("field of {n} bytes crosses the packet end")
        }
        mqttbytes::Error::InvalidQoS(q) => format!("QoS {q}"),
        other => format!("{other:?}"),
    };
    DecodeError::Malformed { packet, reason }
}

fn take_u8(b: &mut Bytes, packet: &'static str) -> Result<u8, DecodeError> {
    if b.is_empty() {
        return Err(malformed(packet, "truncated"));
    }
    Ok(b.get_u8())
}

fn take_u16(b: &mut Bytes, packet: &'static str) -> Result<u16, DecodeError> {
    if b.len() < 2 {
        return Err(malformed(packet, "truncated"));
    }
    Ok(b.get_u16())
}

fn take_bytes(b: &mut Bytes, packet: &'static str) -> Result<Bytes, DecodeError> {
    let len = take_u16(b, packet)? as usize;
    if len > b.len() {
        return Err(malformed(packet, "field crosses the packet end"));
    }
    Ok(b.split_to(len))
}

/// An MQTT UTF-8 string: valid UTF-8 and no U+0000 [MQTT-1.5.3-1/2].
fn take_string(b: &mut Bytes, packet: &'static str) -> Result<String, DecodeError> {
    let raw = take_bytes(b, packet)?;
    let s =
        std::str::from_utf8(&raw).map_err(|_| malformed(packet, "string is not valid UTF-8"))?;
    if s.contains('\0') {
        return Err(malformed(packet, "string contains U+0000"));
    }
    Ok(s.to_owned())
}

fn parse_connect(mut b: Bytes) -> Result<Connect, DecodeError> {
    const P: &str = "CONNECT";
    let name = take_bytes(&mut b, P)?;
    let level = take_u8(&mut b, P)?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT" | b"MQIsdp", other) => return Err(DecodeError::UnsupportedProtocol(other)),
        // [MQTT-3.1.2-1]: an unknown protocol name closes the connection without CONNACK.
        _ => return Err(malformed(P, "unknown protocol name")),
    };
    let flags = take_u8(&mut b, P)?;
    if flags & 0x01 != 0 {
        return Err(malformed(P, "reserved flag set")); // [MQTT-3.1.2-3]
    }
    let clean_session = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed(P, "will QoS or retain set without a will")); // [MQTT-3.1.2-11/13/15]
    }
    let will_qos = QoS::from_u8(will_qos).ok_or_else(|| malformed(P, "will QoS 3"))?;
    if password_flag && !username_flag {
        return Err(malformed(P, "password without user name")); // [MQTT-3.1.2-22]
    }
    let keep_alive = take_u16(&mut b, P)?;
    let client_id = take_string(&mut b, P)?;
    let will = if will_flag {
        let topic = take_string(&mut b, P)?;
        let payload = Bytes::copy_from_slice(&take_bytes(&mut b, P)?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(take_string(&mut b, P)?)
    } else {
        None
    };
    let password = if password_flag {
        Some(Bytes::copy_from_slice(&take_bytes(&mut b, P)?))
    } else {
        None
    };
    if !b.is_empty() {
        return Err(malformed(P, "trailing bytes after the payload"));
    }
    Ok(Connect {
        protocol,
        clean_session,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn parse_subscribe(mut b: Bytes) -> Result<Packet, DecodeError> {
    const P: &str = "SUBSCRIBE";
    let pkid = take_u16(&mut b, P)?;
    if pkid == 0 {
        return Err(malformed(P, "packet identifier 0"));
    }
    let mut filters = Vec::new();
    while !b.is_empty() {
        let filter = take_string(&mut b, P)?;
        let options = take_u8(&mut b, P)?;
        if options & 0xFC != 0 {
            return Err(malformed(P, "reserved bits set in requested QoS")); // [MQTT-3-8.3-4]
        }
        let qos = QoS::from_u8(options).ok_or_else(|| malformed(P, "requested QoS 3"))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(malformed(P, "no topic filters")); // [MQTT-3.8.3-3]
    }
    Ok(Packet::Subscribe { pkid, filters })
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends the variable-length remaining-length field. `len` must be below 268,435,456.
fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Writes a CONNACK.
pub fn encode_connack(buf: &mut BytesMut, session_present: bool, code: ConnectCode) {
    buf.put_slice(&[0x20, 0x02, session_present as u8, code as u8]);
}

/// The acknowledgement packets that carry only a packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// QoS 1 acknowledgement.
    PubAck,
    /// QoS 2 step 1.
    PubRec,
    /// QoS 2 step 2.
    PubRel,
    /// QoS 2 step 3.
    PubComp,
    /// UNSUBSCRIBE acknowledgement.
    UnsubAck,
}

/// Writes a 4-byte acknowledgement.
pub fn encode_ack(buf: &mut BytesMut, ack: Ack, pkid: u16) {
    let byte1 = match ack {
        Ack::PubAck => 0x40,
        Ack::PubRec => 0x50,
        Ack::PubRel => 0x62,
        Ack::PubComp => 0x70,
        Ack::UnsubAck => 0xB0,
    };
    buf.put_slice(&[byte1, 0x02]);
    buf.put_u16(pkid);
}

/// Writes a SUBACK with one return code per filter.
pub fn encode_suback(buf: &mut BytesMut, pkid: u16, codes: &[u8]) {
    buf.put_u8(0x90);
    put_remaining_length(buf, 2 + codes.len());
    buf.put_u16(pkid);
    buf.put_slice(codes);
}

/// Writes a PINGRESP.
pub fn encode_pingresp(buf: &mut BytesMut) {
    buf.put_slice(&[0xD0, 0x00]);
}

/// Writes everything of an outgoing PUBLISH except the payload: fixed header, topic and packet
/// id. The caller appends `payload_len` bytes of payload (copied or as a shared chunk).
pub fn encode_publish_header(
    buf: &mut BytesMut,
    topic: &str,
    qos: QoS,
    pkid: u16,
    dup: bool,
    retain: bool,
    payload_len: usize,
) {
    let byte1 = 0x30 | (dup as u8) << 3 | (qos as u8) << 1 | retain as u8;
    let remaining = 2 + topic.len() + if qos == QoS::AtMostOnce { 0 } else { 2 } + payload_len;
    buf.reserve(5 + remaining.min(256));
    buf.put_u8(byte1);
    put_remaining_length(buf, remaining);
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if qos != QoS::AtMostOnce {
        buf.put_u16(pkid);
    }
}

/// Size of an encoded PUBLISH, to check it against a peer's limit before sending.
pub fn publish_size(topic: &str, qos: QoS, payload_len: usize) -> usize {
    let remaining = 2 + topic.len() + if qos == QoS::AtMostOnce { 0 } else { 2 } + payload_len;
    let len_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_bytes + remaining
}

/// Client side: writes a CONNECT (MQTT 3.1.1).
pub fn encode_connect(buf: &mut BytesMut, c: &Connect) -> Result<(), DecodeError> {
    let mut out = v4::Connect::new(c.client_id.clone());
    out.keep_alive = c.keep_alive;
    out.clean_session = c.clean_session;
    if let Some(w) = &c.will {
        out.last_will = Some(v4::LastWill::new(
            w.topic.clone(),
            w.payload.to_vec(),
            w.qos.to_crate(),
            w.retain,
        ));
    }
    if let Some(u) = &c.username {
        let p = c
            .password
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        out.set_login(u.clone(), p);
    }
    out.write(buf)
        .map(|_| ())
        .map_err(|e| crate_err("CONNECT", e))
}

/// Client side: writes a SUBSCRIBE.
pub fn encode_subscribe(
    buf: &mut BytesMut,
    pkid: u16,
    filters: &[(String, QoS)],
) -> Result<(), DecodeError> {
    let mut s = v4::Subscribe::new_many(
        filters
            .iter()
            .map(|(f, q)| v4::SubscribeFilter::new(f.clone(), q.to_crate())),
    );
    s.pkid = pkid;
    s.write(buf)
        .map(|_| ())
        .map_err(|e| crate_err("SUBSCRIBE", e))
}

/// Client side: writes an UNSUBSCRIBE.
pub fn encode_unsubscribe(
    buf: &mut BytesMut,
    pkid: u16,
    filters: &[String],
) -> Result<(), DecodeError> {
    let u = v4::Unsubscribe {
        pkid,
        topics: filters.to_vec(),
    };
    u.write(buf)
        .map(|_| ())
        .map_err(|e| crate_err("UNSUBSCRIBE", e))
}

/// Client side: writes a PINGREQ.
pub fn encode_pingreq(buf: &mut BytesMut) {
    buf.put_slice(&[0xC0, 0x00]);
}

/// Client side: writes a DISCONNECT.
pub fn encode_disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        let mut b = BytesMut::from(bytes);
        decode(&mut b, 1 << 20)
    }

    fn connect_bytes(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.push(level);
        body.push(flags);
        body.extend_from_slice(&[0, 60]);
        body.extend_from_slice(payload);
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn connect_311_and_31() {
        let p = dec(&connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'c']))
            .unwrap()
            .unwrap();
        let Packet::Connect(c) = p else { panic!() };
        assert_eq!(c.protocol, Protocol::V311);
        assert!(c.clean_session);
        assert_eq!(c.client_id, "c");
        assert_eq!(c.keep_alive, 60);
        let p = dec(&connect_bytes(b"MQIsdp", 3, 0x00, &[0, 1, b'c']))
            .unwrap()
            .unwrap();
        let Packet::Connect(c) = p else { panic!() };
        assert_eq!(c.protocol, Protocol::V31);
        assert!(!c.clean_session);
    }

    #[test]
    fn connect_with_will_and_binary_password() {
        let payload = [
            0, 1, b'c', // client id
            0, 1, b't', // will topic
            0, 2, 0xFF, 0x00, // will payload
            0, 1, b'u', // user
            0, 2, 0xC3, 0x28, // invalid UTF-8 password
        ];
        let flags = 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04;
        let Packet::Connect(c) = dec(&connect_bytes(b"MQTT", 4, flags, &payload))
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        let w = c.will.clone().unwrap();
        assert_eq!(
            (w.topic.as_str(), w.qos, w.retain),
            ("t", QoS::AtLeastOnce, true)
        );
        assert_eq!(&w.payload[..], &[0xFF, 0x00]);
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&[0xC3, 0x28][..]));
        assert!(!format!("{c:?}").contains("0xC3"));
    }

    #[test]
    fn connect_errors() {
        assert_eq!(
            dec(&connect_bytes(b"MQTT", 5, 0, &[0, 0])),
            Err(DecodeError::UnsupportedProtocol(5))
        );
        assert_eq!(
            dec(&connect_bytes(b"MQIsdp", 4, 0, &[0, 0])),
            Err(DecodeError::UnsupportedProtocol(4))
        );
        for (name, flags, payload) in [
            (&b"HTTP"[..], 0u8, &[0u8, 0][..]),
            (b"MQTT", 0x01, &[0, 0]),                   // reserved flag
            (b"MQTT", 0x08, &[0, 0]),                   // will qos without will
            (b"MQTT", 0x20, &[0, 0]),                   // will retain without will
            (b"MQTT", 0x40, &[0, 0, 0, 0]),             // password without user
            (b"MQTT", 0x1C, &[0, 0, 0, 1, b't', 0, 0]), // will qos 3
            (b"MQTT", 0x00, &[0, 0, 9]),                // trailing byte
            (b"MQTT", 0x00, &[0, 5, b'a']),             // truncated id
            (b"MQTT", 0x00, &[0, 1, 0]),                // NUL in client id
            (b"MQTT", 0x00, &[0, 1, 0xFF]),             // invalid UTF-8
        ] {
            let r = dec(&connect_bytes(name, 4, flags, payload));
            assert!(
                matches!(r, Err(DecodeError::Malformed { .. })),
                "{flags:#x} {payload:?}: {r:?}"
            );
        }
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let full = connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'c']);
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut b, 1024), Ok(None), "cut {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn publish_roundtrip_and_flags() {
        let mut b = BytesMut::new();
        encode_publish_header(&mut b, "a/b", QoS::ExactlyOnce, 7, true, true, 3);
        b.put_slice(b"xyz");
        assert_eq!(b.len(), publish_size("a/b", QoS::ExactlyOnce, 3));
        let p = decode(&mut b, 1024).unwrap().unwrap();
        assert_eq!(
            p,
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b".into(),
                pkid: 7,
                payload: Bytes::from_static(b"xyz"),
            })
        );
        assert!(b.is_empty());
        // QoS 3, DUP on QoS 0, pkid 0 on QoS 1.
        assert!(dec(&[0x36, 0x05, 0, 1, b'a', 0, 1]).is_err());
        assert!(dec(&[0x38, 0x03, 0, 1, b'a']).is_err());
        assert!(dec(&[0x32, 0x05, 0, 1, b'a', 0, 0]).is_err());
        // Remaining length 0.
        assert!(dec(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn large_publish_is_shared_not_copied() {
        let payload = vec![7u8; 4096];
        let mut b = BytesMut::new();
        encode_publish_header(&mut b, "t", QoS::AtMostOnce, 0, false, false, payload.len());
        b.put_slice(&payload);
        let Some(Packet::Publish(p)) = decode(&mut b, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(p.payload.len(), 4096);
        assert!(p.payload.iter().all(|&x| x == 7));
    }

    #[test]
    fn size_limit_before_body() {
        // Announces 2 MiB; only the header is present.
        let mut b = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
        assert!(matches!(
            decode(&mut b, 1 << 20),
            Err(DecodeError::TooLarge { .. })
        ));
        // Exactly at the limit is fine: 2 header bytes + 100 body bytes = 102.
        let mut body = vec![0x30, 100, 0, 1, b't'];
        body.extend(std::iter::repeat_n(0u8, 97));
        assert!(
            decode(&mut BytesMut::from(&body[..]), 102)
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            decode(&mut BytesMut::from(&body[..]), 101),
            Err(DecodeError::TooLarge { .. })
        ));
        // A 5-byte remaining length is malformed.
        assert!(dec(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
    }

    #[test]
    fn fixed_packets() {
        assert_eq!(dec(&[0xC0, 0]), Ok(Some(Packet::PingReq)));
        assert_eq!(dec(&[0xE0, 0]), Ok(Some(Packet::Disconnect)));
        assert!(dec(&[0xC0, 1, 0]).is_err());
        assert!(dec(&[0xE1, 0]).is_err());
        assert_eq!(dec(&[0x40, 2, 0, 5]), Ok(Some(Packet::PubAck(5))));
        assert_eq!(dec(&[0x62, 2, 0, 5]), Ok(Some(Packet::PubRel(5))));
        assert!(dec(&[0x60, 2, 0, 5]).is_err()); // PUBREL flags must be 0010
        assert!(dec(&[0x40, 3, 0, 5, 0]).is_err()); // PUBACK too long
        assert!(dec(&[0x00, 0]).is_err());
        assert!(dec(&[0xF0, 0]).is_err());
    }

    #[test]
    fn subscribe_and_unsubscribe() {
        let p = dec(&[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 2])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            Packet::Subscribe {
                pkid: 1,
                filters: vec![("a/#".into(), QoS::ExactlyOnce)]
            }
        );
        assert!(dec(&[0x82, 2, 0, 1]).is_err()); // no filters
        assert!(dec(&[0x82, 6, 0, 1, 0, 1, b'a', 3]).is_err()); // QoS 3
        assert!(dec(&[0x82, 6, 0, 1, 0, 1, b'a', 0x41]).is_err()); // reserved bits
        assert!(dec(&[0x80, 6, 0, 1, 0, 1, b'a', 0]).is_err()); // flags
        assert!(dec(&[0x82, 6, 0, 0, 0, 1, b'a', 0]).is_err()); // pkid 0
        let p = dec(&[0xA2, 5, 0, 9, 0, 1, b'a']).unwrap().unwrap();
        assert_eq!(
            p,
            Packet::Unsubscribe {
                pkid: 9,
                filters: vec!["a".into()]
            }
        );
        assert!(dec(&[0xA2, 2, 0, 9]).is_err());
        assert!(dec(&[0xA2, 5, 0, 9, 0, 1, 0]).is_err()); // U+0000
    }

    #[test]
    fn client_side_encoders_roundtrip() {
        let c = Connect {
            protocol: Protocol::V311,
            clean_session: false,
            keep_alive: 30,
            client_id: "id".into(),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: true,
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
        };
        let mut b = BytesMut::new();
        encode_connect(&mut b, &c).unwrap();
        encode_subscribe(&mut b, 3, &[("x/+".into(), QoS::AtLeastOnce)]).unwrap();
        encode_unsubscribe(&mut b, 4, &["x/+".into()]).unwrap();
        encode_pingreq(&mut b);
        encode_disconnect(&mut b);
        assert_eq!(decode(&mut b, 1024), Ok(Some(Packet::Connect(Box::new(c)))));
        assert!(matches!(
            decode(&mut b, 1024),
            Ok(Some(Packet::Subscribe { pkid: 3, .. }))
        ));
        assert!(matches!(
            decode(&mut b, 1024),
            Ok(Some(Packet::Unsubscribe { pkid: 4, .. }))
        ));
        assert_eq!(decode(&mut b, 1024), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut b, 1024), Ok(Some(Packet::Disconnect)));
        assert!(b.is_empty());

        encode_connack(&mut b, true, ConnectCode::Accepted);
        encode_suback(&mut b, 3, &[1, 0x80]);
        encode_ack(&mut b, Ack::UnsubAck, 4);
        encode_pingresp(&mut b);
        assert_eq!(
            decode(&mut b, 1024),
            Ok(Some(Packet::ConnAck {
                session_present: true,
                code: 0
            }))
        );
        assert_eq!(
            decode(&mut b, 1024),
            Ok(Some(Packet::SubAck {
                pkid: 3,
                codes: vec![1, 0x80]
            }))
        );
        assert_eq!(decode(&mut b, 1024), Ok(Some(Packet::UnsubAck(4))));
        assert_eq!(decode(&mut b, 1024), Ok(Some(Packet::PingResp)));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and a successful decode consumes at least
        /// one byte (so a loop over `decode` always terminates).
        #[test]
        fn decode_is_total(data in prop::collection::vec(any::<u8>(), 0..300), max in 2usize..400) {
            let mut b = BytesMut::from(&data[..]);
            loop {
                let before = b.len();
                match decode(&mut b, max) {
                    Ok(Some(_)) => prop_assert!(b.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Every PUBLISH we encode decodes to the same fields.
        #[test]
        fn publish_roundtrip(topic in "[a-z/]{1,30}", qos in 0u8..3, pkid in 1u16.., dup: bool,
                             retain: bool, payload in prop::collection::vec(any::<u8>(), 0..2000)) {
            let qos = QoS::from_u8(qos).unwrap();
            let dup = dup && qos != QoS::AtMostOnce;
            let mut b = BytesMut::new();
            encode_publish_header(&mut b, &topic, qos, pkid, dup, retain, payload.len());
            b.put_slice(&payload);
            let Some(Packet::Publish(p)) = decode(&mut b, 1 << 20).unwrap() else { panic!() };
            prop_assert_eq!(p.topic, topic);
            prop_assert_eq!(p.qos, qos);
            prop_assert_eq!(p.pkid, if qos == QoS::AtMostOnce { 0 } else { pkid });
            prop_assert_eq!((p.dup, p.retain), (dup, retain));
            prop_assert_eq!(&p.payload[..], &payload[..]);
        }
    }
}
