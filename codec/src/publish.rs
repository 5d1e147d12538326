//! PUBLISH: decoding an incoming one, and encoding the per-subscriber part of an outgoing one.
//!
//! The crate's `Publish::write` copies the payload into the output buffer; the broker instead
//! writes the per-subscriber header (flags, packet id) with [`encode_publish_header`] and hands
//! the shared payload `Bytes` to its write queue, so a fan-out never re-serialises or copies a
//! large payload.

use bytes::{BufMut, Bytes, BytesMut};
use mqttbytes::{FixedHeader, v4};

use crate::frame::{COPY_PAYLOAD_MAX, crate_err, put_remaining_length};
use crate::{DecodeError, Publish, QoS};

/// Parses a whole PUBLISH frame. Payloads up to [`COPY_PAYLOAD_MAX`] bytes are copied out of the
/// read buffer, larger ones stay zero-copy slices of it.
pub(crate) fn read(header: FixedHeader, frame: Bytes) -> Result<Publish, DecodeError> {
    let p = v4::Publish::read(header, frame).map_err(|e| crate_err("PUBLISH", e))?;
    let payload = if p.payload.len() <= COPY_PAYLOAD_MAX {
        Bytes::copy_from_slice(&p.payload)
    } else {
        p.payload
    };
    Ok(Publish {
        dup: p.dup,
        qos: QoS::from_crate(p.qos),
        retain: p.retain,
        topic: p.topic,
        pkid: p.pkid,
        payload,
    })
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
