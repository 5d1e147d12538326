//! The HTTP listener for operations: `/metrics` (Prometheus text format), `/healthz` (the process
//! and its event loop are alive) and `/readyz` (listeners bound and configuration loaded; false
//! while shutting down). Served with hyper (HTTP/1.1), one small task per connection.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::broker::Broker;

/// Most HTTP connections served at once (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 64;

/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A `/metrics` response: Prometheus text format 0.0.4.
pub fn metrics_response(body: String) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Answers one request.
fn respond(broker: &Broker, method: &Method, path: &str) -> Response<Full<Bytes>> {
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

/// The HTTP/1.1 server behind the broker's and the operator's probe endpoints: at most 64
/// connections at once, headers within 5 s, `respond(method, path)` answers each request, and
/// open connections finish gracefully at `stop`.
pub async fn serve_with<F>(listener: TcpListener, stop: CancellationToken, respond: F)
where
    F: Fn(&Method, &str) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
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
        let respond = respond.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| {
                let response = respond(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
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
