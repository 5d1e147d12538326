//! The packets other than CONNECT and PUBLISH: SUBSCRIBE (parsed by hand: the crate masks away
//! the reserved bits of the requested-QoS byte, which must be zero [MQTT-3.8.3-4], and accepts a
//! SUBSCRIBE with no filters), the acknowledgements, SUBACK and PINGRESP the server writes, and
//! the client-side writers hmq-bench and the tests use.
//!
//! The server's fixed packets are written directly: they are 2 or 4 constant-layout bytes and the
//! crate's writers return a `Result` that cannot fail for them.

use bytes::{BufMut, Bytes, BytesMut};
use mqttbytes::v4;

use crate::frame::{crate_err, put_remaining_length, take_string, take_u8, take_u16};
use crate::{DecodeError, Packet, QoS, malformed};

/// Parses the body of a SUBSCRIBE (everything after the fixed header).
pub(crate) fn parse_subscribe(mut b: Bytes) -> Result<Packet, DecodeError> {
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
