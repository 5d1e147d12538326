//! Binding the listeners and running the broker until shutdown: the accept loop, the connection
//! limit, background maintenance, and the drain at the end.
//!
//! `main` and the tests start a broker the same way: [`Server::bind`] then [`Server::run`] with a
//! cancellation token as the shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::acl::Acl;
use crate::auth::PasswordFile;
use crate::broker::Broker;
use crate::cluster::{Cluster, link};
use crate::config::Config;
use crate::connection::park::Parking;
use crate::connection::{self, ConnInfo, ListenerKind};
use crate::persist::Durable;
use crate::session::{KickReason, Owner};
use crate::transport::tls::{TlsAcceptor, TlsError};
use crate::transport::{proxy, ws};
use crate::watch;

/// How often reloadable files are checked for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

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
    /// The ACL file could not be read or parsed (`file:line: what is wrong`).
    #[error("{0}")]
    Acl(String),
    /// The thread that watches idle connections could not start.
    #[error("starting the idle-connection thread: {0}")]
    Parking(io::Error),
    /// The password file could not be read or parsed (`file:line: what is wrong`).
    #[error("{0}")]
    Passwords(String),
    /// The cluster could not be set up (no secret, unreadable secret file).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The TLS certificate or key could not be loaded (the message names the key and file).
    #[error(transparent)]
    Tls(TlsError),
    /// The durable store could not be opened or read (the message names the directory and
    /// the record).
    #[error(transparent)]
    Persist(#[from] crate::persist::PersistError),
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
    listeners: Vec<(ListenerKind, TcpListener)>,
    transport: Arc<TransportConfig>,
    max_connections: usize,
    acl_path: Option<PathBuf>,
    password_path: Option<PathBuf>,
    sys_interval: u64,
    http: Option<TcpListener>,
    drain_rate: u32,
    shutdown_timeout: Duration,
    cluster: Option<ClusterSetup>,
}

/// The cluster listener and where to find the peers.
#[derive(Debug)]
struct ClusterSetup {
    cluster: Arc<Cluster>,
    listener: TcpListener,
    discovery: link::Discovery,
}

/// What the accept side needs to turn a TCP connection into an MQTT byte stream.
#[derive(Debug)]
struct TransportConfig {
    tls: Option<TlsAcceptor>,
    ws_path: String,
    ws_forwarded_for: bool,
    proxy_protocol: bool,
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

/// Pending connections the kernel queues per listener. The default of `TcpListener::bind` (128)
/// overflows when a few hundred clients (re)connect at once, and each overflowed SYN waits a
/// second for its retry.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind_one(key: &'static str, host: &str, port: u16) -> Result<TcpListener, ServerError> {
    let addr = resolve(key, host, port).await?;
    let bind = || -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| ServerError::Bind { key, addr, source })
}

impl Server {
    /// Validates what this version serves, loads the TLS material and binds the listeners.
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        // Files first, sockets after: a bad file stops the broker before it listens anywhere.
        let acl = match (config.acl, &config.acl_conf) {
            (true, Some(path)) => Some(load_acl(path).map_err(ServerError::Acl)?),
            _ => None,
        };
        let passwords = match &config.password_file {
            Some(path) => {
                let file = load_passwords(path).map_err(ServerError::Passwords)?;
                let weak = file.weak_entries();
                if !weak.is_empty() {
                    warn!(
                        users = %weak.join(", "),
                        "weak password hashes ($6$, or $7$ with few iterations): run `hmq passwd` for these users"
                    );
                }
                Some(file)
            }
            None => None,
        };
        let tls = if config.tls_port.is_some() || config.ws_tls {
            Some(TlsAcceptor::from_config(&config.tls_info).map_err(ServerError::Tls)?)
        } else {
            None
        };
        let mut listeners = vec![(
            ListenerKind::Tcp,
            bind_one("port", &config.host, config.port.0).await?,
        )];
        if let Some(port) = config.tls_port {
            listeners.push((
                ListenerKind::Tls,
                bind_one("tlsPort", &config.tls_host, port.0).await?,
            ));
        }
        if let Some(port) = config.ws_port {
            let kind = if config.ws_tls {
                ListenerKind::Wss
            } else {
                ListenerKind::Ws
            };
            listeners.push((kind, bind_one("wsPort", &config.host, port.0).await?));
        }
        let http = match config.http_port {
            Some(port) => Some(bind_one("httpPort", &config.http_host, port.0).await?),
            None => None,
        };
        // The durable store is read before anything listens: the broker serves what it had.
        let metrics = crate::metrics::Metrics::new();
        let durable = match &config.persistence.dir {
            Some(dir) => Some(Durable::open(
                &config.persistence,
                dir,
                metrics.persist.clone(),
            )?),
            None => None,
        };
        let broker = Arc::new(Broker::with_durable(
            config,
            acl,
            passwords,
            metrics,
            durable.as_ref().map(|(d, _)| d.clone()),
        ));
        let cluster = match config.cluster.port {
            Some(port) => {
                let secret = crate::cluster::load_secret(config)?;
                let listener = bind_one("cluster.port", &config.cluster.host, port.0).await?;
                let name = crate::cluster::node_name(config);
                let mut cluster =
                    Cluster::new(name, secret, config, broker.metrics.cluster.clone());
                if config.cluster.tls {
                    let tls = crate::cluster::tls::LinkTls::load(&config.tls_info)
                        .map_err(ServerError::Tls)?;
                    cluster = cluster.with_tls(tls);
                }
                let cluster = Arc::new(cluster);
                let _ = broker.cluster.set(cluster.clone());
                Some(ClusterSetup {
                    cluster,
                    listener,
                    discovery: link::Discovery {
                        router: config.router_address().map(str::to_owned),
                        peers: config.cluster.peers.clone(),
                        port: port.0,
                        interval: Duration::from_secs(config.cluster.discovery_interval),
                    },
                })
            }
            None => None,
        };
        // After the cluster is installed, so that recovered subscriptions become routes.
        if let Some((durable, recovered)) = durable {
            if let Some(setup) = &cluster {
                setup.cluster.set_durable(durable.clone());
            }
            crate::persist::restore::apply(&broker, &durable, recovered);
            durable.start();
        }
        Ok(Server {
            broker,
            cluster,
            acl_path: config.acl.then(|| config.acl_conf.clone()).flatten(),
            password_path: config.password_file.clone(),
            sys_interval: config.sys_interval,
            http,
            drain_rate: config.drain_rate,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
            listeners,
            transport: Arc::new(TransportConfig {
                tls,
                ws_path: config.ws_path.clone(),
                ws_forwarded_for: config.ws_forwarded_for,
                proxy_protocol: config.proxy_protocol,
            }),
            max_connections: config.max_connections,
        })
    }

    /// The address the MQTT TCP listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener_addr(ListenerKind::Tcp)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no TCP listener"))
    }

    /// The address of the listener of `kind`, if it is configured.
    pub fn listener_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, l)| l.local_addr().ok())
    }

    /// The address of the HTTP listener (`/metrics`, `/healthz`, `/readyz`), if configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the cluster listener, if configured.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster
            .as_ref()
            .and_then(|c| c.listener.local_addr().ok())
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
            listeners,
            transport,
            max_connections,
            acl_path,
            password_path,
            sys_interval,
            http,
            drain_rate,
            shutdown_timeout,
            cluster,
        } = self;
        let tracker = TaskTracker::new();
        let permits = if max_connections == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max_connections
        };
        // Stopped when `run` returns (or its future is dropped), after the drain.
        let limit = Arc::new(Semaphore::new(permits));
        let (parking, _parking_guard) =
            Parking::start(broker.clone(), limit.clone(), tracker.clone())
                .map_err(ServerError::Parking)?;
        let accept = Arc::new(Accept {
            broker: broker.clone(),
            transport,
            limit,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            max_connections,
            parking: parking.clone(),
        });
        // Background tasks that outlive the listeners, until the drain is over.
        let stopped = CancellationToken::new();
        tokio::spawn(crate::http::heartbeat(broker.clone(), stopped.clone()));
        if let Some(listener) = http {
            tokio::spawn(crate::http::serve(
                listener,
                broker.clone(),
                stopped.clone(),
            ));
        }
        if let Some(tls) = &accept.transport.tls {
            tls.spawn_reloader(shutdown.clone());
        }
        // The cluster links stay up through the drain, so the offline notifications of the
        // drained clients reach the other nodes.
        if let Some(setup) = cluster {
            if let Some(tls) = setup.cluster.link_tls() {
                tls.spawn_reloader(shutdown.clone());
            }
            if let Ok(addr) = setup.listener.local_addr() {
                info!(%addr, node = setup.cluster.name(), "listening for cluster peers");
            }
            tokio::spawn(link::serve(
                setup.cluster.clone(),
                broker.clone(),
                setup.listener,
                stopped.clone(),
            ));
            tokio::spawn(link::discover(
                setup.cluster,
                broker.clone(),
                setup.discovery,
                stopped.clone(),
            ));
        }
        let sweeper = tokio::spawn(sweep_sessions(broker.clone(), shutdown.clone()));
        if sys_interval > 0 {
            tokio::spawn(crate::sys::publish_statistics(
                broker.clone(),
                Duration::from_secs(sys_interval),
                shutdown.clone(),
            ));
        }
        if let Some(path) = acl_path {
            let b = broker.clone();
            tokio::spawn(watch_file(
                broker.clone(),
                path,
                "ACL",
                shutdown.clone(),
                move |path| {
                    let acl = load_acl(path)?;
                    let rules = acl.len();
                    b.reload_acl(acl);
                    Ok(rules)
                },
            ));
        }
        if let Some(path) = password_path {
            let b = broker.clone();
            tokio::spawn(watch_file(
                broker.clone(),
                path,
                "password file",
                shutdown.clone(),
                move |path| {
                    let file = load_passwords(path)?;
                    let users = file.len();
                    b.reload_passwords(file);
                    Ok(users)
                },
            ));
        }

        let mut accepters = Vec::new();
        for (kind, listener) in listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, listener = kind.as_str(), "listening for MQTT");
            }
            accepters.push(tokio::spawn(accept.clone().accept_loop(kind, listener)));
        }
        broker.health.beat();
        broker.health.set_ready(true);

        shutdown.cancelled().await;
        let deadline = Instant::now() + shutdown_timeout;
        broker.health.set_ready(false);
        for a in accepters {
            let _ = a.await;
        }
        info!(
            connections = tracker.len() + parking.len(),
            drain_rate, "shutting down: draining connections"
        );
        tracker.close();
        let connections = Connections {
            tracker: &tracker,
            parking: &parking,
        };
        drain(&broker, &connections, drain_rate, deadline).await;
        if tokio::time::timeout_at(
            deadline.max(Instant::now() + FINAL_WAIT),
            connections.closed(),
        )
        .await
        .is_err()
        {
            warn!(
                remaining = tracker.len() + parking.len(),
                "connections still open at the shutdown deadline"
            );
        }
        sweeper.abort();
        if let Some(cluster) = broker.cluster.get() {
            // The sessions held here go to the remaining nodes (their clients reconnect to
            // any), through the links that are still up.
            let until = deadline.max(Instant::now() + LEAVE_MIN);
            let (handed, unconfirmed) = crate::cluster::moves::leave(&broker, cluster, until).await;
            if handed > 0 {
                info!(
                    handed,
                    unconfirmed, "persistent sessions handed over to the cluster"
                );
            }
        }
        if let Some(durable) = &broker.durable {
            // Every change made by the drained connections, synced whatever the policy.
            durable.close();
        }
        stopped.cancel();
        info!("broker stopped");
        Ok(())
    }
}

/// However late the drain ended, how long a leaving node gives its peers to confirm the
/// sessions it hands them.
const LEAVE_MIN: Duration = Duration::from_secs(5);

/// After the deadline, how long the last connections get to close.
const FINAL_WAIT: Duration = Duration::from_secs(2);

/// Disconnects the connected clients at most `rate` per second (0: all at once), so that they
/// reconnect elsewhere without a storm. At `deadline` whatever is left is disconnected at once.
/// Each client is closed as by a broker shutdown: no will, an offline notification.
/// The open client connections: tasks, and parked connections (which have none).
struct Connections<'a> {
    tracker: &'a TaskTracker,
    parking: &'a Parking,
}

impl Connections<'_> {
    fn is_empty(&self) -> bool {
        // In this order: a parked connection becomes a task before it leaves the parking area.
        self.parking.is_empty() && self.tracker.is_empty()
    }

    /// Waits until every connection has closed (the tracker is closed by then).
    async fn closed(&self) {
        loop {
            self.tracker.wait().await;
            if self.is_empty() {
                return;
            }
            // A parked connection was resumed as a task meanwhile, or is about to be.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn drain(broker: &Broker, connections: &Connections<'_>, rate: u32, deadline: Instant) {
    // A token bucket: `rate` closes per second, earned continuously and spent every tick, with
    // at most one tick's worth saved up so a late tick does not release a burst.
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = f64::from(rate) * TICK.as_secs_f64();
    let mut budget = 1.0_f64;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let mut pending: Vec<Owner> = Vec::new();
    let mut next_snapshot = Instant::now();
    loop {
        if connections.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            for owner in broker.sessions.online_owners() {
                owner.kick(KickReason::Shutdown);
            }
            return;
        }
        // Connections that finished their handshake since the last look are picked up too.
        if pending.is_empty() && now >= next_snapshot {
            pending = broker.sessions.online_owners();
            pending.retain(|o| !o.is_kicked());
            next_snapshot = now + Duration::from_millis(500);
        }
        let n = if rate == 0 {
            pending.len()
        } else {
            budget = (budget + f64::from(rate) * (now - last).as_secs_f64()).min(per_tick.max(1.0));
            let n = budget.floor();
            budget -= n;
            n as usize
        };
        last = now;
        let n = n.min(pending.len());
        for owner in pending.drain(..n) {
            owner.kick(KickReason::Shutdown);
        }
        tick.tick().await;
    }
}

/// Reads and parses the ACL file; the error names the file and line.
fn load_acl(path: &Path) -> Result<Acl, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    Acl::parse(&text, &origin).map_err(|e| e.to_string())
}

/// Reads and parses the password file; the error names the file and line.
fn load_passwords(path: &Path) -> Result<PasswordFile, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    PasswordFile::parse(&text, &origin).map_err(|e| e.to_string())
}

/// Reloads a file when it changes (polled every `FILE_POLL`) or on SIGHUP, until shutdown.
/// `reload` reads, parses and installs it, returning how many entries it has; a file that does
/// not parse keeps what is in force.
async fn watch_file(
    broker: Arc<Broker>,
    path: PathBuf,
    what: &'static str,
    shutdown: CancellationToken,
    reload: impl Fn(&Path) -> Result<usize, String> + Send + 'static,
) {
    let mut last = watch::stamp(&path);
    let mut tick = tokio::time::interval(FILE_POLL);
    let mut signal = broker.reload.subscribe();
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            r = signal.changed() => r.is_ok(),
            _ = shutdown.cancelled() => return,
        };
        let now = watch::stamp(&path);
        if now == last && !forced {
            continue;
        }
        last = now;
        let label = if what == "ACL" { "acl" } else { "passwords" };
        match reload(&path) {
            Ok(entries) => {
                broker
                    .metrics
                    .file_reloads
                    .with_label_values(&[label, "ok"])
                    .inc();
                info!(file = %path.display(), entries, "{what} reloaded");
            }
            Err(e) => {
                broker
                    .metrics
                    .file_reloads
                    .with_label_values(&[label, "error"])
                    .inc();
                warn!(error = %e, "{what} reload failed; keeping the previous one");
            }
        }
        broker.reloaded.send_modify(|n| *n += 1);
    }
}

/// Discards expired offline sessions every `EXPIRY_SWEEP` until shutdown.
async fn sweep_sessions(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = broker.expire_sessions();
                if n > 0 {
                    info!(sessions = n, "expired offline sessions");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Everything the accept loops share.
#[derive(Debug)]
struct Accept {
    broker: Arc<Broker>,
    transport: Arc<TransportConfig>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    max_connections: usize,
    /// Where idle plain-TCP connections wait without a task.
    parking: Parking,
}

impl Accept {
    /// Accepts on one listener until shutdown; each connection gets its own task.
    async fn accept_loop(self: Arc<Self>, kind: ListenerKind, listener: TcpListener) {
        let mut last_limit_log: Option<Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Typically EMFILE/ENFILE: back off instead of spinning on the error.
                        error!(error = %e, listener = kind.as_str(), "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = &self.broker.metrics;
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                metrics
                    .connects_refused
                    .with_label_values(&["max_connections"])
                    .inc();
                if last_limit_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    warn!(%peer, max_connections = self.max_connections, "connection refused: maxConnections reached");
                    last_limit_log = Some(Instant::now());
                }
                drop(stream);
                continue;
            };
            metrics
                .connections_total
                .with_label_values(&[kind.as_str()])
                .inc();
            let info = ConnInfo {
                peer,
                listener: kind,
                cert_identity: None,
                deadline: Instant::now() + self.broker.settings.connect_timeout,
            };
            let this = self.clone();
            self.tracker.spawn(async move {
                this.serve(stream, info, permit).await;
            });
        }
    }

    /// Runs the transport handshakes (PROXY header, TLS, WebSocket) within the connect
    /// deadline, then serves MQTT.
    /// `permit` (the connection limit) is held until the client is gone.
    async fn serve(&self, mut stream: TcpStream, mut info: ConnInfo, permit: OwnedSemaphorePermit) {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(peer = %info.peer, error = %e, "set_nodelay failed");
        }
        let kind = info.listener;
        let transport = &self.transport;
        if transport.proxy_protocol && matches!(kind, ListenerKind::Tcp | ListenerKind::Tls) {
            match tokio::time::timeout_at(info.deadline, proxy::read_header(&mut stream)).await {
                Ok(Ok(Some(addr))) => info.peer = addr,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return self.refused(&info, "PROXY header", &e.to_string()),
                Err(_) => return self.refused(&info, "PROXY header", "timed out"),
            }
        }
        match kind {
            ListenerKind::Tcp => {
                connection::serve_tcp(
                    stream,
                    info,
                    self.broker.clone(),
                    self.shutdown.clone(),
                    self.parking.clone(),
                    permit,
                )
                .await;
                return;
            }
            // The TLS and WebSocket states are several kilobytes: boxed, so that a plain TCP
            // connection's task (the common case, and what idle-connection memory is made of)
            // does not reserve room for them.
            ListenerKind::Ws => Box::pin(self.websocket(stream, info)).await,
            ListenerKind::Tls | ListenerKind::Wss => Box::pin(self.tls(stream, info)).await,
        }
        drop(permit);
    }

    async fn tls(&self, stream: TcpStream, mut info: ConnInfo) {
        let Some(tls) = &self.transport.tls else {
            return self.refused(&info, "TLS", "no TLS configuration");
        };
        let handshake = tokio::time::timeout_at(info.deadline, tls.accept(stream)).await;
        let (tls_stream, identity) = match handshake {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                self.broker.metrics.tls_handshake_failures.inc();
                return self.refused(&info, "TLS handshake", &e.to_string());
            }
            Err(_) => {
                self.broker.metrics.tls_handshake_failures.inc();
                return self.refused(&info, "TLS handshake", "timed out");
            }
        };
        info.cert_identity = identity;
        if info.listener == ListenerKind::Tls {
            let (r, w) = tokio::io::split(tls_stream);
            self.mqtt(r, w, info).await;
        } else {
            self.websocket(tls_stream, info).await;
        }
    }

    async fn websocket<S>(&self, stream: S, mut info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let t = &self.transport;
        let max_packet_size = self.broker.settings.max_packet_size;
        let upgrade = ws::accept(stream, &t.ws_path, t.ws_forwarded_for, max_packet_size);
        match tokio::time::timeout_at(info.deadline, upgrade).await {
            Ok(Ok((ws, forwarded))) => {
                if let Some(ip) = forwarded {
                    info.peer = SocketAddr::new(ip, info.peer.port());
                }
                let (r, w) = tokio::io::split(ws);
                self.mqtt(r, w, info).await;
            }
            Ok(Err(e)) => self.refused(&info, "WebSocket upgrade", &e.to_string()),
            Err(_) => self.refused(&info, "WebSocket upgrade", "timed out"),
        }
    }

    async fn mqtt<R, W>(&self, reader: R, writer: W, info: ConnInfo)
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        connection::serve(
            reader,
            writer,
            info,
            self.broker.clone(),
            self.shutdown.clone(),
        )
        .await;
    }

    /// Counts and logs a connection that failed before MQTT started.
    fn refused(&self, info: &ConnInfo, what: &str, error: &str) {
        self.broker
            .metrics
            .connects_refused
            .with_label_values(&["transport_handshake"])
            .inc();
        info!(peer = %info.peer, listener = info.listener.as_str(), error, "{what} failed");
    }
}
