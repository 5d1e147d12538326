//! Status: the `MqttCluster` status written from what was applied (the StatefulSet the API
//! server returned), or from why nothing was applied. Pure functions of their inputs and the
//! time, so each case is tested without a cluster.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::build;
use crate::crd::{MqttCluster, MqttClusterStatus, Phase};
use crate::validate::{InvalidSpec, Rendered};

/// Condition types.
pub mod types {
    /// Every broker is ready and runs the current spec.
    pub const READY: &str = "Ready";
    /// A rollout or scaling is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// The spec renders into a configuration the broker accepts.
    pub const CONFIG_VALID: &str = "ConfigValid";
    /// Brokers are missing, or the last apply failed.
    pub const DEGRADED: &str = "Degraded";
}

/// What the StatefulSet reports about its pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Pods wanted.
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// Pods at the current revision.
    pub updated: i32,
    /// The StatefulSet controller has seen the latest spec.
    pub observed: bool,
}

impl Rollout {
    /// From the StatefulSet the apply returned.
    pub fn of(sts: &StatefulSet) -> Rollout {
        let desired = sts.spec.replicas.unwrap_or(1);
        let Some(status) = &sts.status else {
            return Rollout {
                desired,
                ..Rollout::default()
            };
        };
        let observed = status.observed_generation >= sts.metadata.generation;
        let same_revision = status.current_revision == status.update_revision;
        Rollout {
            desired,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: if same_revision {
                status.replicas
            } else {
                status.updated_replicas.unwrap_or(0)
            },
            observed,
        }
    }

    fn done(&self) -> bool {
        self.observed && self.updated >= self.desired && self.replicas == self.desired
    }
}

/// Sets condition `type_`, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = message.into();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

fn previous(cluster: &MqttCluster) -> MqttClusterStatus {
    cluster.status.clone().unwrap_or_default()
}

/// Where clients connect: the load balancer's address if it has one, else the Service's DNS
/// name, with the MQTT port.
pub fn endpoint(cluster: &MqttCluster, service: Option<&Service>) -> String {
    let port = cluster.spec.listeners.mqtt.port;
    let external = service
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|ingress| ingress.first())
        .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()));
    match external {
        Some(host) => format!("{host}:{port}"),
        None => format!(
            "{}.{}.svc:{port}",
            cluster.name_any(),
            build::namespace(cluster)
        ),
    }
}

/// The status after a successful apply.
pub fn applied(
    cluster: &MqttCluster,
    rendered: &Rendered,
    rollout: Rollout,
    endpoint: String,
    now: &Time,
) -> MqttClusterStatus {
    let generation = cluster.metadata.generation;
    let mut status = previous(cluster);
    status.observed_generation = generation;
    status.replicas = rollout.replicas;
    status.ready_replicas = rollout.ready;
    status.updated_replicas = rollout.updated;
    status.config_hash = Some(rendered.config_hash.clone());
    status.endpoint = Some(endpoint);
    status.selector = Some(build::selector_string(cluster));
    let c = &mut status.conditions;
    set_condition(
        c,
        types::CONFIG_VALID,
        true,
        "Valid",
        "hmq.config and acl.conf rendered and accepted by the broker's parsers",
        generation,
        now,
    );
    let done = rollout.done();
    let all_ready = rollout.ready >= rollout.desired;
    let (progressing_reason, progressing_message) = if done {
        ("UpToDate", "every broker runs the current spec".to_owned())
    } else if rollout.replicas < rollout.desired {
        (
            "ScalingUp",
            format!("{} of {} brokers exist", rollout.replicas, rollout.desired),
        )
    } else if rollout.replicas > rollout.desired {
        // The StatefulSet removes the highest ordinal first, one at a time; each leaving
        // broker hands its persistent sessions to the others before it exits.
        let leaving = format!(
            "{}-{}",
            build::names::main(&cluster.name_any()),
            rollout.replicas - 1
        );
        (
            "ScalingDown",
            format!(
                "{} brokers, {} wanted: {leaving} hands its persistent sessions to the others, \
                 then exits",
                rollout.replicas, rollout.desired
            ),
        )
    } else {
        (
            "RollingOut",
            format!(
                "{} of {} brokers run the current spec (one pod at a time, each after the \
                 previous one is ready and synced with its peers)",
                rollout.updated, rollout.desired
            ),
        )
    };
    set_condition(
        c,
        types::PROGRESSING,
        !done,
        progressing_reason,
        progressing_message,
        generation,
        now,
    );
    let ready_message = format!("{} of {} brokers ready", rollout.ready, rollout.desired);
    let ready = done && all_ready;
    set_condition(
        c,
        types::READY,
        ready,
        if ready { "AllReady" } else { "NotReady" },
        ready_message.clone(),
        generation,
        now,
    );
    // A rollout makes brokers unready on purpose; missing brokers after it are a problem.
    let degraded = done && !all_ready;
    set_condition(
        c,
        types::DEGRADED,
        degraded,
        if degraded {
            "BrokersNotReady"
        } else {
            "AsExpected"
        },
        if degraded {
            ready_message
        } else {
            "no problems".to_owned()
        },
        generation,
        now,
    );
    status.phase = Some(if ready {
        Phase::Running
    } else if degraded {
        Phase::Degraded
    } else {
        Phase::Pending
    });
    status
}

/// Why a requested ServiceMonitor does not exist.
pub const SERVICE_MONITOR_UNAVAILABLE: &str = "spec.metrics.serviceMonitor is true but the \
     ServiceMonitor CRD (monitoring.coreos.com/v1) is not installed";

/// Records in `status` that the ServiceMonitor the spec asks for cannot be created (its CRD is
/// not installed): `Degraded=True`, reason `ServiceMonitorUnavailable`, unless the brokers
/// themselves are degraded, which is reported first. The phase follows the brokers only.
pub fn service_monitor_unavailable(
    cluster: &MqttCluster,
    status: &mut MqttClusterStatus,
    now: &Time,
) {
    let brokers_degraded = condition(status, types::DEGRADED).is_some_and(|c| c.status == "True");
    if !brokers_degraded {
        set_condition(
            &mut status.conditions,
            types::DEGRADED,
            true,
            "ServiceMonitorUnavailable",
            SERVICE_MONITOR_UNAVAILABLE,
            cluster.metadata.generation,
            now,
        );
    }
}

/// The status of an invalid spec: `ConfigValid=False` with the parser's message; what runs
/// (replicas, config hash, the other conditions) is left as it was.
pub fn invalid(cluster: &MqttCluster, problem: &InvalidSpec, now: &Time) -> MqttClusterStatus {
    let generation = cluster.metadata.generation;
    let mut status = previous(cluster);
    status.observed_generation = generation;
    status.phase = Some(Phase::Invalid);
    status.selector = Some(build::selector_string(cluster));
    set_condition(
        &mut status.conditions,
        types::CONFIG_VALID,
        false,
        "InvalidSpec",
        problem.to_string(),
        generation,
        now,
    );
    status
}

/// The status while a referenced Secret does not exist: nothing was applied.
pub fn waiting_for_secret(cluster: &MqttCluster, secret: &str, now: &Time) -> MqttClusterStatus {
    let generation = cluster.metadata.generation;
    let mut status = previous(cluster);
    status.observed_generation = generation;
    status.selector = Some(build::selector_string(cluster));
    if status.phase != Some(Phase::Running) {
        status.phase = Some(Phase::Pending);
    }
    set_condition(
        &mut status.conditions,
        types::PROGRESSING,
        false,
        "SecretNotFound",
        format!("waiting for Secret {secret}"),
        generation,
        now,
    );
    status
}

/// The status after an apply failed (the error is retried with backoff).
pub fn apply_failed(cluster: &MqttCluster, error: &str, now: &Time) -> MqttClusterStatus {
    let generation = cluster.metadata.generation;
    let mut status = previous(cluster);
    status.phase = Some(Phase::Degraded);
    set_condition(
        &mut status.conditions,
        types::DEGRADED,
        true,
        "ApplyFailed",
        error,
        generation,
        now,
    );
    status
}

/// The condition `type_` of a status, if set.
pub fn condition<'a>(status: &'a MqttClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn cluster() -> MqttCluster {
        let mut c: MqttCluster = serde_yaml::from_str(
            "apiVersion: hmq.io/v1alpha1\nkind: MqttCluster\nmetadata: {name: m, namespace: n, generation: 2}\nspec: {replicas: 3}",
        )
        .unwrap();
        c.metadata.generation = Some(2);
        c
    }

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn sts(ready: i32, updated: i32) -> StatefulSet {
        let mut sts = StatefulSet::default();
        sts.metadata.generation = Some(4);
        sts.spec.replicas = Some(3);
        sts.status = Some(StatefulSetStatus {
            replicas: 3,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            observed_generation: Some(4),
            current_revision: Some("a".into()),
            update_revision: Some(if updated == 3 { "a" } else { "b" }.into()),
            ..StatefulSetStatus::default()
        });
        sts
    }

    fn rendered(c: &MqttCluster) -> Rendered {
        crate::validate::render("m", "n", &c.spec).unwrap()
    }

    #[test]
    fn rollout_then_ready_then_degraded() {
        let mut c = cluster();
        let r = rendered(&c);
        let s = applied(&c, &r, Rollout::of(&sts(1, 1)), "e".into(), &time(10));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(condition(&s, types::PROGRESSING).unwrap().status, "True");
        assert_eq!(condition(&s, types::READY).unwrap().status, "False");
        assert_eq!(condition(&s, types::DEGRADED).unwrap().status, "False");
        assert_eq!(condition(&s, types::CONFIG_VALID).unwrap().status, "True");
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.config_hash.as_deref(), Some(r.config_hash.as_str()));

        c.status = Some(s);
        let s = applied(&c, &r, Rollout::of(&sts(3, 3)), "e".into(), &time(20));
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.ready_replicas, 3);
        let ready = condition(&s, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", time(20))
        );
        // ConfigValid did not change: its transition time stays.
        assert_eq!(
            condition(&s, types::CONFIG_VALID)
                .unwrap()
                .last_transition_time,
            time(10)
        );

        c.status = Some(s);
        let s = applied(&c, &r, Rollout::of(&sts(2, 3)), "e".into(), &time(30));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(
            condition(&s, types::DEGRADED).unwrap().reason,
            "BrokersNotReady"
        );
    }

    #[test]
    fn progress_of_a_rollout_and_a_scale_down() {
        let c = cluster();
        let r = rendered(&c);
        let s = applied(&c, &r, Rollout::of(&sts(3, 1)), "e".into(), &time(10));
        assert_eq!((s.updated_replicas, s.ready_replicas), (1, 3));
        let p = condition(&s, types::PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "RollingOut")
        );
        assert!(p.message.starts_with("1 of 3 brokers run the current spec"));

        let mut down = sts(3, 3);
        down.spec.replicas = Some(2);
        let s = applied(&c, &r, Rollout::of(&down), "e".into(), &time(20));
        let p = condition(&s, types::PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "ScalingDown")
        );
        let leaving = format!("{}-2", build::names::main("m"));
        assert!(p.message.contains(&leaving), "{}", p.message);
        assert!(p.message.contains("hands its persistent sessions"));

        let s = applied(&c, &r, Rollout::of(&sts(3, 3)), "e".into(), &time(30));
        assert_eq!(s.updated_replicas, 3);
        let p = condition(&s, types::PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "UpToDate")
        );
    }

    #[test]
    fn invalid_keeps_what_runs() {
        let mut c = cluster();
        let r = rendered(&c);
        c.status = Some(applied(
            &c,
            &r,
            Rollout::of(&sts(3, 3)),
            "e".into(),
            &time(10),
        ));
        let problem = InvalidSpec {
            field: "spec.acl.raw (line 2)".into(),
            message: "unknown access \"4\"".into(),
        };
        let s = invalid(&c, &problem, &time(20));
        assert_eq!(s.phase, Some(Phase::Invalid));
        assert_eq!(s.ready_replicas, 3);
        assert_eq!(s.config_hash.as_deref(), Some(r.config_hash.as_str()));
        let valid = condition(&s, types::CONFIG_VALID).unwrap();
        assert_eq!(valid.status, "False");
        assert_eq!(valid.reason, "InvalidSpec");
        assert!(valid.message.contains("unknown access"));
        assert_eq!(condition(&s, types::READY).unwrap().status, "True");
    }

    #[test]
    fn endpoint_prefers_the_load_balancer() {
        let c = cluster();
        assert_eq!(endpoint(&c, None), "m.n.svc:1883");
        let service: Service = serde_json::from_value(serde_json::json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }))
        .unwrap();
        assert_eq!(endpoint(&c, Some(&service)), "203.0.113.7:1883");
    }
}
