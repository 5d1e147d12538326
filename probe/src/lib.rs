//! hmq-probe: the small HTTP/1.1 server behind the probe and metrics endpoints of both the broker
//! (`/metrics`, `/healthz`, `/readyz` on `httpPort`) and the operator.
//!
//! Its own crate so that the operator can serve its probes with the same code as the broker
//! without depending on the broker: the caller supplies `respond(method, path)`, this crate
//! does the listening, the connection limit, the header timeout and the graceful stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use hyper::{Method, StatusCode};

/// A response as the server sends it.
pub type Reply = Response<Full<Bytes>>;

/// Most HTTP connections served at once (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 64;

/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A `/metrics` response: Prometheus text format 0.0.4.
pub fn metrics_response(body: String) -> Reply {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Serves HTTP/1.1 on `listener` until `stop`: at most 64 connections at once, headers within
/// 5 s, `respond(method, path)` answers each request, and open connections finish gracefully at
/// `stop`.
pub async fn serve_with<F>(listener: TcpListener, stop: CancellationToken, respond: F)
where
    F: Fn(&Method, &str) -> Reply + Clone + Send + Sync + 'static,
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
