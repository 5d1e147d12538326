//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so two or more
//! operator replicas can run: one reconciles, the others wait to take over.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long giving the lease up may take on shutdown (a GET and a PATCH).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Lease's name.
pub const LEASE_NAME: &str = "hmq-operator";
/// Seconds a lease is valid without renewal, by default.
pub const LEASE_SECONDS: u64 = 15;
/// The shortest lease (kube-lease-manager needs 0 < grace < duration).
pub const MIN_LEASE_SECONDS: u64 = 2;

/// How long the lease lasts, and how long before its expiry the leader renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seconds the lease is valid without renewal: how long a standby waits to take over from
    /// a leader that vanished.
    pub duration: u64,
    /// Seconds before expiry the leader renews.
    pub grace: u64,
}

impl Timing {
    /// A lease of `duration` seconds (at least [`MIN_LEASE_SECONDS`]), renewed when a third of
    /// it is left.
    pub fn new(duration: u64) -> Self {
        let duration = duration.max(MIN_LEASE_SECONDS);
        Timing {
            duration,
            grace: (duration / 3).max(1),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new(LEASE_SECONDS)
    }
}

/// The leader lease, held.
#[derive(Debug)]
pub struct Leadership {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
    /// Until when the lease is ours, as last seen renewed.
    valid_until: SystemTime,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease; `None` if `stop` came first.
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
    timing: Timing,
    stop: &CancellationToken,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let api = Api::<Lease>::namespaced(client.clone(), namespace);
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(timing.duration)
        .with_grace(timing.grace)
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    info!(lease = LEASE_NAME, %namespace, %identity, "waiting for the leader lease");
    while !*state.borrow_and_update() {
        tokio::select! {
            _ = stop.cancelled() => {
                drop(state);
                finish(task).await;
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
    Ok(Some(Leadership {
        api,
        identity: identity.to_owned(),
        timing,
        valid_until: SystemTime::now() + Duration::from_secs(timing.duration),
        state,
        task,
    }))
}

impl Leadership {
    /// Resolves when the lease is lost: another replica took it, or it was not seen renewed
    /// shortly before it expires. kube-lease-manager retries a failed renewal without reporting
    /// a loss, so a leader cut off from the API server would go on reconciling after a standby
    /// took over; the lease is therefore read back half a grace period before it expires, and
    /// lost if it was not renewed (or cannot be read).
    pub async fn lost(&mut self) {
        let margin = Duration::from_secs(self.timing.grace) / 2;
        loop {
            if !*self.state.borrow_and_update() {
                return;
            }
            let check_at = self.valid_until - margin;
            let wait = check_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if !self.renewed().await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads the lease: whether it is still ours and renewed past the next check.
    async fn renewed(&mut self) -> bool {
        let spec = match self.api.get(LEASE_NAME).await {
            Ok(lease) => lease.spec.unwrap_or_default(),
            Err(err) => {
                warn!(error = %err, "cannot read the leader lease before it expires");
                return false;
            }
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            warn!(holder = ?spec.holder_identity, "the leader lease has another holder");
            return false;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|d| u64::try_from(d).ok())
            .unwrap_or(self.timing.duration);
        let valid_until = spec
            .renew_time
            .map(|t| SystemTime::from(t.0) + Duration::from_secs(duration));
        match valid_until {
            Some(until) if until > self.valid_until => {
                debug!("leader lease renewed");
                self.valid_until = until;
                true
            }
            _ => {
                warn!("the leader lease was not renewed before it expires");
                false
            }
        }
    }

    /// Gives the lease up (clears its holder), so a standby takes it when it next looks: at the
    /// latest when the lease would have expired, without first having to clear a stale holder.
    pub async fn release(self) {
        drop(self.state);
        finish(self.task).await;
        info!(lease = LEASE_NAME, "leader lease released");
    }
}

/// Waits (bounded) for the lease task, which gives the lease up once its receiver is gone.
async fn finish(task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>) {
    let abort = task.abort_handle();
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(err))) => warn!(error = %err, "could not give the leader lease up"),
        Ok(Err(_)) => {}
        Err(_) => {
            abort.abort();
            warn!("giving the leader lease up timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_grace_inside_the_lease() {
        assert_eq!(
            Timing::default(),
            Timing {
                duration: 15,
                grace: 5
            }
        );
        for duration in 0..100 {
            let t = Timing::new(duration);
            assert!(t.grace > 0 && t.grace < t.duration, "{t:?}");
        }
    }
}
