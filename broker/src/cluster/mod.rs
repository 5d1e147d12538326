//! The cluster: several hmq nodes that route to each other's subscribers.
//!
//! Each node keeps its own clients, sessions and subscriptions. What it shares:
//! - **Routes** ([`routes`]): every node announces the filters its local clients subscribe to
//!   (once per filter, however many local subscribers) and learns its peers' filters.
//! - **Messages**: a PUBLISH from a local client is delivered locally and forwarded at most once
//!   to each peer with a matching route; a node never forwards what it received from a peer, so
//!   nothing loops. Each peer has a bounded outbox of sequenced messages that stay there until
//!   the peer acknowledges them, so a link blip loses nothing (the peer ignores what it already
//!   has), and overflow is counted.
//! - **Retained messages**: forwarded to every peer, and exchanged when a link comes up.
//! - **Client ids**: a client connecting here evicts the same client id from every peer.
//! - **Shared subscriptions**: the publishing node picks one node per group among those with
//!   members (itself included), and tells the peer which groups it delivers to.
//!
//! Links, the handshake and discovery are in [`link`]; the frames in [`proto`].

pub mod discovery;
pub mod link;
pub mod moves;
pub mod proto;
pub mod routes;
pub mod tls;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::config::Config;
use crate::message::Message;
use crate::metrics::ClusterMetrics;
use crate::persist::Durable;
use crate::persist::journal::Value;
use crate::persist::record::{Key, OutboxRecord};
use crate::session::Session;
use proto::{Forward, Frame};
use routes::{LocalRoutes, PeerId, RemoteRoutes};

/// The shared secret of the cluster links. Never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(bytes.into())
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No secret configured.
    #[error(
        "cluster.port is set but there is no shared secret: set cluster.secret, \
         cluster.secretFile or the environment variable HMQ_CLUSTER_SECRET (cluster links \
         are always authenticated)"
    )]
    NoSecret,
    /// The secret file could not be read.
    #[error("cluster.secretFile: cannot read {path}: {source}")]
    SecretFile {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The secret is too short.
    #[error("{origin}: the cluster secret must be at least 8 characters")]
    ShortSecret {
        /// Where it came from.
        origin: &'static str,
    },
}

/// Reads the shared secret: `cluster.secret`, `cluster.secretFile`, or `HMQ_CLUSTER_SECRET`.
pub fn load_secret(config: &Config) -> Result<Secret, ClusterError> {
    let (text, origin) = if let Some(s) = &config.cluster.secret {
        (s.clone(), "cluster.secret")
    } else if let Some(path) = &config.cluster.secret_file {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::SecretFile {
            path: path.display().to_string(),
            source,
        })?;
        (text, "cluster.secretFile")
    } else if let Ok(s) = std::env::var("HMQ_CLUSTER_SECRET") {
        (s, "HMQ_CLUSTER_SECRET")
    } else {
        return Err(ClusterError::NoSecret);
    };
    let trimmed = text.trim();
    if trimmed.len() < 8 {
        return Err(ClusterError::ShortSecret { origin });
    }
    Ok(Secret::new(trimmed.as_bytes()))
}

/// This node's name: `cluster.name`, else `HMQ_NODE_NAME`, else the host name (the pod name
/// in a StatefulSet), so it is the same across restarts.
pub fn node_name(config: &Config) -> String {
    config
        .cluster
        .name
        .clone()
        .or_else(|| {
            std::env::var("HMQ_NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// What a peer has waiting for it.
#[derive(Debug, Default)]
struct Outbox {
    /// Sequence number of the next message.
    next_seq: u64,
    /// Messages not yet acknowledged, oldest first.
    messages: VecDeque<Arc<Forward>>,
    /// The highest sequence number written on the current link.
    written: u64,
    /// Route changes and evictions for the current link (only while it is up: a new link
    /// starts with a full route table instead).
    control: VecDeque<Frame>,
    /// Whether a link to the peer is up (its writer takes from here).
    up: bool,
}

/// A peer node, known by name.
#[derive(Debug)]
pub struct Peer {
    id: PeerId,
    name: Arc<str>,
    outbox: Mutex<Outbox>,
    wake: Notify,
    /// Whether this node's link to the peer is up.
    linked: AtomicBool,
    /// The protocol version of this node's link to the peer (0 while it is down).
    version: AtomicU16,
    /// Inbound links from the peer now open.
    inbound: AtomicUsize,
    /// The peer's route table arrived on the current inbound link.
    routes_synced: AtomicBool,
    /// Counts inbound links from the peer; the newest one's number.
    inbound_gen: AtomicU64,
    /// When the peer was last linked either way (to forget peers gone for good).
    last_seen: Mutex<Instant>,
    /// Publishers waiting for the link to catch up.
    waiting: Mutex<Vec<std::sync::Weak<Session>>>,
}

impl Outbox {
    /// Messages not written to the current link yet.
    fn unsent(&self) -> usize {
        let written = self
            .messages
            .front()
            .map_or(0, |m| (self.written + 1).saturating_sub(m.seq) as usize);
        self.messages.len().saturating_sub(written)
    }
}

impl Peer {
    /// The peer's node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the link is up and behind: publishers should wait.
    fn congested(&self) -> bool {
        let out = self.outbox.lock();
        out.up && out.unsent() > PEER_CONGESTED
    }

    /// Registers `publisher` to be woken (through its `notify`) when the link has caught up.
    /// Returns false if there is nothing to wait for.
    pub fn wait_for_room(&self, publisher: &Arc<Session>) -> bool {
        {
            let mut waiting = self.waiting.lock();
            if !waiting.iter().any(|w| w.as_ptr() == Arc::as_ptr(publisher)) {
                waiting.push(Arc::downgrade(publisher));
            }
        }
        self.congested()
    }

    /// Wakes the publishers waiting for this peer.
    pub fn wake_waiting(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        for publisher in waiting.iter().filter_map(std::sync::Weak::upgrade) {
            publisher.notify().notify();
        }
    }
}

/// A shared group matched on peers: its name, the peers with members, and the node chosen
/// for this message (`PeerId::MAX`: this node).
type GroupChoice = (String, SmallVec<[PeerId; 4]>, Option<PeerId>);

/// A message's routing across the cluster, decided by the publishing node.
#[derive(Debug, Default)]
pub struct Plan {
    /// Peers with a matching plain route.
    plain: SmallVec<[PeerId; 8]>,
    /// Matching shared groups elsewhere: group and candidate peers.
    groups: SmallVec<[GroupChoice; 2]>,
    /// Whether there is anything to decide or send.
    empty: bool,
}

impl Plan {
    /// Whether no peer has a matching route.
    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

/// What [`Cluster::send`] did with a message.
#[derive(Debug, Default)]
pub struct Sent {
    /// Peers it was queued for.
    pub peers: usize,
    /// A peer whose link is behind: the publisher should wait for it.
    pub congested: Option<Arc<Peer>>,
    /// It was written to the durable store (with `sync: "always"` its PUBACK waits).
    pub journaled: bool,
}

/// What became of a message for one peer.
enum Enqueued {
    Queued,
    /// Queued, and the peer's link is behind.
    Congested,
    /// The outbox was full.
    Dropped,
}

/// The cluster state shared by the broker and the link tasks. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    epoch: u64,
    secret: Secret,
    max_queue: usize,
    max_frame: usize,
    local: Mutex<LocalRoutes>,
    remote: RwLock<RemoteRoutes>,
    peers: RwLock<Vec<Arc<Peer>>>,
    /// Round robin over the nodes of a shared group.
    cursor: AtomicUsize,
    /// Per sending node: its epoch and the last sequence number delivered here.
    received: Mutex<ahash::HashMap<Arc<str>, (u64, u64)>>,
    /// Readiness: start time, timeout, and the dial attempts not finished yet.
    started: Instant,
    sync_timeout: Duration,
    discovered: AtomicBool,
    pending_dials: AtomicUsize,
    metrics: ClusterMetrics,
    queued: AtomicU64,
    tls: Option<Arc<tls::LinkTls>>,
    /// With `persistence.dir`: QoS 1/2 messages in the outboxes are kept there too, until the
    /// peer acknowledges them, so that a node killed with messages it acknowledged to their
    /// publishers but not yet passed on sends them after its restart.
    durable: std::sync::OnceLock<Arc<Durable>>,
    /// Persistent sessions on the move (see [`moves`]).
    pub moves: moves::Moves,
    /// Woken when a peer's link to this node comes up: dial loops waiting out a backoff try
    /// again at once (a restarted peer is then linked both ways within moments, which a
    /// session claim from it needs for its answers).
    redial: Notify,
}

/// Messages written to no link yet past which a peer whose link is up holds its publishers back
/// (see `broker::Congestion`), and the level under which they are let go again.
pub const PEER_CONGESTED: usize = 2048;
/// See [`PEER_CONGESTED`].
pub const PEER_RELIEVED: usize = 512;

/// Peers not linked either way for this long, and no longer discovered, are forgotten with
/// their routes and outbox.
pub const PEER_FORGET: Duration = Duration::from_secs(120);

impl Cluster {
    /// A cluster member named `name`.
    pub fn new(name: String, secret: Secret, config: &Config, metrics: ClusterMetrics) -> Cluster {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Cluster {
            moves: moves::Moves::new(&name),
            redial: Notify::new(),
            name: name.into(),
            epoch,
            secret,
            max_queue: config.cluster.max_peer_queue,
            max_frame: config.max_packet_size as usize + proto::FRAME_OVERHEAD,
            local: Mutex::new(LocalRoutes::default()),
            remote: RwLock::new(RemoteRoutes::new()),
            peers: RwLock::new(Vec::new()),
            cursor: AtomicUsize::new(0),
            received: Mutex::new(ahash::HashMap::default()),
            started: Instant::now(),
            sync_timeout: Duration::from_secs(config.cluster.sync_timeout),
            discovered: AtomicBool::new(false),
            pending_dials: AtomicUsize::new(0),
            metrics,
            queued: AtomicU64::new(0),
            tls: None,
            durable: std::sync::OnceLock::new(),
        }
    }

    /// Links use mutual TLS with these configurations.
    pub fn with_tls(mut self, tls: tls::LinkTls) -> Cluster {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// The links' TLS, when `cluster.tls` is on (its reloader is started with the server).
    pub fn link_tls(&self) -> Option<&Arc<tls::LinkTls>> {
        self.tls.as_ref()
    }

    /// Keeps the outboxes' QoS 1/2 messages in `durable` as well (see the field).
    pub fn set_durable(&self, durable: Arc<Durable>) {
        let _ = self.durable.set(durable);
    }

    /// Puts the messages a previous run left in its outboxes (read from the store) back, each
    /// under a new sequence number of this run, marked as perhaps delivered already (the peer
    /// may have processed them before it could acknowledge): they go out with DUP. Called
    /// before the node serves.
    pub fn restore_outbox(&self, entries: Vec<(String, u64, OutboxRecord)>) -> usize {
        let Some(durable) = self.durable.get() else {
            return 0;
        };
        let mut by_peer: std::collections::BTreeMap<String, Vec<(u64, OutboxRecord)>> =
            Default::default();
        for (name, seq, r) in entries {
            by_peer.entry(name).or_default().push((seq, r));
        }
        let mut restored = 0;
        for (name, mut records) in by_peer {
            records.sort_by_key(|(seq, _)| *seq);
            let peer = self.peer(&name);
            let mut out = peer.outbox.lock();
            // After every old key, so that no new key is one of the old ones being deleted.
            let last_old = records.last().map_or(0, |(seq, _)| *seq);
            out.next_seq = out.next_seq.max(last_old + 1);
            for (old_seq, r) in records {
                durable.delete(Key::Outbox(name.clone(), old_seq));
                let seq = out.next_seq;
                out.next_seq += 1;
                let f = Arc::new(Forward {
                    seq,
                    topic: r.topic,
                    payload: r.payload,
                    qos: r.qos,
                    retain: r.retain,
                    stamp: r.stamp,
                    plain: r.plain,
                    groups: r.groups,
                    mid: r.mid,
                    resent: true,
                    journaled: true,
                });
                durable.put(
                    Key::Outbox(name.clone(), seq),
                    Value::Outbox(f.clone()),
                    true,
                );
                out.messages.push_back(f);
                restored += 1;
            }
        }
        self.queued.fetch_add(restored as u64, Ordering::Relaxed);
        restored
    }

    /// Drops the messages at the front of `peer`'s outbox up to `seq` (acknowledged, or given
    /// up), with their durable copies. Returns how many.
    fn pop_front_upto(&self, peer: &Peer, out: &mut Outbox, seq: u64) -> u64 {
        let mut n = 0;
        while out.messages.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = out.messages.pop_front() {
                if m.journaled
                    && let Some(d) = self.durable.get()
                {
                    d.delete(Key::Outbox(peer.name.to_string(), m.seq));
                }
            }
            n += 1;
        }
        self.queued.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A message routed to a session that just moved here was already queued for it (it
    /// came through the session's old node too): counted as a duplicate.
    pub fn seen_moved(&self, sid: u64, mid: proto::Mid) -> bool {
        let seen = self.moves.seen(sid, mid);
        if seen {
            self.metrics.duplicates.inc();
        }
        seen
    }

    /// The peer named `name`, created if new.
    pub fn peer(&self, name: &str) -> Arc<Peer> {
        if let Some(p) = self.peers.read().iter().find(|p| &*p.name == name) {
            return p.clone();
        }
        let mut peers = self.peers.write();
        if let Some(p) = peers.iter().find(|p| &*p.name == name) {
            return p.clone();
        }
        let peer = Arc::new(Peer {
            id: peers.len() as PeerId,
            name: name.into(),
            outbox: Mutex::new(Outbox {
                next_seq: 1,
                ..Outbox::default()
            }),
            wake: Notify::new(),
            linked: AtomicBool::new(false),
            version: AtomicU16::new(0),
            inbound: AtomicUsize::new(0),
            routes_synced: AtomicBool::new(false),
            inbound_gen: AtomicU64::new(0),
            last_seen: Mutex::new(Instant::now()),
            waiting: Mutex::new(Vec::new()),
        });
        peers.push(peer.clone());
        peer
    }

    /// Names and link states of the known peers, for logs and tests.
    pub fn peer_states(&self) -> Vec<(String, bool)> {
        self.peers
            .read()
            .iter()
            .map(|p| (p.name.to_string(), p.linked.load(Ordering::Relaxed)))
            .collect()
    }

    // --- routes announced by this node ---

    /// A local session subscribed to `filter` (`$share/g/f` for shared ones) for the first
    /// time: announced to the peers if it is the filter's first local subscriber.
    pub fn local_subscribed(&self, filter: &str) {
        let mut local = self.local.lock();
        if local.add(filter) {
            self.to_linked(|| Frame::RouteAdd(filter.to_owned()));
        }
    }

    /// A local session's subscription to `filter` is gone: withdrawn from the peers if it was
    /// the last.
    pub fn local_unsubscribed(&self, filter: &str) {
        let mut local = self.local.lock();
        if local.remove(filter) {
            self.to_linked(|| Frame::RouteDel(filter.to_owned()));
        }
    }

    /// A client connected here: the peers of the previous release (version 1 links) close and
    /// discard the same client id (newer peers were asked for it by `moves::claim`).
    pub fn evict_elsewhere(&self, client_id: &str) {
        let _local = self.local.lock();
        for peer in self.peers.read().iter() {
            let mut out = peer.outbox.lock();
            if out.up && peer.version.load(Ordering::Acquire) < 2 {
                out.control.push_back(Frame::Evict {
                    client_id: client_id.to_owned(),
                });
                drop(out);
                peer.wake.notify_one();
            }
        }
    }

    /// Queues a control frame for every peer whose link is up (the caller holds `local`, so
    /// a link coming up sees either the frame or its effect in the full table).
    fn to_linked(&self, frame: impl Fn() -> Frame) {
        for peer in self.peers.read().iter() {
            let mut out = peer.outbox.lock();
            if out.up {
                out.control.push_back(frame());
                drop(out);
                peer.wake.notify_one();
            }
        }
    }

    // --- messages ---

    /// Which peers `msg` goes to. Cheap when no peer has routes.
    pub fn plan(&self, topic: &str) -> Plan {
        let remote = self.remote.read();
        let m = remote.matches(topic);
        if m.is_empty() {
            return Plan {
                empty: true,
                ..Plan::default()
            };
        }
        let mut plan = Plan {
            plain: m.plain.clone(),
            ..Plan::default()
        };
        for (group, peer) in &m.shared {
            match plan.groups.iter_mut().find(|(g, _, _)| g == group) {
                Some((_, peers, _)) => peers.push(*peer),
                None => {
                    plan.groups
                        .push(((*group).to_owned(), SmallVec::from_slice(&[*peer]), None))
                }
            }
        }
        plan
    }

    /// The router found local members of shared `group`: whether this node delivers to it
    /// (one node per group across the cluster, round robin), else the peer that does is
    /// recorded in the plan.
    pub fn pick_local_group(&self, plan: &mut Plan, group: &str) -> bool {
        let Some((_, candidates, chosen)) = plan.groups.iter_mut().find(|(g, _, _)| g == group)
        else {
            return true;
        };
        if let Some(c) = chosen {
            // The group matched through another filter too: same decision.
            return *c == PeerId::MAX;
        }
        let n = candidates.len() + 1;
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        if i == 0 {
            *chosen = Some(PeerId::MAX);
            true
        } else {
            *chosen = Some(candidates[i - 1]);
            false
        }
    }

    /// Queues `msg` for the peers of `plan` (every peer if it is retained, so they store it).
    /// Says how many peers it was queued for, a peer whose link is behind (the publisher
    /// should wait for it), and whether the durable state changed.
    pub fn send(&self, msg: &Message, mut plan: Plan) -> Sent {
        if plan.empty && !msg.retain {
            return Sent::default();
        }
        // Groups no local member claimed: one of the peers.
        for (_, candidates, chosen) in plan.groups.iter_mut() {
            if chosen.is_none() && !candidates.is_empty() {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed) % candidates.len();
                *chosen = Some(candidates[i]);
            }
        }
        let peers = self.peers.read();
        let mut sent = Sent::default();
        for peer in peers.iter() {
            let plain = plan.plain.contains(&peer.id);
            let groups: Vec<String> = plan
                .groups
                .iter()
                .filter(|(_, _, c)| *c == Some(peer.id))
                .map(|(g, _, _)| g.clone())
                .collect();
            if !plain && groups.is_empty() && !msg.retain {
                continue;
            }
            let f = Forward {
                seq: 0,
                topic: msg.topic.clone(),
                payload: msg.payload.clone(),
                qos: msg.qos as u8,
                retain: msg.retain,
                stamp: msg.stamp,
                plain,
                groups,
                mid: msg.mid,
                resent: false,
                journaled: false,
            };
            let journals = f.qos > 0 && (f.plain || !f.groups.is_empty());
            match self.enqueue(peer, f, journals) {
                Enqueued::Dropped => {}
                Enqueued::Queued => sent.peers += 1,
                Enqueued::Congested => {
                    sent.peers += 1;
                    if sent.congested.is_none() {
                        sent.congested = Some(peer.clone());
                    }
                }
            }
            sent.journaled |= journals && self.durable.get().is_some();
        }
        sent
    }

    /// Appends `f` to `peer`'s outbox; `journals`: a QoS 1/2 message for the peer's
    /// subscribers, which is kept in the durable store too (when there is one that accepts
    /// changes; when the disk is full it goes in memory only).
    fn enqueue(&self, peer: &Peer, mut f: Forward, journals: bool) -> Enqueued {
        let mut out = peer.outbox.lock();
        if out.messages.len() >= self.max_queue {
            drop(out);
            self.metrics.dropped_queue_full.inc();
            return Enqueued::Dropped;
        }
        f.seq = out.next_seq;
        out.next_seq += 1;
        let durable = self.durable.get().filter(|d| journals && !d.is_refusing());
        f.journaled = durable.is_some();
        let f = Arc::new(f);
        if let Some(d) = durable {
            d.put(
                Key::Outbox(peer.name.to_string(), f.seq),
                Value::Outbox(f.clone()),
                true,
            );
        }
        out.messages.push_back(f);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let up = out.up;
        let behind = up && out.unsent() > PEER_CONGESTED;
        drop(out);
        if up {
            peer.wake.notify_one();
        }
        if behind {
            Enqueued::Congested
        } else {
            Enqueued::Queued
        }
    }

    /// Messages waiting for peers.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    // --- receiving ---

    /// Whether `seq` from `sender` (in `epoch`) is new; records it.
    fn accept_seq(&self, sender: &Arc<str>, epoch: u64, seq: u64) -> bool {
        let mut received = self.received.lock();
        let entry = received.entry(sender.clone()).or_insert((epoch, 0));
        if entry.0 != epoch {
            *entry = (epoch, 0);
        }
        if seq <= entry.1 {
            return false;
        }
        entry.1 = seq;
        true
    }

    /// The last sequence number delivered here from `sender` in `epoch`.
    fn last_seq(&self, sender: &str, epoch: u64) -> u64 {
        match self.received.lock().get(sender) {
            Some((e, seq)) if *e == epoch => *seq,
            _ => 0,
        }
    }

    /// Readiness: the first discovery ran and every dial attempt it started finished, and
    /// every linked peer sent its routes; or `syncTimeout` passed since start.
    pub fn synced(&self) -> bool {
        if self.started.elapsed() >= self.sync_timeout {
            return true;
        }
        if !self.discovered.load(Ordering::Relaxed)
            || self.pending_dials.load(Ordering::Relaxed) > 0
        {
            return false;
        }
        self.peers
            .read()
            .iter()
            .all(|p| !p.linked.load(Ordering::Relaxed) || p.routes_synced.load(Ordering::Relaxed))
    }

    /// Sets the scrape-time cluster gauges.
    pub fn update_gauges(&self) {
        let peers = self.peers.read();
        let linked = peers
            .iter()
            .filter(|p| p.linked.load(Ordering::Relaxed))
            .count();
        self.metrics
            .peers
            .with_label_values(&["known"])
            .set(peers.len() as i64);
        self.metrics
            .peers
            .with_label_values(&["linked"])
            .set(linked as i64);
        self.metrics.routes.set(self.remote.read().len() as i64);
        self.metrics.queued.set(self.queued() as i64);
    }

    /// Forgets peers that have not been linked either way for [`PEER_FORGET`]: their routes
    /// go, and what waits for them is dropped (counted).
    pub fn forget_gone_peers(&self, still_discovered: impl Fn(&str) -> bool) {
        for peer in self.peers.read().iter() {
            let idle = !peer.linked.load(Ordering::Relaxed)
                && peer.inbound.load(Ordering::Relaxed) == 0
                && peer.last_seen.lock().elapsed() >= PEER_FORGET;
            if !idle || still_discovered(&peer.name) {
                continue;
            }
            self.remote.write().remove_peer(peer.id);
            let mut out = peer.outbox.lock();
            let n = out.messages.len();
            if n > 0 {
                self.pop_front_upto(peer, &mut out, u64::MAX);
                self.metrics.dropped_peer_gone.inc_by(n as u64);
                tracing::warn!(
                    peer = %peer.name,
                    dropped = n,
                    "cluster peer gone: its queued messages are dropped"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use bytes::Bytes;

    fn cluster() -> Cluster {
        let metrics = crate::metrics::Metrics::new();
        Cluster::new(
            "a".into(),
            Secret::new(b"0123456789"),
            &Config::default(),
            metrics.cluster,
        )
    }

    #[test]
    fn plans_send_each_peer_one_copy_and_each_group_to_one_node() {
        let c = cluster();
        let b = c.peer("b");
        let d = c.peer("d");
        {
            let mut r = c.remote.write();
            r.add(b.id, "t/+");
            r.add(b.id, "t/#");
            r.add(d.id, "$share/g/t/x");
            r.add(b.id, "$share/g/t/+");
        }
        let msg = Message::new(
            "t/x".into(),
            Bytes::from_static(b"p"),
            QoS::AtLeastOnce,
            false,
        );
        let mut copies = 0;
        for _ in 0..10 {
            let plan = c.plan(&msg.topic);
            assert!(!plan.is_empty());
            copies += c.send(&msg, plan).peers;
        }
        let b_out: Vec<_> = b.outbox.lock().messages.iter().cloned().collect();
        let d_out: Vec<_> = d.outbox.lock().messages.iter().cloned().collect();
        // b has plain routes: every message once, with the plain flag.
        assert_eq!(b_out.len(), 10);
        assert!(b_out.iter().all(|f| f.plain));
        // d only has the group: it gets a copy only when picked for it.
        assert!(d_out.iter().all(|f| !f.plain && f.groups == ["g"]));
        let g_at_b = b_out.iter().filter(|f| f.groups == ["g"]).count();
        assert_eq!(g_at_b + d_out.len(), 10, "one node per message for group g");
        assert_eq!((g_at_b, d_out.len()), (5, 5));
        assert_eq!(copies, 15);
        // Sequence numbers per peer, from 1.
        assert_eq!(
            b_out.iter().map(|f| f.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(c.plan("u").is_empty());
    }

    #[test]
    fn a_local_group_member_takes_its_turn() {
        let c = cluster();
        let b = c.peer("b");
        c.remote.write().add(b.id, "$share/g/t");
        let msg = Message::new("t".into(), Bytes::new(), QoS::AtMostOnce, false);
        let mut local = 0;
        for _ in 0..10 {
            let mut plan = c.plan("t");
            if c.pick_local_group(&mut plan, "g") {
                local += 1;
            }
            c.send(&msg, plan);
        }
        assert_eq!(local, 5);
        assert_eq!(b.outbox.lock().messages.len(), 5);
        // A group no peer has is always local.
        let mut plan = c.plan("t");
        assert!(c.pick_local_group(&mut plan, "other"));
    }

    #[test]
    fn sequence_numbers_deduplicate_per_epoch() {
        let c = cluster();
        let b: Arc<str> = "b".into();
        assert!(c.accept_seq(&b, 1, 1));
        assert!(c.accept_seq(&b, 1, 2));
        assert!(!c.accept_seq(&b, 1, 2));
        assert!(!c.accept_seq(&b, 1, 1));
        assert_eq!(c.last_seq("b", 1), 2);
        assert_eq!(c.last_seq("b", 2), 0);
        // A restarted sender (new epoch) starts again at 1.
        assert!(c.accept_seq(&b, 2, 1));
    }

    #[test]
    fn full_outbox_drops_and_counts() {
        let metrics = crate::metrics::Metrics::new();
        let config = Config {
            cluster: crate::config::ClusterConfig {
                max_peer_queue: 2,
                ..Default::default()
            },
            ..Config::default()
        };
        let c = Cluster::new(
            "a".into(),
            Secret::new(b"0123456789"),
            &config,
            metrics.cluster,
        );
        let b = c.peer("b");
        c.remote.write().add(b.id, "#");
        let msg = Message::new("t".into(), Bytes::new(), QoS::AtMostOnce, false);
        for _ in 0..3 {
            c.send(&msg, c.plan("t"));
        }
        assert_eq!(b.outbox.lock().messages.len(), 2);
        assert_eq!(c.metrics.dropped_queue_full.get(), 1);
        assert_eq!(c.queued(), 2);
    }
}
