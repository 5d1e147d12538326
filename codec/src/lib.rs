//! hmq-codec: the MQTT 3.1/3.1.1 wire codec, the only code that touches the `mqttbytes` crate.
//! The broker and hmq-bench both use it; nothing here knows about sessions or sockets.
//!
//! One concern per file: `frame` (fixed header, framing, the exact lengths of the
//! fixed-size packets, dispatch), `connect` (CONNECT parsed by hand, CONNACK), `publish` (PUBLISH
//! in, the per-subscriber header of PUBLISH out) and `packets` (SUBSCRIBE, the acknowledgements,
//! the client-side writers). This file holds the packet types every part shares.
//!
//! Framing (`mqttbytes::check`, which refuses an oversized remaining length before the body is
//! buffered) and most packet bodies come from `mqttbytes::v4`. Around it this crate adds what
//! the crate does not do, each for a stated reason:
//!
//! * **Fixed-header flags** are checked ([MQTT-2.2.2-1/2], [MQTT-3.3.1-2], [MQTT-3.6.1-1],
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
//! Client-side helpers (`encode_connect`, `encode_subscribe`, ...) serve `hmq-bench` and tests.
#![warn(missing_docs)]

mod connect;
mod frame;
mod packets;
mod publish;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use connect::{encode_connack, encode_connect};
pub use frame::decode;
pub use packets::{
    Ack, encode_ack, encode_disconnect, encode_pingreq, encode_pingresp, encode_suback,
    encode_subscribe, encode_unsubscribe,
};
pub use publish::{encode_publish_header, publish_size};

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

    pub(crate) fn from_crate(q: mqttbytes::QoS) -> QoS {
        match q {
            mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
            mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
            mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    pub(crate) fn to_crate(self) -> mqttbytes::QoS {
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

pub(crate) fn malformed(packet: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        packet,
        reason: reason.into(),
    }
}
