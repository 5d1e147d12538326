//! Scenarios and the run itself: which clients a scenario opens (topics, filters, accounting
//! units), the phases of a run (subscribers connect and subscribe, publishers connect, publish
//! for the duration, drain, disconnect) and the assembly of the result from the group reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hmq_codec::QoS;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientSpec, RoleSpec, Settings};
use crate::flow::{Role, RunTimes, Subscriber};
use crate::group::{Control, GROUP_SIZE, GroupReport, MAX_CONNECTS_IN_FLIGHT, run_group};
use crate::proc::{Pid, RssSampler, clk_tck, cpu_seconds};
use crate::stats::{
    BrokerReport, Budget, ConnectReport, ErrorLog, GeneratorReport, Percentiles, Report,
    TRACKING_CAP_BYTES, Tally, Timeline, instant_ns, merge_histogram, new_histogram, tally, window,
};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Idle connections.
    Conn,
    /// Publishers only.
    Pub,
    /// Subscribers only.
    Sub,
    /// N publishers to N subscribers, one topic each.
    P2p,
    /// P publishers to S subscribers that all subscribe to the P topics.
    Fanout,
    /// N publishers to one subscriber or one `$share` group.
    Fanin,
}

impl Kind {
    /// The scenario's name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Conn => "conn",
            Kind::Pub => "pub",
            Kind::Sub => "sub",
            Kind::P2p => "p2p",
            Kind::Fanout => "fanout",
            Kind::Fanin => "fanin",
        }
    }
}

/// The clients of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario.
    pub kind: Kind,
    /// Idle clients (`conn`).
    pub idle: Vec<ClientSpec>,
    /// Subscribers, connected first.
    pub subs: Vec<ClientSpec>,
    /// Publishers, connected once every subscriber has its SUBACK.
    pub pubs: Vec<ClientSpec>,
    /// Deliveries each message should produce (subscribers or groups that match it); 0 when
    /// unknown (`sub`) or when nobody in this process subscribes (`pub`).
    pub per_message: u64,
}

fn client(prefix: &str, role: &str, i: usize, spec: RoleSpec) -> ClientSpec {
    ClientSpec {
        client_id: format!("{prefix}-{role}-{i}"),
        role: spec,
        connect_at: Duration::ZERO,
    }
}

fn publishers(prefix: &str, n: usize, topic: impl Fn(usize) -> String) -> Vec<ClientSpec> {
    (0..n)
        .map(|i| {
            let spec = RoleSpec::Pub {
                id: i as u32,
                topic: topic(i),
            };
            client(prefix, "pub", i, spec)
        })
        .collect()
}

fn sub(unit: usize, filters: Vec<String>, expect: std::ops::Range<u32>) -> RoleSpec {
    RoleSpec::Sub {
        unit,
        filters,
        expect: Some(expect),
        reserve: 0,
    }
}

impl Plan {
    /// `conn`: `n` idle clients.
    pub fn conn(prefix: &str, n: usize) -> Plan {
        Plan {
            kind: Kind::Conn,
            idle: (0..n)
                .map(|i| client(prefix, "conn", i, RoleSpec::Idle))
                .collect(),
            subs: Vec::new(),
            pubs: Vec::new(),
            per_message: 0,
        }
    }

    /// `p2p`: publisher i → `bench/p2p/i` → subscriber i.
    pub fn p2p(prefix: &str, pairs: usize) -> Plan {
        let topic = |i: usize| format!("bench/p2p/{i}");
        Plan {
            kind: Kind::P2p,
            idle: Vec::new(),
            subs: (0..pairs)
                .map(|i| {
                    let id = i as u32;
                    client(prefix, "sub", i, sub(i, vec![topic(i)], id..id + 1))
                })
                .collect(),
            pubs: publishers(prefix, pairs, topic),
            per_message: 1,
        }
    }

    /// `fanout`: publishers on `bench/fanout/j`; every subscriber takes all of them, through
    /// one filter per topic or through `bench/fanout/+`.
    pub fn fanout(prefix: &str, pubs: usize, subs: usize, wildcard: bool) -> Plan {
        let topic = |j: usize| format!("bench/fanout/{j}");
        let filters: Vec<String> = if wildcard {
            vec!["bench/fanout/+".into()]
        } else {
            (0..pubs).map(topic).collect()
        };
        Plan {
            kind: Kind::Fanout,
            idle: Vec::new(),
            subs: (0..subs)
                .map(|i| client(prefix, "sub", i, sub(i, filters.clone(), 0..pubs as u32)))
                .collect(),
            pubs: publishers(prefix, pubs, topic),
            per_message: subs as u64,
        }
    }

    /// `fanin`: publishers on `bench/fanin/i` → one subscriber on `bench/fanin/+`, or `subs`
    /// members of `$share/<group>/bench/fanin/+` that together get each message once.
    pub fn fanin(prefix: &str, pubs: usize, subs: usize, group: Option<&str>) -> Plan {
        let (filter, subs) = match group {
            Some(g) => (format!("$share/{g}/bench/fanin/+"), subs),
            None => ("bench/fanin/+".to_string(), 1),
        };
        Plan {
            kind: Kind::Fanin,
            idle: Vec::new(),
            subs: (0..subs)
                .map(|i| {
                    client(
                        prefix,
                        "sub",
                        i,
                        sub(0, vec![filter.clone()], 0..pubs as u32),
                    )
                })
                .collect(),
            pubs: publishers(prefix, pubs, |i| format!("bench/fanin/{i}")),
            per_message: 1,
        }
    }

    /// `pub`: publishers on `topic` with `%i` replaced by the publisher index.
    pub fn pub_only(prefix: &str, n: usize, topic: &str) -> Plan {
        Plan {
            kind: Kind::Pub,
            idle: Vec::new(),
            subs: Vec::new(),
            pubs: publishers(prefix, n, |i| topic.replace("%i", &i.to_string())),
            per_message: 0,
        }
    }

    /// `sub`: subscribers on `filter` (`%i` replaced by the subscriber index), each its own
    /// accounting unit, or all members of one `$share` group.
    pub fn sub_only(prefix: &str, n: usize, filter: &str, group: Option<&str>) -> Plan {
        let subs = (0..n)
            .map(|i| {
                let f = filter.replace("%i", &i.to_string());
                let (f, unit) = match group {
                    Some(g) => (format!("$share/{g}/{f}"), 0),
                    None => (f, i),
                };
                let spec = RoleSpec::Sub {
                    unit,
                    filters: vec![f],
                    expect: None,
                    reserve: 0,
                };
                client(prefix, "sub", i, spec)
            })
            .collect();
        Plan {
            kind: Kind::Sub,
            idle: Vec::new(),
            subs,
            pubs: Vec::new(),
            per_message: 0,
        }
    }

    /// Spreads connects at `rate` per second (0: no pacing), each phase from its own start.
    pub fn pace_connects(&mut self, rate: f64) {
        for phase in [&mut self.idle, &mut self.subs, &mut self.pubs] {
            for (i, c) in phase.iter_mut().enumerate() {
                c.connect_at = if rate > 0.0 {
                    Duration::from_secs_f64(i as f64 / rate)
                } else {
                    Duration::ZERO
                };
            }
        }
    }

    /// Pre-sizes duplicate bitsets for `per_publisher` messages. Returns the memory this takes
    /// and whether it fits under the cap (if not, nothing is reserved and tracking is off).
    pub fn reserve_tracking(&mut self, per_publisher: Option<u64>) -> (u64, bool) {
        let pairs: u64 = self
            .subs
            .iter()
            .map(|c| match &c.role {
                RoleSpec::Sub {
                    expect: Some(r), ..
                } => r.len() as u64,
                _ => 0,
            })
            .sum();
        let Some(n) = per_publisher else {
            return (0, true);
        };
        let bytes = pairs.saturating_mul(n.div_ceil(64) * 8);
        let fits = bytes <= TRACKING_CAP_BYTES as u64;
        if fits {
            for c in &mut self.subs {
                if let RoleSpec::Sub { reserve, .. } = &mut c.role {
                    *reserve = n;
                }
            }
        }
        (bytes, fits)
    }
}

/// Options of a run besides the per-connection settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Broker process to measure.
    pub broker_pid: Option<u32>,
    /// Worker threads of each runtime (reported).
    pub threads: usize,
    /// Maximum wait for outstanding acks and deliveries after publishing.
    pub drain: Duration,
    /// Duplicate tracking is off from the start (it would not fit the memory cap).
    pub tracking_off: Option<u64>,
    /// Print progress on stderr.
    pub progress: bool,
}

/// Runs a plan to the end. Returns the report and whether the run succeeded.
///
/// Subscribers run on `subscriber_rt`, a runtime of their own, so that publishers at full speed
/// cannot delay the subscribers' reads (which would inflate the latency measured and, through
/// late acks, throttle the broker's deliveries): the OS scheduler serves the two runtimes'
/// threads fairly, where inside one runtime a single subscriber task waits behind every busy
/// publisher task.
pub async fn run(
    plan: Plan,
    settings: Settings,
    o: &RunOptions,
    subscriber_rt: &tokio::runtime::Handle,
) -> Result<(Report, bool)> {
    let tck = clk_tck();
    let (go_tx, go_rx) = watch::channel(None);
    let cap = if o.tracking_off.is_some() {
        0
    } else {
        TRACKING_CAP_BYTES
    };
    let ctl = Arc::new(Control {
        settings: settings.clone(),
        connect_slots: Semaphore::new(MAX_CONNECTS_IN_FLIGHT),
        budget: Budget::new(cap),
        stop: CancellationToken::new(),
        go: go_rx,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        unique: AtomicU64::new(0),
        pubs_done: AtomicU64::new(0),
        pub_end_ns: AtomicU64::new(0),
    });
    let broker = o.broker_pid.map(Pid::Other);
    let broker_cpu0 = broker.map(|p| cpu_seconds(p, tck)).transpose()?;
    let sampler = broker.map(RssSampler::start).transpose()?;
    let self_cpu0 = cpu_seconds(Pid::Current, tck)?;
    let mut notes = ErrorLog::default();

    let mut handles = Vec::new();
    let mut failed = 0;
    let shape = Shape {
        kind: plan.kind,
        per_message: plan.per_message,
        publishers: plan.pubs.len() as u64,
        subscribers: plan.subs.len(),
    };
    let phases = [
        ("idle", plan.idle),
        ("subscribers", plan.subs),
        ("publishers", plan.pubs),
    ];
    for (what, clients) in phases {
        if clients.is_empty() || failed > 0 {
            continue;
        }
        let total = clients.len();
        let base = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut groups = 0;
        let mut it = clients.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<_> = it.by_ref().take(GROUP_SIZE).collect();
            let rt = if what == "subscribers" {
                subscriber_rt.clone()
            } else {
                tokio::runtime::Handle::current()
            };
            handles.push(rt.spawn(run_group(chunk, base, ctl.clone(), tx.clone())));
            groups += 1;
        }
        drop(tx);
        let mut connected = 0;
        for _ in 0..groups {
            let r = rx
                .recv()
                .await
                .context("a group task ended during connect")?;
            connected += r.connected;
            failed += r.failed;
        }
        if o.progress {
            eprintln!(
                "hmq-bench: {what}: {connected}/{total} connected in {:.2} s",
                base.elapsed().as_secs_f64()
            );
        }
    }
    // Message scenarios need every client; `conn` reports failures as its result.
    let aborted = failed > 0 && plan.kind != Kind::Conn;

    let start = Instant::now();
    let start_ns = instant_ns(start);
    let times = RunTimes {
        start_ns,
        start,
        measure_from_ns: start_ns + settings.warmup.as_nanos() as u64,
        stale_before_ns: if plan.kind == Kind::Sub { 0 } else { start_ns },
        deadline: start + settings.duration,
    };
    if aborted {
        notes.add(format!("{failed} clients failed to connect: run aborted"));
    } else {
        go_tx.send_replace(Some(times));
        let interrupted = tokio::select! {
            () = monitor(&ctl, &shape, &settings, o, start, &mut notes) => false,
            _ = tokio::signal::ctrl_c() => true,
        };
        if interrupted {
            notes.add("interrupted (Ctrl-C)");
        }
    }
    let end = Instant::now();
    let broker_cpu1 = broker.map(|p| cpu_seconds(p, tck)).transpose()?;
    let rss = match (sampler, broker) {
        (Some(s), Some(p)) => Some(s.finish(p)?),
        _ => None,
    };
    let self_cpu1 = cpu_seconds(Pid::Current, tck)?;
    ctl.stop.cancel();
    drop(go_tx);
    let mut reports = Vec::with_capacity(handles.len());
    for h in handles {
        reports.push(h.await.context("group task panicked")??);
    }

    let publish_end_s = if shape.publishers == 0 {
        settings.duration.as_secs_f64()
    } else {
        let end_ns = ctl.pub_end_ns.load(Ordering::Relaxed);
        let s = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        if end_ns == 0 {
            end.duration_since(start).as_secs_f64()
        } else {
            s
        }
        .min(settings.duration.as_secs_f64())
    };
    let mut report = assemble(&shape, &settings, o, reports, publish_end_s, &mut notes)?;
    report.broker = BrokerReport {
        pid: o.broker_pid,
        cpu_s: broker_cpu0.zip(broker_cpu1).map(|(a, b)| b - a),
        rss_start_kib: rss.map(|r| r.start),
        rss_peak_kib: rss.map(|r| r.peak),
        rss_end_kib: rss.map(|r| r.end),
    };
    report.generator = GeneratorReport {
        cpu_s: self_cpu1 - self_cpu0,
        threads: o.threads,
    };
    if ctl.budget.exceeded() {
        notes.add(format!(
            "duplicate tracking reached its {} MiB cap: later messages were counted without duplicate detection",
            TRACKING_CAP_BYTES >> 20
        ));
    }
    report.errors = notes.lines();
    Ok((report, !aborted))
}

/// What the monitor and the report need to know about the plan.
struct Shape {
    kind: Kind,
    per_message: u64,
    publishers: u64,
    subscribers: usize,
}

/// Waits for the end of publishing, then for the drain: every message acknowledged and
/// delivered, or the drain time passed, or (QoS 0, where loss is allowed) nothing delivered for
/// a second.
async fn monitor(
    ctl: &Control,
    shape: &Shape,
    s: &Settings,
    o: &RunOptions,
    start: Instant,
    notes: &mut ErrorLog,
) {
    let deadline = start + s.duration;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut draining: Option<Instant> = None;
    let mut last_progress = (0, start);
    let mut last_print = start;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let sent = ctl.sent.load(Ordering::Relaxed);
        let acked = ctl.acked.load(Ordering::Relaxed);
        let unique = ctl.unique.load(Ordering::Relaxed);
        if o.progress && now.duration_since(last_print) >= Duration::from_secs(1) {
            last_print = now;
            let t = now.duration_since(start).as_secs_f64();
            match shape.kind {
                Kind::Conn => eprintln!("hmq-bench: {t:>5.1} s  holding"),
                Kind::Sub => eprintln!("hmq-bench: {t:>5.1} s  received {unique}"),
                Kind::Pub => eprintln!("hmq-bench: {t:>5.1} s  sent {sent}  acked {acked}"),
                _ => eprintln!(
                    "hmq-bench: {t:>5.1} s  sent {sent}  acked {acked}  received {unique}"
                ),
            }
        }
        if shape.publishers == 0 {
            if now >= deadline {
                return;
            }
            continue;
        }
        let since = match draining {
            Some(t) => t,
            None => {
                let done = ctl.pubs_done.load(Ordering::Relaxed);
                // The grace covers publishers whose task is too busy to notice the deadline.
                if done < shape.publishers && now < deadline + Duration::from_secs(5) {
                    continue;
                }
                draining = Some(now);
                now
            }
        };
        let expected = sent.saturating_mul(shape.per_message);
        let acks_done = s.qos == QoS::AtMostOnce || acked >= sent;
        if acks_done && unique >= expected {
            return;
        }
        if unique != last_progress.0 {
            last_progress = (unique, now);
        }
        if s.qos == QoS::AtMostOnce && now.duration_since(last_progress.1) >= Duration::from_secs(1)
        {
            return;
        }
        if now.duration_since(since) >= o.drain {
            let mut msg = format!("drain timed out after {} s:", o.drain.as_secs_f64());
            if !acks_done {
                msg += &format!(" {} of {sent} messages unacknowledged;", sent - acked);
            }
            if shape.kind != Kind::Pub && unique < expected {
                msg += &format!(" {} of {expected} deliveries missing", expected - unique);
            }
            notes.add(msg.trim_end_matches(';'));
            return;
        }
    }
}

/// Builds the report from the group reports (broker and generator figures are added later).
fn assemble(
    shape: &Shape,
    s: &Settings,
    o: &RunOptions,
    reports: Vec<GroupReport>,
    publish_end_s: f64,
    notes: &mut ErrorLog,
) -> Result<Report> {
    let mut latency = new_histogram()?;
    let mut connect_latency = new_histogram()?;
    let mut received_tl = Timeline::default();
    let mut sent_tl = Timeline::default();
    let mut errors = ErrorLog::default();
    let mut connect_errors = ErrorLog::default();
    let (mut connected, mut failed, mut lost_conns, mut pings, mut pongs) = (0, 0, 0, 0, 0);
    let mut span: Option<(Instant, Instant)> = None;
    let (kind, per_message) = (shape.kind, shape.per_message);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut subs: Vec<Subscriber> = Vec::new();
    for r in reports {
        merge_histogram(&mut latency, &r.stats.latency)?;
        merge_histogram(&mut connect_latency, &r.connect_latency)?;
        received_tl.merge(&r.stats.received);
        sent_tl.merge(&r.stats.sent);
        errors.merge(&r.stats.errors);
        connect_errors.merge(&r.connect_errors);
        connected += r.connected;
        failed += r.failed;
        lost_conns += r.lost_connections;
        pings += r.stats.pings;
        pongs += r.stats.pongs;
        if let Some((a, b)) = r.connect_span {
            span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        for role in r.roles {
            match role {
                Role::Pub(p) => {
                    sent += p.sent;
                    acked += p.acked;
                }
                Role::Sub(sub) => subs.push(sub),
                Role::Idle => {}
            }
        }
    }

    // Loss and duplicates per accounting unit and publisher.
    let units = subs.iter().map(|s| s.unit + 1).max().unwrap_or(0);
    let mut by_unit: Vec<Vec<&Subscriber>> = vec![Vec::new(); units];
    for sub in &subs {
        by_unit[sub.unit].push(sub);
    }
    let mut total = Tally::default();
    let mut seq_end = 0;
    for members in &by_unit {
        let width = members.iter().map(|m| m.seen.len()).max().unwrap_or(0);
        for i in 0..width {
            let seen: Vec<_> = members.iter().filter_map(|m| m.seen.get(i)).collect();
            let t = tally(&seen);
            total.received += t.received;
            total.unique += t.unique;
            total.duplicates += t.duplicates;
            seq_end += t.seq_end;
        }
    }
    let expected = match kind {
        Kind::Sub => {
            notes.add(
                "sub: expected = highest sequence number + 1 per publisher (tail loss is not seen)",
            );
            seq_end
        }
        _ => sent.saturating_mul(per_message),
    };
    let (unexpected, stale, malformed) = subs.iter().fold((0, 0, 0), |(a, b, c), s| {
        (a + s.unexpected, b + s.stale, c + s.malformed)
    });
    if unexpected > 0 {
        notes.add(format!(
            "{unexpected} messages from publishers a subscriber should not receive"
        ));
    }
    if stale > 0 {
        notes.add(format!(
            "{stale} messages left over from an earlier run ignored"
        ));
    }
    if malformed > 0 {
        notes.add(format!(
            "{malformed} payloads without a measurement header ignored"
        ));
    }
    if lost_conns > 0 {
        notes.add(format!("{lost_conns} connections lost during the run"));
    }
    if let Some(bytes) = o.tracking_off {
        notes.add(format!(
            "duplicate tracking off: it would need {} MiB (cap {} MiB); duplicates counted as unique",
            bytes >> 20,
            TRACKING_CAP_BYTES >> 20
        ));
    }
    if s.keepalive > 0 && pongs + (connected as u64) < pings {
        notes.add(format!("{pings} PINGREQ sent, {pongs} PINGRESP received"));
    }
    for line in connect_errors.lines() {
        notes.add(format!("connect: {line}"));
    }
    notes.merge(&errors);

    let (from, to, secs) = window(s.warmup.as_secs_f64(), publish_end_s);
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if secs <= 0.0 && sent > 0 {
        notes.add("measured window empty: publishing ended before the warmup did");
    }
    let conn_secs = span.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
    Ok(Report {
        tool: "hmq-bench",
        version: env!("CARGO_PKG_VERSION"),
        scenario: kind.name(),
        qos: s.qos as u8,
        payload_bytes: s.size,
        publishers: shape.publishers as usize,
        subscribers: shape.subscribers,
        rate_per_publisher: s.rate,
        duration_s: s.duration.as_secs_f64(),
        warmup_s: s.warmup.as_secs_f64(),
        sent,
        acked,
        expected,
        received: total.received,
        unique_received: total.unique,
        lost: expected.saturating_sub(total.unique),
        duplicates: total.duplicates,
        sent_per_s: per_s(sent_tl.sum(from, to)),
        received_per_s: per_s(received_tl.sum(from, to)),
        received_timeline: if kind == Kind::Conn || kind == Kind::Pub {
            Vec::new()
        } else {
            received_tl.per_second(s.duration.as_secs_f64().ceil() as usize)
        },
        latency_us: Percentiles::of(&latency),
        connect: ConnectReport {
            clients: connected + failed,
            failed,
            rate_per_s: if conn_secs > 0.0 {
                connected as f64 / conn_secs
            } else {
                0.0
            },
            latency_us: Percentiles::of(&connect_latency),
        },
        broker: BrokerReport::default(),
        generator: GeneratorReport::default(),
        errors: Vec::new(),
    })
}

/// Refuses option combinations that make no sense for the scenario.
pub fn check(kind: Kind, s: &Settings) -> Result<()> {
    if kind != Kind::Conn && s.warmup >= s.duration {
        bail!("--warmup must be shorter than --duration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(c: &ClientSpec) -> (&[String], usize) {
        match &c.role {
            RoleSpec::Sub { filters, unit, .. } => (filters, *unit),
            _ => panic!("not a subscriber"),
        }
    }

    #[test]
    fn plans_have_the_documented_topics() {
        let p = Plan::p2p("b", 3);
        assert_eq!(p.pubs.len(), 3);
        assert_eq!(filters(&p.subs[2]), (&["bench/p2p/2".to_string()][..], 2));
        assert_eq!(p.pubs[1].client_id, "b-pub-1");

        let f = Plan::fanout("b", 2, 4, false);
        assert_eq!(f.per_message, 4);
        assert_eq!(filters(&f.subs[3]).0, ["bench/fanout/0", "bench/fanout/1"]);
        let f = Plan::fanout("b", 2, 4, true);
        assert_eq!(filters(&f.subs[0]).0, ["bench/fanout/+"]);

        let g = Plan::fanin("b", 10, 5, Some("g"));
        assert_eq!(g.subs.len(), 5);
        assert_eq!(g.per_message, 1);
        assert!(
            g.subs
                .iter()
                .all(|c| filters(c) == (&["$share/g/bench/fanin/+".to_string()][..], 0))
        );
        assert_eq!(Plan::fanin("b", 10, 5, None).subs.len(), 1);

        let s = Plan::sub_only("b", 2, "x/%i/#", None);
        assert_eq!(filters(&s.subs[1]), (&["x/1/#".to_string()][..], 1));
    }

    #[test]
    fn connects_are_paced_per_phase() {
        let mut p = Plan::p2p("b", 4);
        p.pace_connects(2.0);
        assert_eq!(p.subs[3].connect_at, Duration::from_millis(1500));
        assert_eq!(p.pubs[0].connect_at, Duration::ZERO);
        p.pace_connects(0.0);
        assert_eq!(p.subs[3].connect_at, Duration::ZERO);
    }

    #[test]
    fn tracking_memory_estimate() {
        let mut p = Plan::fanout("b", 5, 1000, false);
        // 5000 (subscriber, publisher) pairs x 1M messages = 625 MB: over the cap.
        let (bytes, fits) = p.reserve_tracking(Some(1_000_000));
        assert_eq!(bytes, 5000 * 125_000);
        assert!(!fits);
        let (_, fits) = p.reserve_tracking(Some(10_000));
        assert!(fits);
        assert!(matches!(
            p.subs[0].role,
            RoleSpec::Sub {
                reserve: 10_000,
                ..
            }
        ));
    }
}
