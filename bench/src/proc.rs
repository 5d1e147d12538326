//! Process figures from `/proc`: CPU seconds (utime + stime of `/proc/PID/stat`) and resident
//! memory (`VmRSS` of `/proc/PID/status`), sampled every 100 ms on a plain thread so that a busy
//! runtime cannot delay the samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Which process to read: `self` or a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// This process.
    Current,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Current => "/proc/self".into(),
            Pid::Other(p) => format!("/proc/{p}"),
        }
    }
}

/// Clock ticks per second of the `stat` times: `getconf CLK_TCK`, or 100 (the value on every
/// common Linux configuration) when `getconf` is missing.
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: Pid, clk_tck: f64) -> Result<f64> {
    let path = format!("{}/stat", pid.dir());
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    Ok(ticks as f64 / clk_tck)
}

/// utime + stime (fields 14 and 15) of a `stat` line. The command name (field 2) is in
/// parentheses and may contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in stat")?;
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is index 0
    let mut next = |name: &str| -> Result<u64> {
        fields
            .next()
            .with_context(|| format!("missing {name}"))?
            .parse::<u64>()
            .with_context(|| format!("bad {name}"))
    };
    Ok(next("utime")? + next("stime")?)
}

/// Resident set size in KiB.
pub fn rss_kib(pid: Pid) -> Result<u64> {
    let path = format!("{}/status", pid.dir());
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kib = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(kib)
}

/// RSS at the start, the peak and the last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RssStats {
    pub start: u64,
    pub peak: u64,
    pub end: u64,
}

/// Samples a process's RSS every 100 ms until stopped.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<RssStats>,
}

impl RssSampler {
    /// Takes the first sample now (failing if the process cannot be read) and starts sampling.
    pub fn start(pid: Pid) -> Result<RssSampler> {
        let first = rss_kib(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let mut s = RssStats {
                    start: first,
                    peak: first,
                    end: first,
                };
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(v) = rss_kib(pid) {
                        s.peak = s.peak.max(v);
                        s.end = v;
                    }
                }
                s
            })
            .context("spawning the RSS sampler")?;
        Ok(RssSampler { stop, thread })
    }

    /// Takes a last sample and returns the figures.
    pub fn finish(self, pid: Pid) -> Result<RssStats> {
        self.stop.store(true, Ordering::Relaxed);
        let mut s = match self.thread.join() {
            Ok(s) => s,
            Err(_) => bail!("the RSS sampler panicked"),
        };
        if let Ok(v) = rss_kib(pid) {
            s.peak = s.peak.max(v);
            s.end = v;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let line = "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 4 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(line).unwrap(), 325);
        assert!(parse_stat_ticks("1 (x) S 1 2").is_err());
    }

    #[test]
    fn vm_rss_line() {
        let status = "Name:\thmq\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let tck = clk_tck();
        assert!(tck > 0.0);
        assert!(cpu_seconds(Pid::Current, tck).unwrap() >= 0.0);
        assert!(rss_kib(Pid::Current).unwrap() > 0);
        let s = RssSampler::start(Pid::Current).unwrap();
        let r = s.finish(Pid::Current).unwrap();
        assert!(r.peak >= r.start && r.peak >= r.end);
    }
}
