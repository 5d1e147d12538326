//! The `hmq` binary: parse the command line, load the configuration, set up logging, run the
//! broker until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hmq::broker::Broker;
use hmq::cli::{self, Command};
use hmq::config::{Config, LogFormat};
use hmq::server::Server;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: the message path allocates and frees on different
/// threads (a message is built by the publisher's task and freed by the subscriber's), which
/// glibc's allocator handles poorly (it showed as 15 % of broker CPU in a p2p profile). Built
/// with `no_thp` (workspace Cargo.toml): otherwise it advises transparent huge pages on its
/// arenas, and an idle broker's resident memory doubles (13.9 MB instead of 6.4 MB here) and
/// grows in 2 MB steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("passwd") {
        return passwd(&args[1..]);
    }
    let command = match cli::parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hmq: {e}\n\n{}", cli::usage());
            return ExitCode::from(2);
        }
    };
    let options = match command {
        Command::Help => {
            println!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Command::Run(o) => o,
    };
    let config = match options.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hmq: {e}");
            return ExitCode::from(2);
        }
    };
    if options.print_config {
        println!("{}", config.to_json_pretty());
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    for notice in config.notices() {
        warn!("{notice}");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hmq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log level: `RUST_LOG` if set, else debug with `-d`/`-D`/`"debug": true`, else info. Format:
/// text, or one JSON object per line with `logFormat: "json"` / `--log-format json`. The durable
/// store's own crates log their internals at info (files recovered, tables flushed): they are
/// kept at warn unless `RUST_LOG` asks for more; hmq logs what matters to an operator itself.
/// rustls warns about what clients send (an IP address as SNI, which mosquitto_pub -h 127.0.0.1
/// does on every connection): at error unless debugging; hmq logs failed handshakes itself.
fn init_tracing(config: &Config) {
    let default = if config.debug {
        "debug,fjall=info,lsm_tree=info"
    } else {
        "info,fjall=warn,lsm_tree=warn,rustls=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(server.broker(), shutdown.clone()));
        info!(version = env!("CARGO_PKG_VERSION"), "hmq starting");
        server.run(shutdown).await?;
        Ok(())
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT; on SIGHUP asks for the reloadable files (ACL,
/// password file) to be read again.
async fn watch_signals(broker: Arc<Broker>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stop the broker with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
            _ = hup.recv() => {
                info!("SIGHUP received: reloading files");
                broker.reload.send_modify(|generation| *generation += 1);
                continue;
            }
        }
        shutdown.cancel();
        return;
    }
}

const PASSWD_USAGE: &str = "Usage: hmq passwd [--iterations N] <file> <user>

Adds <user> to the password file <file> (created with mode 0600 if missing) or changes their
password. The password is asked twice on the terminal, or read as one line from standard input
when that is not a terminal. --iterations sets the PBKDF2-SHA512 iteration count (default 210000).";

/// `hmq passwd [--iterations N] <file> <user>`.
fn passwd(args: &[String]) -> ExitCode {
    let mut iterations = hmq::auth::DEFAULT_ITERATIONS;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "-help" => {
                println!("{PASSWD_USAGE}");
                return ExitCode::SUCCESS;
            }
            "--iterations" | "-iterations" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) => iterations = n,
                None => {
                    eprintln!("hmq passwd: --iterations needs a number\n\n{PASSWD_USAGE}");
                    return ExitCode::from(2);
                }
            },
            other if other.starts_with('-') => {
                eprintln!("hmq passwd: unknown flag {other}\n\n{PASSWD_USAGE}");
                return ExitCode::from(2);
            }
            other => positional.push(other),
        }
    }
    let [file, user] = positional[..] else {
        eprintln!("hmq passwd: expected <file> <user>\n\n{PASSWD_USAGE}");
        return ExitCode::from(2);
    };
    let password = match read_new_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hmq passwd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match hmq::auth::passwd_command(
        std::path::Path::new(file),
        user,
        password.as_bytes(),
        iterations,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmq passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The new password: asked twice on a terminal, else one line of standard input.
fn read_new_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Reenter password: ")?;
        anyhow::ensure!(first == second, "the passwords do not match");
        anyhow::ensure!(!first.is_empty(), "empty password");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(!password.is_empty(), "empty password on standard input");
        Ok(password)
    }
}
