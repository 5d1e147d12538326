//! The `hmq` command line: hmq's flags, read with Go `flag` semantics, and how they combine with
//! hmq.config (flags override the file).
//!
//! The parser is hand-written because hmq's flags are single-dash multi-letter names (`-ws`,
//! `-wsp`, `-cp`), which clap or lexopt would read as bundles of short flags (`-w -s`).
//! As with Go's `flag` package, every flag is accepted with one dash or two (`-port`,
//! `--ws`), and a value is given as `-p 1883` or `-p=1883`.

use std::path::PathBuf;

use crate::config::{Config, ConfigError, LogFormat, Port};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the broker (or, with `--print-config`, print its configuration).
    Run(Options),
    /// `-h`/`--help`: print the usage and exit 0.
    Help,
}

/// The flags given; `None` means "not given" (the file or the default applies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// `-c/--config`: the hmq.config file.
    pub config_file: Option<PathBuf>,
    /// `--print-config`: print the effective configuration as JSON and exit 0.
    pub print_config: bool,
    /// `-w/--worker`: sets `workerNum`.
    pub worker: Option<u32>,
    /// `-p/--port`: sets `port`.
    pub port: Option<Port>,
    /// `--host`: sets `host`.
    pub host: Option<String>,
    /// `-ws/--wsport`: sets `wsPort`.
    pub ws_port: Option<Port>,
    /// `-wsp/--wspath`: sets `wsPath`.
    pub ws_path: Option<String>,
    /// `-d/--debug`, `-D`: sets `debug`.
    pub debug: Option<bool>,
    /// `-r/--router`: sets `router` ("" turns discovery off).
    pub router: Option<String>,
    /// `-cp/--clusterport`: sets `cluster.port`.
    pub cluster_port: Option<Port>,
    /// `--log-format text|json`: sets `logFormat`.
    pub log_format: Option<LogFormat>,
    /// `--http-port`: sets `httpPort` ("" turns the HTTP listener off).
    pub http_port: Option<Option<Port>>,
}

/// A command line that cannot be read. main prints it with the usage and exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A flag hmq does not have.
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    /// An argument that is not a flag (hmq takes none).
    #[error("unexpected argument {0:?}: hmq takes only flags")]
    UnexpectedArgument(String),
    /// A flag that needs a value, given without one.
    #[error("flag {flag} needs a value")]
    MissingValue {
        /// The flag as written.
        flag: String,
    },
    /// A value the flag cannot take.
    #[error("invalid value {value:?} for flag {flag}: {reason}")]
    BadValue {
        /// The flag as written.
        flag: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// `-h=...`: a flag that takes no value, given one.
    #[error("flag {flag} does not take a value")]
    UnexpectedValue {
        /// The flag as written.
        flag: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Worker,
    Port,
    Host,
    WsPort,
    WsPath,
    Config,
    Debug,
    DebugOn,
    Router,
    ClusterPort,
    Help,
    PrintConfig,
    LogFormat,
    HttpPort,
}

/// Flag names without dashes. Each works with `-` and `--`.
const FLAGS: &[(&str, Flag)] = &[
    ("w", Flag::Worker),
    ("worker", Flag::Worker),
    ("p", Flag::Port),
    ("port", Flag::Port),
    ("host", Flag::Host),
    ("ws", Flag::WsPort),
    ("wsport", Flag::WsPort),
    ("wsp", Flag::WsPath),
    ("wspath", Flag::WsPath),
    ("c", Flag::Config),
    ("config", Flag::Config),
    ("d", Flag::Debug),
    ("debug", Flag::Debug),
    ("D", Flag::DebugOn),
    ("r", Flag::Router),
    ("router", Flag::Router),
    ("cp", Flag::ClusterPort),
    ("clusterport", Flag::ClusterPort),
    ("h", Flag::Help),
    ("help", Flag::Help),
    ("print-config", Flag::PrintConfig),
    ("log-format", Flag::LogFormat),
    ("http-port", Flag::HttpPort),
];

/// Go's `strconv.ParseBool`, which hmq's `-d` uses.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the arguments (without argv[0]). Later flags override earlier ones; `-h` stops at once.
pub fn parse_args<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut options = Options::default();
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            // Go's flag stops at "--"; what follows would be positional, and hmq takes none.
            return match rest.next() {
                Some(extra) => Err(CliError::UnexpectedArgument(extra.clone())),
                None => Ok(Command::Run(options)),
            };
        }
        let body = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            Some(body) if !body.is_empty() => body,
            _ => return Err(CliError::UnexpectedArgument(arg.clone())),
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let written = &arg[..arg.len() - body.len() + name.len()];
        let Some(&(_, flag)) = FLAGS.iter().find(|(known, _)| *known == name) else {
            return Err(CliError::UnknownFlag(written.to_owned()));
        };
        let bad = |value: &str, reason: String| CliError::BadValue {
            flag: written.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let parse_bool_value = |value: &str| {
            parse_bool(value).ok_or_else(|| bad(value, "expected true or false".to_owned()))
        };
        match flag {
            Flag::Help => {
                if inline.is_some() {
                    return Err(CliError::UnexpectedValue {
                        flag: written.to_owned(),
                    });
                }
                return Ok(Command::Help);
            }
            Flag::Debug => {
                // `-d` alone means true, as in Go; hmq's usage also shows `-d <bool>`, so a
                // following true/false is taken as the value.
                let value = match inline {
                    Some(value) => parse_bool_value(value)?,
                    None => match rest.peek().and_then(|next| parse_bool(next)) {
                        Some(value) => {
                            rest.next();
                            value
                        }
                        None => true,
                    },
                };
                options.debug = Some(value);
                continue;
            }
            Flag::DebugOn => {
                options.debug = Some(inline.map(parse_bool_value).transpose()?.unwrap_or(true));
                continue;
            }
            Flag::PrintConfig => {
                options.print_config = inline.map(parse_bool_value).transpose()?.unwrap_or(true);
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(value) => value,
            // Unlike Go, a following flag is not taken as the value: `-p -c x` is a missing
            // value, not the port "-c".
            None => match rest.next_if(|next| !(next.starts_with('-') && next.len() > 1)) {
                Some(value) => value.as_str(),
                None => {
                    return Err(CliError::MissingValue {
                        flag: written.to_owned(),
                    });
                }
            },
        };
        let port = |value: &str| {
            value
                .parse::<Port>()
                .map_err(|err| bad(value, err.to_string()))
        };
        match flag {
            Flag::Worker => {
                let workers = value
                    .parse::<u32>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        bad(
                            value,
                            "expected a whole number (0 to 4294967295)".to_owned(),
                        )
                    })?;
                options.worker = Some(workers);
            }
            Flag::Port => options.port = Some(port(value)?),
            Flag::WsPort => options.ws_port = Some(port(value)?),
            Flag::ClusterPort => options.cluster_port = Some(port(value)?),
            Flag::Host => options.host = Some(value.to_owned()),
            Flag::WsPath => options.ws_path = Some(value.to_owned()),
            Flag::Router => options.router = Some(value.to_owned()),
            Flag::Config => {
                if value.is_empty() {
                    return Err(bad(value, "expected a file name".to_owned()));
                }
                options.config_file = Some(PathBuf::from(value));
            }
            Flag::LogFormat => {
                options.log_format = Some(match value {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad(value, "expected text or json".to_owned())),
                });
            }
            Flag::HttpPort => {
                options.http_port = Some(if value.is_empty() {
                    None
                } else {
                    Some(port(value)?)
                });
            }
            Flag::Help | Flag::Debug | Flag::DebugOn | Flag::PrintConfig => {}
        }
    }
    Ok(Command::Run(options))
}

/// The usage text: hmq's, plus `--print-config`.
pub fn usage() -> &'static str {
    "\
Usage: hmq [options]

Broker Options:
    -w,  --worker <number>            Worker num to process message (accepted for compatibility, not used)
    -p,  --port <port>                Use port for clients (default: 1883)
         --host <host>                Network host to listen on. (default \"0.0.0.0\")
    -ws, --wsport <port>              Use port for websocket monitoring
    -wsp,--wspath <path>              Use path for websocket monitoring (default: /ws)
    -c,  --config <file>              Configuration file
         --print-config               Print the effective configuration (JSON) and exit
         --http-port <port>           Port of /metrics, /healthz, /readyz (default 8080; \"\" = off)

Logging Options:
    -d, --debug <bool>                Enable debugging output (default false)
    -D                                Debug enabled
        --log-format <text|json>      Log line format (default text)

Cluster Options:
    -r,  --router  <rurl>             Cluster discovery address
    -cp, --clusterport <cluster-port> Cluster listen port for others

Common Options:
    -h, --help                        Show this message

Flags override the values in the configuration file.
"
}

impl Options {
    /// Builds the effective config: the embedded defaults, or the file (read with std::fs;
    /// errors name the file), then the flags on top (flags override the file), then validates.
    /// An invalid value given by a flag is reported against the flag.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let (mut config, file) = match &self.config_file {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigError::in_origin(
                        &origin,
                        format!("cannot read the configuration file: {err}"),
                    )
                })?;
                (Config::parse_json(&text, &origin)?, Some((text, origin)))
            }
            None => (Config::default(), None),
        };
        let mut overrides = self.apply(&mut config);
        // `--host` restricts the HTTP listener (metrics, probes) as well, unless the file says
        // where it goes: a broker started on loopback must not expose /metrics to the network.
        let file_sets_http_host = file.as_ref().is_some_and(|(text, _)| {
            serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|v| v.get("httpHost").is_some())
        });
        if self.host.is_some() && !file_sets_http_host {
            config.http_host.clone_from(&config.host);
            overrides.push(("httpHost", "--host"));
        }
        if let Err(err) = config.validate() {
            let by_flag = overrides
                .iter()
                .find(|(key, _)| err.key.as_deref() == Some(*key));
            return Err(match (by_flag, file) {
                (Some((_, flag)), _) => ConfigError {
                    origin: "command line".to_owned(),
                    line: None,
                    column: None,
                    key: Some((*flag).to_owned()),
                    message: err.message,
                },
                (None, Some((text, origin))) => err.located_in(&text, &origin),
                (None, None) => err,
            });
        }
        Ok(config)
    }

    /// Writes the given flags into `config`; returns (config key, flag) for each.
    fn apply(&self, config: &mut Config) -> Vec<(&'static str, &'static str)> {
        let mut overrides = Vec::new();
        if let Some(workers) = self.worker {
            config.worker_num = Some(workers);
            overrides.push(("workerNum", "--worker"));
        }
        if let Some(port) = self.port {
            config.port = port;
            overrides.push(("port", "--port"));
        }
        if let Some(host) = &self.host {
            config.host.clone_from(host);
            overrides.push(("host", "--host"));
        }
        if let Some(port) = self.ws_port {
            config.ws_port = Some(port);
            overrides.push(("wsPort", "--wsport"));
        }
        if let Some(path) = &self.ws_path {
            config.ws_path.clone_from(path);
            overrides.push(("wsPath", "--wspath"));
        }
        if let Some(debug) = self.debug {
            config.debug = debug;
            overrides.push(("debug", "--debug"));
        }
        if let Some(router) = &self.router {
            config.router = Some(router.clone()).filter(|r| !r.is_empty());
            overrides.push(("router", "--router"));
        }
        if let Some(port) = self.cluster_port {
            config.cluster.port = Some(port);
            overrides.push(("cluster.port", "--clusterport"));
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
            overrides.push(("logFormat", "--log-format"));
        }
        if let Some(port) = self.http_port {
            config.http_port = port;
            overrides.push(("httpPort", "--http-port"));
        }
        overrides
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn run(args: &[&str]) -> Options {
        match parse_args(args.iter().copied()) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> CliError {
        parse_args(args.iter().copied()).unwrap_err()
    }

    /// Arguments written as one line, split on spaces.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn every_flag_in_every_form() {
        let flags: &[(&str, &str, &str)] = &[
            ("-w", "--worker", "4096"),
            ("-p", "--port", "1884"),
            ("-host", "--host", "127.0.0.1"),
            ("-ws", "--wsport", "1888"),
            ("-wsp", "--wspath", "/mqtt"),
            ("-c", "--config", "hmq.config"),
            ("-d", "--debug", "false"),
            ("-r", "--router", "hmq.default.svc:9888"),
            ("-cp", "--clusterport", "1993"),
        ];
        for (short, long, value) in flags {
            let reference = run(&[long, value]);
            assert_ne!(reference, Options::default(), "{long} {value}");
            let short_long = format!("-{short}"); // "--w": Go accepts two dashes on any name
            let long_short = &long[1..]; // "-worker"
            for flag in [*short, short_long.as_str(), *long, long_short] {
                let joined = format!("{flag}={value}");
                assert_eq!(run(&[flag, value]), reference, "{flag} {value}");
                assert_eq!(run(&[&joined]), reference, "{joined}");
            }
        }
    }

    #[test]
    fn each_flag_sets_its_option_and_last_wins() {
        let options = run(&words(
            "--config a.config --worker 8 --port=1 --host ::1 --wsport 2 --wspath /w --debug \
             --router peers --clusterport 3 --print-config --port 4 --log-format json \
             -http-port 9090",
        ));
        let expected = Options {
            config_file: Some("a.config".into()),
            print_config: true,
            worker: Some(8),
            port: Some(Port(4)),
            host: Some("::1".into()),
            ws_port: Some(Port(2)),
            ws_path: Some("/w".into()),
            debug: Some(true),
            router: Some("peers".into()),
            cluster_port: Some(Port(3)),
            log_format: Some(LogFormat::Json),
            http_port: Some(Some(Port(9090))),
        };
        assert_eq!(options, expected);
        assert_eq!(run(&[]), Options::default());
        assert_eq!(run(&["--http-port="]).http_port, Some(None));
        assert!(parse_args(["--log-format", "xml"]).is_err());
    }

    #[test]
    fn debug_forms() {
        let cases: &[(&[&str], Option<bool>)] = &[
            (&["-d"], Some(true)),
            (&["--debug"], Some(true)),
            (&["-d", "false"], Some(false)),
            (&["-d", "true"], Some(true)),
            (&["-d=false"], Some(false)),
            (&["--debug=0"], Some(false)),
            (&["-debug", "F"], Some(false)),
            (&["-d", "-p", "1"], Some(true)),
            (&["-D"], Some(true)),
            (&["-D=false"], Some(false)),
            (&["-d", "false", "-D"], Some(true)),
            (&["-D", "-d=f"], Some(false)),
        ];
        for (args, debug) in cases {
            assert_eq!(run(args).debug, *debug, "{args:?}");
        }
        assert!(!run(&["--print-config=false"]).print_config);
        assert!(run(&["-print-config"]).print_config);
    }

    #[test]
    fn help() {
        for args in [
            &["-h"][..],
            &["--help"],
            &["-help"],
            &["-p", "1", "-h", "--nonsense"],
        ] {
            assert_eq!(
                parse_args(args.iter().copied()),
                Ok(Command::Help),
                "{args:?}"
            );
        }
        assert_eq!(err(&["-x", "-h"]), CliError::UnknownFlag("-x".into()));
        assert_eq!(
            err(&["-h=1"]),
            CliError::UnexpectedValue { flag: "-h".into() }
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["-x"], "unknown flag: -x"),
            (&["--wsPort", "1"], "unknown flag: --wsPort"),
            (&["-pp=1"], "unknown flag: -pp"),
            (&["-d", "-P"], "unknown flag: -P"),
            (&["---p", "1"], "unknown flag: ---p"),
            (&["-p", "1883", "extra"], "unexpected argument \"extra\""),
            (&["-"], "unexpected argument \"-\""),
            (&["--", "-p"], "unexpected argument \"-p\""),
            (&["-p"], "flag -p needs a value"),
            (&["--config"], "flag --config needs a value"),
            (&["-p", "-c", "x"], "flag -p needs a value"),
            (
                &["-p", "abc"],
                "invalid value \"abc\" for flag -p: expected a port number",
            ),
            (
                &["--port=70000"],
                "invalid value \"70000\" for flag --port: 70000 is out of range",
            ),
            (
                &["-ws", ""],
                "invalid value \"\" for flag -ws: expected a port number",
            ),
            (
                &["-cp=-1"],
                "invalid value \"-1\" for flag -cp: expected a port number",
            ),
            (&["--clusterport", "x"], "for flag --clusterport"),
            (
                &["-w", "many"],
                "invalid value \"many\" for flag -w: expected a whole number",
            ),
            (&["-w=+4"], "for flag -w"),
            (
                &["-d=maybe"],
                "invalid value \"maybe\" for flag -d: expected true or false",
            ),
            (&["-D=yes"], "for flag -D"),
            (
                &["-c="],
                "invalid value \"\" for flag -c: expected a file name",
            ),
        ];
        for (args, message) in cases {
            let shown = err(args).to_string();
            assert!(shown.contains(message), "{args:?}: {shown}");
        }
        assert_eq!(run(&["--"]), Options::default());
    }

    #[test]
    fn usage_lists_every_flag() {
        for flag in [
            "-w,",
            "--worker",
            "-p,",
            "--port",
            "--host",
            "-ws,",
            "--wsport",
            "-wsp,",
            "--wspath",
            "-c,",
            "--config",
            "--print-config",
            "-d,",
            "--debug",
            "-D ",
            "-r,",
            "--router",
            "-cp,",
            "--clusterport",
            "-h,",
            "--help",
        ] {
            assert!(usage().contains(flag), "{flag}");
        }
    }

    /// A config file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "hmq-cli-test-{}-{}.config",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        run(args).load()
    }

    #[test]
    fn load_without_file_applies_flags_to_defaults() {
        assert_eq!(load(&[]).unwrap(), Config::default());
        let line = "-w 8 -p 0 --host 127.0.0.1 -ws 0 -wsp /mqtt -D -r peers:9888 -cp 1993";
        let config = load(&words(line)).unwrap();
        let expected = Config {
            worker_num: Some(8),
            port: Port(0),
            host: "127.0.0.1".into(),
            http_host: "127.0.0.1".into(),
            ws_port: Some(Port(0)),
            ws_path: "/mqtt".into(),
            debug: true,
            router: Some("peers:9888".into()),
            cluster: crate::config::ClusterConfig {
                port: Some(Port(1993)),
                ..Default::default()
            },
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempFile::new(
            r#"{
    "workerNum": 4096,
    "port": "1883",
    "host": "0.0.0.0",
    "cluster": {"host": "0.0.0.0", "port": "1993"},
    "router": "127.0.0.1:9888",
    "wsPort": "1888",
    "wsPath": "ws",
    "debug": true,
    "maxInflight": 5
}"#,
        );
        // The file's wsPath is invalid, but the flag replaces it.
        let flags = "-w 1 -p 1884 --host localhost -ws 1889 -wsp /mqtt -d false -cp 1994";
        let mut args = vec!["-c", file.path(), "-r", ""];
        args.extend(words(flags));
        let config = load(&args).unwrap();
        assert_eq!(config.worker_num, Some(1));
        assert_eq!(config.port, Port(1884));
        assert_eq!(config.host, "localhost");
        assert_eq!(config.ws_port, Some(Port(1889)));
        assert_eq!(config.ws_path, "/mqtt");
        assert!(!config.debug);
        assert_eq!(config.router, None);
        assert_eq!(config.cluster.port, Some(Port(1994)));
        assert_eq!(config.max_inflight, 5, "file values without a flag stay");
        assert_eq!(
            config.http_host, "localhost",
            "--host moves the HTTP listener too"
        );

        // Unless the file places the HTTP listener itself.
        let placed = TempFile::new(r#"{"httpHost": "0.0.0.0"}"#);
        let config = load(&["-c", placed.path(), "--host", "127.0.0.1"]).unwrap();
        assert_eq!(
            (config.host.as_str(), config.http_host.as_str()),
            ("127.0.0.1", "0.0.0.0")
        );
        let config = load(&["--host", "127.0.0.1"]).unwrap();
        assert_eq!(config.http_host, "127.0.0.1");
        assert_eq!(load(&[]).unwrap().http_host, "0.0.0.0");

        // Without the flag, the file's wsPath is reported with file, line and key.
        let err = load(&["-c", file.path(), "-p", "1"]).unwrap_err();
        assert_eq!(err.origin, file.path());
        assert_eq!(err.line, Some(8));
        assert_eq!(err.key.as_deref(), Some("wsPath"));
        assert!(
            err.to_string().starts_with(&format!("{}:8:", file.path())),
            "{err}"
        );
    }

    #[test]
    fn load_errors_name_the_file_or_the_flag() {
        let missing = std::env::temp_dir().join("hmq-cli-test-no-such-file.config");
        let err = Options {
            config_file: Some(missing.clone()),
            ..Options::default()
        }
        .load()
        .unwrap_err();
        assert_eq!(err.origin, missing.display().to_string());
        assert!(
            err.message.contains("cannot read the configuration file"),
            "{err}"
        );

        let file = TempFile::new("{\n  \"port\": 1883,\n  \"tlsInfo\": {\"certFile\": 5}\n}");
        let err = load(&["-c", file.path()]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{}:3:", file.path())),
            "{err}"
        );
        assert_eq!(err.key.as_deref(), Some("tlsInfo.certFile"));

        let cases: &[(&[&str], &str, &str)] = &[
            (&["--host", "bad host"], "--host", "' ' is not allowed"),
            (&["-host=0.0.0.0:1883"], "--host", "includes a port"),
            (&["-wsp", "ws"], "--wspath", "must start with '/'"),
        ];
        for (args, flag, message) in cases {
            let err = load(args).unwrap_err();
            assert_eq!(err.origin, "command line");
            assert_eq!(err.key.as_deref(), Some(*flag));
            assert_eq!(err.line, None);
            assert!(
                err.to_string()
                    .starts_with(&format!("command line: {flag}: ")),
                "{err}"
            );
            assert!(err.message.contains(message), "{err}");
        }
        let file = TempFile::new("{\"host\": \"::1\"}");
        let err = load(&["-c", file.path(), "-wsp", "x"]).unwrap_err();
        assert_eq!(err.origin, "command line");
    }
}
