//! The `MqttCluster` custom resource (`hmq.io/v1alpha1`): its spec, status and the schema
//! rules the API server checks before the operator ever sees an object.

// clippy reads the repeated `printcolumn(type_ = ...)` arguments of the derive as duplicated
// attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext,
    Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::BrokerConfig;

/// An hmq MQTT broker cluster: a StatefulSet of brokers that find each other through a headless
/// Service, with their configuration, ACL, TLS and password file rendered from this spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hmq.io",
    version = "v1alpha1",
    kind = "MqttCluster",
    namespaced,
    shortname = "mqc",
    status = "MqttClusterStatus",
    derive = "PartialEq",
    doc = "An hmq MQTT broker cluster.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedReplicas"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterSpec {
    /// Number of broker pods. Default 3.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Broker image. Default `ghcr.io/hmq-rs/hmq:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Image pull policy. Default: Kubernetes' (IfNotPresent, or Always for `:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Resources of the broker container. Default: requests of 100m CPU and 128Mi memory, no
    /// limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The broker's own settings: the keys of `hmq.config`, with the broker's defaults. Listener
    /// ports, TLS files, the ACL and password files, the HTTP port and the cluster wiring are set
    /// by the operator from the other fields of this spec and cannot be set here.
    #[serde(default)]
    pub config: BrokerConfig,
    /// Access control list, rendered into `acl.conf`. Unset: every client may publish and
    /// subscribe to everything. The broker reloads it when it changes, without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclSpec>,
    /// Listener ports and the client Service.
    #[serde(default)]
    pub listeners: Listeners,
    /// TLS for the MQTT/TLS and WSS listeners (and, with `cluster.tls`, between brokers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Client authentication.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// The links between brokers.
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// Scheduling and metadata of the broker pods.
    #[serde(default)]
    pub pod: PodOverrides,
    /// The PodDisruptionBudget of the brokers.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Durable state: a volume per broker for its sessions, queues and retained messages.
    #[serde(default)]
    pub persistence: PersistenceSpec,
}

/// A PersistentVolumeClaim per broker pod (`data-<pod>`), mounted at `/var/lib/hmq` and set as
/// the broker's `persistence.dir`: persistent sessions, their queued and in-flight QoS 1/2
/// messages and the retained messages survive a restart of the pod (see the broker's
/// `persistence.*` keys, which `spec.config.persistence` may set, but for `dir`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Give each broker a volume. Default true. False: state in memory (lost with the pod).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Size of each volume. Default 1Gi. The broker refuses new durable messages (counted)
    /// at 90% of it, unless `spec.config.persistence.maxDiskBytes` says otherwise. A
    /// StatefulSet's claim templates cannot change: a new size applies to new clusters.
    #[serde(default = "default_volume_size")]
    pub size: String,
    /// StorageClass of the volumes. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What becomes of the volumes when the MqttCluster is deleted: `Retain` (default: the
    /// data outlives the cluster) or `Delete`.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// What becomes of the volumes of pods removed by a scale-down: `Retain` (default: a pod
    /// that comes back finds its data) or `Delete`. A leaving pod hands its sessions to the
    /// others first either way.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        PersistenceSpec {
            enabled: true,
            size: default_volume_size(),
            storage_class_name: None,
            when_deleted: RetentionPolicy::Retain,
            when_scaled: RetentionPolicy::Retain,
        }
    }
}

fn default_volume_size() -> String {
    "1Gi".into()
}

/// A StatefulSet's PersistentVolumeClaim retention policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    /// Keep the claims.
    #[default]
    Retain,
    /// Delete the claims.
    Delete,
}

impl RetentionPolicy {
    /// The value in the StatefulSet.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

fn default_replicas() -> i32 {
    3
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only if the image is not on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// The ACL: structured rules, or the text of an `acl.conf` file (one of the two).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.rules) != has(self.raw)", "message": "set exactly one of acl.rules and acl.raw" }
]))]
pub struct AclSpec {
    /// Rules, tried from the first to the last; the first that matches the client, the action
    /// and the topic decides. A topic no rule decides is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AclRule>>,
    /// The text of an hmq `acl.conf` file (`allow|deny TYPE VALUE ACCESS TOPICS` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// One ACL rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    /// What the rule decides.
    pub permission: AclPermission,
    /// What the rule matches clients on.
    #[serde(rename = "type")]
    pub kind: AclType,
    /// The client id, user name or IP address (or CIDR network); `*` for any.
    #[schemars(length(min = 1), regex(pattern = r"^\S+$"))]
    pub value: String,
    /// The actions the rule applies to.
    pub access: AclAccess,
    /// MQTT topic filters (`+` and `#` are wildcards; `%c` is the client id, `%u` the user name).
    #[schemars(length(min = 1))]
    pub topics: Vec<AclTopic>,
}

/// A topic filter in an ACL rule: no spaces or commas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct AclTopic(#[schemars(length(min = 1), regex(pattern = r"^[^\s,]+$"))] pub String);

/// allow or deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AclPermission {
    /// Grant.
    Allow,
    /// Refuse.
    Deny,
}

/// What an ACL rule matches clients on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AclType {
    /// The MQTT client id.
    Clientid,
    /// The user name.
    Username,
    /// The client's IP address.
    Ip,
}

/// The actions an ACL rule covers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclAccess {
    /// Publishing (access code 1).
    Publish,
    /// Subscribing and receiving (access code 2).
    Subscribe,
    /// Both (access code 3).
    PublishSubscribe,
}

/// The MQTT listeners and the client Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!(has(self.websocket) && has(self.websocketTls))",
      "message": "the broker serves one WebSocket listener: set websocket or websocketTls, not both" }
]))]
pub struct Listeners {
    /// Plain MQTT (always on). Default port 1883.
    #[serde(default = "default_mqtt")]
    pub mqtt: Listener,
    /// MQTT over TLS; requires `tls`. Off unless set (usually port 8883).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtts: Option<Listener>,
    /// MQTT over WebSocket. Off unless set (usually port 8083).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<Listener>,
    /// MQTT over secure WebSocket (WSS); requires `tls`. Off unless set (usually port 8084).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_tls: Option<Listener>,
    /// The Service clients connect to.
    #[serde(default)]
    pub service: ClientService,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mqtt: default_mqtt(),
            mqtts: None,
            websocket: None,
            websocket_tls: None,
            service: ClientService::default(),
        }
    }
}

fn default_mqtt() -> Listener {
    Listener {
        port: 1883,
        node_port: None,
    }
}

/// One listener: the port of the container and of the client Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// With a NodePort or LoadBalancer Service, the node port (default: chosen by Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
}

/// The client Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientService {
    /// The Service type. Default ClusterIP.
    #[serde(default, rename = "type")]
    pub kind: ServiceType,
    /// Annotations of the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the client Service is exposed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Inside the cluster only.
    #[default]
    ClusterIP,
    /// On a port of every node.
    NodePort,
    /// Through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The certificate of the TLS listeners, from a Secret of type kubernetes.io/tls (for example
/// one cert-manager issues).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!self.useIdentityAsUsername || self.requireClientCertificate",
      "message": "useIdentityAsUsername requires requireClientCertificate" }
]))]
pub struct TlsSpec {
    /// Secret in the same namespace with `tls.crt`, `tls.key` and, for client certificates,
    /// `ca.crt`. The pods roll when it changes.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Require a client certificate signed by the Secret's `ca.crt` (mutual TLS). Default false.
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Use the client certificate's identity as the user name (for the password file and the
    /// ACL). Requires requireClientCertificate. Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// Client authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret in the same namespace holding the password file (`user:hash` lines, written by
    /// `hmq passwd` or `mosquitto_passwd`). Unset: user names and passwords are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_name: Option<String>,
    /// The key of the password file in that Secret. Default `passwordFile`.
    #[serde(default = "default_password_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub password_key: String,
    /// Accept clients that send no user name. Default true. False requires
    /// passwordSecretName, or tls.useIdentityAsUsername.
    #[serde(default = "default_true")]
    pub allow_anonymous: bool,
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec {
            password_secret_name: None,
            password_key: default_password_key(),
            allow_anonymous: true,
        }
    }
}

fn default_password_key() -> String {
    "passwordFile".to_owned()
}

fn default_true() -> bool {
    true
}

/// Prometheus metrics, served with the health probes on the broker's HTTP port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// The broker's HTTP port (`/metrics`, `/healthz`, `/readyz`). Default 8080.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Create a Prometheus Operator ServiceMonitor (only if its CRD is installed). Default
    /// false.
    #[serde(default)]
    pub service_monitor: bool,
    /// Labels of the ServiceMonitor (for a Prometheus' serviceMonitorSelector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_monitor_labels: BTreeMap<String, String>,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            port: default_http_port(),
            service_monitor: false,
            service_monitor_labels: BTreeMap::new(),
        }
    }
}

fn default_http_port() -> i32 {
    8080
}

/// The links between the brokers of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Secret (key `secret`, at least 8 characters) every broker presents on its links. Default:
    /// `<name>-cluster`, created once by the operator with a random value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Metadata and scheduling of the broker pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity. Setting it (or topologySpreadConstraints) replaces the default spread of the
    /// brokers across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints. Default: spread across nodes (`kubernetes.io/hostname`,
    /// ScheduleAnyway) unless affinity is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Fields of the pod security context to override (the default runs as uid 65532,
    /// non-root, with the RuntimeDefault seccomp profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Fields of the broker container's security context to override (the default has a
    /// read-only root filesystem, no privilege escalation and drops all capabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}

/// The PodDisruptionBudget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!(has(self.maxUnavailable) && has(self.minAvailable))",
      "message": "set maxUnavailable or minAvailable, not both" }
]))]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Brokers that may be down at once during voluntary disruptions. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Brokers that must stay up during voluntary disruptions (instead of maxUnavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec {
            enabled: true,
            max_unavailable: None,
            min_available: None,
        }
    }
}

/// What the operator last saw and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Broker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Broker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Broker pods that run the current spec (a rollout is done when this is `spec.replicas`).
    #[serde(default)]
    pub updated_replicas: i32,
    /// Pending, Running, Degraded or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Hash of the hmq.config the pods run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Where clients connect (host:port of the client Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Label selector of the pods (for the scale subresource and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Ready, Progressing, ConfigValid and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The summary state of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Created, not every broker ready yet.
    Pending,
    /// Every broker ready and up to date.
    Running,
    /// Some brokers are not ready, or an object could not be applied.
    Degraded,
    /// The spec is invalid; nothing was changed.
    Invalid,
}
