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
    /// Durable state: where persistent sessions, their queued messages and retained messages
    /// are kept across restarts. Default: in memory.
    #[serde(deserialize_with = "de::persistence")]
    pub persistence: PersistenceConfig,
}

/// When the durable store makes a change safe from a crash.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// fsync before every acknowledgement that depends on it (PUBACK, PUBREC, PUBCOMP,
    /// SUBACK): what the broker acknowledged survives a crash. Commits are grouped, so many
    /// waiting publishers share one fsync.
    Always,
    /// Group commit every `syncIntervalMs`: a crash loses at most that window of changes.
    #[default]
    Interval,
    /// Written to the operating system every `syncIntervalMs`, never fsynced: survives a
    /// broker crash, not a machine crash.
    None,
}

/// The `persistence` section.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default,
    expecting = "an object of persistence keys"
)]
pub struct PersistenceConfig {
    /// Directory of the durable store. Unset or "" = state in memory only (lost at every
    /// restart, as Mosquitto without `persistence true`). Default unset.
    #[serde(deserialize_with = "de::optional_path")]
    pub dir: Option<PathBuf>,
    /// "always", "interval" or "none" (see the documentation of each). Default "interval".
    pub sync: SyncPolicy,
    /// Milliseconds between group commits for "interval" and "none"; also the most an "always"
    /// commit waits to gather more changes (never: it commits as soon as the previous one is
    /// done). 1 to 60000. Default 10.
    pub sync_interval_ms: u64,
    /// Disk space the store may use, in bytes; when it is reached, new messages for persistent
    /// sessions are refused (dropped, counted, logged) until space is freed. 0 = no limit.
    /// Default 0.
    pub max_disk_bytes: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            dir: None,
            sync: SyncPolicy::Interval,
            sync_interval_ms: 10,
            max_disk_bytes: 0,
        }
    }
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
            persistence: PersistenceConfig::default(),
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
mod tests;
