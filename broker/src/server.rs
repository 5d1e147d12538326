//! Binding the listeners and running the broker until shutdown: the accept loop, the connection
//! limit, background maintenance, and the drain at the end.
//!
//! `main` and the tests start a broker the same way: [`Server::bind`] then [`Server::run`] with a
//! cancellation token as the shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::connection::{self, ListenerKind};

/// How long `run` waits for connections to close after shutdown begins.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// How often offline sessions are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configured feature this build does not serve yet.
    #[error(
        "config key `{key}`: {what} is not available in this version of hmq yet; remove the key to start"
    )]
    Unsupported {
        /// The config key that turned it on.
        key: &'static str,
        /// The feature.
        what: &'static str,
    },
    /// The listen address does not resolve.
    #[error("config key `{key}`: cannot resolve {addr:?}: {source}")]
    Resolve {
        /// Config key.
        key: &'static str,
        /// Address as configured.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
}

/// A broker with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    tcp: TcpListener,
    max_connections: usize,
}

/// Refuses configuration that turns on features later versions bring, rather than ignoring it.
fn check_supported(c: &Config) -> Result<(), ServerError> {
    let unsupported = |key, what| Err(ServerError::Unsupported { key, what });
    if c.tls_port.is_some() {
        return unsupported("tlsPort", "the TLS listener");
    }
    if c.ws_port.is_some() {
        return unsupported("wsPort", "the WebSocket listener");
    }
    if c.ws_tls {
        return unsupported("wsTLS", "WebSocket over TLS");
    }
    if c.tls_info.verify {
        return unsupported("tlsInfo.verify", "client certificate verification");
    }
    if c.acl {
        return unsupported("acl", "the ACL");
    }
    if c.router.as_deref().is_some_and(|r| !r.is_empty()) {
        return unsupported("router", "clustering");
    }
    if c.cluster.port.is_some() {
        return unsupported("cluster.port", "clustering");
    }
    if c.password_file.is_some() || !c.allow_anonymous {
        return unsupported("passwordFile", "authentication");
    }
    if c.proxy_protocol {
        return unsupported("proxyProtocol", "the PROXY protocol");
    }
    if c.ws_forwarded_for {
        return unsupported("wsForwardedFor", "X-Forwarded-For");
    }
    if c.http_port.is_some() {
        return unsupported("httpPort", "the HTTP (metrics and health) listener");
    }
    Ok(())
}

async fn resolve(key: &'static str, host: &str, port: u16) -> Result<SocketAddr, ServerError> {
    let addr = format!("{host}:{port}");
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ServerError::Resolve {
            key,
            addr: addr.clone(),
            source,
        })?;
    addrs.next().ok_or_else(|| ServerError::Resolve {
        key,
        addr,
        source: io::Error::new(io::ErrorKind::NotFound, "no address"),
    })
}

impl Server {
    /// Validates what this version serves and binds the listeners.
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        check_supported(config)?;
        let addr = resolve("host", &config.host, config.port.0).await?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                key: "port",
                addr,
                source,
            })?;
        Ok(Server {
            broker: Arc::new(Broker::new(config)),
            tcp,
            max_connections: config.max_connections,
        })
    }

    /// The address the MQTT TCP listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The shared broker state (metrics, sessions) for inspection.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` is cancelled, then closes every connection (no wills: a broker
    /// shutdown is not a client failure) and returns once they are gone or after a deadline.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Server {
            broker,
            tcp,
            max_connections,
        } = self;
        let tracker = TaskTracker::new();
        let permits = if max_connections == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max_connections
        };
        let limit = Arc::new(Semaphore::new(permits));
        if let Ok(addr) = tcp.local_addr() {
            info!(%addr, listener = "tcp", "listening for MQTT");
        }

        let sweeper = {
            let broker = broker.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EXPIRY_SWEEP);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let n = broker.expire_sessions();
                            if n > 0 {
                                info!(sessions = n, "expired offline sessions");
                            }
                        }
                        _ = shutdown.cancelled() => break,
                    }
                }
            })
        };

        let mut last_limit_log: Option<Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tcp.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Typically EMFILE/ENFILE: back off instead of spinning on the error.
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                broker
                    .metrics
                    .connects_refused
                    .with_label_values(&["max_connections"])
                    .inc();
                if last_limit_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    warn!(%peer, max_connections, "connection refused: maxConnections reached");
                    last_limit_log = Some(Instant::now());
                }
                drop(stream);
                continue;
            };
            broker
                .metrics
                .connections_total
                .with_label_values(&[ListenerKind::Tcp.as_str()])
                .inc();
            let broker = broker.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                serve_tcp(stream, peer, broker, shutdown).await;
                drop(permit);
            });
        }

        info!("shutting down: closing connections");
        drop(tcp);
        tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = tracker.len(),
                "connections still open at the shutdown deadline"
            );
        }
        sweeper.abort();
        info!("broker stopped");
        Ok(())
    }
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "set_nodelay failed");
    }
    let (reader, writer) = stream.into_split();
    connection::serve(reader, writer, peer, ListenerKind::Tcp, broker, shutdown).await;
}
