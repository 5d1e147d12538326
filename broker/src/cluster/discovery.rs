//! Discovery of the peers: resolves the `router` name (all its A/AAAA records, e.g. a
//! Kubernetes headless Service) and the static `cluster.peers` every `cluster.discoveryInterval`,
//! and keeps one dial loop (`link::dial_loop`) per address found.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Cluster;
use super::link::dial_loop;
use crate::broker::Broker;

/// Where discovery looks for peers.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `router`: a DNS name (or name:port) whose records are all peers.
    pub router: Option<String>,
    /// `cluster.peers`: host:port of each.
    pub peers: Vec<String>,
    /// The cluster port, for a router name without a port.
    pub port: u16,
    /// Between two resolutions.
    pub interval: Duration,
}

async fn resolve(d: &Discovery) -> Option<Vec<SocketAddr>> {
    let mut out = Vec::new();
    let mut failed = false;
    let mut targets: Vec<(String, u16)> = Vec::new();
    if let Some(router) = &d.router {
        match crate::config::split_port(router) {
            Some((host, port)) => targets.push((host.to_owned(), port)),
            None => targets.push((router.clone(), d.port)),
        }
    }
    for p in &d.peers {
        if let Some((host, port)) = crate::config::split_port(p) {
            targets.push((host.to_owned(), port));
        }
    }
    for (host, port) in targets {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => {
                debug!(host, error = %e, "cluster discovery: cannot resolve");
                failed = true;
            }
        }
    }
    out.sort();
    out.dedup();
    // A failed lookup with nothing found keeps the previous peers (a DNS blip must not cut
    // links); a partial answer is used.
    (!(failed && out.is_empty())).then_some(out)
}

/// Resolves the peers every interval and keeps one dial loop per address, until `shutdown`.
pub async fn discover(
    cluster: Arc<Cluster>,
    broker: Arc<Broker>,
    discovery: Discovery,
    shutdown: CancellationToken,
) {
    let mut dialers: HashMap<SocketAddr, CancellationToken> = HashMap::new();
    let mut tick = tokio::time::interval(discovery.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if let Some(addrs) = resolve(&discovery).await {
            dialers.retain(|addr, token| {
                let keep = addrs.contains(addr);
                if !keep {
                    debug!(%addr, "cluster address no longer discovered");
                    token.cancel();
                }
                keep
            });
            for addr in addrs {
                if dialers.contains_key(&addr) {
                    continue;
                }
                let token = shutdown.child_token();
                dialers.insert(addr, token.clone());
                cluster.pending_dials.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(dial_loop(cluster.clone(), broker.clone(), addr, token));
            }
        }
        cluster.discovered.store(true, Ordering::Relaxed);
        cluster.forget_gone_peers(|_| false);
    }
    for token in dialers.values() {
        token.cancel();
    }
}
