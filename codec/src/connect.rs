//! CONNECT, parsed by hand, and CONNACK.
//!
//! `mqttbytes::v4::Connect::read` accepts only protocol name `MQTT` (MQTT 3.1's `MQIsdp` clients
//! would be refused), reads passwords as `String` (MQTT passwords are binary), ignores the
//! reserved flag bit and cannot report "unsupported protocol level" separately from "malformed",
//! which need different answers (CONNACK 1 versus closing the connection). The client side
//! (`encode_connect`, for hmq-bench and tests) uses the crate's writer.

use bytes::{BufMut, Bytes, BytesMut};
use mqttbytes::v4;

use crate::frame::{crate_err, take_bytes, take_string, take_u8, take_u16};
use crate::{Connect, ConnectCode, DecodeError, Protocol, QoS, Will, malformed};

/// Parses the body of a CONNECT (everything after the fixed header).
pub(crate) fn parse(mut b: Bytes) -> Result<Connect, DecodeError> {
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

/// Writes a CONNACK.
pub fn encode_connack(buf: &mut BytesMut, session_present: bool, code: ConnectCode) {
    buf.put_slice(&[0x20, 0x02, session_present as u8, code as u8]);
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
