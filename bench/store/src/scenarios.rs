//! The scenarios. Each runs in its own child process (`store-bench scenario
//! --store X --name S --data DIR`) so that peak RSS and /proc/self/io are per
//! scenario and a crash in one store cannot take the benchmark down; the child
//! prints one JSON object on stdout.
//!
//! The driver is single-threaded throughout: where the broker would have N
//! publishers waiting on one group commit, the driver builds a batch of N
//! messages and commits it once. That is the same I/O pattern the store sees
//! (one atomic batch, one fsync); it leaves out the cost of waking N waiters.

use crate::metrics::{self, Delta, Meter};
use crate::stores::{self, Batch, Kind, OpenMode, Res};
use crate::util::{self, Args};
use crate::workload::Layout;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const NAMES: [&str; 6] = [
    "offline-fill-drain",
    "always",
    "churn",
    "recovery",
    "corruption",
    "build-cost",
];

/// Counts for a full run and for `--quick` (a smoke run).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    pub(crate) fn pick(&self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }
    pub(crate) fn secs(&self, full: f64, quick: f64) -> Duration {
        Duration::from_secs_f64(if self.quick { quick } else { full })
    }
}

pub(crate) fn disk(dir: &Path) -> Value {
    let (alloc, apparent, files) = metrics::disk_usage(dir);
    json!({"bytes": alloc, "apparent_bytes": apparent, "files": files})
}

pub(crate) fn disk_bytes(dir: &Path) -> u64 {
    metrics::disk_usage(dir).0
}

/// One measured phase: rate, fsyncs, bytes written per message, space.
pub(crate) fn phase(msgs: u64, d: &Delta, logical: u64, dir: &Path) -> Value {
    let s = d.secs.max(1e-9);
    json!({
        "messages": msgs,
        "secs": d.secs,
        "msgs_per_s": msgs as f64 / s,
        "fsyncs": d.fsyncs,
        "fsyncs_per_s": d.fsyncs as f64 / s,
        "range_syncs": d.range_syncs,
        "write_bytes": d.write_bytes,
        "cancelled_write_bytes": d.cancelled_write_bytes,
        "read_bytes": d.read_bytes,
        "bytes_per_msg": if msgs > 0 { d.write_bytes as f64 / msgs as f64 } else { 0.0 },
        "logical_bytes": logical,
        "write_amp": if logical > 0 { d.write_bytes as f64 / logical as f64 } else { 0.0 },
        "disk": disk(dir),
        "rss_kib": metrics::rss_kib(),
    })
}

pub fn child_main(a: &Args) {
    let kind = Kind::parse(&a.req("store")).unwrap_or_else(|| {
        eprintln!("unknown --store");
        std::process::exit(2)
    });
    let dir = PathBuf::from(a.req("data"));
    let scale = Scale {
        quick: a.flag("quick"),
    };
    let name = a.req("name");
    let t0 = Instant::now();
    let r = match name.as_str() {
        "offline-fill-drain" => offline_fill_drain(kind, &dir, scale),
        "always" => always(kind, &dir, scale),
        "churn" => churn(kind, &dir, scale),
        "recovery" => recovery(kind, &dir, scale),
        "corruption" => corruption(kind, &dir, scale),
        other => Err(format!("unknown scenario {other}")),
    };
    let mut v = match r {
        Ok(v) => v,
        Err(e) => json!({"error": e}),
    };
    v["store"] = json!(kind.name());
    v["scenario"] = json!(name);
    v["peak_rss_kib"] = json!(metrics::peak_rss_kib());
    v["wall_secs"] = json!(t0.elapsed().as_secs_f64());
    util::print_json(&v);
}

// ---------------------------------------------------------------------------
// 1. offline-fill-drain
//
// Models persistent sessions whose clients are offline: every publish that
// matches their subscriptions is stored once (m) and queued per session (q)
// until they reconnect. The broker commits in groups (interval policy), here
// one fsynced commit per 1,000 messages. Then the clients come back and drain
// their queues: each acknowledged message deletes its queue entry and the
// message record (q + m), with the same batching, session by session in queue
// order. Shows raw write rate, delete rate, and whether space comes back.
// ---------------------------------------------------------------------------

fn offline_fill_drain(kind: Kind, dir: &Path, sc: Scale) -> Res<Value> {
    let small = fill_drain_run(
        kind,
        &dir.join("p16"),
        Layout {
            sessions: 1000,
            payload_len: 16,
        },
        sc.pick(1_000_000, 100_000),
        1000,
        sc,
    )?;
    util::remove_dir(&dir.join("p16"));
    // The 4 KiB-payload variant: fewer messages (same order of bytes on disk).
    let big = fill_drain_run(
        kind,
        &dir.join("p4k"),
        Layout {
            sessions: 1000,
            payload_len: 4096,
        },
        sc.pick(100_000, 10_000),
        1000,
        sc,
    )?;
    util::remove_dir(&dir.join("p4k"));
    Ok(json!({"payload_16": small, "payload_4096": big}))
}

fn fill_drain_run(
    kind: Kind,
    dir: &Path,
    l: Layout,
    n: u64,
    per_commit: u64,
    sc: Scale,
) -> Res<Value> {
    let cap = sc.secs(300.0, 60.0);
    let mut st = stores::open(kind, dir, OpenMode::Default)?;
    let mut b = Batch::default();
    let mut scratch = Vec::new();

    // Fill.
    let m = Meter::start();
    let mut logical = 0;
    let mut id = 0;
    while id < n && m.elapsed() < cap.as_secs_f64() {
        l.put_message(&mut b, id, &mut scratch);
        id += 1;
        if id % per_commit == 0 {
            st.commit(&b, true)?;
            logical += b.logical_bytes;
            b.clear();
        }
    }
    if !b.is_empty() {
        st.commit(&b, true)?;
        logical += b.logical_bytes;
        b.clear();
    }
    let filled = id;
    let fill = phase(filled, &m.stop(), logical, dir);

    // Drain: session by session, each in queue order (what a reconnecting
    // client acknowledging its backlog produces).
    let m = Meter::start();
    let mut logical = 0;
    let mut drained = 0u64;
    let per_session = filled.div_ceil(l.sessions);
    'outer: for c in 0..l.sessions {
        for seq in 0..per_session {
            let id = seq * l.sessions + c;
            if id >= filled {
                continue;
            }
            l.del_message(&mut b, id);
            drained += 1;
            if drained % per_commit == 0 {
                st.commit(&b, true)?;
                logical += b.logical_bytes;
                b.clear();
                if m.elapsed() > cap.as_secs_f64() {
                    break 'outer;
                }
            }
        }
    }
    if !b.is_empty() {
        st.commit(&b, true)?;
        logical += b.logical_bytes;
        b.clear();
    }
    let drain = phase(drained, &m.stop(), logical, dir);

    // Does background maintenance give space back by itself?
    std::thread::sleep(sc.secs(5.0, 1.0));
    let idle = disk(dir);

    let m = Meter::start();
    let had = st.compact()?;
    let d = m.stop();
    let compact =
        json!({"supported": had, "secs": d.secs, "write_bytes": d.write_bytes, "disk": disk(dir)});
    st.close()?;
    Ok(json!({
        "sessions": l.sessions, "payload": l.payload_len, "messages": n, "per_commit": per_commit,
        "fill": fill, "drain": drain, "disk_after_idle": idle, "compaction": compact,
        "disk_after_close": disk(dir),
        "time_capped": filled < n || drained < filled,
    }))
}

// ---------------------------------------------------------------------------
// 2. always
//
// Durability policy "always": a PUBACK/PUBREC goes out only after the message
// is on disk. The broker groups whatever publishers are waiting into one
// commit, so a commit holds as many messages as there are publishers waiting
// at that moment: 1 (a lone publisher), 16, 256 (a busy broker). Each message
// is put m + put q. Single-threaded driver building batches of that size.
// For contrast, the same store under "none" (no fsync, OS decides) and under
// "interval" done as per-message unsynced commits + a sync every 10 ms.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Policy {
    Always,
    None,
    IntervalMs(u64),
}

fn always(kind: Kind, dir: &Path, sc: Scale) -> Res<Value> {
    let mut out = Vec::new();
    let t16 = sc.secs(10.0, 2.0);
    let t4k = sc.secs(5.0, 1.0);
    let variants: Vec<(&str, usize, u64, Policy, Duration, u64)> = vec![
        // name, payload, msgs per commit, policy, time cap, message cap
        ("always", 16, 1, Policy::Always, t16, 2_000_000),
        ("always", 16, 16, Policy::Always, t16, 2_000_000),
        ("always", 16, 256, Policy::Always, t16, 2_000_000),
        ("none", 16, 1, Policy::None, t16, 2_000_000),
        (
            "interval-10ms",
            16,
            1,
            Policy::IntervalMs(10),
            t16,
            2_000_000,
        ),
        ("always", 4096, 1, Policy::Always, t4k, 250_000),
        ("always", 4096, 16, Policy::Always, t4k, 250_000),
        ("always", 4096, 256, Policy::Always, t4k, 250_000),
    ];
    for (i, (name, payload, per_commit, policy, tcap, ncap)) in variants.into_iter().enumerate() {
        let d = dir.join(format!("v{i}"));
        let l = Layout {
            sessions: 1000,
            payload_len: payload,
        };
        let mut st = stores::open(kind, &d, OpenMode::Default)?;
        let mut b = Batch::default();
        let mut scratch = Vec::new();
        let mut lat = Vec::new();
        let mut logical = 0;
        let mut id = 0u64;
        let m = Meter::start();
        let mut last_sync = Instant::now();
        while id < ncap && m.elapsed() < tcap.as_secs_f64() {
            b.clear();
            for _ in 0..per_commit {
                l.put_message(&mut b, id, &mut scratch);
                id += 1;
            }
            let t = Instant::now();
            match policy {
                Policy::Always => st.commit(&b, true)?,
                Policy::None => st.commit(&b, false)?,
                Policy::IntervalMs(ms) => {
                    st.commit(&b, false)?;
                    if last_sync.elapsed() >= Duration::from_millis(ms) {
                        st.sync()?;
                        last_sync = Instant::now();
                    }
                }
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            logical += b.logical_bytes;
        }
        if !matches!(policy, Policy::Always) {
            st.sync()?;
        }
        let delta = m.stop();
        lat.sort_by(|a, b| a.total_cmp(b));
        let mut p = phase(id, &delta, logical, &d);
        p["variant"] = json!(name);
        p["payload"] = json!(payload);
        p["msgs_per_commit"] = json!(per_commit);
        p["commits"] = json!(lat.len());
        p["commit_us_p50"] = json!(util::pct(&lat, 0.5));
        p["commit_us_p99"] = json!(util::pct(&lat, 0.99));
        p["commit_us_max"] = json!(lat.last().copied().unwrap_or(0.0));
        st.close()?;
        util::remove_dir(&d);
        out.push(p);
    }
    Ok(json!({"runs": out}))
}

// ---------------------------------------------------------------------------
// 3. churn
//
// Steady state with online subscribers: every message is written (it must be
// durable until the subscriber acknowledges it) and deleted shortly after,
// once the PUBACK arrives. Here each interval commit holds 2,000 new messages
// (put m + q) and deletes the 2,000 messages committed two commits earlier
// (delete q + m); every commit is fsynced. The live set stays tiny while the
// store sees a continuous stream of writes and deletes: LSM tombstones,
// compaction, B-tree page reuse and log growth show up here.
// ---------------------------------------------------------------------------

fn churn(kind: Kind, dir: &Path, sc: Scale) -> Res<Value> {
    let n = sc.pick(5_000_000, 500_000);
    let cap = sc.secs(60.0, 10.0).as_secs_f64();
    let per_commit = 2000u64;
    let l = Layout {
        sessions: 1000,
        payload_len: 16,
    };
    let d = dir.join("churn");
    let mut st = stores::open(kind, &d, OpenMode::Default)?;
    let mut b = Batch::default();
    let mut scratch = Vec::new();
    let mut logical = 0;
    let mut id = 0u64;
    let mut commits: Vec<(f64, u64)> = Vec::new(); // (t, messages so far)
    let mut samples = Vec::new();
    let m = Meter::start();
    let mut next_sample = 0.0;
    let mut max_disk = 0u64;
    while id < n && m.elapsed() < cap {
        b.clear();
        let start = id;
        for _ in 0..per_commit {
            l.put_message(&mut b, id, &mut scratch);
            id += 1;
        }
        if start >= 2 * per_commit {
            for old in start - 2 * per_commit..start - per_commit {
                l.del_message(&mut b, old);
            }
        }
        st.commit(&b, true)?;
        logical += b.logical_bytes;
        let t = m.elapsed();
        commits.push((t, id));
        if t >= next_sample {
            let dd = m.stop();
            let db = disk_bytes(&d);
            max_disk = max_disk.max(db);
            samples.push(json!({"t": t, "messages": id, "disk_bytes": db,
                "write_bytes": dd.write_bytes, "fsyncs": dd.fsyncs, "rss_kib": metrics::rss_kib()}));
            next_sample = t + if sc.quick { 0.5 } else { 1.0 };
        }
    }
    let delta = m.stop();
    let total = phase(id, &delta, logical, &d);
    max_disk = max_disk.max(disk_bytes(&d));

    // Throughput over the first and last 10% of the messages, and per tenth
    // of the run's duration.
    let rate_between = |a: u64, bm: u64| -> f64 {
        let ta = commits.iter().find(|c| c.1 >= a).map_or(0.0, |c| c.0);
        let tb = commits
            .iter()
            .find(|c| c.1 >= bm)
            .map_or(delta.secs, |c| c.0);
        let ma = commits.iter().find(|c| c.1 >= a).map_or(0, |c| c.1);
        let mb = commits.iter().find(|c| c.1 >= bm).map_or(id, |c| c.1);
        if a == 0 {
            mb as f64 / tb.max(1e-9)
        } else {
            (mb - ma) as f64 / (tb - ta).max(1e-9)
        }
    };
    let first10 = rate_between(0, id / 10);
    let last10 = rate_between(id - id / 10, id);
    let mut deciles = Vec::new();
    for k in 0..10 {
        let (t0, t1) = (
            delta.secs * k as f64 / 10.0,
            delta.secs * (k + 1) as f64 / 10.0,
        );
        let m0 = commits.iter().rev().find(|c| c.0 <= t0).map_or(0, |c| c.1);
        let m1 = commits.iter().rev().find(|c| c.0 <= t1).map_or(0, |c| c.1);
        deciles.push((m1 - m0) as f64 / (t1 - t0).max(1e-9));
    }
    st.close()?;
    let closed = disk(&d);
    util::remove_dir(&d);
    Ok(json!({
        "messages_target": n, "per_commit": per_commit, "total": total,
        "first10_msgs_per_s": first10, "last10_msgs_per_s": last10,
        "decile_msgs_per_s": deciles, "max_disk_bytes": max_disk,
        "samples": samples, "disk_after_close": closed,
    }))
}

pub use crate::corruption::corrupt_check_main;
use crate::corruption::corruption;
use crate::recovery::recovery;
pub use crate::recovery::{kill_writer_main, recover_scan_main};
