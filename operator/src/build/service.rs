//! The two Services: the headless one the brokers find their peers through, and the one
//! clients connect to.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{metadata, names, paths, selector_labels};
use crate::crd::{Listener, MqttCluster, ServiceType};

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The client listeners as (port name, listener), in a fixed order.
pub(super) fn client_listeners(cluster: &MqttCluster) -> Vec<(&'static str, &Listener)> {
    let l = &cluster.spec.listeners;
    let mut out = vec![("mqtt", &l.mqtt)];
    if let Some(x) = &l.mqtts {
        out.push(("mqtts", x));
    }
    if let Some(x) = &l.websocket {
        out.push(("ws", x));
    }
    if let Some(x) = &l.websocket_tls {
        out.push(("wss", x));
    }
    out
}

/// The headless Service: one DNS record per pod, ready or not (a starting broker must be found
/// by its peers before it is ready), with the cluster and HTTP ports.
pub fn headless_service(cluster: &MqttCluster) -> Service {
    let mut meta = metadata(cluster, names::headless(&cluster.name_any()));
    meta.labels
        .get_or_insert_with(Default::default)
        .insert("hmq.io/service".into(), "headless".into());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![
                port("cluster", i32::from(paths::CLUSTER_PORT)),
                port("http", cluster.spec.metrics.port),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: the listeners the spec asks for, of the spec's type.
pub fn client_service(cluster: &MqttCluster) -> Service {
    let spec = &cluster.spec.listeners.service;
    let mut meta = metadata(cluster, names::main(&cluster.name_any()));
    if !spec.annotations.is_empty() {
        meta.annotations = Some(spec.annotations.clone());
    }
    let node_ports = spec.kind != ServiceType::ClusterIP;
    let ports = client_listeners(cluster)
        .into_iter()
        .map(|(name, listener)| ServicePort {
            node_port: listener.node_port.filter(|_| node_ports),
            ..port(name, listener.port)
        })
        .collect();
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(spec.kind.as_str().to_owned()),
            selector: Some(selector_labels(cluster)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
