//! hmq storage-engine benchmark: fjall, redb, rocksdb and an append-only log
//! baseline, measured on hmq's durable-state workload (persistent sessions,
//! queued QoS 1/2 messages, retained messages). See bench/store/README.md.
//!
//! Entry points (all run from `bench/store/run`):
//!   store-bench all --out DIR [--quick] [--candidates a,b] [--scenarios x,y]
//!       runs every (scenario, candidate) in a child process of its own and
//!       writes DIR/results.json and DIR/report.md.
//!   store-bench scenario --store S --name N --data DIR [--quick]
//!   store-bench recover-scan | kill-writer | corrupt-check ...   (internal)

mod buildcost;
mod corruption;
mod metrics;
mod recovery;
mod report;
mod scenarios;
mod stores;
mod util;
mod workload;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use stores::Kind;
use util::Args;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cmd = argv.get(1).cloned().unwrap_or_default();
    let a = Args::parse(argv.get(2..).unwrap_or(&[]));
    match cmd.as_str() {
        "all" => orchestrate(&a),
        "scenario" => scenarios::child_main(&a),
        "recover-scan" => scenarios::recover_scan_main(&a),
        "kill-writer" => scenarios::kill_writer_main(&a),
        "corrupt-check" => scenarios::corrupt_check_main(&a),
        "report" => {
            // Re-render report.md from an existing results.json.
            let out = PathBuf::from(a.req("out"));
            let s = std::fs::read_to_string(out.join("results.json")).unwrap_or_default();
            let v: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
            let _ = std::fs::write(out.join("report.md"), report::render(&v));
        }
        _ => {
            eprintln!(
                "usage: store-bench all --out DIR [--quick] [--candidates fjall,redb,rocksdb,log] \
                 [--scenarios {}]",
                scenarios::NAMES.join(",")
            );
            std::process::exit(2);
        }
    }
}

/// Versions from bench/store/Cargo.lock.
fn lock_versions(lock: Option<&Path>) -> Value {
    let mut v = serde_json::Map::new();
    let Some(text) = lock.and_then(|l| std::fs::read_to_string(l).ok()) else {
        return Value::Object(v);
    };
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(ver), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if [
                "fjall",
                "lsm-tree",
                "redb",
                "rocksdb",
                "librocksdb-sys",
                "libc",
                "serde_json",
            ]
            .contains(&n.as_str())
            {
                v.insert(n, json!(ver.trim_matches('"')));
            }
        }
    }
    Value::Object(v)
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu, "mem": mem,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "rustc": command_output("rustc", &["--version"]),
        "nice": command_output("sh", &["-c", "nice"]),
    })
}

fn orchestrate(a: &Args) {
    let out = PathBuf::from(a.req("out"));
    let _ = std::fs::create_dir_all(&out);
    // Absolute, so that child processes and cargo (run in other working
    // directories) see the same paths.
    let out = std::fs::canonicalize(&out).unwrap_or(out);
    let quick = a.flag("quick");
    let lock = a.get("lock").map(PathBuf::from);
    let candidates: Vec<Kind> = match a.get("candidates") {
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                Kind::parse(s).unwrap_or_else(|| {
                    eprintln!("unknown candidate {s} (fjall, redb, rocksdb, log)");
                    std::process::exit(2)
                })
            })
            .collect(),
        None => stores::ALL.to_vec(),
    };
    let wanted: Vec<&str> = match a.get("scenarios") {
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<usize>() {
                Ok(i) if (1..=6).contains(&i) => scenarios::NAMES[i - 1],
                _ => scenarios::NAMES
                    .iter()
                    .copied()
                    .find(|n| *n == s)
                    .unwrap_or_else(|| {
                        eprintln!("unknown scenario {s} ({})", scenarios::NAMES.join(", "));
                        std::process::exit(2)
                    }),
            })
            .collect(),
        // A --quick smoke run leaves out the clean builds of scenario 6
        // (rocksdb alone takes 20-40 minutes); ask for it by name if wanted.
        None if quick => scenarios::NAMES[..5].to_vec(),
        None => scenarios::NAMES.to_vec(),
    };
    let data_root = out.join("data");
    let logs = out.join("logs");
    let _ = std::fs::create_dir_all(&data_root);
    let _ = std::fs::create_dir_all(&logs);
    let fs = metrics::filesystem_of(&data_root);
    let versions = lock_versions(lock.as_deref());
    let mut results = json!({
        "quick": quick,
        "started_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "candidates": candidates.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "scenarios": wanted,
        "data_dir": data_root.display().to_string(),
        "filesystem": {"mount": fs.0, "type": fs.1, "device": fs.2, "options": fs.3},
        "versions": versions,
        "machine": machine(),
        "results": {},
    });
    // --merge: keep the results of an earlier run in the same directory and
    // add (or replace) what this run measures.
    if a.flag("merge") {
        let prev: Value = std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if prev["results"].is_object() {
            results["results"] = prev["results"].clone();
            let mut c: Vec<Value> = prev["candidates"].as_array().cloned().unwrap_or_default();
            for k in &candidates {
                if !c.contains(&json!(k.name())) {
                    c.push(json!(k.name()));
                }
            }
            results["candidates"] = json!(c);
            let mut cmds = prev["commands"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![prev["command"].clone()]);
            cmds.push(results["command"].clone());
            results["commands"] = json!(cmds);
        }
    }
    eprintln!(
        "data directory {} on {} ({}, {})",
        data_root.display(),
        fs.0,
        fs.1,
        fs.2
    );
    let limit = Duration::from_secs(if quick { 900 } else { 2400 });
    for scen in &wanted {
        for &kind in &candidates {
            let t0 = std::time::Instant::now();
            eprintln!("== {scen} / {} ...", kind.name());
            let v = if !kind.compiled() {
                json!({"skipped": "not compiled into this binary"})
            } else if *scen == "build-cost" {
                buildcost::run(
                    kind,
                    &out,
                    lock.as_deref(),
                    &versions,
                    &logs.join(format!("build-cost-{}.log", kind.name())),
                )
            } else {
                let d = data_root.join(format!("{}-{}", scen, kind.name()));
                util::remove_dir(&d);
                let mut args = vec![
                    "scenario".to_string(),
                    "--store".into(),
                    kind.name().into(),
                    "--name".into(),
                    scen.to_string(),
                    "--data".into(),
                    d.display().to_string(),
                ];
                if quick {
                    args.push("--quick".into());
                }
                let logf = logs.join(format!("{}-{}.log", scen, kind.name()));
                let _ = std::fs::remove_file(&logf);
                let o = util::run_self(&args, limit, Some(&logf));
                util::remove_dir(&d);
                match o.json() {
                    Some(v) => v,
                    None => {
                        json!({"error": format!("scenario child ended without a result: {}", o.describe_exit()),
                                   "stderr_tail": o.stderr_tail(10)})
                    }
                }
            };
            if let Some(e) = v.get("error") {
                eprintln!("   error: {e}");
            }
            eprintln!("   done in {:.1} s", t0.elapsed().as_secs_f64());
            results["results"][*scen][kind.name()] = v;
            // Written after every step so that an interrupted run leaves
            // what it measured.
            let _ = std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&results).unwrap_or_default(),
            );
            let _ = std::fs::write(out.join("report.md"), report::render(&results));
        }
    }
    util::remove_dir(&data_root);
    eprintln!(
        "wrote {} and {}",
        out.join("report.md").display(),
        out.join("results.json").display()
    );
}
