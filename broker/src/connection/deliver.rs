//! Deliveries to the client: draining the session's inbox into the write queue within the
//! in-flight window and the output budget, per-subscriber packet ids, and the resend of what was
//! in flight when a session resumes.

use super::{BATCH, Connection, HIGH_WATER, LATENCY_SAMPLE};
use crate::codec::{self, Ack, QoS};
use crate::message::Delivery;
use crate::persist::record::QueueState;
use crate::session::Awaiting;

impl Connection {
    /// Moves deliveries from the inbox to the write queue while the in-flight window and the
    /// write queue have room.
    pub(super) fn pump(&mut self) {
        if self.suback_held() {
            // Retained messages of a new subscription must not overtake its SUBACK.
            return;
        }
        let max_inflight = self.broker.settings.max_inflight;
        loop {
            let mut budget = HIGH_WATER.saturating_sub(self.wq.len());
            let mut inflight = self.core.outbound.len();
            // Why the inbox was left non-empty: the client (window full, output backed up), or
            // only the batch size.
            let mut client_slow = false;
            let drained;
            {
                let mut inbox = self.session.inbox();
                let before = inbox.len();
                while self.batch.len() < BATCH {
                    let Some(front) = inbox.front() else { break };
                    if budget == 0 {
                        client_slow = true;
                        break;
                    }
                    if front.qos != QoS::AtMostOnce {
                        if inflight >= max_inflight {
                            client_slow = true;
                            break;
                        }
                        inflight += 1;
                    }
                    budget = budget.saturating_sub(codec::publish_size(
                        &front.msg.topic,
                        front.qos,
                        front.msg.payload.len(),
                    ));
                    if let Some(d) = inbox.pop() {
                        self.batch.push(d);
                    }
                }
                drained = (before, inbox.len());
            }
            // After the inbox lock is released: waking publishers takes another lock.
            if drained.1 < drained.0 {
                self.session.mark_drained();
                self.session.drained(drained.0, drained.1);
            }
            if client_slow != self.client_slow {
                self.client_slow = client_slow;
                self.session.set_client_slow(client_slow);
            }
            if self.batch.is_empty() {
                return;
            }
            let full = self.batch.len() == BATCH;
            let mut batch = std::mem::take(&mut self.batch);
            for d in batch.drain(..) {
                self.send(d);
            }
            self.batch = batch;
            self.session.set_inflight(self.core.outbound.len());
            if !full {
                return;
            }
        }
    }

    /// Encodes one delivery, registering QoS 1/2 in the window.
    pub(super) fn send(&mut self, d: Delivery) {
        let pkid = match d.qos {
            QoS::AtMostOnce => 0,
            _ => match self.core.outbound.start(d.clone()) {
                Some(id) => id,
                None => return, // unreachable with a window below 65,535
            },
        };
        if d.seq != 0 {
            self.broker
                .journal_progress(&self.session, &d, QueueState::Sent(pkid));
        }
        let metrics = &self.broker.metrics;
        metrics.sent[d.qos as usize].inc();
        self.sent = self.sent.wrapping_add(1);
        if self.sent % LATENCY_SAMPLE == 0 {
            metrics
                .delivery_latency
                .observe(d.msg.received_at.elapsed().as_secs_f64());
        }
        let msg = &d.msg;
        codec::encode_publish_header(
            self.wq.buf(),
            &msg.topic,
            d.qos,
            pkid,
            d.dup && d.qos != QoS::AtMostOnce,
            d.retain,
            msg.payload.len(),
        );
        self.wq.put_payload(&msg.payload);
    }

    /// On a resumed session, resends what was in flight, in the original order, with DUP set
    /// (PUBREL for messages already past PUBREC) [MQTT-4.4.0-1].
    pub(super) fn resend_inflight(&mut self) {
        for (pkid, f) in self.core.outbound.in_order() {
            if f.awaiting == Awaiting::PubComp {
                codec::encode_ack(self.wq.buf(), Ack::PubRel, pkid);
                continue;
            }
            let d = &f.delivery;
            codec::encode_publish_header(
                self.wq.buf(),
                &d.msg.topic,
                d.qos,
                pkid,
                true,
                d.retain,
                d.msg.payload.len(),
            );
            self.wq.put_payload(&d.msg.payload);
            self.broker.metrics.sent[d.qos as usize].inc();
        }
    }
}
