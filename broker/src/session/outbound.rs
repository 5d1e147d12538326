//! The outbound in-flight window of one client: which packet ids are in use and what
//! acknowledgement each waits for.
//!
//! A slot table indexed by `packet id & mask` rather than a hash map: ids are handed out in
//! sequence, so consecutive messages sit in consecutive slots and an acknowledgement (which
//! usually arrives in order) finds its entry with one comparison and no hashing. A profile of
//! p2p QoS 1 showed the hash map lookup in PUBACK handling at 10 % of broker CPU, nearly all of
//! it cache misses. The table grows (doubling) only when it is full, so it stays as small as
//! the window the client actually uses.

use crate::codec::QoS;
use crate::message::Delivery;

/// Outbound message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Its packet id.
    pub pkid: u16,
    /// Order of first transmission, to resend in the same order.
    pub seq: u64,
    /// The message (kept after PUBREC too, which is cheap: it is shared).
    pub delivery: Delivery,
    /// What the client owes us next.
    pub awaiting: Awaiting,
}

/// The acknowledgement an in-flight message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// QoS 1: PUBACK.
    PubAck,
    /// QoS 2, step 1: PUBREC.
    PubRec,
    /// QoS 2, step 3: PUBCOMP (PUBREL sent).
    PubComp,
}

/// Slots allocated at first use.
const INITIAL_SLOTS: usize = 8;

/// The outbound window. See the module documentation.
#[derive(Debug, Default)]
pub struct Outbound {
    /// `slots[pkid & (slots.len() - 1)]`; the length is a power of two (or zero).
    slots: Vec<Option<InFlight>>,
    /// At most 65,535 (one per packet id): a `u32` keeps the struct small.
    len: u32,
    next_pkid: u16,
    seq: u64,
}

impl Outbound {
    /// Messages awaiting acknowledgement.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn index(&self, pkid: u16) -> usize {
        usize::from(pkid) & (self.slots.len() - 1)
    }

    fn get_mut(&mut self, pkid: u16) -> Option<&mut InFlight> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.index(pkid);
        self.slots[i].as_mut().filter(|f| f.pkid == pkid)
    }

    /// Gives the table back while nothing is in flight (an idle connection parks with none).
    pub fn shrink(&mut self) {
        if self.len == 0 {
            self.slots = Vec::new();
        }
    }

    /// Doubles the table (ids keep distinct slots: more mask bits only separate them further).
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).clamp(INITIAL_SLOTS, 1 << 16);
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| None).collect());
        for f in old.into_iter().flatten() {
            let i = self.index(f.pkid);
            self.slots[i] = Some(f);
        }
    }

    /// Registers a QoS 1/2 delivery and returns its packet id, or `None` if all 65,535 ids are
    /// taken (the window limit keeps this from happening).
    pub fn start(&mut self, delivery: Delivery) -> Option<u16> {
        if self.len >= u32::from(u16::MAX) {
            return None;
        }
        if self.len() == self.slots.len() {
            self.grow();
        }
        // The next id in sequence whose slot is free. The table has a free slot, and ids
        // cycle through every slot, so this ends within `slots.len()` steps (or after a grow).
        let pkid = loop {
            let mut found = None;
            for _ in 0..self.slots.len() {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                if self.slots[self.index(self.next_pkid)].is_none() {
                    found = Some(self.next_pkid);
                    break;
                }
            }
            match found {
                Some(id) => break id,
                None => self.grow(),
            }
        };
        let awaiting = if delivery.qos == QoS::ExactlyOnce {
            Awaiting::PubRec
        } else {
            Awaiting::PubAck
        };
        self.seq += 1;
        let i = self.index(pkid);
        self.slots[i] = Some(InFlight {
            pkid,
            seq: self.seq,
            delivery,
            awaiting,
        });
        self.len += 1;
        Some(pkid)
    }

    fn complete(&mut self, pkid: u16, awaiting: Awaiting) -> Option<InFlight> {
        if self.get_mut(pkid).is_some_and(|f| f.awaiting == awaiting) {
            let i = self.index(pkid);
            self.len -= 1;
            return self.slots[i].take();
        }
        None
    }

    /// Handles PUBACK: the QoS 1 delivery it completed, if any.
    pub fn puback(&mut self, pkid: u16) -> Option<InFlight> {
        self.complete(pkid, Awaiting::PubAck)
    }

    /// Handles PUBREC: the QoS 2 delivery it moved to the PUBREL step, if any. The caller sends
    /// PUBREL in either case ([MQTT-4.3.3-1] wants PUBREL for a PUBREC we know; for one we do
    /// not, answering PUBREL lets the client finish its flow).
    pub fn pubrec(&mut self, pkid: u16) -> Option<&InFlight> {
        match self.get_mut(pkid) {
            Some(f) if f.awaiting == Awaiting::PubRec => {
                f.awaiting = Awaiting::PubComp;
                Some(&*f)
            }
            _ => None,
        }
    }

    /// Handles PUBCOMP: the QoS 2 delivery it completed, if any.
    pub fn pubcomp(&mut self, pkid: u16) -> Option<InFlight> {
        self.complete(pkid, Awaiting::PubComp)
    }

    /// Puts back a delivery that was in flight with `pkid` when the broker stopped (read from
    /// the durable store), in the order of the calls. New ids continue after the last one.
    /// Returns false if `pkid` is 0 or already in use (a damaged store).
    pub fn restore(&mut self, pkid: u16, delivery: Delivery, awaiting: Awaiting) -> bool {
        if pkid == 0 || self.get_mut(pkid).is_some() {
            return false;
        }
        while self.slots.is_empty() || self.slots[self.index(pkid)].is_some() {
            if self.slots.len() >= 1 << 16 {
                return false;
            }
            self.grow();
        }
        self.seq += 1;
        let i = self.index(pkid);
        self.slots[i] = Some(InFlight {
            pkid,
            seq: self.seq,
            delivery,
            awaiting,
        });
        self.len += 1;
        self.next_pkid = pkid;
        true
    }

    /// Takes everything in flight (a discarded session's window).
    pub fn drain(&mut self) -> Vec<InFlight> {
        self.len = 0;
        let mut all: Vec<InFlight> = self.slots.iter_mut().filter_map(Option::take).collect();
        all.sort_unstable_by_key(|f| f.seq);
        all
    }

    /// Everything in flight, in first-transmission order, for resending on reconnect.
    pub fn in_order(&self) -> Vec<(u16, InFlight)> {
        let mut all: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .map(|f| (f.pkid, f.clone()))
            .collect();
        all.sort_unstable_by_key(|(_, f)| f.seq);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn d(qos: QoS, tag: &str) -> Delivery {
        Delivery::new(
            Message::new(tag.into(), Bytes::new(), qos, false),
            qos,
            false,
        )
    }

    #[test]
    fn flows() {
        let mut o = Outbound::default();
        let a = o.start(d(QoS::AtLeastOnce, "a")).unwrap();
        let b = o.start(d(QoS::ExactlyOnce, "b")).unwrap();
        assert_ne!(a, b);
        assert!(o.pubrec(a).is_none(), "PUBREC for a QoS 1 id");
        assert!(o.puback(a).is_some());
        assert!(o.puback(a).is_none(), "second PUBACK");
        assert!(o.pubcomp(b).is_none(), "PUBCOMP before PUBREC");
        assert!(o.pubrec(b).is_some());
        assert!(o.pubrec(b).is_none());
        assert_eq!(o.in_order()[0].1.awaiting, Awaiting::PubComp);
        assert!(o.pubcomp(b).is_some());
        assert!(o.is_empty());
        assert!(o.puback(9).is_none(), "unknown id");
    }

    #[test]
    fn ids_skip_zero_and_ids_in_use_and_keep_their_order() {
        let mut o = Outbound {
            next_pkid: u16::MAX - 1,
            ..Outbound::default()
        };
        let x = o.start(d(QoS::AtLeastOnce, "x")).unwrap();
        assert_eq!(x, u16::MAX);
        let y = o.start(d(QoS::AtLeastOnce, "y")).unwrap();
        assert_eq!(y, 1);
        // Wrap around onto an id still in use: it is skipped.
        o.next_pkid = u16::MAX;
        let z = o.start(d(QoS::AtLeastOnce, "z")).unwrap();
        assert_ne!(z, 1);
        assert_ne!(z, 0);
        let order: Vec<_> = o.in_order().into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, [u16::MAX, 1, z]);
    }

    #[test]
    fn a_stuck_message_does_not_block_the_window() {
        // One message is never acknowledged while thousands pass: ids keep being found.
        let mut o = Outbound::default();
        let stuck = o.start(d(QoS::AtLeastOnce, "stuck")).unwrap();
        for _ in 0..200_000 {
            let id = o.start(d(QoS::AtLeastOnce, "m")).unwrap();
            assert_ne!(id, stuck);
            assert!(o.puback(id).is_some());
        }
        assert_eq!(o.len(), 1);
        assert!(o.puback(stuck).is_some());
        assert!(
            o.slots.len() <= 16,
            "the table stays small: {}",
            o.slots.len()
        );
    }

    #[test]
    fn restored_ids_keep_their_order_and_new_ids_follow() {
        let mut o = Outbound::default();
        assert!(o.restore(40_000, d(QoS::ExactlyOnce, "a"), Awaiting::PubComp));
        assert!(o.restore(7, d(QoS::AtLeastOnce, "b"), Awaiting::PubAck));
        assert!(
            !o.restore(7, d(QoS::AtLeastOnce, "c"), Awaiting::PubAck),
            "id in use"
        );
        assert!(
            !o.restore(0, d(QoS::AtLeastOnce, "c"), Awaiting::PubAck),
            "id 0"
        );
        let order: Vec<_> = o.in_order().into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, [40_000, 7]);
        // New ids continue after the last restored one, skipping those in use (the slot of
        // id 8 is taken by 40,000 in a table of 8).
        let next = o.start(d(QoS::AtLeastOnce, "n")).unwrap();
        assert!((8..=16).contains(&next) && next != 7, "{next}");
        assert!(o.pubcomp(40_000).is_some());
        assert_eq!(o.drain().len(), 2);
        assert!(o.is_empty());
    }

    proptest! {
        /// Against a model: ids are unique among those in flight, non-zero, and every
        /// acknowledgement affects exactly the entry it names.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec((0u8..4, any::<u16>()), 1..400)) {
            let mut o = Outbound::default();
            let mut model = std::collections::BTreeMap::new();
            for (op, n) in ops {
                match op {
                    0 | 1 => {
                        let qos = if op == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
                        let id = o.start(d(qos, "m")).unwrap();
                        prop_assert!(id != 0);
                        let awaiting = if op == 0 { Awaiting::PubAck } else { Awaiting::PubRec };
                        let fresh = model.insert(id, awaiting).is_none();
                        prop_assert!(fresh, "id {} handed out twice", id);
                    }
                    _ => {
                        // Ack either a known id (picked by n) or an arbitrary one.
                        let id = if model.is_empty() || n % 3 == 0 { n } else {
                            *model.keys().nth(usize::from(n) % model.len()).unwrap()
                        };
                        let want = model.get(&id).copied();
                        let got_ack = o.puback(id).is_some();
                        prop_assert_eq!(got_ack, want == Some(Awaiting::PubAck));
                        if got_ack { model.remove(&id); }
                        let got_rec = o.pubrec(id).is_some();
                        prop_assert_eq!(got_rec, want == Some(Awaiting::PubRec));
                        if got_rec { model.insert(id, Awaiting::PubComp); }
                        if o.pubcomp(id).is_some() { prop_assert_eq!(model.remove(&id), Some(Awaiting::PubComp)); }
                    }
                }
                prop_assert_eq!(o.len(), model.len());
            }
        }
    }
}
