//! The broker's HTTP listener for operations: `/metrics` (Prometheus text format), `/healthz` (the
//! process and its event loop are alive) and `/readyz` (listeners bound and configuration loaded;
//! false while shutting down). What each path answers is decided here; the serving itself is
//! `hmq_probe::serve_with`, shared with the operator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmq_probe::{Method, Reply, StatusCode, metrics_response, serve_with, text};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// `/healthz` fails when the heartbeat task has not run for this long: the event loop is stuck.
const STALE_HEARTBEAT: Duration = Duration::from_secs(10);

/// What the probes report.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    started: Instant,
    heartbeat_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: AtomicBool::new(false),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Marks the broker ready (listeners serving) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records that the event loop ran a task just now.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the heartbeat is recent.
    pub fn is_alive(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed))
            < STALE_HEARTBEAT.as_millis() as u64
    }
}

/// Beats the heartbeat every second until shutdown.
pub async fn heartbeat(broker: Arc<Broker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => broker.health.beat(),
            _ = stop.cancelled() => return,
        }
    }
}

/// Answers one request.
fn respond(broker: &Broker, method: &Method, path: &str) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/metrics" => metrics_response(broker.render_metrics()),
        "/healthz" if broker.health.is_alive() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "event loop stalled\n"),
        "/readyz" if broker.health.is_ready() && broker.cluster_synced() => {
            text(StatusCode::OK, "ready\n")
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves HTTP on `listener` until `stop`.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, stop: CancellationToken) {
    serve_with(listener, stop, move |method, path| {
        respond(&broker, method, path)
    })
    .await
}
