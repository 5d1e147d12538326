//! results.json -> report.md: one table per scenario.

use serde_json::Value;
use std::fmt::Write;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// 1234567 -> "1,234,567"
fn int(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn f1(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "–".into()
    }
}

fn f2(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn secs(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 1.0 {
        format!("{:.0} ms", x * 1000.0)
    } else {
        format!("{x:.2} s")
    }
}

fn bytes(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let (v, u) = if x >= 1024.0 * 1024.0 * 1024.0 {
        (x / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if x >= 1024.0 * 1024.0 {
        (x / (1024.0 * 1024.0), "MiB")
    } else if x >= 1024.0 {
        (x / 1024.0, "KiB")
    } else {
        return format!("{x:.0} B");
    };
    format!("{v:.1} {u}")
}

fn kib(x: f64) -> String {
    bytes(x * 1024.0)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    out.push('\n');
}

fn stores_of(v: &Value) -> Vec<(String, Value)> {
    match v.as_object() {
        Some(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => Vec::new(),
    }
}

fn err_row(name: &str, v: &Value, width: usize) -> Option<Vec<String>> {
    let e = v.get("error").or_else(|| v.get("skipped"))?;
    let mut r = vec![
        name.to_string(),
        format!("{}", e.as_str().unwrap_or("error")),
    ];
    r.resize(width, String::new());
    Some(r)
}

pub fn render(r: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# hmq durable-state store benchmark\n");
    let _ = writeln!(
        o,
        "Mode: **{}**. Candidates: {}. Command: `{}`.\n",
        if r["quick"] == Value::Bool(true) {
            "quick (smoke run, reduced counts)"
        } else {
            "full"
        },
        r["candidates"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        r["command"].as_str().unwrap_or("")
    );
    if let Some(cmds) = r["commands"].as_array() {
        let _ = writeln!(
            o,
            "Merged from {} runs: {}.\n",
            cmds.len(),
            cmds.iter()
                .filter_map(|c| c.as_str())
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let fs = &r["filesystem"];
    let _ = writeln!(
        o,
        "Data directory `{}`: filesystem **{}** on `{}` mounted at `{}` ({}).\n",
        r["data_dir"].as_str().unwrap_or(""),
        fs["type"].as_str().unwrap_or("?"),
        fs["device"].as_str().unwrap_or("?"),
        fs["mount"].as_str().unwrap_or("?"),
        fs["options"].as_str().unwrap_or("")
    );
    let m = &r["machine"];
    let _ = writeln!(
        o,
        "Machine: {} CPUs ({}), {}, kernel {}, {}, niceness {}.\n",
        m["cpus"],
        m["cpu"].as_str().unwrap_or(""),
        m["mem"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or(""),
        m["rustc"].as_str().unwrap_or(""),
        m["nice"].as_str().unwrap_or("")
    );
    if let Some(vs) = r["versions"].as_object() {
        let _ = writeln!(
            o,
            "Crate versions (bench/store/Cargo.lock): {}.\n",
            vs.iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        o,
        "Column notes: *fsync/s* counts every fsync/fdatasync call the process made (all threads, \
         the store's background work included). *B written/msg* is /proc/self/io write_bytes divided \
         by messages. *Disk* is allocated space (du) of the store directory. *Peak RSS* is the \
         scenario process's VmHWM. The driver is single-threaded; a commit of N messages stands for N \
         publishers waiting on one group commit.\n"
    );

    let res = &r["results"];
    if let Some(s) = res.get("offline-fill-drain") {
        let _ = writeln!(o, "## 1. offline-fill-drain\n");
        let _ = writeln!(
            o,
            "1,000 offline sessions; messages round robin; each message = put m + put q; one fsynced commit per \
             1,000 messages; then drain (delete q + delete m), session by session, same batching.\n"
        );
        for (key, title) in [
            ("payload_16", "16 B payload"),
            ("payload_4096", "4 KiB payload"),
        ] {
            let mut rows = Vec::new();
            let mut msgs = 0.0;
            for (name, v) in stores_of(s) {
                if let Some(e) = err_row(&name, &v, 13) {
                    rows.push(e);
                    continue;
                }
                let x = &v[key];
                msgs = num(&x["messages"]);
                let f = &x["fill"];
                let d = &x["drain"];
                let c = &x["compaction"];
                rows.push(vec![
                    name.clone(),
                    int(num(&f["msgs_per_s"])),
                    int(num(&f["fsyncs_per_s"])),
                    int(num(&f["bytes_per_msg"])),
                    bytes(num(&f["disk"]["bytes"])),
                    int(num(&d["msgs_per_s"])),
                    int(num(&d["fsyncs_per_s"])),
                    int(num(&d["bytes_per_msg"])),
                    bytes(num(&d["disk"]["bytes"])),
                    bytes(num(&x["disk_after_idle"]["bytes"])),
                    if c["supported"] == Value::Bool(true) {
                        format!(
                            "{} ({})",
                            bytes(num(&c["disk"]["bytes"])),
                            secs(num(&c["secs"]))
                        )
                    } else {
                        "n/a".into()
                    },
                    bytes(num(&x["disk_after_close"]["bytes"])),
                    kib(num(&v["peak_rss_kib"])),
                ]);
            }
            let _ = writeln!(o, "### {title}, {} messages\n", int(msgs));
            table(
                &mut o,
                &[
                    "store",
                    "fill msg/s",
                    "fill fsync/s",
                    "fill B written/msg",
                    "disk after fill",
                    "drain msg/s",
                    "drain fsync/s",
                    "drain B written/msg",
                    "disk after drain",
                    "disk after 5 s idle",
                    "disk after manual compaction (time)",
                    "disk after close",
                    "peak RSS",
                ],
                &rows,
            );
        }
    }

    if let Some(s) = res.get("always") {
        let _ = writeln!(o, "## 2. always (group commit sizes)\n");
        let _ = writeln!(
            o,
            "Each commit holds N messages (put m + put q each) and is fsynced before the next one starts \
             (policy *always*). *none* = same with no fsync; *interval-10ms* = one unsynced commit per \
             message plus a sync every 10 ms. Time-bounded runs (10 s for 16 B, 5 s for 4 KiB; less in quick mode).\n"
        );
        let mut rows = Vec::new();
        for (name, v) in stores_of(s) {
            if let Some(e) = err_row(&name, &v, 11) {
                rows.push(e);
                continue;
            }
            for run in v["runs"].as_array().cloned().unwrap_or_default() {
                rows.push(vec![
                    name.clone(),
                    run["variant"].as_str().unwrap_or("").into(),
                    run["payload"].to_string(),
                    run["msgs_per_commit"].to_string(),
                    int(num(&run["msgs_per_s"])),
                    int(num(&run["fsyncs_per_s"])),
                    f1(num(&run["commit_us_p50"])),
                    f1(num(&run["commit_us_p99"])),
                    int(num(&run["bytes_per_msg"])),
                    bytes(num(&run["disk"]["bytes"])),
                    kib(num(&v["peak_rss_kib"])),
                ]);
            }
        }
        table(
            &mut o,
            &[
                "store",
                "policy",
                "payload B",
                "msgs/commit",
                "msg/s",
                "fsync/s",
                "commit p50 µs",
                "commit p99 µs",
                "B written/msg",
                "disk at end",
                "peak RSS (scenario)",
            ],
            &rows,
        );
    }

    if let Some(s) = res.get("churn") {
        let _ = writeln!(o, "## 3. churn (online subscribers)\n");
        let _ = writeln!(
            o,
            "Each fsynced commit: 2,000 new messages (put m + q) and deletion of the 2,000 committed two \
             commits earlier. Bounded by 5,000,000 messages or 60 s (quick: 500,000 / 10 s). Live data \
             at any time: ~4,000 messages.\n"
        );
        let mut rows = Vec::new();
        let mut over_time = Vec::new();
        for (name, v) in stores_of(s) {
            if let Some(e) = err_row(&name, &v, 13) {
                rows.push(e);
                continue;
            }
            let t = &v["total"];
            let dec: Vec<f64> = v["decile_msgs_per_s"]
                .as_array()
                .map(|a| a.iter().map(num).collect())
                .unwrap_or_default();
            let min_dec = dec.iter().copied().fold(f64::INFINITY, f64::min);
            rows.push(vec![
                name.clone(),
                int(num(&t["messages"])),
                f1(num(&t["secs"])),
                int(num(&t["msgs_per_s"])),
                int(num(&v["first10_msgs_per_s"])),
                int(num(&v["last10_msgs_per_s"])),
                int(min_dec),
                int(num(&t["fsyncs_per_s"])),
                int(num(&t["bytes_per_msg"])),
                f2(num(&t["write_amp"])),
                bytes(num(&v["max_disk_bytes"])),
                bytes(num(&t["disk"]["bytes"])),
                kib(num(&v["peak_rss_kib"])),
            ]);
            let samples = v["samples"].as_array().cloned().unwrap_or_default();
            let mut row = vec![name.clone()];
            for k in 0..10 {
                if samples.is_empty() {
                    break;
                }
                let i = (k * (samples.len() - 1)) / 9;
                let sm = &samples[i];
                row.push(format!(
                    "{} @{:.0}s",
                    bytes(num(&sm["disk_bytes"])),
                    num(&sm["t"])
                ));
            }
            over_time.push(row);
            let mut drow = vec![format!("{name} msg/s")];
            drow.extend(dec.iter().map(|d| int(*d)));
            over_time.push(drow);
        }
        table(
            &mut o,
            &[
                "store",
                "messages",
                "secs",
                "msg/s",
                "first 10% msg/s",
                "last 10% msg/s",
                "slowest tenth msg/s",
                "fsync/s",
                "B written/msg",
                "write amp",
                "max disk",
                "disk at end",
                "peak RSS",
            ],
            &rows,
        );
        let _ = writeln!(
            o,
            "Disk space over time (10 samples) and throughput per tenth of the run:\n"
        );
        table(
            &mut o,
            &["store", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
            &over_time,
        );
    }

    if let Some(s) = res.get("recovery") {
        let _ = writeln!(o, "## 4. recovery\n");
        let mut first = true;
        let mut rows = Vec::new();
        let mut krows = Vec::new();
        for (name, v) in stores_of(s) {
            if first && v.get("sessions").is_some() {
                let _ = writeln!(
                    o,
                    "{} sessions + {} queued messages (+1,000 retained), built with fsynced commits of 1,000, \
                     closed cleanly; then a fresh process opens the store and reads everything into memory \
                     (decoded into Vecs). *Cold* = store files evicted from the page cache first. Then a writer \
                     child (commits of 100 new + 100 deleted messages, fsync each, prints each commit number after \
                     its fsync) is SIGKILLed after a few seconds and a fresh process opens, scans and verifies.\n",
                    int(num(&v["sessions"])),
                    int(num(&v["messages"]))
                );
                first = false;
            }
            if let Some(e) = err_row(&name, &v, 10) {
                rows.push(e);
                continue;
            }
            let c = &v["cold"];
            let w = &v["warm"];
            rows.push(vec![
                name.clone(),
                int(num(&v["build"]["msgs_per_s"])),
                bytes(num(&v["disk_clean"]["bytes"])),
                secs(num(&c["open_s"])),
                secs(num(&c["scan_s"])),
                secs(num(&w["open_s"])),
                secs(num(&w["scan_s"])),
                kib(num(&c["peak_rss_kib"])),
                format!("{}", c["verify"]["ok"]),
                int(num(&c["records"])),
            ]);
            let k = &v["after_kill"];
            let vf = &k["verify"];
            krows.push(vec![
                name.clone(),
                int(num(&v["kill"]["acked_commits"])),
                if k["opened"] == Value::Bool(true) {
                    "yes".into()
                } else {
                    format!(
                        "NO: {}",
                        k["error"].as_str().or(k["panic"].as_str()).unwrap_or("")
                    )
                },
                secs(num(&k["open_s"])),
                secs(num(&k["scan_s"])),
                int(num(&vf["acked_missing"])),
                int(num(&vf["resurrected_deletes"])),
                vf["inflight_commit"].as_str().unwrap_or("").into(),
                format!("{}", vf["ok"]),
            ]);
        }
        table(
            &mut o,
            &[
                "store",
                "build msg/s",
                "disk",
                "cold open",
                "cold scan",
                "warm open",
                "warm scan",
                "scan process peak RSS",
                "all data back",
                "records",
            ],
            &rows,
        );
        let _ = writeln!(o, "After SIGKILL of a writer (cold cache):\n");
        table(
            &mut o,
            &[
                "store",
                "acked commits",
                "opens",
                "open",
                "scan",
                "acked records missing",
                "acked deletes resurrected",
                "in-flight commit",
                "verified",
            ],
            &krows,
        );
    }

    if let Some(s) = res.get("corruption") {
        let _ = writeln!(o, "## 5. corruption\n");
        let _ = writeln!(
            o,
            "A cleanly closed store; (a) its largest data file truncated by 3 KiB, (b) 4 KiB in the middle \
             of it overwritten with random bytes; for an LSM whose largest file is its log, its largest \
             table file too. Each case: open + full scan in a child process under catch_unwind. \
             *strict* = redb `set_check_integrity_on_open(true)`, rocksdb `WAL recovery = AbsoluteConsistency`.\n"
        );
        let mut rows = Vec::new();
        for (name, v) in stores_of(s) {
            if let Some(e) = err_row(&name, &v, 6) {
                rows.push(e);
                continue;
            }
            for c in v["cases"].as_array().cloned().unwrap_or_default() {
                let mut msg = c["message"].as_str().unwrap_or("").to_string();
                if msg.len() > 300 {
                    let mut cut = 300;
                    while !msg.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    msg.truncate(cut);
                    msg.push('…');
                }
                rows.push(vec![
                    name.clone(),
                    format!(
                        "{} ({})",
                        c["file"].as_str().unwrap_or(""),
                        c["target"].as_str().unwrap_or("")
                    ),
                    c["damage"].as_str().unwrap_or("").into(),
                    c["mode"].as_str().unwrap_or("").into(),
                    format!("**{}**", c["outcome"].as_str().unwrap_or("")),
                    format!("`{msg}`"),
                ]);
            }
        }
        table(
            &mut o,
            &[
                "store",
                "file",
                "damage",
                "open mode",
                "outcome",
                "error / detail",
            ],
            &rows,
        );
    }

    if let Some(s) = res.get("build-cost") {
        let _ = writeln!(o, "## 6. build cost\n");
        let _ = writeln!(
            o,
            "Clean `cargo build --release` (niced, 2 cores, one at a time) of a minimal binary depending \
             only on the candidate, own target directory, hmq's release profile + strip.\n"
        );
        let mut rows = Vec::new();
        for (name, v) in stores_of(s) {
            if let Some(e) = err_row(&name, &v, 5) {
                rows.push(e);
                continue;
            }
            rows.push(vec![
                name.clone(),
                v["dependency"]
                    .as_str()
                    .filter(|d| !d.is_empty())
                    .unwrap_or("(std only)")
                    .into(),
                secs(num(&v["build_secs"])),
                bytes(num(&v["stripped_binary_bytes"])),
                bytes(num(&v["target_dir_bytes"])),
                format!(
                    "{}",
                    v["ok"] == Value::Bool(true) && v["binary_runs"] == Value::Bool(true)
                ),
            ]);
        }
        table(
            &mut o,
            &[
                "store",
                "dependency",
                "clean release build",
                "stripped binary",
                "target dir",
                "ok",
            ],
            &rows,
        );
    }
    o
}
