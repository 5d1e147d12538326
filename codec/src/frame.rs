//! Framing: the fixed header (type, flags, remaining length) checked before the body is
//! buffered, the exact lengths of the fixed-size packets, and the dispatch of each frame to the
//! parser of its packet; plus the field readers the hand-written parsers share.
//!
//! `mqttbytes::check` reads the remaining length and refuses one above `max_packet_size` before
//! the body is buffered. The crate ignores the fixed-header flags and accepts trailing garbage
//! after the fixed-size packets, so both are checked here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes::v4;

use crate::{DecodeError, Packet, connect, malformed, packets, publish};

/// Payloads up to this size are copied out of the read buffer so that a queued or retained
/// message does not keep a whole read buffer alive; larger ones are shared zero-copy.
pub(crate) const COPY_PAYLOAD_MAX: usize = 512;

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
        1 => Packet::Connect(Box::new(connect::parse(frame.slice(header_len..))?)),
        3 => Packet::Publish(publish::read(header, frame)?),
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
        8 => packets::parse_subscribe(frame.slice(header_len..))?,
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

pub(crate) fn crate_err(packet: &'static str, e: mqttbytes::Error) -> DecodeError {
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

pub(crate) fn take_u8(b: &mut Bytes, packet: &'static str) -> Result<u8, DecodeError> {
    if b.is_empty() {
        return Err(malformed(packet, "truncated"));
    }
    Ok(b.get_u8())
}

pub(crate) fn take_u16(b: &mut Bytes, packet: &'static str) -> Result<u16, DecodeError> {
    if b.len() < 2 {
        return Err(malformed(packet, "truncated"));
    }
    Ok(b.get_u16())
}

pub(crate) fn take_bytes(b: &mut Bytes, packet: &'static str) -> Result<Bytes, DecodeError> {
    let len = take_u16(b, packet)? as usize;
    if len > b.len() {
        return Err(malformed(packet, "field crosses the packet end"));
    }
    Ok(b.split_to(len))
}

/// An MQTT UTF-8 string: valid UTF-8 and no U+0000 [MQTT-1.5.3-1/2].
pub(crate) fn take_string(b: &mut Bytes, packet: &'static str) -> Result<String, DecodeError> {
    let raw = take_bytes(b, packet)?;
    let s =
        std::str::from_utf8(&raw).map_err(|_| malformed(packet, "string is not valid UTF-8"))?;
    if s.contains('\0') {
        return Err(malformed(packet, "string contains U+0000"));
    }
    Ok(s.to_owned())
}

/// Appends the variable-length remaining-length field. `len` must be below 268,435,456.
pub(crate) fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
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
