//! The operator's HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! and its controller are alive) and `/readyz` (connected to the API server; a standby replica
//! waiting for the leader lease is ready too). hyper HTTP/1.1, one small task per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hmq_probe::{Method, Reply, StatusCode, metrics_response, serve_with, text};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the probes report, shared with the controller.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    alive: AtomicBool,
    leader: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            leader: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// Marks the operator ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Marks the process broken: `/healthz` fails and the kubelet restarts it.
    pub fn set_dead(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }
    /// Records whether this replica holds the leader lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    /// Whether this replica holds the leader lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

/// What the endpoint serves.
#[derive(Debug, Clone)]
pub struct State {
    /// The probes' state.
    pub health: Arc<Health>,
    /// The metrics.
    pub metrics: Metrics,
}

/// Answers one request.
pub fn respond(state: &State, method: &Method, path: &str) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let health = &state.health;
    match path {
        "/metrics" => metrics_response(state.metrics.render()),
        "/healthz" if health.alive.load(Ordering::Relaxed) => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "controller stopped\n"),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            let role = if health.is_leader() {
                "leader"
            } else {
                "standby"
            };
            text(StatusCode::OK, format!("ready ({role})\n"))
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves HTTP on `listener` until `stop` (the probe server the broker uses too, with these answers).
pub async fn serve(listener: TcpListener, state: State, stop: CancellationToken) {
    serve_with(listener, stop, move |method, path| {
        respond(&state, method, path)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_follow_the_health_state() {
        let state = State {
            health: Arc::new(Health::default()),
            metrics: Metrics::new(),
        };
        let get = |path| respond(&state, &Method::GET, path).status();
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        state.health.set_ready(true);
        assert_eq!(get("/readyz"), StatusCode::OK);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        state.health.set_dead();
        assert_eq!(get("/healthz"), StatusCode::SERVICE_UNAVAILABLE);
        let post = respond(&state, &Method::POST, "/metrics").status();
        assert_eq!(post, StatusCode::METHOD_NOT_ALLOWED);
    }
}
