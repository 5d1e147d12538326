//! The controller process: the MqttCluster watch with its owned objects and referenced Secrets,
//! the reconcile loop, `/metrics` and the probes, leader election, and graceful shutdown on
//! SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::build::referenced_secrets;
use crate::crd::MqttCluster;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::{FIELD_MANAGER, leader};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `hmq-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "HMQ_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Elect a leader through a Lease, so several replicas can run.
    #[arg(long, env = "HMQ_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease. Default: the operator's own namespace.
    #[arg(long, env = "HMQ_OPERATOR_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds the leader Lease is valid without renewal: how long a standby waits before it
    /// takes over from a leader that vanished. The leader renews when a third is left.
    #[arg(
        long,
        env = "HMQ_OPERATOR_LEASE_DURATION",
        default_value_t = leader::LEASE_SECONDS,
        value_parser = clap::value_parser!(u64).range(leader::MIN_LEASE_SECONDS..=3600)
    )]
    pub lease_duration: u64,
    /// This replica's identity in the Lease and in Events. Default: the host (pod) name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(
        long,
        env = "HMQ_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            leader_election: true,
            lease_namespace: None,
            lease_duration: leader::LEASE_SECONDS,
            identity: None,
            log_format: LogFormat::Json,
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be configured, or the API server is unreachable.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// No in-cluster or kubeconfig configuration.
    #[error("Kubernetes configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The HTTP endpoint could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica took the lease: exit, so this one restarts as a standby.
    #[error("lost the leader lease")]
    LostLease,
}

/// Installs the log subscriber (`RUST_LOG` filters; default `info`).
pub fn init_tracing(options: &RunOptions) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match options.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "default".to_owned())
}

fn host_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| FIELD_MANAGER.to_owned())
}

/// Cancels `stop` on SIGTERM or Ctrl-C.
fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        info!("shutting down");
        stop.cancel();
    });
}

/// Runs the operator until SIGTERM/Ctrl-C (or the loss of the leader lease), with the client
/// from the environment (in-cluster or kubeconfig).
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone());
    let client = Client::try_default().await?;
    let listener = TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.http_addr,
            source,
        })?;
    run_with(options, client, listener, stop).await
}

/// Runs the operator on `client`, serving HTTP on `listener`, until `stop` (or the loss of the
/// leader lease). `options.http_addr` is not used: `listener` is already bound.
pub async fn run_with(
    options: RunOptions,
    client: Client,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let identity = options.identity.clone().unwrap_or_else(host_name);
    let health = Arc::new(Health::default());
    let metrics = Metrics::new();
    let http_state = http::State {
        health: health.clone(),
        metrics: metrics.clone(),
    };
    // The endpoint stops with the operator, whichever way `run_with` returns.
    let http_stop = stop.child_token();
    let _stop_http = http_stop.clone().drop_guard();
    let http_task = tokio::spawn(http::serve(listener, http_state, http_stop.clone()));

    let version = client.apiserver_version().await?;
    info!(version = %version.git_version, %identity, "connected to the API server");
    health.set_ready(true);

    let mut leadership = None;
    if options.leader_election {
        let namespace = options
            .lease_namespace
            .clone()
            .unwrap_or_else(own_namespace);
        let timing = leader::Timing::new(options.lease_duration);
        match leader::acquire(client.clone(), &namespace, &identity, timing, &stop).await? {
            Some(lease) => leadership = Some(lease),
            None => {
                http_stop.cancel();
                let _ = http_task.await;
                info!("stopped");
                return Ok(());
            }
        }
    }
    health.set_leader(true);

    // The controller stops on a signal, or when the lease is lost.
    let controller_stop = stop.child_token();
    let lease_lost = CancellationToken::new();
    if let Some(lease) = leadership.as_mut() {
        let controller_stop = controller_stop.clone();
        let lease_lost = lease_lost.clone();
        tokio::select! {
            _ = run_controller(client.clone(), metrics, identity, controller_stop.clone()) => {}
            _ = lease.lost() => {
                warn!("lost the leader lease: stopping the controller");
                lease_lost.cancel();
                controller_stop.cancel();
            }
        }
    } else {
        run_controller(client, metrics, identity, controller_stop).await;
    }
    health.set_ready(false);
    if let Some(lease) = leadership {
        if lease_lost.is_cancelled() {
            return Err(RunError::LostLease);
        }
        lease.release().await;
    }
    http_stop.cancel();
    let _ = http_task.await;
    info!("stopped");
    Ok(())
}

/// The controller loop, until `stop`: in-flight reconciles finish first. `identity` names this
/// replica in Events.
pub async fn run_controller(
    client: Client,
    metrics: Metrics,
    identity: String,
    stop: CancellationToken,
) {
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=hmq-operator");
    let ctx = Arc::new(Context::new(client.clone(), metrics, Some(identity)));
    let controller = Controller::new(
        Api::<MqttCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let stopped = stop.clone();
    controller
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), managed)
        // A changed Secret (a renewed certificate, an edited password file) reconciles every
        // cluster that mounts it, which rolls its pods.
        .watches(
            Api::<Secret>::all(client),
            watcher::Config::default(),
            move |secret: Secret| {
                let namespace = secret.namespace();
                let name = secret.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == namespace && referenced_secrets(c).contains(&name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(async move { stopped.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(cluster = %object.name, "reconcile finished"),
                Err(err) => debug!(error = %err, "reconcile did not finish"),
            }
        })
        .await;
    info!("controller stopped");
}
