//! The controller process: watches, the reconcile loop, metrics and probes, leader election
//! and graceful shutdown.

/// Options of `hmq-operator run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunOptions {}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not there yet.
    #[error("the controller is not implemented yet")]
    NotYet,
}

/// Installs the log subscriber.
pub fn init_tracing(_: &RunOptions) {}

/// Runs the controller until shutdown.
pub async fn run(_: RunOptions) -> Result<(), RunError> {
    Err(RunError::NotYet)
}
