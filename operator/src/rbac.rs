//! The operator's RBAC, in one place: the permissions the reconciler, its watches, events and
//! leader election use, and nothing more. `hmq-operator rbac` prints them as YAML for the
//! install manifests and the Helm chart.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One RBAC rule: API groups, resources and verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API groups ("" is the core group).
    pub groups: &'static [&'static str],
    /// Resources (and subresources).
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// The name of the ServiceAccount, ClusterRole and bindings.
pub const NAME: &str = "hmq-operator";

/// Cluster-wide permissions: the operator watches MqttClusters in every namespace and applies
/// their objects next to them.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        groups: &["hmq.io"],
        resources: &["mqttclusters"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        groups: &["hmq.io"],
        resources: &["mqttclusters/status"],
        verbs: &["get", "patch"],
    },
    // Applied with server-side apply (create for the first apply).
    Rule {
        groups: &[""],
        resources: &["configmaps", "services"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Rule {
        groups: &["apps"],
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    // Deleted when the spec no longer asks for them.
    Rule {
        groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Rule {
        groups: &["monitoring.coreos.com"],
        resources: &["servicemonitors"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    // Referenced Secrets are read and watched (a change rolls the pods); the cluster Secret
    // is created once. Secrets are never updated or deleted.
    Rule {
        groups: &[""],
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create"],
    },
    Rule {
        groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Permissions in the operator's own namespace: the leader election Lease.
pub const NAMESPACE_RULES: &[Rule] = &[Rule {
    groups: &["coordination.k8s.io"],
    resources: &["leases"],
    verbs: &["get", "create", "patch"],
}];

fn policy_rules(rules: &[Rule]) -> Vec<PolicyRule> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    rules
        .iter()
        .map(|rule| PolicyRule {
            api_groups: Some(strings(rule.groups)),
            resources: Some(strings(rule.resources)),
            verbs: strings(rule.verbs),
            ..PolicyRule::default()
        })
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(
            [("app.kubernetes.io/name".to_owned(), NAME.to_owned())]
                .into_iter()
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// ServiceAccount, ClusterRole, ClusterRoleBinding, Role and RoleBinding as one YAML stream.
pub fn yaml(namespace: &str) -> Result<String, serde_yaml::Error> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    let documents = [
        serde_yaml::to_string(&ServiceAccount {
            metadata: meta(NAME, Some(namespace)),
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        })?,
        serde_yaml::to_string(&ClusterRole {
            metadata: meta(NAME, None),
            rules: Some(policy_rules(CLUSTER_RULES)),
            ..ClusterRole::default()
        })?,
        serde_yaml::to_string(&ClusterRoleBinding {
            metadata: meta(NAME, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: NAME.into(),
            },
            subjects: Some(vec![subject.clone()]),
        })?,
        serde_yaml::to_string(&Role {
            metadata: meta(NAME, Some(namespace)),
            rules: Some(policy_rules(NAMESPACE_RULES)),
        })?,
        serde_yaml::to_string(&RoleBinding {
            metadata: meta(NAME, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: NAME.into(),
            },
            subjects: Some(vec![subject]),
        })?,
    ];
    Ok(documents.iter().map(|d| format!("---\n{d}")).collect())
}
