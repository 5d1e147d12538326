//! Reading the store back at start: every record decoded and checked, grouped by session, with
//! what no longer belongs anywhere (a queue entry of a session that was discarded just before a
//! crash, a message no entry refers to) set aside to be deleted.
//!
//! A record that does not decode is an error naming the store and the record: the broker does
//! not start on a store it cannot read completely, rather than drop what it cannot read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::backend::Backend;
use super::record::{self, Key, MessageRecord, OutboxRecord, QueueRecord, SessionRecord};
use super::{DurableRef, PersistError};
use crate::codec::QoS;
use crate::message::Message;

/// A session as the store had it.
#[derive(Debug)]
pub struct RecoveredSession {
    /// Its durable id.
    pub sid: u64,
    /// The session record.
    pub record: SessionRecord,
    /// Its queue entries in order, with their messages.
    pub queue: Vec<(u64, QueueRecord, Arc<Message>)>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub awaiting: Vec<u16>,
}

/// Everything read from the store.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The store was empty (just created).
    pub is_new: bool,
    /// Largest message id found.
    pub max_pid: u64,
    /// Largest session id found.
    pub max_sid: u64,
    /// Sessions, by id.
    pub sessions: Vec<RecoveredSession>,
    /// Retained messages.
    pub retained: Vec<Arc<Message>>,
    /// Cluster outbox entries: peer, sequence number, message.
    pub outbox: Vec<(String, u64, OutboxRecord)>,
    /// Queue entries recovered.
    pub queued: usize,
    /// Keys that belong to nothing any more, to be deleted.
    pub garbage: Vec<Key>,
    /// Queue entries whose message was not in the store (written in a commit that was not
    /// synced before a crash, under `interval` or `none`): dropped, and counted here.
    pub lost_entries: usize,
    /// How long reading took.
    pub elapsed_ms: u64,
    /// The broker that wrote the store did not stop cleanly (a crash, SIGKILL, power loss).
    pub unclean: bool,
}

fn qos(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtLeastOnce)
}

fn message(r: MessageRecord, durable: DurableRef) -> Arc<Message> {
    Arc::new(Message {
        topic: r.topic,
        payload: r.payload,
        qos: qos(r.qos),
        retain: r.retain,
        received_at: Instant::now(),
        stamp: r.stamp,
        durable,
        mid: crate::message::next_mid(),
    })
}

/// Reads the whole store.
pub fn read(backend: &mut dyn Backend, dir: &Path) -> Result<Recovered, PersistError> {
    let started = Instant::now();
    let mut out = Recovered::default();
    let mut saw_meta = false;
    let mut messages: HashMap<u64, Arc<Message>> = HashMap::new();
    let mut queues: HashMap<u64, Vec<(u64, QueueRecord)>> = HashMap::new();
    let mut awaiting: HashMap<u64, Vec<u16>> = HashMap::new();
    let mut sessions: Vec<(u64, SessionRecord)> = Vec::new();
    let n = backend.scan(&mut |k, v| {
        match Key::decode(k)? {
            Key::Meta => {
                let meta: record::Meta = record::decode(v)?;
                if meta.format != record::FORMAT {
                    return Err(format!(
                        "store format {} is not {} (written by another release of hmq)",
                        meta.format,
                        record::FORMAT
                    ));
                }
                saw_meta = true;
                out.unclean = !meta.clean;
            }
            Key::Message(pid) => {
                let r: MessageRecord = record::decode(v)?;
                out.max_pid = out.max_pid.max(pid);
                messages.insert(pid, message(r, DurableRef::recovered(pid, 0)));
            }
            Key::Queue(sid, seq) => {
                let r: QueueRecord = record::decode(v)?;
                queues.entry(sid).or_default().push((seq, r));
            }
            Key::Awaiting(sid, pkid) => awaiting.entry(sid).or_default().push(pkid),
            Key::Session(sid) => {
                let r: SessionRecord = record::decode(v)?;
                out.max_sid = out.max_sid.max(sid);
                sessions.push((sid, r));
            }
            Key::Retained(topic) => {
                let r: MessageRecord = record::decode(v)?;
                if r.topic != topic {
                    return Err(format!("retained record of {topic:?} holds {:?}", r.topic));
                }
                out.retained.push(message(r, DurableRef::default()));
            }
            Key::Outbox(peer, seq) => {
                let r: OutboxRecord = record::decode(v)?;
                out.outbox.push((peer, seq, r));
            }
        }
        Ok(())
    })?;
    if n > 0 && !saw_meta {
        return Err(PersistError::Corrupt {
            dir: dir.to_path_buf(),
            what: "the store has records but no format record (not an hmq store?)".into(),
        });
    }
    out.is_new = n == 0;
    for (sid, record) in sessions {
        let mut entries = queues.remove(&sid).unwrap_or_default();
        entries.sort_unstable_by_key(|(seq, _)| *seq);
        let mut queue = Vec::with_capacity(entries.len());
        for (seq, q) in entries {
            match messages.get(&q.message) {
                Some(m) => {
                    m.durable
                        .refs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    queue.push((seq, q, m.clone()));
                }
                None => {
                    out.lost_entries += 1;
                    out.garbage.push(Key::Queue(sid, seq));
                }
            }
        }
        out.queued += queue.len();
        let mut waiting = awaiting.remove(&sid).unwrap_or_default();
        waiting.sort_unstable();
        out.sessions.push(RecoveredSession {
            sid,
            record,
            queue,
            awaiting: waiting,
        });
    }
    // What is left belongs to sessions discarded just before a crash.
    for (sid, entries) in queues {
        out.garbage
            .extend(entries.into_iter().map(|(seq, _)| Key::Queue(sid, seq)));
    }
    for (sid, ids) in awaiting {
        out.garbage
            .extend(ids.into_iter().map(|pkid| Key::Awaiting(sid, pkid)));
    }
    for (pid, m) in &messages {
        if m.durable.refs.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            out.garbage.push(Key::Message(*pid));
        }
    }
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}
