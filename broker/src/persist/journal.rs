//! The changes waiting for the next commit, netted: a key written and then deleted before the
//! commit that would have written it never reaches the disk.
//!
//! This is what makes durable sessions cheap while clients keep up: a QoS 1 message to a
//! connected persistent subscriber is queued (`Q` and `M` written), sent (`Q` rewritten with its
//! packet id) and acknowledged (both deleted) within a few milliseconds, all before the group
//! commit, so the commit has nothing to write for it. Only messages that outlive a commit
//! interval (offline subscribers, slow ones, a backlog) are written, and deleted later.
//!
//! Values are kept as the live objects (`Arc<Message>`, small records) and encoded only when
//! they are committed, so a netted change costs a hash-map insert and remove.

use std::collections::HashMap;
use std::sync::Arc;

use super::record::{self, Key, OutboxRecord, QueueRecord, SessionRecord};
use crate::cluster::proto::Forward;
use crate::message::Message;

/// The value of a pending write.
#[derive(Debug, Clone)]
pub enum Value {
    /// `S`.
    Session(Box<SessionRecord>),
    /// `Q`.
    Queue(QueueRecord),
    /// `M`: the message, encoded at commit time.
    Message(Arc<Message>),
    /// `W`: no value.
    Awaiting,
    /// `R`.
    Retained(Arc<Message>),
    /// `O`: the forwarded message as the peer's outbox holds it, encoded at commit time.
    Outbox(Arc<Forward>),
    /// `V`, already encoded.
    Meta(Vec<u8>),
}

impl Value {
    /// The encoded value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Value::Session(s) => record::encode(&**s),
            Value::Queue(q) => record::encode(q),
            Value::Message(m) | Value::Retained(m) => record::encode(&message_record(m)),
            Value::Awaiting => record::encode(&()),
            Value::Outbox(f) => record::encode(&outbox_record(f)),
            Value::Meta(bytes) => bytes.clone(),
        }
    }
}

/// The stored form of a message waiting for a cluster peer.
pub fn outbox_record(f: &Forward) -> OutboxRecord {
    OutboxRecord {
        topic: f.topic.clone(),
        payload: f.payload.clone(),
        qos: f.qos,
        retain: f.retain,
        stamp: f.stamp,
        plain: f.plain,
        groups: f.groups.clone(),
        mid: f.mid,
    }
}

/// The stored form of a message.
pub fn message_record(m: &Message) -> record::MessageRecord {
    record::MessageRecord {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos as u8,
        retain: m.retain,
        stamp: m.stamp,
    }
}

#[derive(Debug)]
enum Op {
    Put(Value),
    Delete,
}

#[derive(Debug)]
struct Entry {
    op: Op,
    /// The key is not on disk (it was created since the last commit): a delete then drops the
    /// entry instead of writing a tombstone.
    fresh: bool,
}

/// What a change did to the pending set, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A new pending write or delete.
    Added,
    /// Replaced a pending change of the same key.
    Replaced,
    /// Cancelled a pending write of a key that never reached the disk: nothing to write.
    Netted,
}

/// Pending changes of one shard.
#[derive(Debug, Default)]
pub struct Pending {
    map: HashMap<Key, Entry, ahash::RandomState>,
}

impl Pending {
    /// Number of pending changes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes `key`. `fresh`: the caller knows the key is new (never written before), so a
    /// later delete before the commit can cancel both.
    pub fn put(&mut self, key: Key, value: Value, fresh: bool) -> Effect {
        match self.map.get_mut(&key) {
            Some(entry) => {
                entry.op = Op::Put(value);
                Effect::Replaced
            }
            None => {
                self.map.insert(
                    key,
                    Entry {
                        op: Op::Put(value),
                        fresh,
                    },
                );
                Effect::Added
            }
        }
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Key) -> Effect {
        match self.map.get_mut(&key) {
            Some(entry) if entry.fresh => {
                self.map.remove(&key);
                Effect::Netted
            }
            Some(entry) => {
                entry.op = Op::Delete;
                Effect::Replaced
            }
            None => {
                self.map.insert(
                    key,
                    Entry {
                        op: Op::Delete,
                        fresh: false,
                    },
                );
                Effect::Added
            }
        }
    }

    /// Takes everything, leaving the set empty (capacity kept).
    pub fn take(&mut self) -> Vec<(Key, Option<Value>)> {
        self.map
            .drain()
            .map(|(k, e)| {
                let v = match e.op {
                    Op::Put(v) => Some(v),
                    Op::Delete => None,
                };
                (k, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use bytes::Bytes;

    fn q(n: u64) -> Value {
        Value::Queue(QueueRecord {
            message: n,
            qos: 1,
            retain: false,
            state: record::QueueState::Queued,
        })
    }

    #[test]
    fn a_fresh_key_written_and_deleted_before_the_commit_costs_nothing() {
        let mut p = Pending::default();
        assert_eq!(p.put(Key::Queue(1, 1), q(1), true), Effect::Added);
        assert_eq!(p.put(Key::Queue(1, 1), q(2), true), Effect::Replaced);
        assert_eq!(p.delete(Key::Queue(1, 1)), Effect::Netted);
        assert!(p.is_empty());
    }

    #[test]
    fn a_key_already_on_disk_gets_a_tombstone() {
        let mut p = Pending::default();
        // Written in an earlier commit: the delete must reach the disk.
        assert_eq!(p.delete(Key::Queue(1, 1)), Effect::Added);
        // Not fresh: replaced, then deleted again: still a tombstone.
        p.put(Key::Session(1), q(0), false);
        p.delete(Key::Session(1));
        let mut ops = p.take();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(matches!(
            ops.as_slice(),
            [(Key::Session(1), None), (Key::Queue(1, 1), None)]
        ));
        assert!(p.is_empty());
    }

    #[test]
    fn a_rewrite_after_a_delete_is_a_write() {
        let mut p = Pending::default();
        p.delete(Key::Retained("t".into()));
        let m = Message::new("t".into(), Bytes::from_static(b"x"), QoS::AtLeastOnce, true);
        p.put(Key::Retained("t".into()), Value::Retained(m), false);
        let ops = p.take();
        assert!(matches!(
            ops.as_slice(),
            [(Key::Retained(_), Some(Value::Retained(_)))]
        ));
    }
}
