//! Small helpers: `--key value` arguments, child processes with a time limit,
//! directory copy/removal.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Args {
    map: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// `--key value` pairs; `--flag` followed by another `--x` (or nothing) is
    /// a flag.
    pub fn parse(v: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < v.len() {
            if let Some(k) = v[i].strip_prefix("--") {
                if let Some((k, val)) = k.split_once('=') {
                    map.insert(k.to_string(), val.to_string());
                } else if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                    map.insert(k.to_string(), v[i + 1].clone());
                    i += 1;
                } else {
                    flags.push(k.to_string());
                }
            }
            i += 1;
        }
        Args { map, flags }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(|s| s.as_str())
    }
    pub fn req(&self, k: &str) -> String {
        match self.get(k) {
            Some(v) => v.to_string(),
            None => {
                eprintln!("missing --{k}");
                std::process::exit(2)
            }
        }
    }
    pub fn u64(&self, k: &str, default: u64) -> u64 {
        self.get(k)
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    }
    pub fn i64(&self, k: &str, default: i64) -> i64 {
        self.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    pub fn flag(&self, k: &str) -> bool {
        self.flags.iter().any(|f| f == k)
    }
}

/// What a child process left behind.
pub struct ChildOutcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

impl ChildOutcome {
    /// The last line of stdout that parses as a JSON object.
    pub fn json(&self) -> Option<serde_json::Value> {
        self.stdout
            .lines()
            .rev()
            .filter(|l| l.starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    }

    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.and_then(|s| s.signal())
    }

    pub fn describe_exit(&self) -> String {
        if self.timed_out {
            return "timed out (killed)".into();
        }
        match (self.status, self.signal()) {
            (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            (Some(s), None) => format!("exit code {}", s.code().unwrap_or(-1)),
            (None, None) => "unknown".into(),
        }
    }

    pub fn stderr_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        7 => " (SIGBUS)",
        4 => " (SIGILL)",
        _ => "",
    }
}

/// This executable, for re-running itself in a child process.
pub fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("store-bench"))
}

/// Run `self_exe() args` to completion, capturing stdout and stderr, killing
/// it after `limit`. If `stderr_to` is given, stderr is also appended there.
pub fn run_self(args: &[String], limit: Duration, stderr_to: Option<&Path>) -> ChildOutcome {
    let t0 = Instant::now();
    let child = Command::new(self_exe())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return ChildOutcome {
                status: None,
                timed_out: false,
                stdout: String::new(),
                stderr: format!("spawn failed: {e}"),
                secs: 0.0,
            };
        }
    };
    let out = child.stdout.take();
    let err = child.stderr.take();
    let tout = std::thread::spawn(move || read_all(out));
    let terr = std::thread::spawn(move || read_all(err));
    let (status, timed_out) = wait_limited(&mut child, limit);
    let stdout = tout.join().unwrap_or_default();
    let stderr = terr.join().unwrap_or_default();
    if let Some(p) = stderr_to {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "--- {} {}", self_exe().display(), args.join(" "));
            let _ = f.write_all(stderr.as_bytes());
        }
    }
    ChildOutcome {
        status,
        timed_out,
        stdout,
        stderr,
        secs: t0.elapsed().as_secs_f64(),
    }
}

fn read_all(r: Option<impl Read>) -> String {
    let mut s = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// Wait for a child at most `limit`; kill it (SIGKILL) if it overruns.
pub fn wait_limited(child: &mut Child, limit: Duration) -> (Option<ExitStatus>, bool) {
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return (Some(s), false),
            Ok(None) => {}
            Err(_) => return (None, false),
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            return (child.wait().ok(), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), &t)?;
        }
    }
    Ok(())
}

pub fn remove_dir(p: &Path) {
    if p.exists() {
        let _ = std::fs::remove_dir_all(p);
    }
}

pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
    );
}

/// Percentile of a sorted slice.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
