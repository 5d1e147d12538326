//! `Port`, a TCP port as hmq.config writes it (a number or a decimal string), and how the
//! optional port keys read `""` (hmq's way of leaving a listener off).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A TCP port. In hmq.config it is a number (`1883`) or a decimal string (`"1883"`, as hmq
/// writes it); it is always written back as a number. 0 is legal: the listener binds an
/// ephemeral port (tests use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(pub u16);

impl Port {
    /// The port number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<u16> for Port {
    fn from(port: u16) -> Self {
        Port(port)
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> Self {
        port.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a text is not a port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The text is empty.
    #[error("expected a port number, found an empty string")]
    Empty,
    /// The text is not made of decimal digits only.
    #[error("expected a port number (decimal digits), found {0:?}")]
    NotANumber(String),
    /// The number is above 65535.
    #[error("{0} is out of range: must be between 0 and 65535")]
    OutOfRange(String),
}

impl FromStr for Port {
    type Err = PortError;

    /// Decimal digits only: no sign, no spaces (`u16::from_str` would take `+1883`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(PortError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PortError::NotANumber(text.to_owned()));
        }
        // All digits, so the only way to fail is overflow.
        text.parse::<u16>()
            .map(Port)
            .map_err(|_| PortError::OutOfRange(text.to_owned()))
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

const EXPECTING_PORT: &str = "a port number (0-65535), as a number or a decimal string";

struct PortVisitor;

impl<'de> Visitor<'de> for PortVisitor {
    type Value = Port;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTING_PORT)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Port, E> {
        u16::try_from(value)
            .map(Port)
            .map_err(|_| E::custom(PortError::OutOfRange(value.to_string())))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Port, E> {
        u16::try_from(value)
            .map(Port)
            .map_err(|_| E::custom(PortError::OutOfRange(value.to_string())))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Port, E> {
        value.parse().map_err(E::custom)
    }
}

/// `Option<Port>` where JSON `null` and `""` (hmq's way of leaving a listener off) mean `None`.
pub(crate) mod optional_port {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Port>, D::Error> {
        deserializer.deserialize_option(OptionalPortVisitor)
    }

    struct OptionalPortVisitor;

    impl<'de> Visitor<'de> for OptionalPortVisitor {
        type Value = Option<Port>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{EXPECTING_PORT}, or \"\" or null for off")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            PortVisitor.visit_u64(value).map(Some)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            PortVisitor.visit_i64(value).map(Some)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            if value.is_empty() {
                Ok(None)
            } else {
                PortVisitor.visit_str(value).map(Some)
            }
        }
    }
}

/// JSON Schema of a port: an integer from 0 to 65535, or the same as a decimal string.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        port_schema(false)
    }
}

/// JSON Schema of an optional port key (`tlsPort`, `wsPort`, `httpPort`, `cluster.port`): a
/// port, or `null` or `""` for off. Only used through `#[schemars(with)]`.
#[cfg(feature = "schema")]
pub(crate) struct OptionalPortSchema;

#[cfg(feature = "schema")]
impl schemars::JsonSchema for OptionalPortSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OptionalPort".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        port_schema(true)
    }
}

#[cfg(feature = "schema")]
fn port_schema(optional: bool) -> schemars::Schema {
    // "^[0-9]+$" as the parser: digits only, no sign or spaces; "" means off for optional keys.
    let digits = if optional { "^[0-9]*$" } else { "^[0-9]+$" };
    let mut any_of = vec![
        serde_json::json!({ "type": "integer", "minimum": 0, "maximum": 65535 }),
        serde_json::json!({ "type": "string", "pattern": digits, "maxLength": 5 }),
    ];
    if optional {
        any_of.push(serde_json::json!({ "type": "null" }));
    }
    let mut schema = serde_json::Map::new();
    schema.insert("anyOf".to_owned(), serde_json::Value::Array(any_of));
    schema.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_text_only() {
        let cases: &[(&str, Result<Port, PortError>)] = &[
            ("1883", Ok(Port(1883))),
            ("0", Ok(Port(0))),
            ("65535", Ok(Port(65535))),
            ("001883", Ok(Port(1883))),
            ("65536", Err(PortError::OutOfRange("65536".into()))),
            (
                "99999999999999999999999",
                Err(PortError::OutOfRange("99999999999999999999999".into())),
            ),
            ("", Err(PortError::Empty)),
            ("+1883", Err(PortError::NotANumber("+1883".into()))),
            (" 1883", Err(PortError::NotANumber(" 1883".into()))),
            ("-1", Err(PortError::NotANumber("-1".into()))),
            ("18a3", Err(PortError::NotANumber("18a3".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(&text.parse::<Port>(), expected, "input {text:?}");
        }
    }

    #[test]
    fn deserialises_numbers_and_strings_serialises_numbers() {
        let cases: &[(&str, Option<u16>)] = &[
            ("1883", Some(1883)),
            ("\"1883\"", Some(1883)),
            ("0", Some(0)),
            ("65535", Some(65535)),
            ("65536", None),
            ("-1", None),
            ("1.5", None),
            ("\"\"", None),
            ("null", None),
            ("true", None),
        ];
        for (json, expected) in cases {
            let parsed = serde_json::from_str::<Port>(json).ok().map(Port::get);
            assert_eq!(parsed, *expected, "input {json}");
        }
        assert_eq!(serde_json::to_string(&Port(1883)).unwrap(), "1883");
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "optional_port::deserialize")]
        port: Option<Port>,
        #[serde(default, deserialize_with = "crate::config::de::optional_path")]
        file: Option<std::path::PathBuf>,
    }

    #[test]
    fn optional_keys_treat_empty_and_null_as_unset() {
        let cases: &[(&str, Option<u16>, Option<&str>)] = &[
            (r#"{}"#, None, None),
            (r#"{"port": null, "file": null}"#, None, None),
            (r#"{"port": "", "file": ""}"#, None, None),
            (
                r#"{"port": "8883", "file": "a.pem"}"#,
                Some(8883),
                Some("a.pem"),
            ),
            (r#"{"port": 0}"#, Some(0), None),
        ];
        for (json, port, file) in cases {
            let holder: Holder = serde_json::from_str(json).unwrap();
            assert_eq!(holder.port.map(Port::get), *port, "input {json}");
            assert_eq!(holder.file.as_deref(), file.map(std::path::Path::new));
        }
        let err = serde_json::from_str::<Holder>(r#"{"port": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("expected a port number"), "{err}");
        let err = serde_json::from_str::<Holder>(r#"{"port": 70000}"#).unwrap_err();
        assert!(
            err.to_string().contains("must be between 0 and 65535"),
            "{err}"
        );
    }

    #[cfg(feature = "schema")]
    #[test]
    fn schema_accepts_numbers_and_digit_strings() {
        let port = serde_json::to_value(schemars::schema_for!(Port)).unwrap();
        let text = port.to_string();
        assert!(text.contains(r#""maximum":65535"#), "{text}");
        assert!(text.contains(r#""pattern":"^[0-9]+$""#), "{text}");
        let optional = serde_json::to_value(schemars::schema_for!(OptionalPortSchema)).unwrap();
        assert!(optional.to_string().contains(r#""type":"null""#));
    }
}
