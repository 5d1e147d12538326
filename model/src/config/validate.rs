//! The rules a parsed `Config` must satisfy before the broker starts: listen addresses,
//! paths, what TLS and ACL need, and the ranges of the limits. Each error names the key
//! and says what is expected.

use std::net::{IpAddr, SocketAddr};

use super::{Config, ConfigError};

/// Largest MQTT packet: 1 byte of fixed header, 4 bytes of remaining length, and the largest
/// remaining length (268,435,455).
pub const MAX_PACKET_SIZE_LIMIT: u32 = 268_435_455 + 5;
/// Smallest `maxPacketSize` accepted: a CONNECT with a short client id does not fit in less.
pub const MIN_PACKET_SIZE: u32 = 16;
/// Longest `connectTimeout`, in seconds.
pub const MAX_CONNECT_TIMEOUT: u64 = 3600;
/// Longest `sessionExpiry`, in seconds: MQTT 5's 32-bit session expiry interval. Also keeps
/// deadline arithmetic far from overflow.
pub const MAX_SESSION_EXPIRY: u64 = u32::MAX as u64;

pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    check_host("host", &config.host)?;
    check_host("cluster.host", &config.cluster.host)?;
    check_host("tlsHost", &config.tls_host)?;
    check_host("httpHost", &config.http_host)?;
    check_ws_path(&config.ws_path)?;
    check_tls(config)?;
    if config.acl && config.acl_conf.is_none() {
        return Err(ConfigError::for_key(
            "acl",
            "requires aclConf (the ACL file)",
        ));
    }
    check_plugins(config.plugins.as_ref())?;
    check_auth(config)?;
    check_cluster(config)?;
    check_limits(config)
}

fn check_cluster(config: &Config) -> Result<(), ConfigError> {
    let cluster = &config.cluster;
    if let Some(name) = &cluster.name {
        if name.is_empty()
            || name.len() > 253
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::for_key(
                "cluster.name",
                format!("must be 1 to 253 characters without spaces, found {name:?}"),
            ));
        }
    }
    for peer in &cluster.peers {
        check_host_port("cluster.peers", peer)?;
    }
    if let Some(router) = config.router_address() {
        // "name" (the cluster port is used) or "name:port".
        match split_port(router) {
            Some((host, _)) => check_host("router", host)?,
            None => check_host("router", router)?,
        }
    }
    let wants_cluster = config.router_address().is_some() || !cluster.peers.is_empty();
    if wants_cluster && cluster.port.is_none() {
        return Err(ConfigError::for_key(
            "cluster.port",
            "is required when router or cluster.peers is set (the peers connect to it)",
        ));
    }
    if cluster.secret.is_some() && cluster.secret_file.is_some() {
        return Err(ConfigError::for_key(
            "cluster.secret",
            "set cluster.secret or cluster.secretFile, not both",
        ));
    }
    if cluster
        .secret
        .as_deref()
        .is_some_and(|s| s.trim().len() < 8)
    {
        return Err(ConfigError::for_key(
            "cluster.secret",
            "must be at least 8 characters",
        ));
    }
    if cluster.tls {
        let info = &config.tls_info;
        let missing = [
            ("tlsInfo.certFile", info.cert_file.is_none()),
            ("tlsInfo.keyFile", info.key_file.is_none()),
            ("tlsInfo.caFile", info.ca_file.is_none()),
        ];
        if let Some((key, _)) = missing.iter().find(|(_, missing)| *missing) {
            return Err(ConfigError::for_key(
                "cluster.tls",
                format!("requires {key} (mutual TLS between the nodes)"),
            ));
        }
    }
    in_range(
        "cluster.discoveryInterval",
        cluster.discovery_interval,
        1,
        Some(3600),
    )?;
    in_range("cluster.syncTimeout", cluster.sync_timeout, 0, Some(600))?;
    in_range(
        "cluster.maxPeerQueue",
        cluster.max_peer_queue,
        1,
        Some(10_000_000),
    )
}

/// Splits "host:port" (or "[v6]:port") when it ends with a numeric port.
pub fn split_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(':') && !text.starts_with('[') {
        return None;
    }
    Some((host, port))
}

fn check_host_port(key: &str, text: &str) -> Result<(), ConfigError> {
    match split_port(text) {
        Some((_, 0)) | None => Err(ConfigError::for_key(
            key,
            format!("{text:?} must be host:port with a port from 1 to 65535"),
        )),
        Some((host, _)) => check_host(key, host),
    }
}

fn check_auth(config: &Config) -> Result<(), ConfigError> {
    if config.tls_info.use_identity_as_username && !config.tls_info.verify {
        return Err(ConfigError::for_key(
            "tlsInfo.useIdentityAsUsername",
            "requires tlsInfo.verify (client certificates)",
        ));
    }
    if !config.allow_anonymous
        && config.password_file.is_none()
        && !config.tls_info.use_identity_as_username
    {
        return Err(ConfigError::for_key(
            "allowAnonymous",
            "false requires passwordFile or tlsInfo.useIdentityAsUsername, or no client could connect",
        ));
    }
    Ok(())
}

/// An IP address literal or a syntactically valid host name (RFC 1123).
fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    let fail = |message: String| Err(ConfigError::for_key(key, message));
    if host.is_empty() {
        return fail(
            "must not be empty: use an IP address (0.0.0.0 for all interfaces) or a host name"
                .into(),
        );
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<IpAddr>().is_ok() {
            return fail(format!("write the IPv6 address without brackets: {inner}"));
        }
    }
    if host.parse::<SocketAddr>().is_ok()
        || host
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return fail(format!(
            "{host:?} includes a port: give the address only, the port has its own key"
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return fail(format!(
            "{host:?} is not a valid host name: longer than 253 characters"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return fail(format!("{host:?} is not a valid host name: empty label"));
        }
        if label.len() > 63 {
            return fail(format!(
                "{host:?} is not a valid host name: label longer than 63 characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return fail(format!(
                "{host:?} is not an IP address or a valid host name: {bad:?} is not allowed (letters, digits, '-' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(format!(
                "{host:?} is not a valid host name: a label starts or ends with '-'"
            ));
        }
    }
    // "256.1.1.1" or "10.0.0" pass the label rules, but they are mistyped IP addresses.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return fail(format!("{host:?} is not a valid IP address"));
    }
    Ok(())
}

fn check_ws_path(path: &str) -> Result<(), ConfigError> {
    let fail = |message: String| Err(ConfigError::for_key("wsPath", message));
    if !path.starts_with('/') {
        return fail(format!(
            "must start with '/' (e.g. \"/ws\"), found {path:?}"
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#')
    {
        return fail(format!(
            "must be a plain URL path: {bad:?} is not allowed, found {path:?}"
        ));
    }
    Ok(())
}

fn check_tls(config: &Config) -> Result<(), ConfigError> {
    let info = &config.tls_info;
    // Both the TLS listener and WSS serve the tlsInfo certificate.
    let users = [
        ("tlsPort", config.tls_port.is_some()),
        ("wsTLS", config.ws_tls),
    ];
    for (key, on) in users {
        if !on {
            continue;
        }
        if info.cert_file.is_none() {
            return Err(ConfigError::for_key(
                key,
                "requires tlsInfo.certFile (the server certificate)",
            ));
        }
        if info.key_file.is_none() {
            return Err(ConfigError::for_key(
                key,
                "requires tlsInfo.keyFile (the server private key)",
            ));
        }
    }
    if info.verify && info.ca_file.is_none() {
        return Err(ConfigError::for_key(
            "tlsInfo.verify",
            "requires tlsInfo.caFile (the CA that signs client certificates)",
        ));
    }
    Ok(())
}

fn check_plugins(plugins: Option<&serde_json::Value>) -> Result<(), ConfigError> {
    match plugins {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(()),
        Some(_) => Err(ConfigError::for_key(
            "plugins",
            "hmq's Go plugins are not supported: remove the section or leave it empty ({})",
        )),
    }
}

/// `value` must be in `min..=max`; the message gives the range.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: Option<T>,
) -> Result<(), ConfigError> {
    let fits = value >= min && max.as_ref().is_none_or(|max| value <= *max);
    if fits {
        return Ok(());
    }
    let message = match max {
        Some(max) => format!("must be between {min} and {max}, found {value}"),
        None => format!("must be at least {min}, found {value}"),
    };
    Err(ConfigError::for_key(key, message))
}

fn check_limits(config: &Config) -> Result<(), ConfigError> {
    in_range(
        "connectTimeout",
        config.connect_timeout,
        1,
        Some(MAX_CONNECT_TIMEOUT),
    )?;
    in_range(
        "maxPacketSize",
        config.max_packet_size,
        MIN_PACKET_SIZE,
        Some(MAX_PACKET_SIZE_LIMIT),
    )?;
    in_range("maxInflight", config.max_inflight, 1, None)?;
    in_range("maxQueuedMessages", config.max_queued_messages, 1, None)?;
    in_range("maxAwaitingRel", config.max_awaiting_rel, 1, None)?;
    in_range("maxTopicLength", config.max_topic_length, 1, Some(65_535))?;
    in_range("maxTopicLevels", config.max_topic_levels, 1, None)?;
    in_range(
        "sessionExpiry",
        config.session_expiry,
        0,
        Some(MAX_SESSION_EXPIRY),
    )?;
    in_range("shutdownTimeout", config.shutdown_timeout, 1, Some(3600))?;
    in_range(
        "persistence.syncIntervalMs",
        config.persistence.sync_interval_ms,
        1,
        Some(60_000),
    )?;
    if let Some(dir) = &config.persistence.dir {
        if dir.as_os_str().to_string_lossy().contains('\0') {
            return Err(ConfigError::for_key(
                "persistence.dir",
                "must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_rules() {
        let mut c = Config {
            allow_anonymous: false,
            ..Config::default()
        };
        assert_eq!(
            check(&c).unwrap_err().key.as_deref(),
            Some("allowAnonymous")
        );
        c.password_file = Some("passwd".into());
        assert_eq!(check(&c), Ok(()));
        c.password_file = None;
        c.tls_info.use_identity_as_username = true;
        assert_eq!(
            check(&c).unwrap_err().key.as_deref(),
            Some("tlsInfo.useIdentityAsUsername")
        );
        c.tls_info.verify = true;
        c.tls_info.ca_file = Some("ca.pem".into());
        assert_eq!(check(&c), Ok(()));
    }

    #[test]
    fn hosts() {
        let good = [
            "0.0.0.0",
            "127.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "localhost",
            "broker-0.hmq.default.svc.cluster.local",
            "broker-0.hmq.default.svc.cluster.local.",
            "a1",
            "1a.example",
        ];
        for host in good {
            assert_eq!(check_host("host", host), Ok(()), "{host}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("[::1]", "without brackets"),
            ("0.0.0.0:1883", "includes a port"),
            ("localhost:1883", "includes a port"),
            ("256.1.1.1", "not a valid IP address"),
            ("10.0.0", "not a valid IP address"),
            ("my_host", "'_' is not allowed"),
            ("host name", "' ' is not allowed"),
            ("a..b", "empty label"),
            ("-a.b", "starts or ends with '-'"),
            (".", "empty label"),
        ];
        for (host, expected) in bad {
            let err = check_host("tlsHost", host).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("tlsHost"));
            assert!(err.message.contains(expected), "{host:?}: {}", err.message);
        }
        let long_label = "a".repeat(64);
        assert!(
            check_host("host", &long_label)
                .unwrap_err()
                .message
                .contains("63")
        );
        let long_name = vec!["a".repeat(60); 5].join(".");
        assert!(
            check_host("host", &long_name)
                .unwrap_err()
                .message
                .contains("253")
        );
    }

    #[test]
    fn ws_paths() {
        for path in ["/", "/ws", "/mqtt/ws", "/a-b_c.d~e"] {
            assert_eq!(check_ws_path(path), Ok(()), "{path}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must start with '/'"),
            ("ws", "must start with '/'"),
            ("/ws?x=1", "'?' is not allowed"),
            ("/w s", "' ' is not allowed"),
            ("/ws#a", "'#' is not allowed"),
        ];
        for (path, expected) in bad {
            let err = check_ws_path(path).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("wsPath"));
            assert!(err.message.contains(expected), "{path:?}: {}", err.message);
        }
    }

    #[test]
    fn plugins() {
        use serde_json::json;
        assert!(check_plugins(None).is_ok());
        assert!(check_plugins(Some(&json!(null))).is_ok());
        assert!(check_plugins(Some(&json!({}))).is_ok());
        for value in [
            json!({"auth": "authhttp"}),
            json!([]),
            json!("x"),
            json!(true),
        ] {
            let err = check_plugins(Some(&value)).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("plugins"));
            assert!(err.message.contains("not supported"));
        }
    }

    #[test]
    fn ranges() {
        assert!(in_range("k", 5u32, 1, Some(10)).is_ok());
        assert!(in_range("k", 1u32, 1, Some(10)).is_ok());
        assert!(in_range("k", 10u32, 1, Some(10)).is_ok());
        assert_eq!(
            in_range("k", 0u32, 1, Some(10)).unwrap_err().message,
            "must be between 1 and 10, found 0"
        );
        assert_eq!(
            in_range("k", 0u64, 1, None).unwrap_err().message,
            "must be at least 1, found 0"
        );
    }
}
