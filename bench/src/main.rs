//! `hmq-bench`: an MQTT 3.1.1 load generator (in the spirit of emqtt-bench) for hmq or any
//! other broker. It measures what the broker really delivered: every payload starts with a
//! header (publisher id, sequence number, send time), so subscribers count loss and duplicates
//! and record end-to-end latency; connect latency and rate, and the broker's CPU and memory
//! (`--broker-pid`) are reported too, as a summary on stdout and as JSON (`--json FILE`).
//!
//! Layout: `main.rs` parses the command line and prints; [`scenario`] builds the clients of a
//! scenario and runs the phases; [`group`] drives 64 connections per tokio task; [`client`] is
//! one connection's handshake and non-blocking I/O; [`flow`] the publisher and subscriber
//! protocol state; [`stats`] holds the measurement logic and [`proc`] reads `/proc`.
//!
//! Cores it needs (measured on the 2-core development machine against hmq on loopback, 16-byte
//! payloads; CPU seconds of the generator process, so the figures hold on a busier machine too):
//!
//! * At full speed (no `--rate`) it spends about 0.6 µs of CPU per delivered QoS 1 message,
//!   publishing, receiving and all acks included: p2p with 100 pairs delivering 670,000 msgs/s
//!   took 0.42 core.
//! * Rate-limited runs write each message on its own and read it on its own, and on loopback
//!   the sender of each TCP segment also pays for its delivery: 6-13 µs per message, about what
//!   the broker spends. 100,000 msgs/s (100 pairs x 1000/s) took 0.6 core at QoS 0, 0.73 at
//!   QoS 1 and 0.76 at QoS 2; 50,000 msgs/s over 500 pairs x 100/s took 0.65 core.
//!
//! So on 2 cores keep rate-limited offered load at or below about 100,000 msgs/s, or pin the
//! broker and the generator to separate cores (`taskset`).

mod client;
mod flow;
mod group;
mod proc;
mod scenario;
mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hmq_codec::QoS;

use crate::client::Settings;
use crate::scenario::{Kind, Plan, RunOptions};
use crate::stats::{HEADER_LEN, Percentiles, Report};

const ABOUT: &str = "MQTT 3.1.1 load generator: connections, throughput, loss, duplicates, latency";

const LONG_ABOUT: &str = "\
MQTT 3.1.1 load generator for hmq or any other broker.

Every payload carries a 16-byte header (publisher id, sequence number, send time), so the
subscribers count what the broker really delivered: loss, duplicates and end-to-end latency.
Runs are bounded by --duration (plus at most --drain) and --max-messages.

Only loopback addresses (127.0.0.0/8, ::1, localhost) are accepted unless --allow-remote is
given: the project's rule is that load tests talk to this machine only, and a mistyped address
must not flood somebody else's server. Pass --allow-remote to load a broker you run elsewhere.

Cores it needs (2-core machine, 16-byte payloads): at full speed about 0.6 µs of generator
CPU per delivered QoS 1 message (670,000 msgs/s took 0.42 core); rate-limited runs write and
read each message on its own, 6-13 µs per message (100,000 msgs/s took 0.6-0.76 core at
QoS 0-2). Keep rate-limited load at or below about 100,000 msgs/s on 2 cores.

QoS 0 at full speed fills the kernel's socket buffers: the latency then measures that
queue. Use --rate for QoS 0 latency.";

#[derive(Debug, Parser)]
#[command(name = "hmq-bench", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open --clients connections at --connect-rate and hold them for --duration seconds.
    Conn {
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Publish only (pair with `sub` in another process).
    Pub {
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Topic; %i is replaced by the publisher index.
        #[arg(long, default_value = "bench/pub/%i")]
        topic: String,
        #[command(flatten)]
        common: Common,
    },
    /// Subscribe only for --duration seconds (pair with `pub` in another process).
    Sub {
        /// Subscribers.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Topic filter; %i is replaced by the subscriber index.
        #[arg(long, default_value = "bench/pub/+")]
        topic: String,
        /// Subscribe as members of $share/<GROUP>/<filter>.
        #[arg(long, value_name = "GROUP")]
        shared_group: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// N publishers to N subscribers, one topic bench/p2p/<i> per pair.
    P2p {
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        #[command(flatten)]
        common: Common,
    },
    /// P publishers on bench/fanout/<j> to S subscribers that each take all P topics.
    Fanout {
        /// Publishers (and topics).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscribers.
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Subscribe with the one filter bench/fanout/+ instead of one filter per topic.
        #[arg(long)]
        fanout_filter: bool,
        #[command(flatten)]
        common: Common,
    },
    /// N publishers on bench/fanin/<i> to one subscriber on bench/fanin/+ (or a $share group).
    Fanin {
        /// Publishers.
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        /// Subscribers in the shared group (needs --shared-group).
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Subscribe as members of $share/<GROUP>/bench/fanin/+.
        #[arg(long, value_name = "GROUP")]
        shared_group: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Broker host (loopback only unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Subscribers connect to this host instead (another node of a cluster: publishers on one
    /// node, subscribers on another). Default: --host.
    #[arg(long)]
    sub_host: Option<String>,
    /// Subscribers connect to this port instead. Default: --port.
    #[arg(long)]
    sub_port: Option<u16>,
    /// Allow a broker that is not on a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// QoS of publications and subscriptions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least the 16-byte measurement header).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages per second per publisher; 0 = as fast as the in-flight window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacknowledged messages per publisher (QoS 1/2); for QoS 0 the output buffer holds at
    /// most this many messages.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    inflight: u16,
    /// Seconds of publishing (`conn`: of holding the connections; `sub`: of receiving).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait at most for outstanding acks and deliveries after publishing.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Messages per publisher, at most.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Seconds at the start excluded from throughput and latency.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measure this broker process: CPU seconds and RSS (start, peak, end).
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Worker threads of each of the two runtimes, publishers' and subscribers' (default: all
    /// cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Client identifiers are <prefix>-<pub|sub|conn>-<i>.
    #[arg(long, default_value = "bench")]
    client_prefix: String,
    /// Keepalive seconds (0 disables it); a PINGREQ goes out after this long without writing.
    #[arg(long, default_value_t = 60)]
    keepalive: u16,
    /// Persistent sessions (clean session flag 0).
    #[arg(long)]
    persistent: bool,
    /// Connections opened per second; 0 = as fast as possible (at most 500 handshakes at once).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Seconds a connection (TCP, CONNECT/CONNACK, SUBSCRIBE/SUBACK) may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hmq-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let (plan, c) = match cli.command {
        Command::Conn { clients, common } => (Plan::conn(&common.client_prefix, clients), common),
        Command::Pub {
            publishers,
            topic,
            common,
        } => (
            Plan::pub_only(&common.client_prefix, publishers, &topic),
            common,
        ),
        Command::Sub {
            subscribers,
            topic,
            shared_group,
            common,
        } => (
            Plan::sub_only(
                &common.client_prefix,
                subscribers,
                &topic,
                shared_group.as_deref(),
            ),
            common,
        ),
        Command::P2p { pairs, common } => (Plan::p2p(&common.client_prefix, pairs), common),
        Command::Fanout {
            publishers,
            subscribers,
            fanout_filter,
            common,
        } => (
            Plan::fanout(
                &common.client_prefix,
                publishers,
                subscribers,
                fanout_filter,
            ),
            common,
        ),
        Command::Fanin {
            publishers,
            subscribers,
            shared_group,
            common,
        } => {
            if shared_group.is_none() && subscribers != 1 {
                bail!("fanin: --subscribers needs --shared-group (one plain subscriber otherwise)");
            }
            let plan = Plan::fanin(
                &common.client_prefix,
                publishers,
                subscribers,
                shared_group.as_deref(),
            );
            (plan, common)
        }
    };
    let mut plan = plan;
    let settings = settings(&c)?;
    scenario::check(plan.kind, &settings)?;
    if plan.idle.len() + plan.subs.len() + plan.pubs.len() == 0 {
        bail!("nothing to do: no clients");
    }
    plan.pace_connects(c.connect_rate);
    let per_publisher = c
        .max_messages
        .or_else(|| (c.rate > 0.0).then(|| (c.rate * c.duration).ceil() as u64 + 1));
    let (bytes, fits) = plan.reserve_tracking(per_publisher);
    let threads = match c.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let options = RunOptions {
        broker_pid: c.broker_pid,
        threads,
        drain: secs("--drain", c.drain)?,
        tracking_off: (!fits).then_some(bytes),
        progress: !c.quiet,
    };
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    let rt = runtime("hmq-bench")?;
    let sub_rt = runtime("hmq-bench-sub")?;
    let kind = plan.kind;
    let run = scenario::run(plan, settings, &options, sub_rt.handle());
    let (report, ok) = rt.block_on(run)?;
    print!("{}", summary(kind, &report));
    if let Some(path) = &c.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

fn secs(flag: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("{flag} {v}: not a duration"))
}

fn settings(c: &Common) -> Result<Settings> {
    if c.size < HEADER_LEN {
        bail!(
            "--size {}: at least {HEADER_LEN} bytes (the measurement header)",
            c.size
        );
    }
    if !(c.rate >= 0.0 && c.rate.is_finite()) {
        bail!("--rate {}: must be 0 or positive", c.rate);
    }
    if !(c.connect_rate >= 0.0 && c.connect_rate.is_finite()) {
        bail!("--connect-rate {}: must be 0 or positive", c.connect_rate);
    }
    if c.max_messages == Some(0) {
        bail!("--max-messages must be at least 1");
    }
    Ok(Settings {
        addr: resolve(&c.host, c.port, c.allow_remote)?,
        sub_addr: resolve(
            c.sub_host.as_deref().unwrap_or(&c.host),
            c.sub_port.unwrap_or(c.port),
            c.allow_remote,
        )?,
        qos: QoS::from_u8(c.qos).context("--qos")?,
        size: c.size,
        rate: c.rate,
        inflight: usize::from(c.inflight),
        // The sequence number in the payload is a u32.
        max_messages: c.max_messages.unwrap_or(u64::MAX).min(1 << 32),
        keepalive: c.keepalive,
        clean_session: !c.persistent,
        duration: secs("--duration", c.duration)?,
        warmup: secs("--warmup", c.warmup)?,
        connect_timeout: secs("--connect-timeout", c.connect_timeout)?,
    })
}

/// The broker's address; anything but loopback needs `allow_remote`.
fn resolve(host: &str, port: u16, allow_remote: bool) -> Result<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if bare.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Ok(ip) = bare.parse::<IpAddr>() {
        ip
    } else if allow_remote {
        (bare, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?
            .ip()
    } else {
        bail!("--host {host}: only loopback addresses are allowed without --allow-remote");
    };
    if !ip.is_loopback() && !allow_remote {
        bail!("--host {host}: not a loopback address; pass --allow-remote to load a remote broker");
    }
    Ok(SocketAddr::new(ip, port))
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} µs (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    )
}

/// The human summary.
fn summary(kind: Kind, r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let rate = if r.rate_per_publisher > 0.0 {
        format!("{} msg/s per publisher", r.rate_per_publisher)
    } else {
        "unlimited rate".into()
    };
    if kind == Kind::Conn {
        line(format!(
            "hmq-bench conn: {} clients held for {} s",
            r.connect.clients, r.duration_s
        ));
    } else {
        line(format!(
            "hmq-bench {}: {} publishers -> {} subscribers, QoS {}, {} B payload, {rate}, {} s (warmup {} s)",
            r.scenario,
            r.publishers,
            r.subscribers,
            r.qos,
            r.payload_bytes,
            r.duration_s,
            r.warmup_s
        ));
    }
    let c = &r.connect;
    line(format!(
        "  connect    {} ok, {} failed, {:.0}/s; {}",
        c.clients - c.failed,
        c.failed,
        c.rate_per_s,
        pct(&c.latency_us)
    ));
    if kind != Kind::Conn && kind != Kind::Sub {
        line(format!(
            "  sent       {} ({:.0}/s after warmup), acked {}",
            r.sent, r.sent_per_s, r.acked
        ));
    }
    if kind != Kind::Conn && kind != Kind::Pub {
        line(format!(
            "  received   {} ({:.0}/s after warmup), expected {}, unique {}, lost {}, duplicates {}",
            r.received, r.received_per_s, r.expected, r.unique_received, r.lost, r.duplicates
        ));
        line(format!("  latency    {}", pct(&r.latency_us)));
    }
    let b = &r.broker;
    if let Some(pid) = b.pid {
        let cpu = b.cpu_s.unwrap_or(0.0);
        let mut s = format!(
            "  broker     pid {pid}: cpu {cpu:.2} s, rss start {} peak {} end {} KiB",
            b.rss_start_kib.unwrap_or(0),
            b.rss_peak_kib.unwrap_or(0),
            b.rss_end_kib.unwrap_or(0)
        );
        if kind == Kind::Conn && c.clients > c.failed {
            let per = (b.rss_end_kib.unwrap_or(0) as f64 - b.rss_start_kib.unwrap_or(0) as f64)
                * 1024.0
                / (c.clients - c.failed) as f64;
            s += &format!(" ({per:.0} B per connection)");
        }
        if r.received > 0 {
            s += &format!(
                ", {:.2} cpu s per million delivered",
                cpu * 1e6 / r.received as f64
            );
        }
        line(s);
    }
    line(format!(
        "  generator  cpu {:.2} s, {} threads per runtime",
        r.generator.cpu_s, r.generator.threads
    ));
    for e in &r.errors {
        line(format!("  note: {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_the_flag() {
        assert_eq!(
            resolve("localhost", 1883, false).unwrap(),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert!(resolve("127.1.2.3", 1, false).is_ok());
        assert!(resolve("::1", 1, false).is_ok());
        assert!(resolve("[::1]", 1, false).is_ok());
        assert!(resolve("10.0.0.1", 1, false).is_err());
        assert!(resolve("192.168.1.1", 1, false).is_err());
        assert!(resolve("example.invalid", 1, false).is_err());
        assert!(resolve("10.0.0.1", 1, true).is_ok());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "hmq-bench",
            "fanin",
            "--publishers",
            "100",
            "--shared-group",
            "g",
            "--subscribers",
            "5",
            "--qos",
            "2",
            "--json",
            "/tmp/x.json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Fanin {
                publishers: 100,
                subscribers: 5,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["hmq-bench", "p2p", "--qos", "3"]).is_err());
        assert!(Cli::try_parse_from(["hmq-bench", "p2p", "--inflight", "0"]).is_err());
    }
}
