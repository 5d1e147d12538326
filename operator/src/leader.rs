//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so two or more
//! operator replicas can run: one reconciles, the others wait to take over.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The Lease's name.
pub const LEASE_NAME: &str = "hmq-operator";
/// Seconds a lease is valid without renewal.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the leader renews.
const GRACE_SECONDS: u64 = 5;

/// The leader lease, held.
#[derive(Debug)]
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease; `None` if `stop` came first.
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
    stop: &CancellationToken,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    info!(lease = LEASE_NAME, %namespace, %identity, "waiting for the leader lease");
    while !*state.borrow_and_update() {
        tokio::select! {
            _ = stop.cancelled() => {
                drop(state);
                let _ = task.await;
                return Ok(None);
            }
            changed = state.changed() => {
                if changed.is_err() {
                    // The lease task ended: report its error.
                    return match task.await {
                        Ok(Err(err)) => Err(err),
                        _ => Ok(None),
                    };
                }
            }
        }
    }
    info!(lease = LEASE_NAME, %identity, "leader lease acquired");
    Ok(Some(Leadership { state, task }))
}

impl Leadership {
    /// Resolves when the lease is lost (another replica took it, or it could not be renewed).
    pub async fn lost(&mut self) {
        loop {
            if !*self.state.borrow_and_update() {
                return;
            }
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the lease up, so a standby replica takes over at once instead of after expiry.
    pub async fn release(self) {
        drop(self.state);
        let _ = self.task.await;
        info!(lease = LEASE_NAME, "leader lease released");
    }
}
