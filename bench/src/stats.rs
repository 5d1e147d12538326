//! Measurement: the payload header, loss and duplicate accounting, latency histograms, the
//! received/sent timelines and the JSON result. Pure logic, no I/O: unit-tested below.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BufMut;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Bytes of the header at the front of every payload: publisher id (u32), sequence number (u32),
/// send timestamp (u64 ns), big-endian. 16 bytes so that the usual 16-byte benchmark payload
/// carries it whole; a u32 sequence number allows 4.29 billion messages per publisher per run.
pub const HEADER_LEN: usize = 16;

/// The measurement header carried at the front of each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Publisher id, unique in the run.
    pub publisher: u32,
    /// Sequence number, dense from 0 per publisher.
    pub seq: u32,
    /// Send time from [`now_ns`].
    pub sent_ns: u64,
}

impl Header {
    /// Appends the header to `buf`.
    pub fn put(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.publisher);
        buf.put_u32(self.seq);
        buf.put_u64(self.sent_ns);
    }

    /// Reads the header from the front of a payload; `None` if it is too short.
    pub fn parse(payload: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        let [p0, p1, p2, p3, s0, s1, s2, s3, t @ ..] = *h;
        Some(Header {
            publisher: u32::from_be_bytes([p0, p1, p2, p3]),
            seq: u32::from_be_bytes([s0, s1, s2, s3]),
            sent_ns: u64::from_be_bytes(t),
        })
    }
}

/// The process clock: a monotonic `Instant` epoch anchored once to the wall clock, so
/// timestamps are monotonic inside the process and still comparable (to within the anchoring
/// error, microseconds) with another `hmq-bench` process on the same machine (`pub` + `sub`).
struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

static CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock {
    base: Instant::now(),
    base_unix_ns: SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64),
});

/// Nanoseconds since the UNIX epoch, advancing with the monotonic clock.
pub fn now_ns() -> u64 {
    CLOCK.base_unix_ns + CLOCK.base.elapsed().as_nanos() as u64
}

/// The [`now_ns`] value of an `Instant`.
pub fn instant_ns(t: Instant) -> u64 {
    CLOCK.base_unix_ns + t.saturating_duration_since(CLOCK.base).as_nanos() as u64
}

/// Duplicate-tracking memory cap for all bitsets together.
pub const TRACKING_CAP_BYTES: usize = 256 << 20;

/// The shared memory budget of the seen-sequence bitsets. Touched only when a bitset grows
/// (geometrically), never per message.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
    exceeded: AtomicBool,
}

impl Budget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            cap,
            exceeded: AtomicBool::new(false),
        }
    }

    fn take(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.cap {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            self.exceeded.store(true, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// Whether some message could not be tracked for duplicates.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// What one subscriber received from one publisher: a bitset of seen sequence numbers plus
/// counts. Messages beyond the memory budget are counted as `untracked` (assumed unique).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    words: Vec<u64>,
    /// Every delivery, duplicates included.
    pub received: u64,
    /// Deliveries whose sequence number could not be tracked.
    pub untracked: u64,
}

impl Seen {
    /// Pre-sizes the bitset for `count` sequence numbers, if the budget allows.
    pub fn reserve(&mut self, count: u64, budget: &Budget) {
        let words = count.div_ceil(64) as usize;
        if words > self.words.len() && budget.take((words - self.words.len()) * 8) {
            self.words.resize(words, 0);
        }
    }

    /// Records a delivery; returns whether it was the first of this sequence number.
    pub fn record(&mut self, seq: u32, budget: &Budget) -> bool {
        self.received += 1;
        let word = (seq / 64) as usize;
        if word >= self.words.len() {
            let want = (word + 1).max(self.words.len() * 2).max(16);
            if !budget.take((want - self.words.len()) * 8) {
                self.untracked += 1;
                return true;
            }
            self.words.resize(want, 0);
        }
        let bit = 1u64 << (seq % 64);
        let w = &mut self.words[word];
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    fn tracked_unique(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Loss and duplicate figures of one accounting unit (one subscriber, or a whole `$share`
/// group, which together should get each message once) for one publisher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// All deliveries.
    pub received: u64,
    /// Distinct sequence numbers received (untracked ones counted as distinct).
    pub unique: u64,
    /// `received - unique`.
    pub duplicates: u64,
    /// One past the highest sequence number seen (for `sub`, where `sent` is unknown).
    pub seq_end: u64,
}

/// Merges what the members of one unit received from one publisher: duplicates across members
/// (a `$share` group delivering one message twice) count like duplicates within one member.
pub fn tally(members: &[&Seen]) -> Tally {
    let received: u64 = members.iter().map(|s| s.received).sum();
    let untracked: u64 = members.iter().map(|s| s.untracked).sum();
    let len = members.iter().map(|s| s.words.len()).max().unwrap_or(0);
    let (tracked, seq_end) = if members.len() == 1 {
        (members[0].tracked_unique(), seq_end(&members[0].words))
    } else {
        let mut union = vec![0u64; len];
        for s in members {
            for (u, w) in union.iter_mut().zip(&s.words) {
                *u |= w;
            }
        }
        let n = union.iter().map(|w| u64::from(w.count_ones())).sum();
        (n, seq_end(&union))
    };
    let unique = tracked + untracked;
    Tally {
        received,
        unique,
        duplicates: received.saturating_sub(unique),
        seq_end,
    }
}

fn seq_end(words: &[u64]) -> u64 {
    words.iter().rposition(|&w| w != 0).map_or(0, |i| {
        i as u64 * 64 + 64 - u64::from(words[i].leading_zeros())
    })
}

/// Largest value recorded (one hour in µs); larger ones are clamped to it.
pub const MAX_RECORDED_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds at 3 significant digits. It starts small and grows with
/// the largest value recorded (a full 1 µs..1 h histogram takes 190 KB, and there are two per
/// group task); record through [`record_us`].
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new(3)?)
}

/// Records `us` microseconds, clamped to [`MAX_RECORDED_US`].
pub fn record_us(h: &mut Histogram<u64>, us: u64) {
    let us = us.min(MAX_RECORDED_US);
    // `record` grows the histogram; `saturating_record` would clamp to its current range.
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// Adds `other` into `into`.
pub fn merge_histogram(into: &mut Histogram<u64>, other: &Histogram<u64>) -> anyhow::Result<()> {
    into.add(other)
        .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))
}

/// Percentiles in microseconds, as written to the JSON.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// Timeline granularity: counts are kept per 100 ms and summed to seconds for the report.
pub const BUCKET_NS: u64 = 100_000_000;
/// Timelines stop growing after 6 hours; later counts go into the last bucket.
const MAX_BUCKETS: usize = 6 * 3600 * 10;

/// Counts per 100 ms since the start of publishing.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    buckets: Vec<u64>,
}

impl Timeline {
    /// Adds `n` at time `t_ns` (from [`now_ns`]) for a run that started at `start_ns`.
    pub fn add(&mut self, start_ns: u64, t_ns: u64, n: u64) {
        let i = (t_ns.saturating_sub(start_ns) / BUCKET_NS) as usize;
        let i = i.min(MAX_BUCKETS - 1);
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += n;
    }

    /// Adds another timeline into this one.
    pub fn merge(&mut self, other: &Timeline) {
        if other.buckets.len() > self.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// Sum over the buckets `[from, to)`.
    pub fn sum(&self, from: usize, to: usize) -> u64 {
        let to = to.min(self.buckets.len());
        self.buckets.get(from..to).map_or(0, |b| b.iter().sum())
    }

    /// Counts per whole second, covering `secs` seconds at least.
    pub fn per_second(&self, secs: usize) -> Vec<u64> {
        let per = (1_000_000_000 / BUCKET_NS) as usize;
        let n = self.buckets.len().div_ceil(per).max(secs);
        (0..n).map(|s| self.sum(s * per, (s + 1) * per)).collect()
    }
}

/// The measured window in whole buckets: from the end of warmup to the end of publishing.
/// Returns (first bucket, end bucket, seconds).
pub fn window(warmup_s: f64, publish_end_s: f64) -> (usize, usize, f64) {
    let per_s = 1e9 / BUCKET_NS as f64;
    let from = (warmup_s * per_s).ceil().max(0.0) as usize;
    let to = ((publish_end_s * per_s).floor().max(0.0) as usize).max(from);
    (from, to, (to - from) as f64 / per_s)
}

/// Error and warning messages, counted by text so that 10,000 identical failures print once.
#[derive(Debug, Default, Clone)]
pub struct ErrorLog {
    entries: Vec<(String, u64)>,
}

impl ErrorLog {
    /// Adds one occurrence of `msg`.
    pub fn add(&mut self, msg: impl Into<String>) {
        self.add_n(msg, 1);
    }

    /// Adds `n` occurrences of `msg`.
    pub fn add_n(&mut self, msg: impl Into<String>, n: u64) {
        let msg = msg.into();
        if let Some((_, c)) = self.entries.iter_mut().find(|(m, _)| *m == msg) {
            *c += n;
        } else if self.entries.len() < 100 {
            self.entries.push((msg, n));
        }
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: &ErrorLog) {
        for (m, n) in &other.entries {
            self.add_n(m.clone(), *n);
        }
    }

    /// The messages, each prefixed with its count when it occurred more than once.
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(m, n)| {
                if *n > 1 {
                    format!("{n}x {m}")
                } else {
                    m.clone()
                }
            })
            .collect()
    }
}

/// The JSON result. Field names are read by the comparison report script: keep them.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: &'static str,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub rate_per_publisher: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub expected: u64,
    pub received: u64,
    pub unique_received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    pub received_timeline: Vec<u64>,
    pub latency_us: Percentiles,
    pub connect: ConnectReport,
    pub broker: BrokerReport,
    pub generator: GeneratorReport,
    pub errors: Vec<String>,
}

/// Connection establishment figures.
#[derive(Debug, Default, Serialize)]
pub struct ConnectReport {
    pub clients: usize,
    pub failed: usize,
    pub rate_per_s: f64,
    pub latency_us: Percentiles,
}

/// The broker process, when `--broker-pid` is given.
#[derive(Debug, Default, Serialize)]
pub struct BrokerReport {
    pub pid: Option<u32>,
    pub cpu_s: Option<f64>,
    pub rss_start_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
}

/// The generator's own cost.
#[derive(Debug, Default, Serialize)]
pub struct GeneratorReport {
    pub cpu_s: f64,
    pub threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_short_payloads() {
        let h = Header {
            publisher: 0xDEAD_BEEF,
            seq: 4_000_000_000,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut b = Vec::new();
        h.put(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        b.extend_from_slice(&[0; 48]); // padding is ignored
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..HEADER_LEN - 1]), None);
        assert_eq!(Header::parse(&[]), None);
    }

    #[test]
    fn clock_is_monotonic_and_anchored() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        // Anchored to the wall clock: after 2020 and before 2100.
        assert!(a > 1_577_836_800_000_000_000 && a < 4_102_444_800_000_000_000);
        assert!(instant_ns(Instant::now()) >= b);
    }

    #[test]
    fn seen_counts_unique_and_duplicates() {
        let budget = Budget::new(1 << 20);
        let mut s = Seen::default();
        for seq in [0, 1, 2, 2, 100, 0, 5000] {
            s.record(seq, &budget);
        }
        assert_eq!(
            tally(&[&s]),
            Tally {
                received: 7,
                unique: 5,
                duplicates: 2,
                seq_end: 5001
            }
        );
        assert!(!budget.exceeded());
    }

    #[test]
    fn record_reports_first_sighting() {
        let budget = Budget::new(1 << 20);
        let mut s = Seen::default();
        assert!(s.record(63, &budget));
        assert!(!s.record(63, &budget));
        assert!(s.record(64, &budget));
    }

    #[test]
    fn shared_group_duplicates_span_members() {
        let budget = Budget::new(1 << 20);
        let (mut a, mut b) = (Seen::default(), Seen::default());
        for seq in 0..10 {
            a.record(seq, &budget);
        }
        for seq in 8..20 {
            b.record(seq, &budget); // 8 and 9 delivered to both members
        }
        let t = tally(&[&a, &b]);
        assert_eq!(
            (t.received, t.unique, t.duplicates, t.seq_end),
            (22, 20, 2, 20)
        );
        // Loss is expected - unique: 25 sent, one unit => 5 lost.
        assert_eq!(25u64.saturating_sub(t.unique), 5);
    }

    #[test]
    fn budget_overflow_falls_back_to_counting() {
        let budget = Budget::new(128); // 16 words
        let mut s = Seen::default();
        assert!(s.record(10, &budget));
        assert!(!s.record(10, &budget));
        // Needs more than 128 bytes of bitset: counted, assumed unique, flagged.
        assert!(s.record(100_000, &budget));
        assert!(s.record(100_000, &budget));
        assert!(budget.exceeded());
        let t = tally(&[&s]);
        assert_eq!((t.received, t.unique, t.duplicates), (4, 3, 1));
    }

    #[test]
    fn reserve_respects_the_budget() {
        let budget = Budget::new(1024);
        let mut s = Seen::default();
        s.reserve(64 * 100, &budget); // 800 bytes
        assert_eq!(s.words.len(), 100);
        let mut t = Seen::default();
        t.reserve(64 * 100, &budget); // would pass the cap: left to grow on demand
        assert!(t.words.is_empty());
    }

    #[test]
    fn percentiles_merge_across_histograms() {
        let mut a = new_histogram().unwrap();
        let mut b = new_histogram().unwrap();
        for v in 1..=500u64 {
            a.record(v).unwrap();
        }
        for v in 501..=1000u64 {
            b.record(v).unwrap();
        }
        record_us(&mut b, u64::MAX); // clamped to one hour
        assert_eq!(b.max(), b.highest_equivalent(MAX_RECORDED_US));
        let mut all = new_histogram().unwrap();
        merge_histogram(&mut all, &a).unwrap();
        merge_histogram(&mut all, &b).unwrap();
        let p = Percentiles::of(&all);
        assert_eq!(p.count, 1001);
        assert_eq!(p.p50, 501);
        assert_eq!(p.p90, 901);
        assert_eq!(p.p99, 991);
        assert_eq!(p.p999, 1000);
        // 3 significant digits: values are within 0.1%.
        assert!((p.max as f64 - 3.6e9).abs() <= 3.6e6, "{}", p.max);
        assert_eq!(
            Percentiles::of(&new_histogram().unwrap()),
            Percentiles::default()
        );
    }

    #[test]
    fn timeline_windows_and_seconds() {
        let start = 1_000;
        let mut t = Timeline::default();
        t.add(start, start + 50_000_000, 1); // bucket 0
        t.add(start, start + 950_000_000, 2); // bucket 9
        t.add(start, start + 1_050_000_000, 4); // bucket 10
        t.add(start, start - 1, 8); // before the start: bucket 0
        let mut u = Timeline::default();
        u.add(start, start + 2_500_000_000, 16); // bucket 25
        t.merge(&u);
        assert_eq!(t.per_second(0), vec![11, 4, 16]);
        assert_eq!(t.per_second(5), vec![11, 4, 16, 0, 0]);
        let (from, to, secs) = window(1.0, 2.55);
        assert_eq!((from, to), (10, 25));
        assert!((secs - 1.5).abs() < 1e-9);
        assert_eq!(t.sum(from, to), 4);
        assert_eq!(window(3.0, 2.0).2, 0.0);
    }

    #[test]
    fn error_log_counts_repeats() {
        let mut e = ErrorLog::default();
        e.add("refused");
        e.add("refused");
        let mut f = ErrorLog::default();
        f.add("timeout");
        f.add("refused");
        e.merge(&f);
        assert_eq!(e.lines(), vec!["3x refused".to_string(), "timeout".into()]);
    }
}
