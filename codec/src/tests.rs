//! Unit and property tests of the codec: decode never panics, round trips, every refusal.

use super::*;
use bytes::{BufMut, BytesMut};
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
