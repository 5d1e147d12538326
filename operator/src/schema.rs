//! `spec.config`: the broker's `hmq.config` keys in the CRD. The schema is generated from the
//! broker's own `Config` type (so `kubectl explain` documents every key as the broker reads
//! it), minus the keys the operator sets itself; the value is kept as JSON so that a config the
//! broker would refuse still reaches the operator, which reports the broker parser's message.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Top-level hmq.config keys the operator sets from other spec fields, with the field to use.
pub const MANAGED_KEYS: &[(&str, &str)] = &[
    ("port", "spec.listeners.mqtt"),
    ("tlsPort", "spec.listeners.mqtts"),
    ("wsPort", "spec.listeners.websocket or websocketTls"),
    ("wsTLS", "spec.listeners.websocketTls"),
    ("tlsInfo", "spec.tls"),
    ("acl", "spec.acl"),
    ("aclConf", "spec.acl"),
    ("allowAnonymous", "spec.auth.allowAnonymous"),
    ("passwordFile", "spec.auth.passwordSecretName"),
    ("httpPort", "spec.metrics.port"),
    ("router", "the operator (the headless Service)"),
    // Accepted by the broker for compatibility with hmq's files only.
    (
        "workerNum",
        "nothing (hmq compatibility only; use workerThreads)",
    ),
    ("plugins", "nothing (hmq's Go plugins are not supported)"),
];

/// Keys of the `persistence` section the operator sets.
pub const MANAGED_PERSISTENCE_KEYS: &[(&str, &str)] = &[(
    "dir",
    "spec.persistence (the operator mounts a volume per pod)",
)];

/// Keys of the `cluster` section the operator sets.
pub const MANAGED_CLUSTER_KEYS: &[(&str, &str)] = &[
    ("port", "the operator (port 1993)"),
    ("name", "the operator (the pod name)"),
    ("peers", "the operator (the headless Service)"),
    ("secret", "spec.cluster.secretName"),
    ("secretFile", "spec.cluster.secretName"),
];

/// Ranges of `spec.config` keys, so the API server refuses an out-of-range value at
/// `kubectl apply` time. The broker's validation stays the authority (the operator runs it
/// before applying anything); a test checks each range against it.
pub const RANGES: &[(&str, i64, Option<i64>)] = &[
    (
        "connectTimeout",
        1,
        Some(hmq_model::config::MAX_CONNECT_TIMEOUT as i64),
    ),
    (
        "maxPacketSize",
        hmq_model::config::MIN_PACKET_SIZE as i64,
        Some(hmq_model::config::MAX_PACKET_SIZE_LIMIT as i64),
    ),
    ("maxInflight", 1, Some(65_535)),
    ("maxQueuedMessages", 1, None),
    ("maxAwaitingRel", 1, None),
    ("maxTopicLength", 1, Some(65_535)),
    ("maxTopicLevels", 1, None),
    (
        "sessionExpiry",
        0,
        Some(hmq_model::config::MAX_SESSION_EXPIRY as i64),
    ),
    ("shutdownTimeout", 1, Some(3600)),
    ("cluster.discoveryInterval", 1, Some(3600)),
    ("cluster.syncTimeout", 0, Some(600)),
    ("cluster.maxPeerQueue", 1, Some(10_000_000)),
];

fn add_ranges(object: &mut Map<String, Value>) {
    for (path, min, max) in RANGES {
        let (section, key) = match path.split_once('.') {
            Some((section, key)) => (Some(section), key),
            None => (None, *path),
        };
        let properties = match section {
            None => object.get_mut("properties"),
            Some(section) => object
                .get_mut("properties")
                .and_then(|p| p.get_mut(section))
                .and_then(|s| s.get_mut("properties")),
        };
        if let Some(Value::Object(property)) = properties.and_then(|p| p.get_mut(key)) {
            property.insert("minimum".into(), Value::from(*min));
            match max {
                Some(max) => property.insert("maximum".into(), Value::from(*max)),
                None => property.remove("maximum"),
            };
        }
    }
    if let Some(Value::Object(ws_path)) = object
        .get_mut("properties")
        .and_then(|p| p.get_mut("wsPath"))
    {
        ws_path.insert("pattern".into(), Value::from(r"^/[^\s?#]*$"));
    }
}

/// The broker settings of `spec.config`, as the JSON object the user wrote.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct BrokerConfig(pub Map<String, Value>);

impl JsonSchema for BrokerConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BrokerConfig".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<hmq_model::config::Config>();
        if let Some(object) = schema.as_object_mut() {
            remove_properties(object, MANAGED_KEYS);
            if let Some(Value::Object(cluster)) = object
                .get_mut("properties")
                .and_then(|p| p.get_mut("cluster"))
            {
                remove_properties(cluster, MANAGED_CLUSTER_KEYS);
            }
            add_ranges(object);
            object.insert(
                "description".to_owned(),
                Value::String(
                    "The broker's own settings: hmq.config keys (camelCase), with the broker's \
                     defaults. Listener ports, TLS, ACL and password files, the HTTP port and the \
                     cluster wiring come from the other fields of the spec."
                        .to_owned(),
                ),
            );
        }
        let mut value = schema.to_value();
        strip_defaults(&mut value);
        Schema::try_from(value).unwrap_or_default()
    }
}

fn remove_properties(object: &mut Map<String, Value>, keys: &[(&str, &str)]) {
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (key, _) in keys {
            properties.remove(*key);
        }
    }
    object.remove("additionalProperties");
}

/// The broker applies its own defaults; defaults in the CRD would copy every key into each
/// stored object (and pin today's defaults there), so the descriptions state them instead.
fn strip_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("default");
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                properties.values_mut().for_each(strip_defaults);
            }
            for (key, child) in map.iter_mut() {
                if key != "properties" {
                    strip_defaults(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_documents_broker_keys_but_not_managed_ones() {
        // As kube generates CRD schemas: OpenAPI 3, subschemas inlined.
        let generator = schemars::generate::SchemaSettings::openapi3()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let schema = generator.into_root_schema_for::<BrokerConfig>().to_value();
        let properties = &schema["properties"];
        for key in [
            "maxPacketSize",
            "sessionExpiry",
            "logFormat",
            "shutdownTimeout",
        ] {
            assert!(properties.get(key).is_some(), "{key} missing");
        }
        for (key, _) in MANAGED_KEYS {
            assert!(properties.get(*key).is_none(), "{key} present");
        }
        let cluster = &properties["cluster"]["properties"];
        assert!(cluster.get("discoveryInterval").is_some());
        assert!(cluster.get("secretFile").is_none());
        assert!(!schema.to_string().contains("\"default\""));
        assert_eq!(properties["maxPacketSize"]["minimum"], 16);
        assert_eq!(cluster["syncTimeout"]["maximum"], 600);
    }

    /// Each schema range is the broker's: its bounds parse, one past them does not.
    #[test]
    fn ranges_agree_with_the_broker() {
        let parse = |path: &str, value: i64| {
            let text = match path.split_once('.') {
                Some((section, key)) => format!(r#"{{"{section}": {{"{key}": {value}}}}}"#),
                None => format!(r#"{{"{path}": {value}}}"#),
            };
            hmq_model::config::Config::from_json(&text, "hmq.config").is_ok()
        };
        for (path, min, max) in RANGES {
            assert!(parse(path, *min), "{path} = {min} refused");
            assert!(
                *min == 0 || !parse(path, min - 1),
                "{path} = {} accepted",
                min - 1
            );
            if let Some(max) = max {
                assert!(parse(path, *max), "{path} = {max} refused");
                assert!(!parse(path, max + 1), "{path} = {} accepted", max + 1);
            }
        }
    }
}
