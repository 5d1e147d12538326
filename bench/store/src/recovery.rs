//! Scenario 4, recovery: a large store opened and read back, cleanly closed and after a
//! SIGKILL of a writer (the `recover-scan` and `kill-writer` children).

use crate::corruption::panic_text;
use crate::metrics::{self, Meter};
use crate::scenarios::*;
use crate::stores::{self, Batch, Kind, OpenMode, Res};
use crate::util::{self, Args};
use crate::workload::{self, Layout, Recovered};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// 4. recovery
//
// Broker restart: every persistent session and every queued message must be
// back in memory before the broker accepts connections. Build a store with
// 100,000 sessions and 1,000,000 queued messages, close it cleanly, then in a
// fresh process open it and read everything into memory (decoded into Vecs).
// Cold = the store's files were evicted from the page cache first (per-file
// fadvise), warm = straight after. Then the crash case: a child process
// writes in a loop (each commit: 100 new messages + 100 acknowledged ones
// deleted, fsynced; after each commit it prints the commit number to a pipe)
// and is SIGKILLed mid-way; a fresh process opens the store, scans it and
// checks that every acknowledged commit is there (and the deletes too), and
// that the commit in flight at the kill is all-or-nothing.
// SIGKILL is a process crash, not a power cut: the kernel still holds what
// was written but not fsynced.
// ---------------------------------------------------------------------------

const KILL_BATCH: u64 = 100;

pub(crate) fn recovery(kind: Kind, dir: &Path, sc: Scale) -> Res<Value> {
    let sessions = sc.pick(100_000, 10_000);
    let n = sc.pick(1_000_000, 100_000);
    let l = Layout {
        sessions,
        payload_len: 16,
    };
    let d = dir.join("rec");
    let build = build_store(kind, &d, l, n, 1000)?;
    let disk_clean = disk(&d);
    let base = vec![
        "--store".to_string(),
        kind.name().into(),
        "--data".into(),
        d.display().to_string(),
        "--sessions".into(),
        sessions.to_string(),
        "--messages".into(),
        n.to_string(),
    ];
    let limit = Duration::from_secs(600);
    let scan = |extra: &[&str]| -> Value {
        let mut a = vec!["recover-scan".to_string()];
        a.extend(base.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = util::run_self(&a, limit, None);
        let mut v = o
            .json()
            .unwrap_or_else(|| json!({"opened": false, "error": "no result"}));
        v["exit"] = json!(o.describe_exit());
        if !o.status.is_some_and(|s| s.success()) {
            v["stderr_tail"] = json!(o.stderr_tail(5));
        }
        v
    };
    metrics::evict_from_page_cache(&d);
    let cold = scan(&["--check", "clean"]);
    let warm = scan(&["--check", "clean"]);

    // The crash: a writer child, SIGKILLed after a while.
    let kill_after = sc.secs(3.0, 1.0);
    let mut a = vec!["kill-writer".to_string()];
    a.extend(base.iter().cloned());
    let mut child = Command::new(util::self_exe())
        .args(&a)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn kill-writer: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut last: i64 = -1;
        let mut started = false;
        for line in BufReader::new(out).lines().take(10_000_000) {
            let Ok(line) = line else { break };
            if line == "READY" {
                started = true;
                let _ = tx.send(());
            } else if let Some(x) = line.strip_prefix("ACK ") {
                if let Ok(x) = x.trim().parse::<i64>() {
                    last = last.max(x);
                }
            }
        }
        (last, started)
    });
    // Wait (bounded) until the writer has opened the store and is writing,
    // let it run `kill_after`, then SIGKILL it. Acks still in the pipe at the
    // kill are read afterwards: they were printed after their fsync.
    let t_open = Instant::now();
    let _ = rx.recv_timeout(Duration::from_secs(300));
    let writer_open_s = t_open.elapsed().as_secs_f64();
    std::thread::sleep(kill_after);
    let _ = child.kill(); // SIGKILL on Unix
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let (last_ack, started) = reader.join().map_err(|_| "reader thread panicked")?;
    let mut werr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut werr);
    }
    let disk_killed = disk(&d);
    metrics::evict_from_page_cache(&d);
    let acked = (last_ack + 1).to_string();
    let after = scan(&["--check", "killed", "--acked", &acked]);
    util::remove_dir(&d);
    Ok(json!({
        "sessions": sessions, "messages": n, "build": build, "disk_clean": disk_clean,
        "cold": cold, "warm": warm,
        "kill": {"writer_started": started, "writer_open_s": writer_open_s, "ran_s": kill_after.as_secs_f64(), "acked_commits": last_ack + 1, "batch": KILL_BATCH,
                 "writer_status": format!("{status:?}"),
                 "writer_stderr_tail": werr.lines().rev().take(3).collect::<Vec<_>>(),
                 "disk": disk_killed},
        "after_kill": after,
    }))
}

/// Build a store: `sessions` session records, 1,000 retained messages, `n`
/// queued messages, committed (fsynced) every `per_commit` records; close it.
pub(crate) fn build_store(kind: Kind, d: &Path, l: Layout, n: u64, per_commit: u64) -> Res<Value> {
    let m = Meter::start();
    let mut st = stores::open(kind, d, OpenMode::Default)?;
    let mut b = Batch::default();
    let mut scratch = Vec::new();
    let mut logical = 0;
    for s in 0..l.sessions {
        l.put_session(&mut b, s);
        if b.len() as u64 >= per_commit {
            st.commit(&b, true)?;
            logical += b.logical_bytes;
            b.clear();
        }
    }
    for r in 0..1000u64 {
        scratch.clear();
        workload::encode_message(r, l.payload_len, &mut scratch);
        b.put(&workload::retained_key(&workload::topic(r)), &scratch);
    }
    st.commit(&b, true)?;
    logical += b.logical_bytes;
    b.clear();
    for id in 0..n {
        l.put_message(&mut b, id, &mut scratch);
        if (id + 1) % per_commit == 0 {
            st.commit(&b, true)?;
            logical += b.logical_bytes;
            b.clear();
        }
    }
    if !b.is_empty() {
        st.commit(&b, true)?;
        logical += b.logical_bytes;
    }
    st.close()?;
    Ok(phase(n, &m.stop(), logical, d))
}

/// Child: open + full scan into memory, then check what was found.
/// `--check clean`: everything built is there.
/// `--check killed --acked A`: after the kill-writer's A acknowledged commits.
pub fn recover_scan_main(a: &Args) {
    let kind = Kind::parse(&a.req("store")).unwrap_or(Kind::Log);
    let d = PathBuf::from(a.req("data"));
    let sessions = a.u64("sessions", 0);
    let n = a.u64("messages", 0);
    let check = a.get("check").unwrap_or("clean").to_string();
    let acked = a.i64("acked", 0).max(0) as u64;
    let r = std::panic::catch_unwind(|| {
        let m = Meter::start();
        let t0 = Instant::now();
        let mut st = match stores::open(kind, &d, OpenMode::Default) {
            Ok(s) => s,
            Err(e) => {
                return json!({"opened": false, "error": e, "open_s": t0.elapsed().as_secs_f64()});
            }
        };
        let open_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut rec = Recovered::default();
        let scanned = st.scan(&mut |k, v| rec.absorb(k, v, 16));
        let scan_s = t1.elapsed().as_secs_f64();
        let io = m.stop();
        let mut v = json!({
            "opened": true, "open_s": open_s, "scan_s": scan_s,
            "records": scanned.as_ref().ok(), "scan_error": scanned.as_ref().err(),
            "sessions": rec.sessions.len(), "messages": rec.messages.len(),
            "queue": rec.queue.len(), "retained": rec.retained.len(), "bad": rec.bad,
            "read_bytes": io.read_bytes, "write_bytes": io.write_bytes,
        });
        v["verify"] = verify(&rec, sessions, n, &check, acked);
        let tc = Instant::now();
        let _ = st.close();
        v["close_s"] = json!(tc.elapsed().as_secs_f64());
        v
    });
    let mut v = match r {
        Ok(v) => v,
        Err(p) => json!({"opened": false, "panic": panic_text(&p)}),
    };
    v["peak_rss_kib"] = json!(metrics::peak_rss_kib());
    util::print_json(&v);
}

fn verify(rec: &Recovered, sessions: u64, n: u64, check: &str, acked: u64) -> Value {
    let hi = (n + KILL_BATCH * (acked + 2)) as usize;
    let mut has_m = vec![false; hi];
    let mut has_q = vec![false; hi];
    let mut beyond = 0u64;
    for m in &rec.messages {
        match has_m.get_mut(m.id as usize) {
            Some(x) => *x = true,
            None => beyond += 1,
        }
    }
    for q in &rec.queue {
        match has_q.get_mut(q.msg_id as usize) {
            Some(x) => *x = true,
            None => beyond += 1,
        }
    }
    let present = |i: u64| has_m[i as usize] && has_q[i as usize];
    let absent = |i: u64| !has_m[i as usize] && !has_q[i as usize];
    let sessions_ok = rec.sessions.len() as u64 == sessions;
    if check == "clean" {
        let missing = (0..n).filter(|&i| !present(i)).count();
        return json!({"ok": missing == 0 && sessions_ok && rec.bad == 0 && beyond == 0,
                      "missing_messages": missing, "sessions_ok": sessions_ok, "bad": rec.bad});
    }
    // After the kill: commits 0..acked were acknowledged. Commit c put
    // messages n+100c.. and deleted messages 100c.. (both +100).
    let b = KILL_BATCH;
    let mut acked_missing = 0u64; // acknowledged puts (or untouched originals) not found
    let mut resurrected = 0u64; // acknowledged deletes found again
    for i in (acked * b + b)..n {
        acked_missing += u64::from(!present(i));
    }
    for i in n..n + acked * b {
        acked_missing += u64::from(!present(i));
    }
    for i in 0..(acked * b).min(n) {
        resurrected += u64::from(!absent(i));
    }
    // The commit in flight at the kill (number `acked`) may or may not be
    // there, but must be all or nothing.
    let puts_in: Vec<bool> = (n + acked * b..n + acked * b + b).map(present).collect();
    let puts_out: Vec<bool> = (n + acked * b..n + acked * b + b).map(absent).collect();
    let dels_done: Vec<bool> = (acked * b..(acked * b + b).min(n)).map(absent).collect();
    let dels_not: Vec<bool> = (acked * b..(acked * b + b).min(n)).map(present).collect();
    let inflight = if puts_in.iter().all(|x| *x) && dels_done.iter().all(|x| *x) {
        "applied (committed, ack not yet printed)"
    } else if puts_out.iter().all(|x| *x) && dels_not.iter().all(|x| *x) {
        "absent"
    } else {
        "TORN (partially applied)"
    };
    // Nothing written after the in-flight commit.
    let later = (n + acked * b + b..hi as u64)
        .filter(|&i| !absent(i))
        .count();
    json!({
        "ok": acked_missing == 0 && resurrected == 0 && sessions_ok && rec.bad == 0
              && !inflight.starts_with("TORN") && later == 0 && beyond == 0,
        "acked_commits": acked, "acked_missing": acked_missing,
        "resurrected_deletes": resurrected, "inflight_commit": inflight,
        "unexpected_later": later + beyond as usize, "sessions_ok": sessions_ok, "bad": rec.bad,
    })
}

/// Child: the process that gets SIGKILLed. Opens the store built by
/// `recovery`, then loops (bounded: 60 s, and never past the built messages):
/// commit (fsync) 100 new messages + delete 100 old ones, print "ACK c".
pub fn kill_writer_main(a: &Args) {
    let kind = Kind::parse(&a.req("store")).unwrap_or(Kind::Log);
    let d = PathBuf::from(a.req("data"));
    let l = Layout {
        sessions: a.u64("sessions", 1),
        payload_len: 16,
    };
    let n = a.u64("messages", 0);
    let mut st = match stores::open(kind, &d, OpenMode::Default) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kill-writer: open failed: {e}");
            std::process::exit(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    let mut b = Batch::default();
    let mut scratch = Vec::new();
    let t0 = Instant::now();
    let max = n / KILL_BATCH;
    for c in 0..max {
        if t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        b.clear();
        for i in 0..KILL_BATCH {
            l.put_message(&mut b, n + c * KILL_BATCH + i, &mut scratch);
        }
        for i in 0..KILL_BATCH {
            l.del_message(&mut b, c * KILL_BATCH + i);
        }
        if let Err(e) = st.commit(&b, true) {
            eprintln!("kill-writer: commit failed: {e}");
            std::process::exit(1);
        }
        let _ = writeln!(out, "ACK {c}");
        let _ = out.flush();
    }
    // Not killed in time: exit without closing (still an unclean end).
    std::process::exit(3);
}
