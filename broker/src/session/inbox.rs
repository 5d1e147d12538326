//! A session's inbox: the messages routed to its client and not yet sent, bounded, with the
//! QoS 0 ones counted so that the oldest can make room for a QoS 1/2 message.

use std::collections::VecDeque;

use crate::codec::QoS;
use crate::message::Delivery;

/// Messages waiting to be sent to one client.
#[derive(Debug, Default)]
pub struct Inbox {
    pub(super) queue: VecDeque<Delivery>,
    /// QoS 0 entries in `queue`, so eviction knows without scanning whether one exists.
    pub(super) qos0: usize,
    /// The last sequence number given to a delivery stored in the durable queue.
    pub(super) last_seq: u64,
}

impl Inbox {
    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next message to send.
    pub fn front(&self) -> Option<&Delivery> {
        self.queue.front()
    }

    /// Takes everything (a discarded session's queue).
    pub fn drain(&mut self) -> Vec<Delivery> {
        self.qos0 = 0;
        self.queue.drain(..).collect()
    }

    /// Restores a delivery read back from the durable store, at the end, keeping its sequence
    /// number.
    pub fn restore(&mut self, d: Delivery) {
        self.last_seq = self.last_seq.max(d.seq);
        self.push(d);
    }

    /// The sequence numbers of durable deliveries continue after `seq` (the largest one the
    /// store holds for this session, in flight ones included).
    pub fn continue_after(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// The cluster-wide ids of the queued messages.
    pub fn mids(&self) -> Vec<(u64, u64)> {
        self.queue.iter().map(|d| d.msg.mid).collect()
    }

    /// The sequence number for the next delivery stored in the durable queue.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Takes the next message to send.
    pub fn pop(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        if d.qos == QoS::AtMostOnce {
            self.qos0 -= 1;
        }
        Some(d)
    }

    pub(super) fn push(&mut self, d: Delivery) {
        if d.qos == QoS::AtMostOnce {
            self.qos0 += 1;
        }
        self.queue.push_back(d);
    }

    /// Puts messages back at the front, in order (used when a connection ends with messages it
    /// had taken but not written).
    pub fn requeue_front(&mut self, items: impl DoubleEndedIterator<Item = Delivery>) {
        for d in items.rev() {
            if d.qos == QoS::AtMostOnce {
                self.qos0 += 1;
            }
            self.queue.push_front(d);
        }
    }

    pub(super) fn evict_oldest_qos0(&mut self) -> bool {
        if self.qos0 == 0 {
            return false;
        }
        if let Some(pos) = self.queue.iter().position(|d| d.qos == QoS::AtMostOnce) {
            self.queue.remove(pos);
            self.qos0 -= 1;
            return true;
        }
        false
    }
}
