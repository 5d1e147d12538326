//! Tests of hmq.config parsing and validation: the seed's example, defaults, every range
//! boundary, and errors that name file, line and key.

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

#[test]
fn persistence_keys() {
    let d = Config::default().persistence;
    assert_eq!(
        (d.dir, d.sync, d.sync_interval_ms, d.max_disk_bytes),
        (None, SyncPolicy::Interval, 10, 0)
    );
    let c = parse(
        r#"{"persistence": {"dir": "/var/lib/hmq", "sync": "always", "syncIntervalMs": 5,
            "maxDiskBytes": 1073741824}}"#,
    )
    .unwrap();
    assert_eq!(
        c.persistence.dir.as_deref(),
        Some(Path::new("/var/lib/hmq"))
    );
    assert_eq!(c.persistence.sync, SyncPolicy::Always);
    assert_eq!(c.persistence.max_disk_bytes, 1 << 30);
    assert_eq!(
        parse(r#"{"persistence": {"dir": ""}}"#)
            .unwrap()
            .persistence
            .dir,
        None
    );
    assert_eq!(
        parse(r#"{"persistence": {"sync": "none"}}"#)
            .unwrap()
            .persistence
            .sync,
        SyncPolicy::None
    );
    for (text, key) in [
        (
            r#"{"persistence": {"sync": "sometimes"}}"#,
            "persistence.sync",
        ),
        (
            r#"{"persistence": {"syncIntervalMs": 0}}"#,
            "persistence.syncIntervalMs",
        ),
        (
            r#"{"persistence": {"syncIntervalMs": 60001}}"#,
            "persistence.syncIntervalMs",
        ),
        (
            r#"{"persistence": {"maxDiskBytes": -1}}"#,
            "persistence.maxDiskBytes",
        ),
        (
            r#"{"persistence": {"syncInterval": 5}}"#,
            "persistence.syncInterval",
        ),
        (r#"{"persistence": "/var/lib/hmq"}"#, "persistence"),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert_eq!(e.line, Some(1), "{text}: {e}");
    }
}
