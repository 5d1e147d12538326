//! The reconciler: validate → dereference the Secrets → build → server-side apply (one field
//! manager, owner references on everything) → prune what the spec no longer asks for → status.
//! An invalid spec changes nothing running: it sets `ConfigValid=False` and emits an Event.

pub mod status;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::FIELD_MANAGER;
use crate::build::{self, Inputs, names};
use crate::crd::{MqttCluster, MqttClusterStatus};
use crate::metrics::Metrics;
use crate::validate::{self, InvalidSpec, ReferencedSecrets, SecretProblem};
use status::{Rollout, condition, types};

/// Resync period of a healthy cluster (watches catch changes; this catches missed ones).
const RESYNC: Duration = Duration::from_secs(300);
/// Retry period while a referenced Secret is missing (its creation also triggers a reconcile).
const SECRET_RETRY: Duration = Duration::from_secs(60);
/// First retry after an error; doubled per consecutive failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long the answer to "is the ServiceMonitor CRD installed?" is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// A reconcile that failed and is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace (the CRD is namespaced: should not happen).
    #[error("the MqttCluster has no namespace")]
    NoNamespace,
    /// No random bytes for the cluster secret.
    #[error("cannot generate the cluster secret: {0}")]
    Random(String),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::NoNamespace => "no_namespace",
            Error::Random(_) => "random",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Publishes Events on MqttClusters.
    pub recorder: Recorder,
    /// Consecutive failures per cluster (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Cached answer to "is the ServiceMonitor CRD installed?".
    service_monitor_crd: Mutex<Option<(Instant, bool)>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`; `instance` names this operator replica in Events.
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
            service_monitor_crd: Mutex::new(None),
        }
    }

    fn key(cluster: &MqttCluster) -> String {
        format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        )
    }

    fn succeeded(&self, cluster: &MqttCluster) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Self::key(cluster));
        }
    }

    /// Records a failure and returns the delay before the next try.
    pub fn backoff(&self, cluster: &MqttCluster) -> Duration {
        let count = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(Self::key(cluster)).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        let factor = 1u32 << count.saturating_sub(1).min(10);
        FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// Reconciles one MqttCluster (the controller's reconcile function).
pub async fn reconcile(cluster: Arc<MqttCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    let label = match &result {
        Ok((_, outcome)) => *outcome,
        Err(_) => "error",
    };
    ctx.metrics.observe(label, started.elapsed());
    match result {
        Ok((action, _)) => {
            ctx.succeeded(&cluster);
            Ok(action)
        }
        Err(err) => Err(err),
    }
}

/// The controller's error policy: count, log, and retry with exponential backoff.
pub fn error_policy(cluster: Arc<MqttCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.reason()])
        .inc();
    let delay = ctx.backoff(&cluster);
    warn!(
        cluster = %cluster.name_any(),
        namespace = cluster.namespace().unwrap_or_default(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn reconcile_inner(
    cluster: &MqttCluster,
    ctx: &Context,
) -> Result<(Action, &'static str), Error> {
    let namespace = cluster.namespace().ok_or(Error::NoNamespace)?;
    let name = cluster.name_any();
    let client = &ctx.client;
    debug!(cluster = %name, %namespace, "reconciling");

    // 1. Validate: render the broker's files and parse them with the broker's parsers.
    let rendered = match validate::render(&name, &namespace, &cluster.spec) {
        Ok(rendered) => rendered,
        Err(problem) => {
            report_invalid(cluster, ctx, &problem).await?;
            return Ok((Action::await_change(), "invalid"));
        }
    };

    // 2. Dereference: the Secrets the pods mount (creating the cluster Secret once).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let cluster_secret = build::cluster_secret_name(cluster);
    let referenced = ReferencedSecrets {
        tls: match &cluster.spec.tls {
            Some(tls) => secrets.get_opt(&tls.secret_name).await?,
            None => None,
        },
        auth: match &cluster.spec.auth.password_secret_name {
            Some(secret) => secrets.get_opt(secret).await?,
            None => None,
        },
        cluster: if build::creates_cluster_secret(cluster) {
            Some(ensure_cluster_secret(&secrets, cluster).await?)
        } else {
            secrets.get_opt(&cluster_secret).await?
        },
    };
    let secrets_hash = match validate::check_secrets(&cluster.spec, &cluster_secret, &referenced) {
        Ok(hash) => hash,
        Err(SecretProblem::Invalid(problem)) => {
            report_invalid(cluster, ctx, &problem).await?;
            return Ok((Action::await_change(), "invalid"));
        }
        Err(SecretProblem::Missing(secret)) => {
            let status = status::waiting_for_secret(cluster, &secret, &now());
            if cluster.status.as_ref() != Some(&status) {
                publish(
                    ctx,
                    cluster,
                    EventType::Warning,
                    "SecretNotFound",
                    format!("waiting for Secret {secret}"),
                )
                .await;
            }
            write_status(client, cluster, status).await?;
            return Ok((Action::requeue(SECRET_RETRY), "waiting"));
        }
    };

    // 3. Build.
    let service_monitor_crd = service_monitor_crd(ctx).await?;
    let desired = build::build(
        cluster,
        Inputs {
            rendered: &rendered,
            secrets_hash: Some(&secrets_hash),
            service_monitor_crd,
        },
    );
    if cluster.spec.metrics.service_monitor && !service_monitor_crd {
        publish(
            ctx,
            cluster,
            EventType::Warning,
            "ServiceMonitorUnavailable",
            status::SERVICE_MONITOR_UNAVAILABLE.into(),
        )
        .await;
    }

    // 4. Apply, then prune. A failure is recorded in the status before it is retried.
    let applied = match apply_all(client, &namespace, &desired, cluster, service_monitor_crd).await
    {
        Ok(applied) => applied,
        Err(err) => {
            let status = status::apply_failed(cluster, &err.to_string(), &now());
            if let Err(status_err) = write_status(client, cluster, status).await {
                debug!(error = %status_err, "could not record the failure in the status");
            }
            return Err(err);
        }
    };

    // 5. Status, from what the API server returned.
    let previous_hash = cluster.status.as_ref().and_then(|s| s.config_hash.clone());
    if previous_hash
        .as_ref()
        .is_some_and(|h| *h != rendered.config_hash)
    {
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "ConfigChanged",
            format!(
                "hmq.config changed ({} -> {}): rolling the brokers",
                previous_hash.unwrap_or_default(),
                rendered.config_hash
            ),
        )
        .await;
    }
    let endpoint = status::endpoint(cluster, Some(&applied.client_service));
    let now = now();
    let mut status = status::applied(
        cluster,
        &rendered,
        Rollout::of(&applied.stateful_set),
        endpoint,
        &now,
    );
    if cluster.spec.metrics.service_monitor && !service_monitor_crd {
        status::service_monitor_unavailable(cluster, &mut status, &now);
    }
    write_status(client, cluster, status).await?;
    info!(cluster = %name, %namespace, config_hash = %rendered.config_hash, "reconciled");
    Ok((Action::requeue(RESYNC), "ok"))
}

/// What the API server returned for the applied objects the status is written from.
struct Applied {
    client_service: Service,
    stateful_set: StatefulSet,
}

async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &build::Desired,
    cluster: &MqttCluster,
    service_monitor_crd: bool,
) -> Result<Applied, Error> {
    apply(client, namespace, &desired.config_map).await?;
    apply(client, namespace, &desired.headless_service).await?;
    let client_service = apply(client, namespace, &desired.client_service).await?;
    let name = names::main(&cluster.name_any());
    recreate_if_claims_changed(client, namespace, &name, &desired.stateful_set, cluster).await?;
    let stateful_set = apply(client, namespace, &desired.stateful_set).await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    match &desired.pod_disruption_budget {
        Some(pdb) => {
            apply(client, namespace, pdb).await?;
        }
        None => prune(&pdbs, &name, cluster).await?,
    }
    if service_monitor_crd {
        let resource = build::service_monitor_resource();
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &resource);
        match &desired.service_monitor {
            Some(monitor) => {
                monitors
                    .patch(&name, &apply_params(), &Patch::Apply(monitor))
                    .await?;
            }
            None => prune(&monitors, &name, cluster).await?,
        }
    }
    Ok(Applied {
        client_service,
        stateful_set,
    })
}

/// A StatefulSet's volume claim templates cannot change (`spec.persistence` turned on for a
/// cluster made without it, another size or class): the StatefulSet is deleted with its pods
/// orphaned, so they keep serving, and the apply after this makes it again; the pods then roll
/// one at a time onto the new template. Existing claims keep their size.
async fn recreate_if_claims_changed(
    client: &Client,
    namespace: &str,
    name: &str,
    desired: &StatefulSet,
    cluster: &MqttCluster,
) -> Result<(), Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !controlled_by(existing.meta(), cluster) || !build::claims_differ(&existing, desired) {
        return Ok(());
    }
    info!(cluster = %cluster.name_any(), statefulset = name,
        "volume claim templates changed: re-creating the StatefulSet (its pods keep running)");
    let orphan = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    match api.delete(name, &orphan).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    for _ in 0..60 {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Server-side apply of one namespaced object.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await?)
}

/// Deletes `name` if it exists and this cluster controls it (never someone else's object).
async fn prune<K>(api: &Api<K>, name: &str, cluster: &MqttCluster) -> Result<(), Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !controlled_by(existing.meta(), cluster) {
        return Ok(());
    }
    info!(cluster = %cluster.name_any(), object = name, "deleting what the spec no longer asks for");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(err) => Err(err.into()),
    }
}

fn controlled_by(meta: &ObjectMeta, cluster: &MqttCluster) -> bool {
    let uid = cluster.uid();
    meta.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true) && Some(&r.uid) == uid.as_ref() && r.kind == "MqttCluster"
    })
}

/// The cluster Secret: read it, or create it once with 32 random bytes. Never updated: every
/// broker must keep presenting the same secret.
async fn ensure_cluster_secret(api: &Api<Secret>, cluster: &MqttCluster) -> Result<Secret, Error> {
    let name = names::cluster_secret(&cluster.name_any());
    if let Some(secret) = api.get_opt(&name).await? {
        return Ok(secret);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| Error::Random(err.to_string()))?;
    let secret = build::cluster_secret(cluster, &bytes);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(created) => {
            info!(cluster = %cluster.name_any(), secret = %name, "created the cluster secret");
            Ok(created)
        }
        // Another reconcile (or replica) was first: use theirs.
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(api.get(&name).await?),
        Err(err) => Err(err.into()),
    }
}

/// Whether the ServiceMonitor CRD is installed (cached for `DISCOVERY_TTL`).
async fn service_monitor_crd(ctx: &Context) -> Result<bool, Error> {
    let cached = ctx.service_monitor_crd.lock().ok().and_then(|cache| *cache);
    if let Some((at, answer)) = cached
        && at.elapsed() < DISCOVERY_TTL
    {
        return Ok(answer);
    }
    let answer = match ctx
        .client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.kind == "ServiceMonitor"),
        Err(kube::Error::Api(status)) if status.is_not_found() => false,
        Err(err) => return Err(err.into()),
    };
    if let Ok(mut cache) = ctx.service_monitor_crd.lock() {
        *cache = Some((Instant::now(), answer));
    }
    Ok(answer)
}

/// An invalid spec: status `ConfigValid=False` and a Warning Event (once per distinct
/// message); nothing else is touched.
async fn report_invalid(
    cluster: &MqttCluster,
    ctx: &Context,
    problem: &InvalidSpec,
) -> Result<(), Error> {
    warn!(cluster = %cluster.name_any(), namespace = cluster.namespace().unwrap_or_default(),
          problem = %problem, "invalid spec: nothing applied");
    let message = problem.to_string();
    let already = cluster
        .status
        .as_ref()
        .and_then(|s| condition(s, types::CONFIG_VALID))
        .is_some_and(|c| c.status == "False" && c.message == message);
    if !already {
        publish(ctx, cluster, EventType::Warning, "InvalidSpec", message).await;
    }
    let status = status::invalid(cluster, problem, &now());
    write_status(&ctx.client, cluster, status).await
}

/// Publishes an Event on the cluster. Events are best effort: a failure is only logged.
async fn publish(
    ctx: &Context,
    cluster: &MqttCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        // The API limits notes to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        debug!(error = %err, reason, "could not publish an event");
    }
}

/// Writes the status with server-side apply, unless it is unchanged.
async fn write_status(
    client: &Client,
    cluster: &MqttCluster,
    status: MqttClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<MqttCluster> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "hmq.io/v1alpha1",
        "kind": "MqttCluster",
        "status": status,
    });
    api.patch_status(&cluster.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}
