//! The broker's configuration: the format of `hmq.config` (JSON, camelCase keys, hmq's keys plus
//! our own), its defaults, and its validation. Pure parsing and checking, no I/O, so the
//! Kubernetes operator renders and validates hmq.config with the code the broker reads it with.

mod de;
mod error;
mod port;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use port::{Port, PortError};
pub use validate::split_port;
pub use validate::{
    MAX_CONNECT_TIMEOUT, MAX_PACKET_SIZE_LIMIT, MAX_SESSION_EXPIRY, MIN_PACKET_SIZE,
};

/// The broker's configuration: the file format of `hmq.config` (JSON, camelCase keys) and the
/// effective, validated value. Every key is optional; a missing key takes its default.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default,
    expecting = "a JSON object of hmq.config keys"
)]
pub struct Config {
    // --- hmq's keys ---
    /// hmq's worker pool size (`-w`). Accepted for compatibility with hmq and not used: the
    /// broker runs on tokio, sized by `workerThreads`. Default: unset.
    pub worker_num: Option<u32>,
    /// Address the MQTT TCP listener binds: an IP address, or a host name. Default "0.0.0.0"
    /// (all IPv4 interfaces).
    pub host: String,
    /// Port of the MQTT TCP listener, a number or a decimal string; 0 binds an ephemeral port.
    /// Default 1883.
    pub port: Port,
    /// The inter-broker listener. Default: host "0.0.0.0", port unset (off).
    #[serde(deserialize_with = "de::cluster")]
    pub cluster: ClusterConfig,
    /// Cluster discovery address (`-r`): where this broker finds its peers, e.g. a headless
    /// Kubernetes Service name. Unset or "" = no discovery. Default unset.
    #[serde(deserialize_with = "de::optional_string")]
    pub router: Option<String>,
    /// Port of the MQTT-over-WebSocket listener (bound on `host`). Unset, null or "" = off.
    /// Default off.
    #[serde(deserialize_with = "port::optional_port::deserialize")]
    #[cfg_attr(feature = "schema", schemars(with = "port::OptionalPortSchema"))]
    pub ws_port: Option<Port>,
    /// URL path of the WebSocket endpoint; must start with "/". Default "/ws".
    pub ws_path: String,
    /// Serve the WebSocket listener over TLS (WSS) with the `tlsInfo` certificate; requires
    /// tlsInfo.certFile and tlsInfo.keyFile. Default false.
    #[serde(rename = "wsTLS")]
    pub ws_tls: bool,
    /// Port of the MQTT-over-TLS listener (bound on `tlsHost`); requires tlsInfo.certFile and
    /// tlsInfo.keyFile. Unset, null or "" = off. Default off.
    #[serde(deserialize_with = "port::optional_port::deserialize")]
    #[cfg_attr(feature = "schema", schemars(with = "port::OptionalPortSchema"))]
    pub tls_port: Option<Port>,
    /// Address the TLS listener binds: an IP address, or a host name. Default "0.0.0.0".
    pub tls_host: String,
    /// Certificate, key and client verification for the TLS listener and WSS.
    #[serde(deserialize_with = "de::tls_info")]
    pub tls_info: TlsInfo,
    /// Enforce the ACL file named by `aclConf`; requires aclConf. Default false (everything
    /// allowed).
    pub acl: bool,
    /// Path of the ACL file (hmq's acl.conf format), read when `acl` is true. Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub acl_conf: Option<PathBuf>,
    /// Port of the HTTP listener serving `/metrics` (Prometheus), `/healthz` and `/readyz`
    /// (bound on `httpHost`). null or "" = off. Default 8080.
    #[serde(deserialize_with = "port::optional_port::deserialize")]
    #[cfg_attr(feature = "schema", schemars(with = "port::OptionalPortSchema"))]
    pub http_port: Option<Port>,
    /// Debug logging (`-d`/`-D`). Default false.
    pub debug: bool,
    /// hmq's Go plugin section. Only null or an empty object is accepted: hmq's Go plugins are
    /// not supported, and a non-empty section is an error rather than silently ignored.
    /// Default unset.
    pub plugins: Option<serde_json::Value>,

    // --- hmq-rs's own keys ---
    /// Tokio worker threads; 0 = one per CPU core. Default 0.
    pub worker_threads: usize,
    /// Seconds a new connection has to send CONNECT (TLS and WebSocket handshakes included)
    /// before it is closed; 1 to 3600. Default 10.
    pub connect_timeout: u64,
    /// Largest MQTT packet accepted, in bytes, fixed header included; larger packets close the
    /// connection. 16 to 268435460. Default 1048576 (1 MiB).
    pub max_packet_size: u32,
    /// Most client connections at once; further connections are refused. 0 = unlimited.
    /// Default 100000.
    pub max_connections: usize,
    /// Outbound QoS 1 and 2 messages in flight (sent, not yet acknowledged) per client; at
    /// least 1. Default 32.
    pub max_inflight: u16,
    /// Messages queued per session behind the in-flight window, online or offline; when full,
    /// new messages for that session are dropped. At least 1. Default 1000.
    pub max_queued_messages: usize,
    /// Inbound QoS 2 messages awaiting PUBREL per client; at least 1. Default 1000.
    pub max_awaiting_rel: usize,
    /// Longest topic name or filter, in bytes; 1 to 65535. Default 65535.
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter; at least 1. Default 128.
    pub max_topic_levels: usize,
    /// Most subscriptions per client; 0 = unlimited. Default 10000.
    pub max_subscriptions_per_client: usize,
    /// Most retained messages kept by the broker; 0 = unlimited. Default 1000000.
    pub max_retained_messages: usize,
    /// Most sessions, online and offline together; 0 = unlimited. Default 1000000.
    pub max_sessions: usize,
    /// Seconds an offline persistent session (clean session false) is kept; 0 = never
    /// expires; at most 4294967295. Default 7200 (2 hours).
    pub session_expiry: u64,
    /// Queue QoS 0 messages for offline persistent sessions, as well as QoS 1 and 2. Default
    /// false (as Mosquitto).
    pub queue_qos0_offline: bool,
    /// Accept clients that send no user name (and, with `tlsInfo.useIdentityAsUsername`, no
    /// certificate identity). Default true (as hmq). False requires `passwordFile` or
    /// `tlsInfo.useIdentityAsUsername`.
    pub allow_anonymous: bool,
    /// Password file: one `user:hash` line per user, written by `hmq passwd`. Clients that send
    /// a user name must match an entry. Default unset (user names are not checked).
    #[serde(deserialize_with = "de::optional_path")]
    pub password_file: Option<PathBuf>,
    /// Expect a PROXY protocol (v1 or v2) header on every TCP and TLS connection and take the
    /// client address from it (for load balancers that speak it). Default false.
    pub proxy_protocol: bool,
    /// On the WebSocket listeners, take the client address from the last `X-Forwarded-For`
    /// entry (set by a trusted reverse proxy). Default false: the peer address is used.
    pub ws_forwarded_for: bool,
    /// Seconds between `$SYS/broker/...` statistics publications; 0 = off. Default 10.
    pub sys_interval: u64,
    /// Address the HTTP listener (`httpPort`) binds: an IP address, or a host name. Default
    /// "0.0.0.0".
    pub http_host: String,
    /// Log format: "text" (default) or "json" (one JSON object per line, for log collectors).
    pub log_format: LogFormat,
    /// On shutdown, clients are disconnected at most this many per second, so that they
    /// reconnect elsewhere without a storm; 0 = all at once. Default 500.
    pub drain_rate: u32,
    /// Seconds a shutdown may take (draining clients included) before the remaining connections
    /// are closed at once and the broker exits; 1 to 3600. Default 25.
    pub shutdown_timeout: u64,
}

/// How log lines are written.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The inter-broker (cluster) listener.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default,
    expecting = "an object of cluster keys"
)]
pub struct ClusterConfig {
    /// Address the cluster listener binds: an IP address, or a host name. Default "0.0.0.0".
    pub host: String,
    /// Port of the cluster listener (`-cp`). Unset, null or "" = off. Default off.
    #[serde(deserialize_with = "port::optional_port::deserialize")]
    #[cfg_attr(feature = "schema", schemars(with = "port::OptionalPortSchema"))]
    pub port: Option<Port>,
    /// This node's name in the cluster: stable across restarts, unique in the cluster. Default
    /// unset = the host name (the pod name under Kubernetes).
    #[serde(deserialize_with = "de::optional_string")]
    pub name: Option<String>,
    /// Static peers, as "host:port" of their cluster listeners (this node's own address may be
    /// listed; it is skipped). Used together with `router` discovery. Default empty.
    pub peers: Vec<String>,
    /// Shared secret every node of the cluster must present on its links, at least 8
    /// characters. The cluster does not start without one (from this key, `secretFile` or the
    /// environment variable `HMQ_CLUSTER_SECRET`). Default unset.
    #[serde(deserialize_with = "de::optional_string")]
    pub secret: Option<String>,
    /// File holding the shared secret (e.g. a mounted Kubernetes Secret); surrounding white
    /// space is ignored. Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub secret_file: Option<PathBuf>,
    /// Also protect the links with mutual TLS, using the `tlsInfo` certificate, key and CA
    /// (every node presents its certificate and checks its peer's against caFile). Default
    /// false.
    pub tls: bool,
    /// Seconds between two DNS resolutions of the `router` discovery address. Default 5.
    pub discovery_interval: u64,
    /// Seconds `/readyz` waits, after start, for the first synchronisation with the peers it
    /// can reach; after that the node is ready even if some peers are down. Default 10.
    pub sync_timeout: u64,
    /// Messages buffered for one unreachable or slow peer before newer ones are dropped
    /// (and counted). Default 10000.
    pub max_peer_queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            host: "0.0.0.0".to_owned(),
            port: None,
            name: None,
            peers: Vec::new(),
            secret: None,
            secret_file: None,
            tls: false,
            discovery_interval: 5,
            sync_timeout: 10,
            max_peer_queue: 10_000,
        }
    }
}

/// TLS material for the TLS listener and WSS. Holds file paths only, never their contents.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default,
    expecting = "an object with verify, caFile, certFile and keyFile"
)]
pub struct TlsInfo {
    /// Require clients to present a certificate signed by `caFile` (mutual TLS), on the TLS
    /// listener and on WSS; requires caFile. Default false.
    pub verify: bool,
    /// PEM file of the CA that signs client certificates. Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the server certificate chain. Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the server private key. Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub key_file: Option<PathBuf>,
    /// With `verify`, use the client certificate's identity (the first DNS or e-mail subject
    /// alternative name, else the subject common name) as the client's user name for
    /// authentication and the ACL, like Mosquitto's `use_identity_as_username`. Default false.
    pub use_identity_as_username: bool,
}

impl Default for Config {
    /// The embedded defaults: an MQTT broker on 0.0.0.0:1883 and nothing else.
    fn default() -> Self {
        Config {
            worker_num: None,
            host: "0.0.0.0".to_owned(),
            port: Port(1883),
            cluster: ClusterConfig::default(),
            router: None,
            ws_port: None,
            ws_path: "/ws".to_owned(),
            ws_tls: false,
            tls_port: None,
            tls_host: "0.0.0.0".to_owned(),
            tls_info: TlsInfo::default(),
            acl: false,
            acl_conf: None,
            http_port: Some(Port(8080)),
            debug: false,
            plugins: None,
            worker_threads: 0,
            connect_timeout: 10,
            max_packet_size: 1_048_576,
            max_connections: 100_000,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_awaiting_rel: 1000,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            max_subscriptions_per_client: 10_000,
            max_retained_messages: 1_000_000,
            max_sessions: 1_000_000,
            session_expiry: 7200,
            queue_qos0_offline: false,
            allow_anonymous: true,
            password_file: None,
            proxy_protocol: false,
            ws_forwarded_for: false,
            sys_interval: 10,
            http_host: "0.0.0.0".to_owned(),
            log_format: LogFormat::Text,
            drain_rate: 500,
            shutdown_timeout: 25,
        }
    }
}

impl Config {
    /// Parses and validates the text of an hmq.config file. `origin` is the file name used in
    /// errors; every error carries the line and the key where they can be known.
    pub fn from_json(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = Self::parse_json(text, origin)?;
        config
            .validate()
            .map_err(|err| err.located_in(text, origin))?;
        Ok(config)
    }

    /// Parses without validating: the command line applies its flags on top before
    /// validation, so a flag can fix a file value.
    pub fn parse_json(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // Editors on Windows may save a byte order mark, which serde_json refuses.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(ConfigError {
                line: Some(1),
                ..ConfigError::in_origin(origin, "the file is empty: write {} for the defaults")
            });
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let de::File(config) = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|err| ConfigError::from_serde(err, origin))?;
        deserializer
            .end()
            .map_err(|err| ConfigError::from_json_error(&err, None, origin))?;
        Ok(config)
    }

    /// Checks the rules that serde cannot (ranges, addresses, keys that require others).
    /// Errors name the key; they have no origin or line (`from_json` adds them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::check(self)
    }

    /// Pretty JSON of the effective config, with the same keys as the file (for
    /// `hmq --print-config`); `from_json` reads it back to the same value.
    pub fn to_json_pretty(&self) -> String {
        // Cannot fail for values read from JSON (all map keys are strings, paths are UTF-8);
        // a path built elsewhere from non-UTF-8 bytes is the only way, reported in the output.
        serde_json::to_string_pretty(self).unwrap_or_else(|err| {
            serde_json::json!({ "error": format!("cannot print the configuration: {err}") })
                .to_string()
        })
    }

    /// One-line notices for keys that are accepted but have no effect, for main to log.
    pub fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        if let Some(workers) = self.worker_num {
            notices.push(format!(
                "workerNum ({workers}) is accepted for compatibility with hmq and not used: \
                 set workerThreads to size the runtime"
            ));
        }
        if self.plugins.as_ref().is_some_and(|p| !p.is_null()) {
            notices.push(
                "plugins: the empty section is ignored (hmq's Go plugins are not supported)"
                    .to_owned(),
            );
        }
        notices
    }

    /// The cluster discovery address, if discovery is on (`router` set and not empty).
    pub fn router_address(&self) -> Option<&str> {
        self.router.as_deref().filter(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The hmq.config example from hmq's README (ports as strings).
    const SEED_EXAMPLE: &str = r#"{
    "workerNum": 4096,
    "port": "1883",
    "host": "0.0.0.0",
    "cluster": {
        "host": "0.0.0.0",
        "port": "1993"
    },
    "router": "127.0.0.1:9888",
    "wsPort": "1888",
    "wsPath": "/ws",
    "wsTLS": true,
    "tlsPort": "8883",
    "tlsHost": "0.0.0.0",
    "tlsInfo": {
        "verify": true,
        "caFile": "tls/ca/cacert.pem",
        "certFile": "tls/server/cert.pem",
        "keyFile": "tls/server/key.pem"
    },
    "acl":true,
    "aclConf":"conf/acl.conf"
}"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_json(text, "hmq.config")
    }

    #[test]
    fn seed_example_parses() {
        let config = parse(SEED_EXAMPLE).unwrap();
        let expected = Config {
            worker_num: Some(4096),
            host: "0.0.0.0".into(),
            port: Port(1883),
            cluster: ClusterConfig {
                host: "0.0.0.0".into(),
                port: Some(Port(1993)),
                ..ClusterConfig::default()
            },
            router: Some("127.0.0.1:9888".into()),
            ws_port: Some(Port(1888)),
            ws_path: "/ws".into(),
            ws_tls: true,
            tls_port: Some(Port(8883)),
            tls_host: "0.0.0.0".into(),
            tls_info: TlsInfo {
                verify: true,
                ca_file: Some("tls/ca/cacert.pem".into()),
                cert_file: Some("tls/server/cert.pem".into()),
                key_file: Some("tls/server/key.pem".into()),
                use_identity_as_username: false,
            },
            acl: true,
            acl_conf: Some("conf/acl.conf".into()),
            ..Config::default()
        };
        assert_eq!(config, expected);
        assert_eq!(config.router_address(), Some("127.0.0.1:9888"));
    }

    #[test]
    fn ports_as_numbers_strings_empty_and_null() {
        let config = parse(
            r#"{"port": 1884, "cluster": {"port": 1993}, "wsPort": 0, "tlsPort": null,
                "httpPort": "8080"}"#,
        )
        .unwrap();
        assert_eq!(config.port, Port(1884));
        assert_eq!(config.cluster.port, Some(Port(1993)));
        assert_eq!(config.ws_port, Some(Port(0)));
        assert_eq!(config.tls_port, None);
        assert_eq!(config.http_port, Some(Port(8080)));

        let off = parse(
            r#"{"cluster": {"port": ""}, "wsPort": "", "tlsPort": "", "httpPort": null,
                "router": "", "aclConf": "", "tlsInfo": {"caFile": "", "certFile": null}}"#,
        )
        .unwrap();
        assert_eq!(
            off,
            Config {
                http_port: None,
                ..Config::default()
            }
        );
        assert_eq!(off.router_address(), None);
    }

    #[test]
    fn defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.validate(), Ok(()));
        assert_eq!((config.host.as_str(), config.port), ("0.0.0.0", Port(1883)));
        assert_eq!(
            config.cluster,
            ClusterConfig {
                host: "0.0.0.0".into(),
                port: None,
                name: None,
                peers: vec![],
                secret: None,
                secret_file: None,
                tls: false,
                discovery_interval: 5,
                sync_timeout: 10,
                max_peer_queue: 10_000,
            }
        );
        assert_eq!(
            (config.ws_port, config.ws_path.as_str(), config.ws_tls),
            (None, "/ws", false)
        );
        assert_eq!(
            (config.tls_port, config.tls_host.as_str()),
            (None, "0.0.0.0")
        );
        assert_eq!(config.tls_info, TlsInfo::default());
        assert_eq!(
            (config.acl, config.acl_conf.as_deref()),
            (false, None::<&Path>)
        );
        assert_eq!(
            (config.http_port, config.http_host.as_str()),
            (Some(Port(8080)), "0.0.0.0")
        );
        assert_eq!((config.debug, config.worker_num), (false, None));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!((config.drain_rate, config.shutdown_timeout), (500, 25));
        assert_eq!(config.worker_threads, 0);
        assert_eq!(config.connect_timeout, 10);
        assert_eq!(config.max_packet_size, 1_048_576);
        assert_eq!(config.max_connections, 100_000);
        assert_eq!(config.max_inflight, 32);
        assert_eq!(config.max_queued_messages, 1000);
        assert_eq!(config.max_awaiting_rel, 1000);
        assert_eq!(config.max_topic_length, 65_535);
        assert_eq!(config.max_topic_levels, 128);
        assert_eq!(config.max_subscriptions_per_client, 10_000);
        assert_eq!(config.max_retained_messages, 1_000_000);
        assert_eq!(config.max_sessions, 1_000_000);
        assert_eq!(config.session_expiry, 7200);
        assert!(!config.queue_qos0_offline);
        assert!(config.notices().is_empty());
    }

    #[test]
    fn accepts_limit_boundaries() {
        let config = parse(
            r#"{"connectTimeout": 1, "maxPacketSize": 16, "maxInflight": 1, "maxQueuedMessages": 1,
                "maxAwaitingRel": 1, "maxTopicLength": 1, "maxTopicLevels": 1, "sessionExpiry": 0,
                "maxConnections": 0, "maxSubscriptionsPerClient": 0, "maxRetainedMessages": 0,
                "maxSessions": 0, "workerThreads": 2, "queueQos0Offline": true, "debug": true,
                "plugins": {}}"#,
        )
        .unwrap();
        assert_eq!(config.max_packet_size, 16);
        assert!(config.queue_qos0_offline && config.debug);
        let config = parse(
            r#"{"connectTimeout": 3600, "maxPacketSize": 268435460, "maxInflight": 65535,
                "maxTopicLength": 65535, "sessionExpiry": 4294967295, "plugins": null}"#,
        )
        .unwrap();
        assert_eq!(config.max_packet_size, MAX_PACKET_SIZE_LIMIT);
        assert_eq!(config.plugins, None);
    }

    /// (file text, line, key, part of the message). Each text is one key per line.
    const ERRORS: &[(&str, usize, &str, &str)] = &[
        // Unknown keys, at the top and nested.
        (
            "{\n  \"port\": 1883,\n  \"wsPrt\": 1888\n}",
            3,
            "wsPrt",
            "unknown key (did you mean `wsPort`?)",
        ),
        (
            "{\n  \"tlsInfo\": {\n    \"certFle\": \"a.pem\"\n  }\n}",
            3,
            "tlsInfo.certFle",
            "unknown key (did you mean `certFile`?)",
        ),
        (
            "{\n  \"cluster\": {\"hots\": \"a\"}\n}",
            2,
            "cluster.hots",
            "unknown key",
        ),
        (
            "{\n\n  \"wsTls\": true\n}",
            3,
            "wsTls",
            "did you mean `wsTLS`?",
        ),
        // Wrong types.
        (
            "{\n  \"tlsInfo\": {\n    \"certFile\": 5\n  }\n}",
            3,
            "tlsInfo.certFile",
            "expected a string",
        ),
        ("{\n  \"acl\": \"yes\"\n}", 2, "acl", "expected a boolean"),
        ("{\n  \"host\": 0\n}", 2, "host", "expected a string"),
        (
            "{\n  \"port\": true\n}",
            2,
            "port",
            "expected a port number",
        ),
        ("{\n  \"port\": \"\"\n}", 2, "port", "found an empty string"),
        (
            "{\n  \"wsPort\": \"ws\"\n}",
            2,
            "wsPort",
            "expected a port number (decimal digits)",
        ),
        (
            "{\n  \"cluster\": {\n    \"port\": 1.5\n  }\n}",
            3,
            "cluster.port",
            "expected a port number",
        ),
        (
            "{\n  \"workerNum\": -1\n}",
            2,
            "workerNum",
            "expected an integer between 0 and 4294967295",
        ),
        (
            "{\n  \"maxConnections\": \"10\"\n}",
            2,
            "maxConnections",
            "expected a non-negative integer",
        ),
        (
            "{\n  \"cluster\": \"0.0.0.0:1993\"\n}",
            2,
            "cluster",
            "expected an object of cluster keys",
        ),
        (
            "{\n  \"port\": 1,\n  \"port\": 2\n}",
            3,
            "port",
            "appears twice",
        ),
        // Out of range.
        (
            "{\n  \"port\": 65536\n}",
            2,
            "port",
            "must be between 0 and 65535",
        ),
        (
            "{\n  \"tlsPort\": \"70000\"\n}",
            2,
            "tlsPort",
            "must be between 0 and 65535",
        ),
        (
            "{\n  \"maxInflight\": 70000\n}",
            2,
            "maxInflight",
            "expected an integer between 0 and 65535",
        ),
        (
            "{\n  \"debug\": false,\n  \"maxPacketSize\": 15\n}",
            3,
            "maxPacketSize",
            "must be between 16 and 268435460",
        ),
        (
            "{\n  \"maxPacketSize\": 268435461\n}",
            2,
            "maxPacketSize",
            "must be between 16 and 268435460",
        ),
        (
            "{\n  \"connectTimeout\": 0\n}",
            2,
            "connectTimeout",
            "must be between 1 and 3600",
        ),
        (
            "{\n  \"maxInflight\": 0\n}",
            2,
            "maxInflight",
            "must be at least 1",
        ),
        (
            "{\n  \"maxQueuedMessages\": 0\n}",
            2,
            "maxQueuedMessages",
            "must be at least 1",
        ),
        (
            "{\n  \"maxAwaitingRel\": 0\n}",
            2,
            "maxAwaitingRel",
            "must be at least 1",
        ),
        (
            "{\n  \"maxTopicLength\": 0\n}",
            2,
            "maxTopicLength",
            "must be between 1 and 65535",
        ),
        (
            "{\n  \"maxTopicLength\": 65536\n}",
            2,
            "maxTopicLength",
            "must be between 1 and 65535",
        ),
        (
            "{\n  \"maxTopicLevels\": 0\n}",
            2,
            "maxTopicLevels",
            "must be at least 1",
        ),
        (
            "{\n  \"sessionExpiry\": 4294967296\n}",
            2,
            "sessionExpiry",
            "must be between 0 and 4294967295",
        ),
        // Addresses and paths.
        (
            "{\n  \"port\": 1,\n  \"host\": \"0.0.0.0:1883\"\n}",
            3,
            "host",
            "includes a port",
        ),
        (
            "{\n  \"tlsHost\": \"\"\n}",
            2,
            "tlsHost",
            "must not be empty",
        ),
        (
            "{\n  \"host\": \"1.2.3\",\n  \"cluster\": {\n    \"host\": \"bad host\"\n  }\n}",
            2,
            "host",
            "not a valid IP address",
        ),
        (
            "{\n  \"port\": 1,\n  \"cluster\": {\n    \"port\": 2,\n    \"host\": \"bad host\"\n  }\n}",
            5,
            "cluster.host",
            "' ' is not allowed",
        ),
        (
            "{\n  \"wsPort\": 1888,\n  \"wsPath\": \"ws\"\n}",
            3,
            "wsPath",
            "must start with '/'",
        ),
        // Keys that require others.
        (
            "{\n  \"port\": 1883,\n  \"tlsPort\": 8883\n}",
            3,
            "tlsPort",
            "requires tlsInfo.certFile",
        ),
        (
            "{\n  \"tlsPort\": 8883,\n  \"tlsInfo\": {\"certFile\": \"c.pem\"}\n}",
            2,
            "tlsPort",
            "requires tlsInfo.keyFile",
        ),
        (
            "{\n  \"wsPort\": 1888,\n  \"wsTLS\": true\n}",
            3,
            "wsTLS",
            "requires tlsInfo.certFile",
        ),
        (
            "{\n  \"wsTLS\": true,\n  \"tlsInfo\": {\"certFile\": \"c.pem\", \"keyFile\": \"\"}\n}",
            2,
            "wsTLS",
            "requires tlsInfo.keyFile",
        ),
        (
            "{\n  \"tlsInfo\": {\n    \"verify\": true,\n    \"caFile\": \"\"\n  }\n}",
            3,
            "tlsInfo.verify",
            "requires tlsInfo.caFile",
        ),
        ("{\n  \"acl\": true\n}", 2, "acl", "requires aclConf"),
        (
            "{\n  \"acl\": true,\n  \"aclConf\": null\n}",
            2,
            "acl",
            "requires aclConf",
        ),
        (
            "{\n  \"plugins\": {\n    \"auth\": \"authhttp\"\n  }\n}",
            2,
            "plugins",
            "Go plugins are not supported",
        ),
        // Syntax.
        (" \n", 1, "", "the file is empty"),
        ("{\n  \"port\": 1883,\n}", 3, "", "trailing comma"),
        ("{\n  \"port\": 1883\n}\n{}", 4, "", "trailing characters"),
        ("[\n]", 1, "", "expected a JSON object of hmq.config keys"),
        (
            "{\n  \"tlsInfo\": [\n    true\n  ]\n}",
            2,
            "tlsInfo",
            "expected an object with verify",
        ),
    ];

    #[test]
    fn errors_name_file_line_and_key() {
        for (text, line, key, message) in ERRORS {
            let Err(err) = parse(text) else {
                panic!("accepted: {text}")
            };
            let shown = err.to_string();
            assert_eq!(err.origin, "hmq.config", "{shown}");
            assert_eq!(err.line, Some(*line), "{shown}\n{text}");
            assert!(shown.starts_with(&format!("hmq.config:{line}:")), "{shown}");
            if key.is_empty() {
                assert_eq!(err.key, None, "{shown}");
            } else {
                assert_eq!(err.key.as_deref(), Some(*key), "{shown}");
                assert!(shown.contains(&format!(": {key}: ")), "{shown}");
            }
            assert!(err.message.contains(message), "{shown}\nwanted: {message}");
        }
    }

    #[test]
    fn to_json_pretty_round_trips() {
        let seed = parse(SEED_EXAMPLE).unwrap();
        let mut everything = seed.clone();
        everything.http_port = Some(Port(8080));
        everything.debug = true;
        everything.plugins = Some(serde_json::json!({}));
        everything.max_inflight = 7;
        everything.session_expiry = 0;
        everything.queue_qos0_offline = true;
        for config in [Config::default(), seed, everything] {
            let json = config.to_json_pretty();
            assert_eq!(parse(&json).unwrap(), config, "{json}");
        }
        let json = Config::default().to_json_pretty();
        for key in [
            "\"workerNum\": null",
            "\"port\": 1883",
            "\"wsTLS\": false",
            "\"caFile\": null",
            "\"maxPacketSize\": 1048576",
        ] {
            assert!(json.contains(key), "{key} missing from {json}");
        }
    }

    #[test]
    fn cluster_keys() {
        let config = parse(
            r#"{"cluster": {"port": 1993, "name": "hmq-0", "peers": ["10.0.0.2:1993", "[::1]:1993",
                "hmq-1.hmq-headless:1993"], "secretFile": "/etc/hmq/cluster/secret",
                "discoveryInterval": 2, "syncTimeout": 0, "maxPeerQueue": 5},
                "router": "hmq-headless.default.svc.cluster.local"}"#,
        )
        .unwrap();
        assert_eq!(config.cluster.name.as_deref(), Some("hmq-0"));
        assert_eq!(config.cluster.peers.len(), 3);
        assert_eq!(config.cluster.max_peer_queue, 5);
        let cases = [
            (
                r#"{"cluster": {"peers": ["10.0.0.2"]}}"#,
                "cluster.peers",
                "host:port",
            ),
            (
                r#"{"cluster": {"port": 1, "peers": ["a b:1"]}}"#,
                "cluster.peers",
                "not allowed",
            ),
            (
                r#"{"cluster": {"port": 1, "peers": ["h:0"]}}"#,
                "cluster.peers",
                "1 to 65535",
            ),
            (r#"{"router": "peers"}"#, "cluster.port", "is required"),
            (
                r#"{"cluster": {"peers": ["h:1"]}}"#,
                "cluster.port",
                "is required",
            ),
            (
                r#"{"cluster": {"name": "a b"}}"#,
                "cluster.name",
                "without spaces",
            ),
            (
                r#"{"cluster": {"secret": "longenough", "secretFile": "/s"}}"#,
                "cluster.secret",
                "not both",
            ),
            (
                r#"{"cluster": {"secret": "short"}}"#,
                "cluster.secret",
                "at least 8",
            ),
            (
                r#"{"cluster": {"tls": true}}"#,
                "cluster.tls",
                "tlsInfo.certFile",
            ),
            (
                r#"{"cluster": {"discoveryInterval": 0}}"#,
                "cluster.discoveryInterval",
                "between",
            ),
            (
                r#"{"cluster": {"maxPeerQueue": 0}}"#,
                "cluster.maxPeerQueue",
                "between",
            ),
            (
                r#"{"cluster": {"bogus": 1}}"#,
                "cluster.bogus",
                "unknown key",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse(text).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.contains(key) && shown.contains(message),
                "{text}: {shown}"
            );
        }
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert_eq!(parse("\u{feff}{\"port\": 1}").unwrap().port, Port(1));
    }

    #[test]
    fn notices_for_accepted_unused_keys() {
        let config = parse(r#"{"workerNum": 4096, "plugins": {}}"#).unwrap();
        let notices = config.notices();
        assert_eq!(notices.len(), 2);
        assert!(notices[0].starts_with("workerNum (4096) is accepted"));
        assert!(notices[1].starts_with("plugins:"));
    }

    #[test]
    fn validate_alone_names_the_key_without_origin() {
        let config = Config {
            acl: true,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.to_string(), "acl: requires aclConf (the ACL file)");
    }
}
