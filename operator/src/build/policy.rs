//! The PodDisruptionBudget and the Prometheus Operator ServiceMonitor.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{metadata, names, selector_labels};
use crate::crd::MqttCluster;

/// The PodDisruptionBudget, unless disabled: at most one broker down at a time by default.
pub fn pod_disruption_budget(cluster: &MqttCluster) -> Option<PodDisruptionBudget> {
    let spec = &cluster.spec.pod_disruption_budget;
    if !spec.enabled {
        return None;
    }
    let max_unavailable = match (&spec.max_unavailable, &spec.min_available) {
        (None, None) => Some(IntOrString::Int(1)),
        (max, _) => max.clone(),
    };
    Some(PodDisruptionBudget {
        metadata: metadata(cluster, names::main(&cluster.name_any())),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable,
            min_available: spec.min_available.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// `monitoring.coreos.com/v1` ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ))
}

/// The ServiceMonitor, when the spec asks for one: scrapes `/metrics` of every broker through
/// the headless Service.
pub fn service_monitor(cluster: &MqttCluster) -> Option<DynamicObject> {
    if !cluster.spec.metrics.service_monitor {
        return None;
    }
    let mut meta = metadata(cluster, names::main(&cluster.name_any()));
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.extend(cluster.spec.metrics.service_monitor_labels.clone());
    let mut selector = selector_labels(cluster);
    selector.insert("hmq.io/service".into(), "headless".into());
    let mut object = DynamicObject::new(
        &names::main(&cluster.name_any()),
        &service_monitor_resource(),
    );
    object.metadata = meta;
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": selector },
            "endpoints": [{ "port": "http", "path": "/metrics" }],
        }
    });
    Some(object)
}
