//! The ConfigMap with `hmq.config` and `acl.conf`, and the cluster Secret the operator creates.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use super::{metadata, names, paths};
use crate::crd::MqttCluster;
use crate::validate::Rendered;

/// The ConfigMap mounted at `/etc/hmq`.
pub fn config_map(cluster: &MqttCluster, rendered: &Rendered) -> ConfigMap {
    ConfigMap {
        metadata: metadata(cluster, names::config_map(&cluster.name_any())),
        data: Some(BTreeMap::from([
            ("hmq.config".to_owned(), rendered.hmq_config.clone()),
            ("acl.conf".to_owned(), rendered.acl_conf.clone()),
        ])),
        ..ConfigMap::default()
    }
}

/// The cluster Secret, created once with `secret` (the caller's random bytes, hex-encoded) and
/// never updated afterwards, so every broker keeps presenting the same value.
pub fn cluster_secret(cluster: &MqttCluster, secret: &[u8]) -> Secret {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    Secret {
        metadata: metadata(cluster, names::cluster_secret(&cluster.name_any())),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            paths::CLUSTER_SECRET_KEY.to_owned(),
            ByteString(hex.into_bytes()),
        )])),
        ..Secret::default()
    }
}
