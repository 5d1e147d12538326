//! hmq's durable-state records as they would be laid out in a key-value
//! store. Keys are byte strings; integers in keys are big-endian so that keys
//! sort in numeric order (a client's queue iterates in sequence order).
//!
//! * `m` + msg_id (u64 BE) -> message record: the PUBLISH (topic, payload, qos,
//!   flags, timestamps). Stored once, referenced by queue entries.
//! * `q` + client_id (16 B) + 0x00 + seq (u64 BE) -> queue entry (16 B): which
//!   message, its QoS, the MQTT packet id and the delivery state.
//! * `s` + client_id -> session record (~100 B): flags, expiry, subscriptions.
//! * `r` + topic -> a retained message (same encoding as a message record).
//!
//! Every value is a deterministic function of its id, so a reader can check
//! that what it got back is exactly what was written (used by the recovery and
//! corruption scenarios). Payload bytes are pseudo-random (incompressible), so
//! the stores' block compression cannot flatter the figures.

use crate::stores::Batch;

pub const CLIENT_ID_LEN: usize = 16;
/// Arbitrary epoch (ms) for the timestamps in the records.
const BASE_MS: u64 = 1_760_000_000_000;

pub type ClientId = [u8; CLIENT_ID_LEN];

/// "client-000000042": 16 bytes, like a typical device client id.
pub fn client_id(n: u64) -> ClientId {
    let s = format!("client-{:09}", n % 1_000_000_000);
    let mut id = [0u8; CLIENT_ID_LEN];
    id.copy_from_slice(s.as_bytes());
    id
}

pub fn msg_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'm';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn queue_key(client: &ClientId, seq: u64) -> [u8; 26] {
    let mut k = [0u8; 26];
    k[0] = b'q';
    k[1..17].copy_from_slice(client);
    k[17] = 0;
    k[18..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn session_key(client: &ClientId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b's';
    k[1..].copy_from_slice(client);
    k
}

pub fn retained_key(topic: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + topic.len());
    k.push(b'r');
    k.extend_from_slice(topic);
    k
}

/// How message ids map onto sessions: message `id` is queued for session
/// `id % sessions` at queue position `id / sessions` (round robin).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub sessions: u64,
    pub payload_len: usize,
}

impl Layout {
    pub fn queue_key_of(&self, id: u64) -> [u8; 26] {
        queue_key(&client_id(id % self.sessions), id / self.sessions)
    }

    /// Add "store message `id` and queue it for its session" to a batch:
    /// put m + put q.
    pub fn put_message(&self, b: &mut Batch, id: u64, scratch: &mut Vec<u8>) {
        scratch.clear();
        encode_message(id, self.payload_len, scratch);
        b.put(&msg_key(id), scratch);
        b.put(&self.queue_key_of(id), &encode_queue_entry(id));
    }

    /// Add "message `id` was acknowledged by its subscriber" to a batch:
    /// delete q + delete m.
    pub fn del_message(&self, b: &mut Batch, id: u64) {
        b.del(&self.queue_key_of(id));
        b.del(&msg_key(id));
    }

    pub fn put_session(&self, b: &mut Batch, n: u64) {
        let c = client_id(n);
        b.put(&session_key(&c), &encode_session(n));
    }
}

/// 24-byte topic, e.g. "tele/000123/000456/state".
pub fn topic(id: u64) -> [u8; 24] {
    let s = format!(
        "tele/{:06}/{:06}/state",
        (id / 1000) % 1_000_000,
        id % 1_000_000
    );
    let mut t = [0u8; 24];
    t.copy_from_slice(s.as_bytes());
    t
}

fn fill_payload(id: u64, len: usize, out: &mut Vec<u8>) {
    // xorshift64*, seeded by the id: cheap, incompressible, reproducible.
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    while left > 0 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = left.min(8);
        out.extend_from_slice(&v[..n]);
        left -= n;
    }
}

/// Message record: 40-byte header + 24-byte topic + payload (= 64 + payload).
/// version u8, qos u8, flags u8, reserved u8, topic_len u16, payload_len u32,
/// created_ms u64, expiry_ms u64, origin (node + publisher hash) u64,
/// props_len u16, props (4 B), topic, payload.
pub fn encode_message(id: u64, payload_len: usize, out: &mut Vec<u8>) {
    let t = topic(id);
    out.push(1);
    out.push(1 + (id % 2) as u8);
    out.push(0);
    out.push(0);
    out.extend_from_slice(&(t.len() as u16).to_be_bytes());
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    let created = BASE_MS + id;
    out.extend_from_slice(&created.to_be_bytes());
    out.extend_from_slice(&(created + 86_400_000).to_be_bytes());
    out.extend_from_slice(&(id.rotate_left(17) ^ 0x5157_4D51).to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(b"json");
    out.extend_from_slice(&t);
    fill_payload(id, payload_len, out);
}

#[derive(Debug)]
#[allow(dead_code)] // fields are what recovery would rebuild; not all are read back
pub struct Message {
    pub id: u64,
    pub qos: u8,
    pub flags: u8,
    pub created_ms: u64,
    pub expiry_ms: u64,
    pub origin: u64,
    pub props: Vec<u8>,
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn decode_message(key: &[u8], v: &[u8]) -> Option<Message> {
    let id = be_u64(key, 1)?;
    if *v.first()? != 1 {
        return None;
    }
    let tlen = be_u16(v, 4)? as usize;
    let plen = be_u32(v, 6)? as usize;
    let props_len = be_u16(v, 34)? as usize;
    let p0 = 36;
    let t0 = p0 + props_len;
    let pl0 = t0 + tlen;
    if v.len() != pl0 + plen {
        return None;
    }
    Some(Message {
        id,
        qos: v[1],
        flags: v[2],
        created_ms: be_u64(v, 10)?,
        expiry_ms: be_u64(v, 18)?,
        origin: be_u64(v, 26)?,
        props: v[p0..t0].to_vec(),
        topic: v[t0..pl0].to_vec(),
        payload: v[pl0..].to_vec(),
    })
}

/// Is this exactly the message record written for its id?
pub fn message_is_intact(m: &Message, payload_len: usize) -> bool {
    if m.created_ms != BASE_MS + m.id || m.topic != topic(m.id) || m.payload.len() != payload_len {
        return false;
    }
    let mut p = Vec::with_capacity(payload_len);
    fill_payload(m.id, payload_len, &mut p);
    p == m.payload
}

/// Queue entry, 16 bytes: msg_id u64, qos u8, packet_id u16, state u8
/// (0 = queued, 1 = sent awaiting PUBACK/PUBREC, 2 = PUBREL sent), enqueued
/// at (seconds since the broker epoch) u32.
pub fn encode_queue_entry(id: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&id.to_be_bytes());
    e[8] = 1 + (id % 2) as u8;
    e[9..11].copy_from_slice(&((id % 65_535) as u16 + 1).to_be_bytes());
    e[11] = 0;
    e[12..16].copy_from_slice(&((id / 1000) as u32).to_be_bytes());
    e
}

#[derive(Debug)]
#[allow(dead_code)]
pub struct QueueEntry {
    pub client: Vec<u8>,
    pub seq: u64,
    pub msg_id: u64,
    pub qos: u8,
    pub packet_id: u16,
    pub state: u8,
    pub enqueued_s: u32,
}

pub fn decode_queue_entry(key: &[u8], v: &[u8]) -> Option<QueueEntry> {
    if key.len() != 26 || v.len() != 16 {
        return None;
    }
    Some(QueueEntry {
        client: key[1..17].to_vec(),
        seq: be_u64(key, 18)?,
        msg_id: be_u64(v, 0)?,
        qos: v[8],
        packet_id: be_u16(v, 9)?,
        state: v[11],
        enqueued_s: be_u32(v, 12)?,
    })
}

/// Session record, ~100 bytes: version u8, flags u8, session expiry interval
/// u32, last seen ms u64, next queue seq u64, receive maximum u16, will delay
/// u32, 3 subscriptions (filter len u8, filter, qos u8, options u8).
pub fn encode_session(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(100);
    out.push(1);
    out.push(0b10); // persistent session
    out.extend_from_slice(&3600u32.to_be_bytes());
    out.extend_from_slice(&(BASE_MS + n).to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&65_535u16.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(3);
    for i in 0..3u64 {
        let f = format!("tele/+/{:06}/state", (n + i) % 1_000_000);
        out.push(f.len() as u8);
        out.extend_from_slice(f.as_bytes());
        out.push(1);
        out.push(0);
    }
    out
}

#[derive(Debug)]
#[allow(dead_code)]
pub struct Session {
    pub client: Vec<u8>,
    pub flags: u8,
    pub expiry_s: u32,
    pub last_seen_ms: u64,
    pub next_seq: u64,
    pub subscriptions: Vec<(Vec<u8>, u8)>,
}

pub fn decode_session(key: &[u8], v: &[u8]) -> Option<Session> {
    if *v.first()? != 1 {
        return None;
    }
    let n = *v.get(28)? as usize;
    let mut subs = Vec::with_capacity(n);
    let mut at = 29;
    for _ in 0..n {
        let l = *v.get(at)? as usize;
        let f = v.get(at + 1..at + 1 + l)?.to_vec();
        let q = *v.get(at + 1 + l)?;
        subs.push((f, q));
        at += l + 3;
    }
    if at != v.len() {
        return None;
    }
    Some(Session {
        client: key.get(1..)?.to_vec(),
        flags: v[1],
        expiry_s: be_u32(v, 2)?,
        last_seen_ms: be_u64(v, 6)?,
        next_seq: be_u64(v, 14)?,
        subscriptions: subs,
    })
}

/// What a broker rebuilds in memory at start-up from a full scan.
#[derive(Default, Debug)]
pub struct Recovered {
    pub sessions: Vec<Session>,
    pub messages: Vec<Message>,
    pub queue: Vec<QueueEntry>,
    pub retained: Vec<Message>,
    /// Records whose value did not decode, or decoded to something other than
    /// what was written for that id.
    pub bad: u64,
    pub unknown: u64,
}

impl Recovered {
    /// Decode one scanned key-value pair into the in-memory state.
    pub fn absorb(&mut self, k: &[u8], v: &[u8], payload_len: usize) {
        match k.first() {
            Some(b'm') => match decode_message(k, v) {
                Some(m) if message_is_intact(&m, payload_len) => self.messages.push(m),
                _ => self.bad += 1,
            },
            Some(b'q') => match decode_queue_entry(k, v) {
                Some(e) if encode_queue_entry(e.msg_id) == v => self.queue.push(e),
                _ => self.bad += 1,
            },
            Some(b's') => match decode_session(k, v) {
                Some(s) => self.sessions.push(s),
                None => self.bad += 1,
            },
            Some(b'r') => match decode_message(&[b'm', 0, 0, 0, 0, 0, 0, 0, 0], v) {
                Some(m) => self.retained.push(m),
                None => self.bad += 1,
            },
            _ => self.unknown += 1,
        }
    }
}
