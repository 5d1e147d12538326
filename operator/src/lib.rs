//! hmq-operator: runs hmq MQTT broker clusters on Kubernetes.
//!
//! The pipeline for one `MqttCluster` is validate → build → apply → status:
//! [`validate`] renders and checks `hmq.config` and `acl.conf` with the broker's own parsers,
//! [`build`] turns the spec into Kubernetes objects (pure functions, tested from YAML), and
//! [`reconcile`] applies them with server-side apply and writes the status. [`controller`] runs
//! the reconciler with its watches, metrics, probes and leader election.

pub mod build;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod schema;
pub mod validate;

pub use crd::{MqttCluster, MqttClusterSpec, MqttClusterStatus};

/// The field manager of every server-side apply, and the name of the operator in events.
pub const FIELD_MANAGER: &str = "hmq-operator";

/// The version of the operator, which is also the default broker image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
