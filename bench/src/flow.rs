//! Protocol state of publishers and subscribers: packet ids and the QoS 1/2 flows, the
//! measurement header written and read, loss/duplicate accounting per publisher, and the
//! group-wide measurement state (latency histogram, timelines) that connections record into.

use std::ops::Range;
use std::time::Instant;

use anyhow::{Result, bail};
use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use hmq_codec::{self as codec, Ack, Packet, QoS};

use crate::client::Settings;
use crate::stats::{Budget, ErrorLog, HEADER_LEN, Header, Seen, Timeline, record_us};

/// Measurement state of a group task, shared by its connections without locks.
#[derive(Debug)]
pub struct GroupStats {
    /// End-to-end latency in µs of messages sent after warmup.
    pub latency: Histogram<u64>,
    /// Deliveries per 100 ms.
    pub received: Timeline,
    /// Sends per 100 ms.
    pub sent: Timeline,
    /// Problems seen.
    pub errors: ErrorLog,
    /// PINGREQ sent.
    pub pings: u64,
    /// PINGRESP received.
    pub pongs: u64,
    /// Sends, acks and first deliveries not yet added to the run's shared counters.
    pub unflushed: [u64; 3],
}

/// The run's timing as a connection needs it.
#[derive(Debug, Clone, Copy)]
pub struct RunTimes {
    /// Start of publishing ([`crate::stats::now_ns`] clock).
    pub start_ns: u64,
    /// Start of publishing.
    pub start: Instant,
    /// Latency is recorded for messages sent at or after this.
    pub measure_from_ns: u64,
    /// Messages sent before this are leftovers of an earlier run (persistent sessions).
    pub stale_before_ns: u64,
    /// End of publishing.
    pub deadline: Instant,
}

/// A publisher's protocol state.
#[derive(Debug)]
pub struct Publisher {
    /// Publisher id.
    pub id: u32,
    topic: String,
    /// Messages handed to the socket buffer.
    pub sent: u64,
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) received.
    pub acked: u64,
    /// Whether it has stopped publishing (deadline, count, or connection lost).
    pub done: bool,
    /// When it stopped, in [`crate::stats::now_ns`] time.
    pub done_ns: u64,
    inflight: usize,
    next_pkid: u16,
    /// QoS 1: awaiting PUBACK; QoS 2: awaiting PUBREC. One bit per packet id.
    awaiting: Vec<u64>,
    /// QoS 2: awaiting PUBCOMP.
    awaiting_comp: Vec<u64>,
    /// Offset in [0, 1) of this publisher's sending schedule, spreading rate-limited sends.
    phase: f64,
    packet_len: usize,
}

fn bit(set: &[u64], i: u16) -> bool {
    set[usize::from(i) / 64] & (1 << (i % 64)) != 0
}

fn set_bit(set: &mut [u64], i: u16, on: bool) {
    let w = &mut set[usize::from(i) / 64];
    if on {
        *w |= 1 << (i % 64);
    } else {
        *w &= !(1 << (i % 64));
    }
}

impl Publisher {
    pub fn new(id: u32, topic: String, s: &Settings) -> Publisher {
        let ids = if s.qos == QoS::AtMostOnce { 0 } else { 1024 };
        Publisher {
            id,
            packet_len: codec::publish_size(&topic, s.qos, s.size),
            topic,
            sent: 0,
            acked: 0,
            done: false,
            done_ns: 0,
            inflight: 0,
            next_pkid: 1,
            awaiting: vec![0; ids],
            awaiting_comp: vec![0; if s.qos == QoS::ExactlyOnce { ids } else { 0 }],
            phase: (f64::from(id) * 0.618_033_988_749_895).fract(),
        }
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let p = self.next_pkid;
            self.next_pkid = if p == u16::MAX { 1 } else { p + 1 };
            if !bit(&self.awaiting, p)
                && (self.awaiting_comp.is_empty() || !bit(&self.awaiting_comp, p))
            {
                return p;
            }
        }
    }

    pub fn finish(&mut self, at_ns: u64) {
        if !self.done {
            self.done = true;
            self.done_ns = at_ns;
        }
    }

    /// Encodes as many PUBLISH packets as are due, the window allows and the count permits.
    /// Returns whether it could publish more right away (the caller should come back).
    pub fn fill(
        &mut self,
        wbuf: &mut BytesMut,
        now: Instant,
        now_ns: u64,
        t: &RunTimes,
        s: &Settings,
        stats: &mut GroupStats,
    ) -> bool {
        if self.done {
            return false;
        }
        if now >= t.deadline {
            self.finish(crate::stats::instant_ns(t.deadline));
            return false;
        }
        let room = if s.qos == QoS::AtMostOnce {
            let cap = s.inflight * self.packet_len;
            cap.saturating_sub(wbuf.len()).div_ceil(self.packet_len)
        } else {
            s.inflight - self.inflight
        } as u64;
        let due = if s.rate > 0.0 {
            let elapsed = now.saturating_duration_since(t.start).as_secs_f64();
            ((elapsed * s.rate + self.phase) as u64).saturating_sub(self.sent)
        } else {
            u64::MAX
        };
        let n = room.min(due).min(s.max_messages - self.sent);
        for _ in 0..n {
            let pkid = if s.qos == QoS::AtMostOnce {
                0
            } else {
                let p = self.alloc_pkid();
                set_bit(&mut self.awaiting, p, true);
                self.inflight += 1;
                p
            };
            codec::encode_publish_header(wbuf, &self.topic, s.qos, pkid, false, false, s.size);
            Header {
                publisher: self.id,
                seq: self.sent as u32,
                sent_ns: now_ns,
            }
            .put(wbuf);
            wbuf.put_bytes(0, s.size - HEADER_LEN);
            self.sent += 1;
        }
        if n > 0 {
            stats.sent.add(t.start_ns, now_ns, n);
            stats.unflushed[0] += n;
        }
        if self.sent >= s.max_messages {
            self.finish(now_ns);
        }
        // QoS 0 at full speed: once the buffer is written there is room again. QoS 1/2 wait
        // for acks (read readiness), rate-limited publishers for the ticker.
        s.qos == QoS::AtMostOnce && s.rate == 0.0 && !self.done && n > 0 && n == room
    }

    pub fn on_packet(
        &mut self,
        p: Packet,
        wbuf: &mut BytesMut,
        stats: &mut GroupStats,
    ) -> Result<()> {
        match p {
            Packet::PubAck(id) if self.awaiting_comp.is_empty() && bit(&self.awaiting, id) => {
                set_bit(&mut self.awaiting, id, false);
                self.completed(stats);
            }
            Packet::PubRec(id) if !self.awaiting_comp.is_empty() => {
                if bit(&self.awaiting, id) {
                    set_bit(&mut self.awaiting, id, false);
                    set_bit(&mut self.awaiting_comp, id, true);
                } else if !bit(&self.awaiting_comp, id) {
                    stats.errors.add("PUBREC for a packet id not in flight");
                }
                // Answered in every case so that the broker can release the id.
                codec::encode_ack(wbuf, Ack::PubRel, id);
            }
            Packet::PubComp(id)
                if !self.awaiting_comp.is_empty() && bit(&self.awaiting_comp, id) =>
            {
                set_bit(&mut self.awaiting_comp, id, false);
                self.completed(stats);
            }
            Packet::PubAck(_) | Packet::PubComp(_) => stats
                .errors
                .add(format!("{} for a packet id not in flight", p.name())),
            Packet::PingResp => stats.pongs += 1,
            other => bail!("unexpected {} sent to a publisher", other.name()),
        }
        Ok(())
    }

    fn completed(&mut self, stats: &mut GroupStats) {
        self.inflight -= 1;
        self.acked += 1;
        stats.unflushed[1] += 1;
    }
}

/// A subscriber's accounting.
#[derive(Debug)]
pub struct Subscriber {
    /// Accounting unit.
    pub unit: usize,
    expect: Option<Range<u32>>,
    /// Per expected publisher (index = id - expect.start), what was received.
    pub seen: Vec<Seen>,
    /// Messages from publishers it should not receive from.
    pub unexpected: u64,
    /// Messages left over from an earlier run.
    pub stale: u64,
    /// Payloads without a measurement header.
    pub malformed: u64,
}

/// Publisher ids accepted when the expected set is unknown (`sub`).
const MAX_PUBLISHER_ID: u32 = 1 << 20;

impl Subscriber {
    pub fn new(unit: usize, expect: Option<Range<u32>>, reserve: u64, budget: &Budget) -> Self {
        let n = expect.as_ref().map_or(0, |r| r.len());
        let mut seen = vec![Seen::default(); n];
        if reserve > 0 {
            for s in &mut seen {
                s.reserve(reserve, budget);
            }
        }
        Subscriber {
            unit,
            expect,
            seen,
            unexpected: 0,
            stale: 0,
            malformed: 0,
        }
    }

    pub fn on_packet(
        &mut self,
        p: Packet,
        now_ns: u64,
        t: Option<&RunTimes>,
        budget: &Budget,
        wbuf: &mut BytesMut,
        stats: &mut GroupStats,
    ) -> Result<()> {
        let publish = match p {
            Packet::Publish(p) => p,
            Packet::PubRel(id) => {
                codec::encode_ack(wbuf, Ack::PubComp, id);
                return Ok(());
            }
            Packet::PingResp => {
                stats.pongs += 1;
                return Ok(());
            }
            other => bail!("unexpected {} sent to a subscriber", other.name()),
        };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => codec::encode_ack(wbuf, Ack::PubAck, publish.pkid),
            QoS::ExactlyOnce => codec::encode_ack(wbuf, Ack::PubRec, publish.pkid),
        }
        let Some(h) = Header::parse(&publish.payload) else {
            self.malformed += 1;
            return Ok(());
        };
        let Some(t) = t.filter(|t| h.sent_ns >= t.stale_before_ns) else {
            self.stale += 1;
            return Ok(());
        };
        let index = match &self.expect {
            Some(r) if r.contains(&h.publisher) => (h.publisher - r.start) as usize,
            None if h.publisher < MAX_PUBLISHER_ID => {
                let i = h.publisher as usize;
                if i >= self.seen.len() {
                    self.seen.resize(i + 1, Seen::default());
                }
                i
            }
            _ => {
                self.unexpected += 1;
                return Ok(());
            }
        };
        if self.seen[index].record(h.seq, budget) {
            stats.unflushed[2] += 1;
        }
        stats.received.add(t.start_ns, now_ns, 1);
        if h.sent_ns >= t.measure_from_ns {
            record_us(&mut stats.latency, now_ns.saturating_sub(h.sent_ns) / 1000);
        }
        Ok(())
    }
}

/// What a connection does, with its state.
#[derive(Debug)]
pub enum Role {
    /// Keepalive only.
    Idle,
    /// Publisher.
    Pub(Publisher),
    /// Subscriber.
    Sub(Subscriber),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn settings(qos: QoS) -> Settings {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            sub_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            qos,
            size: 16,
            rate: 0.0,
            inflight: 4,
            max_messages: 10,
            keepalive: 60,
            clean_session: true,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            connect_timeout: Duration::from_secs(1),
        }
    }

    fn stats() -> GroupStats {
        GroupStats {
            latency: crate::stats::new_histogram().unwrap(),
            received: Timeline::default(),
            sent: Timeline::default(),
            errors: ErrorLog::default(),
            pings: 0,
            pongs: 0,
            unflushed: [0; 3],
        }
    }

    fn times() -> RunTimes {
        let now = Instant::now();
        RunTimes {
            start_ns: crate::stats::instant_ns(now),
            start: now,
            measure_from_ns: 0,
            stale_before_ns: 0,
            deadline: now + Duration::from_secs(10),
        }
    }

    #[test]
    fn qos2_publisher_window_and_flow() {
        let s = settings(QoS::ExactlyOnce);
        let t = times();
        let mut st = stats();
        let mut p = Publisher::new(7, "bench/x".into(), &s);
        let mut w = BytesMut::new();
        // Window of 4: the fifth must wait.
        assert!(!p.fill(&mut w, Instant::now(), 5, &t, &s, &mut st));
        assert_eq!((p.sent, p.inflight), (4, 4));
        let mut ids = Vec::new();
        while let Some(Packet::Publish(m)) = codec::decode(&mut w, 1024).unwrap() {
            let h = Header::parse(&m.payload).unwrap();
            assert_eq!((h.publisher, h.sent_ns), (7, 5));
            assert_eq!(h.seq as usize, ids.len());
            ids.push(m.pkid);
        }
        assert_eq!(ids, vec![1, 2, 3, 4]);
        p.on_packet(Packet::PubRec(1), &mut w, &mut st).unwrap();
        assert_eq!(codec::decode(&mut w, 16).unwrap(), Some(Packet::PubRel(1)));
        assert_eq!(p.inflight, 4); // still awaiting PUBCOMP
        p.on_packet(Packet::PubComp(1), &mut w, &mut st).unwrap();
        assert_eq!((p.inflight, p.acked), (3, 1));
        p.on_packet(Packet::PubComp(1), &mut w, &mut st).unwrap(); // duplicate: an error line
        assert_eq!(p.acked, 1);
        assert_eq!(st.errors.lines().len(), 1);
        // Id 1 is free again but allocation continues round-robin.
        p.fill(&mut w, Instant::now(), 6, &t, &s, &mut st);
        assert!(
            matches!(codec::decode(&mut w, 1024).unwrap(), Some(Packet::Publish(m)) if m.pkid == 5)
        );
        assert_eq!(st.unflushed, [5, 1, 0]);
    }

    #[test]
    fn publisher_stops_at_max_messages() {
        let mut s = settings(QoS::AtLeastOnce);
        s.inflight = 100;
        let t = times();
        let mut st = stats();
        let mut p = Publisher::new(0, "t".into(), &s);
        let mut w = BytesMut::new();
        p.fill(&mut w, Instant::now(), 1, &t, &s, &mut st);
        assert_eq!(p.sent, 10);
        assert!(p.done);
    }

    #[test]
    fn qos0_output_is_capped_in_bytes() {
        let mut s = settings(QoS::AtMostOnce);
        s.max_messages = u64::MAX;
        let t = times();
        let mut st = stats();
        let mut p = Publisher::new(0, "t".into(), &s);
        let mut w = BytesMut::new();
        assert!(p.fill(&mut w, Instant::now(), 1, &t, &s, &mut st));
        assert_eq!(w.len(), 4 * codec::publish_size("t", QoS::AtMostOnce, 16));
        assert!(!p.fill(&mut w, Instant::now(), 1, &t, &s, &mut st)); // full: nothing added
        assert_eq!(p.sent, 4);
    }

    #[test]
    fn subscriber_acks_and_accounts() {
        let budget = Budget::new(1 << 20);
        let t = times();
        let mut st = stats();
        let mut sub = Subscriber::new(0, Some(10..12), 0, &budget);
        let mut w = BytesMut::new();
        let publish = |publisher: u32, seq: u32, qos: QoS, pkid: u16| {
            let mut payload = Vec::new();
            Header {
                publisher,
                seq,
                sent_ns: t.start_ns,
            }
            .put(&mut payload);
            Packet::Publish(codec::Publish {
                dup: false,
                qos,
                retain: false,
                topic: "t".into(),
                pkid,
                payload: payload.into(),
            })
        };
        let now = t.start_ns + 2_000_000;
        for p in [
            publish(10, 0, QoS::AtLeastOnce, 1),
            publish(10, 0, QoS::AtLeastOnce, 2), // duplicate
            publish(11, 0, QoS::ExactlyOnce, 3),
            publish(99, 0, QoS::AtMostOnce, 0), // not ours
            Packet::PubRel(3),
        ] {
            sub.on_packet(p, now, Some(&t), &budget, &mut w, &mut st)
                .unwrap();
        }
        let acks: Vec<_> = std::iter::from_fn(|| codec::decode(&mut w, 16).unwrap()).collect();
        assert_eq!(
            acks,
            vec![
                Packet::PubAck(1),
                Packet::PubAck(2),
                Packet::PubRec(3),
                Packet::PubComp(3)
            ]
        );
        assert_eq!(sub.unexpected, 1);
        assert_eq!(st.unflushed[2], 2); // first deliveries
        assert_eq!(crate::stats::tally(&[&sub.seen[0]]).duplicates, 1);
        assert_eq!(st.latency.len(), 3);
        assert_eq!(st.latency.max(), 2000);
    }
}
