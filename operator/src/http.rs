//! The operator's HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! and its controller are alive) and `/readyz` (connected to the API server; a standby replica
//! waiting for the leader lease is ready too). hyper HTTP/1.1, one small task per connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Most HTTP connections served at once (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 32;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

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

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request.
pub fn respond(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let health = &state.health;
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, state.metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
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

/// Serves HTTP on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: State, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening for HTTP (/metrics, /healthz, /readyz)");
    }
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "HTTP connection refused: too many");
            continue;
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| {
                let response = respond(&state, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            drop(permit);
        });
    }
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
