//! How hmq.config's values are read where serde's defaults are too loose or too strict:
//! `""` means "not set" (hmq writes it for unset strings and files), and sections must be
//! JSON objects (serde's derived structs would also take an array, filling keys by position).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::{ClusterConfig, Config, PersistenceConfig, TlsInfo};

/// `Option<String>` where `null` and `""` mean `None`.
pub(crate) fn optional_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|s| !s.is_empty()))
}

/// `Option<PathBuf>` where `null` and `""` mean `None`.
pub(crate) fn optional_path<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    optional_string(deserializer).map(|s| s.map(PathBuf::from))
}

/// The `cluster` section, as an object only.
pub(crate) fn cluster<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ClusterConfig, D::Error> {
    object(deserializer, "an object of cluster keys")
}

/// The `tlsInfo` section, as an object only.
pub(crate) fn tls_info<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TlsInfo, D::Error> {
    object(
        deserializer,
        "an object with verify, caFile, certFile and keyFile",
    )
}

/// The `persistence` section, as an object only.
pub(crate) fn persistence<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<PersistenceConfig, D::Error> {
    object(deserializer, "an object of persistence keys")
}

/// The whole file, which must be one JSON object.
#[derive(Debug)]
pub(crate) struct File(pub(crate) Config);

impl<'de> Deserialize<'de> for File {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(deserializer, "a JSON object of hmq.config keys").map(File)
    }
}

/// Reads `T` from a map only, then lets `T`'s derived code read the keys.
fn object<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T> {
        expecting: &'static str,
        target: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor {
        expecting,
        target: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_must_be_objects() {
        assert!(serde_json::from_str::<File>("{}").is_ok());
        for text in ["[]", "[\"0.0.0.0\"]", "\"x\"", "null", "1"] {
            let err = serde_json::from_str::<File>(text).unwrap_err().to_string();
            assert!(
                err.contains("expected a JSON object of hmq.config keys"),
                "{text}: {err}"
            );
        }
        for text in [
            r#"{"cluster": ["0.0.0.0", "1993"]}"#,
            r#"{"tlsInfo": [true]}"#,
        ] {
            let err = serde_json::from_str::<File>(text).unwrap_err().to_string();
            assert!(err.contains("expected an object"), "{text}: {err}");
        }
    }
}
