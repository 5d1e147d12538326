//! Build: pure functions from an `MqttCluster` (and its rendered broker files) to the
//! Kubernetes objects that run it. Nothing here talks to the API server, so every object is
//! tested from YAML fixtures and printed offline by `hmq-operator render`.

mod config;
mod policy;
mod service;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::Resource;

use crate::crd::MqttCluster;
use crate::validate::Rendered;

pub use config::{cluster_secret, config_map};
pub use policy::{pod_disruption_budget, service_monitor, service_monitor_resource};
pub use service::{client_service, headless_service};
pub use statefulset::{claims_differ, stateful_set, termination_grace_seconds};

/// Where things are inside the broker pod, and the ports the operator fixes.
pub mod paths {
    /// The ConfigMap's mount: `hmq.config` and `acl.conf`.
    pub const CONFIG_DIR: &str = "/etc/hmq";
    /// The configuration file, as given to `hmq -c`.
    pub const CONFIG_FILE: &str = "/etc/hmq/hmq.config";
    /// The ACL file.
    pub const ACL_FILE: &str = "/etc/hmq/acl.conf";
    /// The TLS Secret's mount.
    pub const TLS_DIR: &str = "/etc/hmq/tls";
    /// Server certificate chain.
    pub const TLS_CERT: &str = "/etc/hmq/tls/tls.crt";
    /// Server private key.
    pub const TLS_KEY: &str = "/etc/hmq/tls/tls.key";
    /// CA of client (and peer) certificates.
    pub const TLS_CA: &str = "/etc/hmq/tls/ca.crt";
    /// The password Secret's mount.
    pub const AUTH_DIR: &str = "/etc/hmq/auth";
    /// The cluster Secret's mount.
    pub const CLUSTER_DIR: &str = "/etc/hmq/cluster";
    /// The key of the shared secret in the cluster Secret.
    pub const CLUSTER_SECRET_KEY: &str = "secret";
    /// The shared cluster secret file.
    pub const CLUSTER_SECRET_FILE: &str = "/etc/hmq/cluster/secret";
    /// The port of the links between brokers.
    pub const CLUSTER_PORT: u16 = 1993;
    /// The durable state's volume (`spec.persistence`), the broker's `persistence.dir`.
    pub const DATA_DIR: &str = "/var/lib/hmq";

    /// The password file, from its key in the Secret.
    pub fn password_file(key: &str) -> String {
        format!("{AUTH_DIR}/{key}")
    }
}

/// Pod template annotation holding the hash of hmq.config: a new value rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "hmq.io/config-hash";
/// Pod template annotation holding the hash of the referenced Secrets.
pub const SECRETS_HASH_ANNOTATION: &str = "hmq.io/secrets-hash";

/// What the build needs beyond the spec.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The broker files, rendered and validated.
    pub rendered: &'a Rendered,
    /// Hash of the referenced Secrets' data (`None` offline, where they cannot be read).
    pub secrets_hash: Option<&'a str>,
    /// Whether the ServiceMonitor CRD is installed.
    pub service_monitor_crd: bool,
}

/// Every object the operator applies for one cluster.
#[derive(Debug, Clone)]
pub struct Desired {
    /// `hmq.config` and `acl.conf`.
    pub config_map: ConfigMap,
    /// Peer discovery (and per-pod metrics).
    pub headless_service: Service,
    /// What clients connect to.
    pub client_service: Service,
    /// The brokers.
    pub stateful_set: StatefulSet,
    /// Unless disabled.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// When asked for and its CRD exists.
    pub service_monitor: Option<DynamicObject>,
}

/// Builds every object for `cluster`.
pub fn build(cluster: &MqttCluster, inputs: Inputs<'_>) -> Desired {
    Desired {
        config_map: config_map(cluster, inputs.rendered),
        headless_service: headless_service(cluster),
        client_service: client_service(cluster),
        stateful_set: stateful_set(cluster, inputs.rendered, inputs.secrets_hash),
        pod_disruption_budget: pod_disruption_budget(cluster),
        service_monitor: if inputs.service_monitor_crd {
            service_monitor(cluster)
        } else {
            None
        },
    }
}

impl Desired {
    /// The objects as one multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::new();
        let mut push = |value: serde_json::Value| -> Result<(), serde_yaml::Error> {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value)?);
            Ok(())
        };
        push(typed(&self.config_map))?;
        push(typed(&self.headless_service))?;
        push(typed(&self.client_service))?;
        push(typed(&self.stateful_set))?;
        if let Some(pdb) = &self.pod_disruption_budget {
            push(typed(pdb))?;
        }
        if let Some(monitor) = &self.service_monitor {
            push(serde_json::to_value(monitor).unwrap_or_default())?;
        }
        Ok(out)
    }
}

/// A typed object as JSON with its apiVersion and kind (k8s-openapi writes them on serialize).
fn typed<K: serde::Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}

/// The namespace of the cluster ("default" for an object read from a file without one).
pub fn namespace(cluster: &MqttCluster) -> String {
    cluster.namespace().unwrap_or_else(|| "default".to_owned())
}

/// The labels that select the pods of a cluster.
pub fn selector_labels(cluster: &MqttCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "hmq".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.name_any()),
    ])
}

/// The selector labels as a label selector string (for the scale subresource).
pub fn selector_string(cluster: &MqttCluster) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of every object of a cluster.
pub fn labels(cluster: &MqttCluster) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/component".into(), "broker".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::FIELD_MANAGER.into(),
    );
    labels
}

/// Metadata of an owned object: name, namespace, labels and the controller owner reference
/// (absent offline, where the cluster has no uid yet).
pub fn metadata(cluster: &MqttCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(cluster)),
        labels: Some(labels(cluster)),
        owner_references: owner_reference(cluster).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(cluster: &MqttCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

/// Names of the objects of a cluster.
pub mod names {
    /// The ConfigMap.
    pub fn config_map(cluster: &str) -> String {
        format!("{cluster}-config")
    }
    /// The headless Service.
    pub fn headless(cluster: &str) -> String {
        format!("{cluster}-headless")
    }
    /// The client Service, StatefulSet, PodDisruptionBudget and ServiceMonitor.
    pub fn main(cluster: &str) -> String {
        cluster.to_owned()
    }
    /// The cluster Secret the operator creates.
    pub fn cluster_secret(cluster: &str) -> String {
        format!("{cluster}-cluster")
    }
}

/// The name of the cluster Secret in use: the spec's, or the one the operator creates.
pub fn cluster_secret_name(cluster: &MqttCluster) -> String {
    cluster
        .spec
        .cluster
        .secret_name
        .clone()
        .unwrap_or_else(|| names::cluster_secret(&cluster.name_any()))
}

/// Whether the operator creates the cluster Secret (the spec names none).
pub fn creates_cluster_secret(cluster: &MqttCluster) -> bool {
    cluster.spec.cluster.secret_name.is_none()
}

/// The Secrets a cluster mounts: a change to any of them reconciles the cluster.
pub fn referenced_secrets(cluster: &MqttCluster) -> Vec<String> {
    let mut names = vec![cluster_secret_name(cluster)];
    if let Some(tls) = &cluster.spec.tls {
        names.push(tls.secret_name.clone());
    }
    if let Some(secret) = &cluster.spec.auth.password_secret_name {
        names.push(secret.clone());
    }
    names
}

#[cfg(test)]
mod tests;
