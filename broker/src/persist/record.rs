//! The on-disk form of durable state: keys and values of the store, and their encodings.
//!
//! Keys start with one byte naming the family, followed by big-endian integers so that a scan
//! returns each family, and each session's queue, in order:
//!
//! | key | value | what |
//! |---|---|---|
//! | `V` | [`Meta`] | format version of the store |
//! | `S` sid | [`SessionRecord`] | a persistent session: client id, subscriptions, identity, when it went offline |
//! | `Q` sid seq | [`QueueRecord`] | one QoS 1/2 message for that session, queued or in flight (with its packet id) |
//! | `M` pid | [`MessageRecord`] | a message, stored once however many queue entries refer to it |
//! | `W` sid pkid | empty | an inbound QoS 2 packet id awaiting PUBREL |
//! | `R` topic | [`MessageRecord`] | a retained message |
//! | `O` peer 0x00 seq | [`OutboxRecord`] | a message waiting for a cluster peer's acknowledgement |
//!
//! Values are postcard (serde) with a leading format byte, so a later release can read what an
//! earlier one wrote, and anything that does not decode is an error that names the key.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The store's format version (the `V` record). A store with another version is refused.
pub const FORMAT: u32 = 1;

/// Leading byte of every value.
const VALUE_VERSION: u8 = 1;

/// Family bytes.
pub(crate) const META: u8 = b'V';
pub(crate) const SESSION: u8 = b'S';
pub(crate) const QUEUE: u8 = b'Q';
pub(crate) const MESSAGE: u8 = b'M';
pub(crate) const AWAITING: u8 = b'W';
pub(crate) const RETAINED: u8 = b'R';
pub(crate) const OUTBOX: u8 = b'O';

/// A key of the store, before encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// The format record.
    Meta,
    /// A session, by its durable id.
    Session(u64),
    /// A queue entry: session id, sequence number in that session's queue.
    Queue(u64, u64),
    /// A stored message, by its durable id.
    Message(u64),
    /// An inbound QoS 2 packet id awaiting PUBREL: session id, packet id.
    Awaiting(u64, u16),
    /// A retained message, by topic.
    Retained(String),
    /// A cluster outbox entry: peer name, sequence number.
    Outbox(String, u64),
}

impl Key {
    /// The encoded key.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(17);
        match self {
            Key::Meta => k.push(META),
            Key::Session(sid) => {
                k.push(SESSION);
                k.extend_from_slice(&sid.to_be_bytes());
            }
            Key::Queue(sid, seq) => {
                k.push(QUEUE);
                k.extend_from_slice(&sid.to_be_bytes());
                k.extend_from_slice(&seq.to_be_bytes());
            }
            Key::Message(pid) => {
                k.push(MESSAGE);
                k.extend_from_slice(&pid.to_be_bytes());
            }
            Key::Awaiting(sid, pkid) => {
                k.push(AWAITING);
                k.extend_from_slice(&sid.to_be_bytes());
                k.extend_from_slice(&pkid.to_be_bytes());
            }
            Key::Retained(topic) => {
                k.push(RETAINED);
                k.extend_from_slice(topic.as_bytes());
            }
            Key::Outbox(peer, seq) => {
                k.push(OUTBOX);
                k.extend_from_slice(peer.as_bytes());
                k.push(0);
                k.extend_from_slice(&seq.to_be_bytes());
            }
        }
        k
    }

    /// Decodes a key read from the store.
    pub fn decode(k: &[u8]) -> Result<Key, String> {
        let (&family, rest) = k.split_first().ok_or("empty key")?;
        let u64_at = |b: &[u8], at: usize| -> Result<u64, String> {
            b.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| "key too short".to_owned())
        };
        let exact = |want: usize| -> Result<(), String> {
            if rest.len() == want {
                Ok(())
            } else {
                Err(format!("key of {} bytes, expected {}", k.len(), want + 1))
            }
        };
        Ok(match family {
            META => {
                exact(0)?;
                Key::Meta
            }
            SESSION => {
                exact(8)?;
                Key::Session(u64_at(rest, 0)?)
            }
            QUEUE => {
                exact(16)?;
                Key::Queue(u64_at(rest, 0)?, u64_at(rest, 8)?)
            }
            MESSAGE => {
                exact(8)?;
                Key::Message(u64_at(rest, 0)?)
            }
            AWAITING => {
                exact(10)?;
                Key::Awaiting(u64_at(rest, 0)?, u16::from_be_bytes([rest[8], rest[9]]))
            }
            RETAINED => Key::Retained(
                std::str::from_utf8(rest)
                    .map_err(|_| "retained topic is not UTF-8")?
                    .to_owned(),
            ),
            OUTBOX => {
                if rest.len() < 9 || rest[rest.len() - 9] != 0 {
                    return Err("malformed outbox key".to_owned());
                }
                let name = &rest[..rest.len() - 9];
                Key::Outbox(
                    std::str::from_utf8(name)
                        .map_err(|_| "peer name is not UTF-8")?
                        .to_owned(),
                    u64_at(rest, rest.len() - 8)?,
                )
            }
            other => return Err(format!("unknown key family {other:#04x}")),
        })
    }
}

/// The `V` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`] of the release that created the store.
    pub format: u32,
    /// Set when the broker stops cleanly and cleared when it starts: a store found with
    /// `clean: false` was left by a crash.
    pub clean: bool,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The client id.
    pub client_id: String,
    /// Subscriptions: the filter as the client sent it (with `$share/...`), granted QoS.
    pub subscriptions: Vec<(String, u8)>,
    /// The authenticated user name of the latest connection (the ACL is compiled from it).
    pub username: Option<String>,
    /// The client address of the latest connection.
    pub ip: Option<String>,
    /// When the session went offline, in ms since the Unix epoch; `None` while connected (a
    /// session recovered in that state went offline when the broker stopped).
    pub offline_since_ms: Option<u64>,
    /// Its cluster-wide claim (when its client last connected; see `cluster::moves`).
    pub claim: u64,
}

/// Where a queued message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueState {
    /// Not sent yet.
    Queued,
    /// Sent with this packet id; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(u16),
    /// QoS 2: PUBREC received, PUBREL sent with this packet id; waiting for PUBCOMP.
    Released(u16),
}

/// A queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// The message (`M` record).
    pub message: u64,
    /// QoS for this subscriber.
    pub qos: u8,
    /// RETAIN flag on the wire (a retained message sent because of a new subscription).
    pub retain: bool,
    /// Progress.
    pub state: QueueState,
}

/// A stored message (also the value of a retained message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS as published.
    pub qos: u8,
    /// RETAIN as published.
    pub retain: bool,
    /// For retained messages: ms since the Unix epoch at the origin (orders cluster copies).
    pub stamp: u64,
}

/// A message waiting for a cluster peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: u8,
    /// RETAIN.
    pub retain: bool,
    /// Retained stamp.
    pub stamp: u64,
    /// Whether the peer delivers it to its plain (non-shared) subscribers.
    pub plain: bool,
    /// The shared groups the peer delivers it to.
    pub groups: Vec<String>,
    /// The message's cluster-wide id (kept, so that the peer recognises it when it comes
    /// again after a restart).
    pub mid: (u64, u64),
}

/// Encodes a value with its format byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard fails only for what these plain structs never contain (maps with non-string
    // keys are fine, unsized sequences are not used): an empty body would then fail to decode
    // at recovery, which is reported, not ignored.
    postcard::to_extend(value, vec![VALUE_VERSION]).unwrap_or_else(|_| vec![VALUE_VERSION])
}

/// Decodes a value written by [`encode`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("value format {v} is not known to this release")),
        None => Err("empty value".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_round_trip_and_sort_by_family_then_number() {
        let keys = [
            Key::Meta,
            Key::Session(7),
            Key::Queue(7, 1),
            Key::Queue(7, 256),
            Key::Message(u64::MAX),
            Key::Awaiting(3, 65_535),
            Key::Retained("a/b/c".into()),
            Key::Outbox("hmq-0".into(), 9),
        ];
        for k in &keys {
            assert_eq!(&Key::decode(&k.encode()).unwrap(), k);
        }
        assert!(Key::Queue(7, 1).encode() < Key::Queue(7, 256).encode());
        assert!(Key::Queue(7, u64::MAX).encode() < Key::Queue(8, 0).encode());
    }

    #[test]
    fn values_round_trip_and_refuse_other_formats() {
        let s = SessionRecord {
            client_id: "c".into(),
            subscriptions: vec![("a/#".into(), 1)],
            username: Some("u".into()),
            ip: Some("127.0.0.1".into()),
            offline_since_ms: Some(5),
            claim: 9,
        };
        let bytes = encode(&s);
        assert_eq!(decode::<SessionRecord>(&bytes).unwrap(), s);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(
            decode::<SessionRecord>(&other)
                .unwrap_err()
                .contains("format 9")
        );
        assert!(decode::<SessionRecord>(&bytes[..3]).is_err());
        assert!(decode::<SessionRecord>(&[]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_keys_and_values_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Key::decode(&bytes);
            let _ = decode::<SessionRecord>(&bytes);
            let _ = decode::<QueueRecord>(&bytes);
            let _ = decode::<MessageRecord>(&bytes);
            let _ = decode::<OutboxRecord>(&bytes);
        }
    }
}
