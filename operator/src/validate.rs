//! Validation: renders `hmq.config` and `acl.conf` from a spec and checks them with the broker's
//! own parsers (`Config::from_json`, `Acl::parse`, `PasswordFile::parse`), so a spec the broker
//! would refuse is reported with the broker's message before any pod restarts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hmq_model::config::{Config, ConfigError};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::build::paths;
use crate::crd::{AclAccess, AclPermission, AclSpec, AclType, MqttClusterSpec};
use crate::schema::{MANAGED_CLUSTER_KEYS, MANAGED_KEYS, MANAGED_PERSISTENCE_KEYS};

/// Why a spec cannot be applied: the field and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// The spec field (or Secret) at fault, e.g. `spec.acl.rules[2]`.
    pub field: String,
    /// What is wrong, in the broker's words where the broker's parser found it.
    pub message: String,
}

impl InvalidSpec {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The broker files rendered from a valid spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The configuration as the broker parsed it.
    pub config: Config,
    /// The text of `hmq.config`.
    pub hmq_config: String,
    /// The text of `acl.conf`.
    pub acl_conf: String,
    /// Hash of `hmq.config`: the pods roll when it changes. `acl.conf` is not in it, because
    /// the broker reloads the ACL file without a restart.
    pub config_hash: String,
}

/// The DNS name of the headless Service, which the brokers resolve to find their peers.
pub fn headless_dns(name: &str, namespace: &str) -> String {
    format!("{name}-headless.{namespace}.svc.cluster.local")
}

/// Renders and validates the broker files of cluster `name` in `namespace`.
pub fn render(
    name: &str,
    namespace: &str,
    spec: &MqttClusterSpec,
) -> Result<Rendered, InvalidSpec> {
    let acl_conf = render_acl(spec.acl.as_ref())?;
    if let Some(acl) = &spec.acl {
        check_acl(acl, &acl_conf)?;
    }
    let merged = merge_config(name, namespace, spec)?;
    let text = serde_json::to_string_pretty(&Value::Object(merged))
        .map_err(|err| InvalidSpec::new("spec.config", err.to_string()))?;
    let config = Config::from_json(&text, "hmq.config").map_err(config_error)?;
    check_reachable(&config)?;
    let hmq_config = config.to_json_pretty() + "\n";
    let config_hash = hash(hmq_config.as_bytes());
    Ok(Rendered {
        config,
        hmq_config,
        acl_conf,
        config_hash,
    })
}

/// Every pod gets the same hmq.config, and is reached through its pod IP (Services, probes,
/// peers): a listener bound to one address (127.0.0.1, or some pod's IP) would leave every pod
/// unreachable or unready, crash-looping at best. Only the wildcard addresses are accepted.
fn check_reachable(config: &Config) -> Result<(), InvalidSpec> {
    let listeners = [
        ("host", &config.host, "the MQTT and WebSocket listeners"),
        ("tlsHost", &config.tls_host, "the MQTT/TLS listener"),
        (
            "httpHost",
            &config.http_host,
            "the metrics and probe listener",
        ),
        ("cluster.host", &config.cluster.host, "the cluster listener"),
    ];
    for (key, host, what) in listeners {
        let wildcard = matches!(host.as_str(), "0.0.0.0" | "::");
        if !wildcard {
            return Err(InvalidSpec::new(
                format!("spec.config.{key}"),
                format!(
                    "{host:?} would bind {what} to one address, and every pod gets the same \
                     configuration: the pods would be unreachable through their IPs (Services, \
                     probes, peers). Leave it unset (0.0.0.0) or use \"::\""
                ),
            ));
        }
    }
    Ok(())
}

/// The user's keys, checked for keys the operator owns, plus the keys the operator sets.
fn merge_config(
    name: &str,
    namespace: &str,
    spec: &MqttClusterSpec,
) -> Result<Map<String, Value>, InvalidSpec> {
    let mut config = spec.config.0.clone();
    for (key, instead) in MANAGED_KEYS {
        if config.contains_key(*key) {
            return Err(InvalidSpec::new(
                format!("spec.config.{key}"),
                format!("is set by the operator: use {instead}"),
            ));
        }
    }
    let mut cluster = match config.remove("cluster") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(cluster)) => cluster,
        Some(_) => return Err(InvalidSpec::new("spec.config.cluster", "must be an object")),
    };
    for (key, instead) in MANAGED_CLUSTER_KEYS {
        if cluster.contains_key(*key) {
            return Err(InvalidSpec::new(
                format!("spec.config.cluster.{key}"),
                format!("is set by the operator: {instead}"),
            ));
        }
    }
    let mut persistence = match config.remove("persistence") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(InvalidSpec::new(
                "spec.config.persistence",
                "must be an object",
            ));
        }
    };
    for (key, instead) in MANAGED_PERSISTENCE_KEYS {
        if persistence.contains_key(*key) {
            return Err(InvalidSpec::new(
                format!("spec.config.persistence.{key}"),
                format!("is set by the operator: {instead}"),
            ));
        }
    }
    if spec.persistence.enabled {
        persistence.insert("dir".into(), json!(paths::DATA_DIR));
        if !persistence.contains_key("maxDiskBytes") {
            // A full volume would fail every write: refuse (and count) new durable messages
            // a little before that instead.
            let bytes = quantity_bytes(&spec.persistence.size).ok_or_else(|| {
                InvalidSpec::new(
                    "spec.persistence.size",
                    format!(
                        "{:?} is not a size (e.g. 512Mi, 10Gi, 1G)",
                        spec.persistence.size
                    ),
                )
            })?;
            persistence.insert("maxDiskBytes".into(), json!(bytes / 10 * 9));
        }
    }
    if !persistence.is_empty() {
        config.insert("persistence".into(), Value::Object(persistence));
    }
    cluster.insert("port".into(), json!(paths::CLUSTER_PORT));
    cluster.insert("secretFile".into(), json!(paths::CLUSTER_SECRET_FILE));
    config.insert("cluster".into(), Value::Object(cluster));
    config.insert("router".into(), json!(headless_dns(name, namespace)));

    let listeners = &spec.listeners;
    config.insert("port".into(), json!(listeners.mqtt.port));
    if let Some(mqtts) = &listeners.mqtts {
        config.insert("tlsPort".into(), json!(mqtts.port));
    }
    match (&listeners.websocket, &listeners.websocket_tls) {
        (Some(_), Some(_)) => {
            return Err(InvalidSpec::new(
                "spec.listeners",
                "the broker serves one WebSocket listener: set websocket or websocketTls, not both",
            ));
        }
        (Some(ws), None) => {
            config.insert("wsPort".into(), json!(ws.port));
        }
        (None, Some(wss)) => {
            config.insert("wsPort".into(), json!(wss.port));
            config.insert("wsTLS".into(), json!(true));
        }
        (None, None) => {}
    }
    let wants_tls = listeners.mqtts.is_some() || listeners.websocket_tls.is_some();
    let cluster_tls = config
        .get("cluster")
        .and_then(|c| c.get("tls"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match &spec.tls {
        Some(tls) => {
            let mut info = Map::new();
            info.insert("certFile".into(), json!(paths::TLS_CERT));
            info.insert("keyFile".into(), json!(paths::TLS_KEY));
            if tls.require_client_certificate || cluster_tls {
                info.insert("caFile".into(), json!(paths::TLS_CA));
            }
            info.insert("verify".into(), json!(tls.require_client_certificate));
            info.insert(
                "useIdentityAsUsername".into(),
                json!(tls.use_identity_as_username),
            );
            config.insert("tlsInfo".into(), Value::Object(info));
        }
        None if wants_tls => {
            return Err(InvalidSpec::new(
                "spec.tls",
                "is required by listeners.mqtts and listeners.websocketTls (the certificate)",
            ));
        }
        None if cluster_tls => {
            return Err(InvalidSpec::new(
                "spec.tls",
                "is required by config.cluster.tls (the certificate and ca.crt)",
            ));
        }
        None => {}
    }
    if spec.acl.is_some() {
        config.insert("acl".into(), json!(true));
        config.insert("aclConf".into(), json!(paths::ACL_FILE));
    }
    config.insert("allowAnonymous".into(), json!(spec.auth.allow_anonymous));
    if spec.auth.password_secret_name.is_some() {
        config.insert(
            "passwordFile".into(),
            json!(paths::password_file(&spec.auth.password_key)),
        );
    }
    config.insert("httpPort".into(), json!(spec.metrics.port));
    Ok(config)
}

/// Bytes in a Kubernetes quantity of the forms a volume size takes: a number with an optional
/// binary (Ki, Mi, Gi, Ti, Pi) or decimal (k, M, G, T, P) suffix.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    n.checked_mul(unit).filter(|b| *b > 0)
}

/// A broker config error, named as the spec field the user can fix.
fn config_error(err: ConfigError) -> InvalidSpec {
    let field = match err.key.as_deref() {
        Some(key) => {
            let top = key.split('.').next().unwrap_or(key);
            match MANAGED_KEYS.iter().find(|(k, _)| *k == top) {
                Some((_, instead)) if !instead.starts_with("the operator") => (*instead).to_owned(),
                _ => format!("spec.config.{key}"),
            }
        }
        None => "spec.config".to_owned(),
    };
    InvalidSpec::new(field, err.message)
}

/// The first line of the rendered rules (the header comment); rule `i` is on line `i + 2`.
const ACL_HEADER: &str = "# Rendered by hmq-operator from spec.acl.rules.";

/// Renders `acl.conf`: the rules one per line, or the raw text as given.
pub fn render_acl(acl: Option<&AclSpec>) -> Result<String, InvalidSpec> {
    let Some(acl) = acl else {
        return Ok("# spec.acl is not set: the ACL is off (everything is allowed).\n".to_owned());
    };
    match (&acl.rules, &acl.raw) {
        (Some(_), Some(_)) | (None, None) => Err(InvalidSpec::new(
            "spec.acl",
            "set exactly one of acl.rules and acl.raw",
        )),
        (None, Some(raw)) => {
            let mut text = raw.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Ok(text)
        }
        (Some(rules), None) => {
            let mut text = format!("{ACL_HEADER}\n");
            for rule in rules {
                let permission = match rule.permission {
                    AclPermission::Allow => "allow",
                    AclPermission::Deny => "deny",
                };
                let kind = match rule.kind {
                    AclType::Clientid => "clientid",
                    AclType::Username => "username",
                    AclType::Ip => "ip",
                };
                let access = match rule.access {
                    AclAccess::Publish => 1,
                    AclAccess::Subscribe => 2,
                    AclAccess::PublishSubscribe => 3,
                };
                let topics: Vec<&str> = rule.topics.iter().map(|t| t.0.as_str()).collect();
                let _ = writeln!(
                    text,
                    "{permission} {kind} {} {access} {}",
                    rule.value,
                    topics.join(",")
                );
            }
            Ok(text)
        }
    }
}

/// Parses the rendered ACL with the broker's parser; errors name the rule or the raw line.
fn check_acl(acl: &AclSpec, text: &str) -> Result<(), InvalidSpec> {
    // A rule value or topic with a space would shift the fields of its line; the schema
    // forbids it, but objects rendered offline have not been through the API server.
    if let Some(rules) = &acl.rules {
        for (i, rule) in rules.iter().enumerate() {
            let bad_value = rule.value.is_empty() || rule.value.contains(char::is_whitespace);
            let bad_topic = rule.topics.is_empty()
                || rule.topics.iter().any(|t| {
                    t.0.is_empty() || t.0.contains(|c: char| c.is_whitespace() || c == ',')
                });
            if bad_value || bad_topic {
                return Err(InvalidSpec::new(
                    format!("spec.acl.rules[{i}]"),
                    "value and topics must be non-empty, without spaces (and topics without commas)",
                ));
            }
        }
    }
    hmq_model::acl::Acl::parse(text, "acl.conf").map_err(|err| {
        let field = if acl.rules.is_some() {
            format!("spec.acl.rules[{}]", err.line.saturating_sub(2))
        } else {
            format!("spec.acl.raw (line {})", err.line)
        };
        InvalidSpec::new(field, err.kind.to_string())
    })?;
    Ok(())
}

/// Short hex SHA-256, for annotations and the status.
pub fn hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The Secrets a cluster refers to, as read from the API server (`None`: not found).
#[derive(Debug, Clone, Default)]
pub struct ReferencedSecrets {
    /// `spec.tls.secretName`.
    pub tls: Option<Secret>,
    /// `spec.auth.passwordSecretName`.
    pub auth: Option<Secret>,
    /// The cluster secret (`spec.cluster.secretName`, or the one the operator created).
    pub cluster: Option<Secret>,
}

/// A referenced Secret that stops the cluster from being applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// The Secret does not exist (yet): wait for it.
    #[error("Secret {0} not found")]
    Missing(String),
    /// The Secret exists, but the broker could not use it.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
}

fn data(secret: &Secret) -> BTreeMap<String, ByteString> {
    let mut data = secret.data.clone().unwrap_or_default();
    for (key, value) in secret.string_data.clone().unwrap_or_default() {
        data.insert(key, ByteString(value.into_bytes()));
    }
    data
}

/// Checks that the referenced Secrets exist and hold what the broker needs (the password file
/// parses); returns the hash of what the broker reads only when it starts, which rolls the pods
/// when it changes: the cluster secret. The broker reloads the certificate, key and CA (of the
/// client listeners and of the cluster links) and the password file when their mounted files
/// change, so a cert-manager renewal or a new password restarts nothing.
pub fn check_secrets(
    spec: &MqttClusterSpec,
    cluster_secret: &str,
    secrets: &ReferencedSecrets,
) -> Result<String, SecretProblem> {
    let mut hasher = Sha256::new();
    if let Some(tls) = &spec.tls {
        let secret = secrets
            .tls
            .as_ref()
            .ok_or_else(|| SecretProblem::Missing(tls.secret_name.clone()))?;
        let data = data(secret);
        let cluster_tls = spec
            .config
            .0
            .get("cluster")
            .and_then(|c| c.get("tls"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut needed = vec!["tls.crt", "tls.key"];
        if tls.require_client_certificate || cluster_tls {
            needed.push("ca.crt");
        }
        for key in needed {
            if data.get(key).is_none_or(|v| v.0.is_empty()) {
                return Err(InvalidSpec::new(
                    "spec.tls.secretName",
                    format!("Secret {} has no {key}", tls.secret_name),
                )
                .into());
            }
        }
        // Reloaded by the broker when the mounted files change: not hashed.
    }
    if let Some(name) = &spec.auth.password_secret_name {
        let secret = secrets
            .auth
            .as_ref()
            .ok_or_else(|| SecretProblem::Missing(name.clone()))?;
        let data = data(secret);
        let key = &spec.auth.password_key;
        let Some(file) = data.get(key) else {
            return Err(InvalidSpec::new(
                "spec.auth.passwordSecretName",
                format!("Secret {name} has no key {key}"),
            )
            .into());
        };
        let text = String::from_utf8(file.0.clone()).map_err(|_| {
            InvalidSpec::new(
                "spec.auth.passwordSecretName",
                format!("Secret {name}: {key} is not UTF-8 text"),
            )
        })?;
        hmq_model::auth::PasswordFile::parse(&text, key).map_err(|err| {
            InvalidSpec::new(
                "spec.auth.passwordSecretName",
                format!("Secret {name}: {err}"),
            )
        })?;
        // Reloaded by the broker when the mounted file changes: not hashed.
    }
    let secret = secrets
        .cluster
        .as_ref()
        .ok_or_else(|| SecretProblem::Missing(cluster_secret.to_owned()))?;
    let data = data(secret);
    let usable = data
        .get(paths::CLUSTER_SECRET_KEY)
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .is_some_and(|s| s.trim().len() >= 8);
    if !usable {
        return Err(InvalidSpec::new(
            "spec.cluster.secretName",
            format!(
                "Secret {cluster_secret} needs a key {} of at least 8 characters",
                paths::CLUSTER_SECRET_KEY
            ),
        )
        .into());
    }
    hash_data(&mut hasher, "cluster", &data);
    let digest = hasher.finalize();
    Ok(hash(&digest))
}

fn hash_data(hasher: &mut Sha256, role: &str, data: &BTreeMap<String, ByteString>) {
    hasher.update(role.as_bytes());
    for (key, value) in data {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.0.len() as u64).to_le_bytes());
        hasher.update(&value.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta::default(),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn spec(yaml: &str) -> MqttClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const CLUSTER_SECRET: &[(&str, &str)] = &[("secret", "0123456789abcdef")];

    #[test]
    fn listeners_bound_to_one_address_are_refused() {
        for (yaml, field) in [
            ("config: {httpHost: 127.0.0.1}", "spec.config.httpHost"),
            ("config: {host: 10.1.2.3}", "spec.config.host"),
            ("config: {tlsHost: localhost}", "spec.config.tlsHost"),
            (
                "config: {cluster: {host: 127.0.0.1}}",
                "spec.config.cluster.host",
            ),
        ] {
            let problem = render("m", "n", &spec(yaml)).unwrap_err();
            assert_eq!(problem.field, field, "{yaml}");
            assert!(problem.message.contains("unreachable"), "{problem}");
        }
        for yaml in [
            "config: {}",
            "config: {host: 0.0.0.0, httpHost: \"::\"}",
            "config: {cluster: {host: \"::\"}}",
        ] {
            render("m", "n", &spec(yaml)).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        }
    }

    #[test]
    fn secrets_must_exist_and_hold_what_the_broker_reads() {
        let tls = spec("tls: {secretName: t}\nconfig: {cluster: {tls: true}}");
        let mut secrets = ReferencedSecrets {
            cluster: Some(secret(CLUSTER_SECRET)),
            ..ReferencedSecrets::default()
        };
        assert_eq!(
            check_secrets(&tls, "c", &secrets),
            Err(SecretProblem::Missing("t".into()))
        );
        // Links between brokers use mutual TLS: ca.crt is required.
        secrets.tls = Some(secret(&[("tls.crt", "c"), ("tls.key", "k")]));
        let Err(SecretProblem::Invalid(problem)) = check_secrets(&tls, "c", &secrets) else {
            panic!("accepted a TLS Secret without ca.crt")
        };
        assert!(problem.message.contains("has no ca.crt"), "{problem}");
        secrets.tls = Some(secret(&[
            ("tls.crt", "c"),
            ("tls.key", "k"),
            ("ca.crt", "a"),
        ]));
        let first = check_secrets(&tls, "c", &secrets).unwrap();
        secrets.tls = Some(secret(&[
            ("tls.crt", "c2"),
            ("tls.key", "k"),
            ("ca.crt", "a"),
        ]));
        // The broker reloads the certificate, on the cluster links too: a renewal rolls nothing.
        assert_eq!(check_secrets(&tls, "c", &secrets).unwrap(), first);
        // The cluster secret is read only at start: a new one rolls the pods.
        secrets.cluster = Some(secret(&[("secret", "fedcba9876543210")]));
        assert_ne!(check_secrets(&tls, "c", &secrets).unwrap(), first);
        secrets.cluster = Some(secret(CLUSTER_SECRET));

        secrets.cluster = Some(secret(&[("secret", "short")]));
        assert!(matches!(
            check_secrets(&tls, "c", &secrets),
            Err(SecretProblem::Invalid(_))
        ));
    }
}
