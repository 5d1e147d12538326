//! Scenario 5, corruption: damaged files opened and scanned in a child process each
//! (`corrupt-check`), classified as refused, reported, silently missing or panicked.

use crate::metrics;
use crate::recovery::build_store;
use crate::scenarios::*;
use crate::stores::{self, Kind, OpenMode, Res};
use crate::util::{self, Args};
use crate::workload::{Layout, Recovered};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// 5. corruption
//
// What happens when the disk or the filesystem hands back damaged data: a
// store closed cleanly, then (a) its largest data file truncated by 3 KiB
// (a lost tail) and (b) 4 KiB in the middle of it overwritten with random
// bytes (a bad block). For an LSM whose largest file is its write-ahead log,
// the same is done to its largest table file as well. Each case runs in a
// child process which opens and scans the store under catch_unwind, so a
// panic is caught and an abort is seen as the child's signal. The outcome:
// refused with an error, opened with data missing (or wrong), panicked or
// aborted. Stores with a stricter open mode (redb: check integrity on open;
// rocksdb: WAL recovery mode AbsoluteConsistency) are tried in both modes.
// ---------------------------------------------------------------------------

pub(crate) fn corruption(kind: Kind, dir: &Path, sc: Scale) -> Res<Value> {
    let sessions = sc.pick(50_000, 5_000);
    let n = sc.pick(500_000, 50_000);
    let l = Layout {
        sessions,
        payload_len: 16,
    };
    let pristine = dir.join("pristine");
    build_store(kind, &pristine, l, n, 1000)?;
    let files = metrics::files_by_size(&pristine);
    let listing: Vec<Value> = files
        .iter()
        .take(12)
        .map(|(p, s)| json!({"file": rel(&pristine, p), "bytes": s}))
        .collect();
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    if let Some((p, _)) = files.iter().find(|(p, _)| kind.is_data_file(p)) {
        targets.push(("largest data file".into(), p.clone()));
    }
    if let Some((p, _)) = files.iter().find(|(p, _)| kind.is_table_file(p)) {
        if targets.first().is_none_or(|t| &t.1 != p) {
            targets.push(("largest table file".into(), p.clone()));
        }
    }
    let modes: &[OpenMode] = if kind.has_strict_mode() {
        &[OpenMode::Default, OpenMode::Strict]
    } else {
        &[OpenMode::Default]
    };
    let mut cases = Vec::new();
    let case_dir = dir.join("case");
    for (which, target) in &targets {
        let relp = rel(&pristine, target);
        for damage in ["truncate-3KiB", "overwrite-4KiB-mid"] {
            for &mode in modes {
                util::remove_dir(&case_dir);
                util::copy_dir(&pristine, &case_dir).map_err(|e| format!("copy: {e}"))?;
                let f = case_dir.join(&relp);
                let detail =
                    damage_file(&f, damage).map_err(|e| format!("damage {}: {e}", f.display()))?;
                let args = vec![
                    "corrupt-check".to_string(),
                    "--store".into(),
                    kind.name().into(),
                    "--data".into(),
                    case_dir.display().to_string(),
                    "--sessions".into(),
                    sessions.to_string(),
                    "--messages".into(),
                    n.to_string(),
                    "--mode".into(),
                    if mode == OpenMode::Strict {
                        "strict".into()
                    } else {
                        "default".into()
                    },
                ];
                let o = util::run_self(&args, Duration::from_secs(300), None);
                let v = o.json();
                let outcome = classify(&o, v.as_ref(), sessions + 2 * n + 1000);
                cases.push(json!({
                    "target": which, "file": relp, "damage": damage, "detail": detail,
                    "mode": if mode == OpenMode::Strict { "strict" } else { "default" },
                    "outcome": outcome.0, "message": outcome.1,
                    "child": v, "exit": o.describe_exit(), "secs": o.secs,
                    "stderr_tail": o.stderr_tail(4),
                }));
                util::remove_dir(&case_dir);
            }
        }
    }
    util::remove_dir(&pristine);
    Ok(json!({"sessions": sessions, "messages": n, "files": listing, "cases": cases}))
}

fn rel(base: &Path, p: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

fn damage_file(f: &Path, how: &str) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    let len = std::fs::metadata(f)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(f)?;
    if how.starts_with("truncate") {
        let to = len.saturating_sub(3072);
        file.set_len(to)?;
        file.sync_all()?;
        Ok(format!("{len} -> {to} bytes"))
    } else {
        let at = (len / 2) & !4095;
        let n = 4096.min(len - at) as usize;
        let mut x: u64 = 0x1234_5678_9ABC_DEF1 ^ len;
        let mut buf = Vec::with_capacity(n);
        while buf.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push((x >> 24) as u8);
        }
        let mut file = file;
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&buf)?;
        file.sync_all()?;
        Ok(format!("{n} random bytes at offset {at} of {len}"))
    }
}

/// (outcome, message) for one corruption case.
fn classify(o: &util::ChildOutcome, v: Option<&Value>, expected: u64) -> (String, String) {
    if o.timed_out {
        return ("hung".into(), "killed after the time limit".into());
    }
    let Some(v) = v else {
        let panic_line = o
            .stderr
            .lines()
            .find(|l| l.contains("panicked"))
            .unwrap_or("")
            .to_string();
        return (
            format!("aborted ({})", o.describe_exit()),
            if panic_line.is_empty() {
                o.stderr_tail(3)
            } else {
                panic_line
            },
        );
    };
    if let Some(p) = v.get("panic").and_then(|p| p.as_str()) {
        return ("panicked (caught)".into(), p.to_string());
    }
    if v["opened"] == json!(false) {
        return (
            "refused to open".into(),
            v["error"].as_str().unwrap_or("").to_string(),
        );
    }
    if let Some(e) = v.get("scan_error").and_then(|e| e.as_str()) {
        return (
            "opened; scan failed with an error".into(),
            format!(
                "{e} (after {} good records)",
                v["good"].as_u64().unwrap_or(0)
            ),
        );
    }
    let good = v["good"].as_u64().unwrap_or(0);
    let bad = v["bad"].as_u64().unwrap_or(0);
    if bad > 0 {
        return (
            "opened; WRONG data returned silently".into(),
            format!("{bad} records did not match what was written; {good} of {expected} good"),
        );
    }
    if good < expected {
        return (
            "opened; data SILENTLY missing".into(),
            format!(
                "{} of {expected} records missing, no error",
                expected - good
            ),
        );
    }
    (
        "opened; all data intact".into(),
        format!("{good} of {expected} records"),
    )
}

pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Child: open + scan a damaged store under catch_unwind.
pub fn corrupt_check_main(a: &Args) {
    let kind = Kind::parse(&a.req("store")).unwrap_or(Kind::Log);
    let d = PathBuf::from(a.req("data"));
    let mode = if a.get("mode") == Some("strict") {
        OpenMode::Strict
    } else {
        OpenMode::Default
    };
    let r = std::panic::catch_unwind(|| {
        let t0 = Instant::now();
        let mut st = match stores::open(kind, &d, mode) {
            Ok(s) => s,
            Err(e) => return json!({"opened": false, "error": e}),
        };
        let open_s = t0.elapsed().as_secs_f64();
        let mut rec = Recovered::default();
        let scanned = st.scan(&mut |k, v| rec.absorb(k, v, 16));
        let good =
            (rec.sessions.len() + rec.messages.len() + rec.queue.len() + rec.retained.len()) as u64;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(st)));
        json!({
            "opened": true, "open_s": open_s, "scan_error": scanned.as_ref().err(),
            "records": scanned.as_ref().ok(), "good": good, "bad": rec.bad + rec.unknown,
            "sessions": rec.sessions.len(), "messages": rec.messages.len(), "queue": rec.queue.len(),
        })
    });
    let v = match r {
        Ok(v) => v,
        Err(p) => json!({"opened": null, "panic": panic_text(&p)}),
    };
    util::print_json(&v);
}
