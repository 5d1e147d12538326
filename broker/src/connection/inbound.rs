//! The packets a client sends, once connected: PUBLISH (topic rules, `$SYS` refusal, ACL, the
//! acknowledgement its QoS calls for, exactly-once QoS 2, flow control towards congested
//! subscribers), the acknowledgements of our deliveries, SUBSCRIBE (filter rules, ACL, limits),
//! UNSUBSCRIBE, PINGREQ and DISCONNECT.

use bytes::BytesMut;
use tracing::debug;

use super::{Close, Connection};
use crate::acl::SubscribeCheck;
use crate::broker::{Broker, Congestion};
use crate::codec::{self, Ack, Packet, Publish, QoS};
use crate::message::Message;
use crate::persist::record::QueueState;
use crate::topic::{Shown, TopicError, parse_subscription, validate_name};

impl Connection {
    /// Decodes and handles every complete packet in the read buffer.
    pub(super) fn handle_buffered(&mut self, rbuf: &mut BytesMut) -> Result<(), Close> {
        loop {
            match codec::decode(rbuf, self.broker.settings.max_packet_size) {
                Ok(Some(packet)) => self.handle(packet)?,
                Ok(None) => {
                    self.session.set_inflight(self.core.outbound.len());
                    return Ok(());
                }
                Err(e @ codec::DecodeError::TooLarge { .. }) => {
                    return Err(Close::Limit(e.to_string()));
                }
                Err(e) => return Err(Close::Protocol(e.to_string())),
            }
        }
    }

    /// Handles one packet from the client.
    pub(super) fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(pkid) => {
                match self.core.outbound.puback(pkid) {
                    Some(done) => self.broker.journal_done(&self.session, &done),
                    None => {
                        debug!(client_id = %self.client_id, pkid, "PUBACK for unknown packet id")
                    }
                }
                Ok(())
            }
            Packet::PubRec(pkid) => {
                match self.core.outbound.pubrec(pkid) {
                    Some(f) => self.broker.journal_progress(
                        &self.session,
                        &f.delivery,
                        QueueState::Released(pkid),
                    ),
                    None => {
                        debug!(client_id = %self.client_id, pkid, "PUBREC for unknown packet id")
                    }
                }
                codec::encode_ack(self.wq.buf(), Ack::PubRel, pkid);
                Ok(())
            }
            Packet::PubComp(pkid) => {
                match self.core.outbound.pubcomp(pkid) {
                    Some(done) => self.broker.journal_done(&self.session, &done),
                    None => {
                        debug!(client_id = %self.client_id, pkid, "PUBCOMP for unknown packet id")
                    }
                }
                Ok(())
            }
            Packet::PubRel(pkid) => {
                let released = self.core.awaiting_rel.remove(&pkid);
                if released {
                    self.broker.journal_awaiting(&self.session, pkid, false);
                }
                // The id may be reused once PUBCOMP is out: the release must be stored first.
                self.ack(
                    Held::Ack(Ack::PubComp, pkid),
                    released && self.session.is_journaled(),
                );
                Ok(())
            }
            Packet::Subscribe { pkid, filters } => {
                empty_filter_is_a_violation("SUBSCRIBE", filters.iter().map(|(f, _)| f))?;
                self.on_subscribe(pkid, filters)
            }
            Packet::Unsubscribe { pkid, filters } => {
                empty_filter_is_a_violation("UNSUBSCRIBE", filters.iter())?;
                let mut changed = false;
                for raw in filters {
                    if self.core.subscriptions.remove(&raw).is_some() {
                        changed = true;
                        if let Ok(sub) = parse_subscription(&raw, &self.broker.settings.topics) {
                            self.broker.unsubscribe(self.session.id(), &sub);
                        }
                    }
                }
                if changed {
                    self.broker.journal_session(&self.session, &self.core, None);
                }
                self.ack(
                    Held::Ack(Ack::UnsubAck, pkid),
                    changed && self.session.is_journaled(),
                );
                Ok(())
            }
            Packet::PingReq => {
                codec::encode_pingresp(self.wq.buf());
                Ok(())
            }
            Packet::Disconnect => {
                // [MQTT-3.14.4-3]: the will is discarded.
                self.will = None;
                Err(Close::ClientDisconnect)
            }
            Packet::Connect(_) => Err(Close::Protocol("second CONNECT".into())), // [MQTT-3.1.0-2]
            other => Err(Close::Protocol(format!(
                "{} is a server-to-client packet",
                other.name()
            ))),
        }
    }

    pub(super) fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        validate_name(&p.topic, &self.broker.settings.topics).map_err(|e| {
            let why = format!("PUBLISH to {:?}: {e}", Shown(&p.topic));
            match e {
                TopicError::TooLong(_) | TopicError::TooManyLevels(_) => Close::Limit(why),
                _ => Close::Protocol(why),
            }
        })?;
        let metrics = &self.broker.metrics;
        metrics.received[p.qos as usize].inc();
        let session = &self.session;
        // A refused PUBLISH is still acknowledged as its QoS requires (hmq left QoS 1/2 publishes
        // unacknowledged, so clients retried forever), then dropped and counted.
        let route = |broker: &Broker, p: Publish| -> (Option<Congestion>, bool) {
            if is_sys_topic(&p.topic) {
                broker.metrics.dropped.sys_topic.inc();
                debug!(topic = %Shown(&p.topic), "client PUBLISH to $SYS dropped");
                return (None, false);
            }
            if !session.acl().can_publish(&p.topic) {
                broker.metrics.dropped.acl.inc();
                broker.metrics.acl_denied.publish.inc();
                debug!(client_id = %session.client_id(), topic = %Shown(&p.topic), "PUBLISH denied by the ACL");
                return (None, false);
            }
            let published = broker.publish(&Message::new(p.topic, p.payload, p.qos, p.retain));
            // Waiting for our own inbox would only wait for ourselves.
            let congested = published.congested.filter(|c| !c.is_session(session.id()));
            (congested, published.journaled)
        };
        let congested = match p.qos {
            QoS::AtMostOnce => route(&self.broker, p).0,
            QoS::AtLeastOnce => {
                let pkid = p.pkid;
                let (congested, journaled) = route(&self.broker, p);
                self.ack(Held::Ack(Ack::PubAck, pkid), journaled);
                congested
            }
            QoS::ExactlyOnce => {
                let pkid = p.pkid;
                let mut congested = None;
                let mut journaled = false;
                if !self.core.awaiting_rel.contains(&pkid) {
                    if self.core.awaiting_rel.len() >= self.broker.settings.max_awaiting_rel {
                        return Err(Close::Limit(format!(
                            "more than {} QoS 2 messages awaiting PUBREL",
                            self.broker.settings.max_awaiting_rel
                        )));
                    }
                    self.core.awaiting_rel.insert(pkid);
                    // Stored with the routed copies (same or earlier commit), so that a
                    // retransmission after a restart is recognised, not routed again.
                    self.broker.journal_awaiting(&self.session, pkid, true);
                    let routed;
                    (congested, routed) = route(&self.broker, p);
                    journaled = routed || self.session.is_journaled();
                }
                // A retransmission of a message already received is acknowledged again, not
                // routed again: exactly once.
                self.ack(Held::Ack(Ack::PubRec, pkid), journaled);
                congested
            }
        };
        if let Some(c) = congested {
            if self.pressure.is_none() && c.wait_for_room(&self.session) {
                self.pressure = Some(c);
            }
        }
        Ok(())
    }

    pub(super) fn on_subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<(String, QoS)>,
    ) -> Result<(), Close> {
        let broker = self.broker.clone();
        let settings = &broker.settings;
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::with_capacity(filters.len());
        let acl = self.session.acl();
        for (raw, qos) in filters {
            let check = match parse_subscription(&raw, &settings.topics) {
                Err(e) => {
                    debug!(client_id = %self.client_id, filter = %Shown(&raw), error = %e, "subscription refused");
                    codes.push(0x80);
                    continue;
                }
                Ok(sub) => match acl.subscribe(sub.filter) {
                    SubscribeCheck::Deny => {
                        self.broker.metrics.acl_denied.subscribe.inc();
                        debug!(client_id = %self.client_id, filter = %Shown(&raw), "SUBSCRIBE denied by the ACL");
                        codes.push(0x80);
                        continue;
                    }
                    SubscribeCheck::Allow => false,
                    SubscribeCheck::PerMessage => true,
                },
            };
            let known = self.core.subscriptions.contains_key(&raw);
            if !known
                && settings.max_subscriptions > 0
                && self.core.subscriptions.len() >= settings.max_subscriptions
            {
                debug!(client_id = %self.client_id, filter = %Shown(&raw), "subscription limit reached");
                codes.push(0x80);
                continue;
            }
            codes.push(qos as u8);
            self.core.subscriptions.insert(raw.clone(), qos);
            granted.push((raw, qos, check));
        }
        drop(acl);
        let changed = !granted.is_empty();
        if changed {
            self.broker.journal_session(&self.session, &self.core, None);
        }
        self.ack(
            Held::SubAck(pkid, codes),
            changed && self.session.is_journaled(),
        );
        for (raw, qos, check) in granted {
            if let Ok(sub) = parse_subscription(&raw, &settings.topics) {
                self.broker.subscribe(&self.session, &sub, qos, check);
            }
        }
        Ok(())
    }
}

/// A zero-length topic filter breaks [MQTT-4.7.3-1] ("all Topic Names and Topic Filters MUST be
/// at least one character long"): a protocol violation that closes the connection, unlike a
/// filter that is well formed but refused (SUBACK 0x80).
fn empty_filter_is_a_violation<'a>(
    packet: &str,
    mut filters: impl Iterator<Item = &'a String>,
) -> Result<(), Close> {
    if filters.any(String::is_empty) {
        return Err(Close::Protocol(format!(
            "{packet} with an empty topic filter [MQTT-4.7.3-1]"
        )));
    }
    Ok(())
}

/// An acknowledgement that may have to wait for the durable store (`sync: "always"`).
#[derive(Debug)]
pub(super) enum Held {
    /// PUBACK, PUBREC, PUBCOMP or UNSUBACK.
    Ack(Ack, u16),
    /// SUBACK with its return codes.
    SubAck(u16, Vec<u8>),
}

impl Connection {
    /// Sends an acknowledgement now, or, with `sync: "always"` when it depends on a change of
    /// the durable state (`journaled`) or an earlier one is still waiting, once the commit
    /// that holds the change is done. Acknowledgements keep their order.
    pub(super) fn ack(&mut self, ack: Held, journaled: bool) {
        let ticket = match &self.broker.durable {
            Some(d) if d.acks_wait() && (journaled || !self.held.is_empty()) => {
                if journaled {
                    d.ticket()
                } else {
                    0
                }
            }
            _ => {
                write_ack(self.wq.buf(), &ack);
                return;
            }
        };
        self.held.push_back((ticket, ack));
    }

    /// Sends the acknowledgements whose changes are durable now; registers for a wake-up for
    /// the next one.
    pub(super) fn release_held(&mut self) {
        let Some(d) = self.broker.durable.clone() else {
            return;
        };
        while let Some((ticket, _)) = self.held.front() {
            if *ticket != 0 && !d.is_durable(*ticket) {
                if self.held_wake != *ticket {
                    self.held_wake = *ticket;
                    d.wake_when_durable(*ticket, &self.session);
                }
                return;
            }
            if let Some((_, ack)) = self.held.pop_front() {
                write_ack(self.wq.buf(), &ack);
            }
        }
    }

    /// Whether a SUBACK is waiting: deliveries wait behind it (retained messages of a new
    /// subscription must not overtake its SUBACK).
    pub(super) fn suback_held(&self) -> bool {
        self.held.iter().any(|(_, a)| matches!(a, Held::SubAck(..)))
    }
}

fn write_ack(buf: &mut bytes::BytesMut, ack: &Held) {
    match ack {
        Held::Ack(kind, pkid) => codec::encode_ack(buf, *kind, *pkid),
        Held::SubAck(pkid, codes) => codec::encode_suback(buf, *pkid, codes),
    }
}

/// `$SYS` topics belong to the broker: clients cannot publish there.
pub(super) fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}
