//! The unit of routing: one application message, shared by every subscriber it goes to.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::QoS;

/// An application message as published. Immutable once built and shared through `Arc` by every
/// queue, in-flight slot and retained slot that holds it: a fan-out to N subscribers costs N
/// reference counts, not N copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (validated).
    pub topic: String,
    /// Payload; large payloads share the bytes read from the publisher's socket.
    pub payload: Bytes,
    /// QoS the publisher sent it with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// When the broker read it (for latency metrics).
    pub received_at: Instant,
    /// For retained messages: when the broker read it, in milliseconds since the Unix epoch,
    /// which orders the copies cluster nodes hold (0 for other messages).
    pub stamp: u64,
    /// Its id and reference count in the durable store, once a persistent session's queue
    /// holds it (see `persist`).
    pub durable: crate::persist::DurableRef,
    /// Its cluster-wide id, given where it was published (see `next_mid`).
    pub mid: (u64, u64),
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Message {
    /// Builds a message received now.
    pub fn new(topic: String, payload: Bytes, qos: QoS, retain: bool) -> Arc<Message> {
        Arc::new(Message {
            topic,
            payload,
            qos,
            retain,
            received_at: Instant::now(),
            stamp: if retain { now_millis() } else { 0 },
            durable: Default::default(),
            mid: next_mid(),
        })
    }
}

/// This process's part of message ids: its start time in ns (distinct across restarts and,
/// practically, across nodes).
static ORIGIN: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
});

/// Message ids handed to threads in blocks, so that a thread takes one from a shared counter
/// only every `MID_BLOCK` messages.
static NEXT_BLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
const MID_BLOCK: u64 = 1024;

thread_local! {
    static MIDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A new cluster-wide message id: (this process's origin, a number unique in it).
pub fn next_mid() -> (u64, u64) {
    let n = MIDS.with(|c| {
        let (next, end) = c.get();
        let (next, end) = if next < end {
            (next, end)
        } else {
            let start = NEXT_BLOCK.fetch_add(MID_BLOCK, std::sync::atomic::Ordering::Relaxed);
            (start, start + MID_BLOCK)
        };
        c.set((next + 1, end));
        next
    });
    (*ORIGIN, n)
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// QoS for this subscriber: min(published QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag on the wire: set only for retained messages sent because of a new
    /// subscription [MQTT-3.3.1-8/9].
    pub retain: bool,
    /// Its sequence number in a persistent session's durable queue (`Q` key); 0 when it is not
    /// stored (QoS 0, a clean session, or no durable store).
    pub seq: u64,
    /// Sent with DUP even the first time: it may have been sent before a crash (recovered
    /// from the queue of a session that was connected when the broker died).
    pub dup: bool,
}

impl Delivery {
    /// A delivery that is not (yet) in a durable queue.
    pub fn new(msg: Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            msg,
            qos,
            retain,
            seq: 0,
            dup: false,
        }
    }
}
