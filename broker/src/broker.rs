//! The state every connection shares: settings, the router, the retained store, the session
//! registry and the metrics, plus the operations that touch more than one of them (publish a
//! message, subscribe with retained delivery, forget a discarded session).

use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::acl::{Acl, ClientAcl, SubscribeCheck};
use crate::auth::{DEFAULT_CACHE_CAPACITY, PasswordFile, Verdict, VerifiedCache};
use crate::codec::QoS;
use crate::config::Config;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::persist::Durable;
use crate::persist::journal::Value;
use crate::persist::record::{Key, QueueRecord, QueueState, SessionRecord};
use crate::router::Router;
use crate::router::retained::{Retained, RetainedStore};
use crate::session::registry::{Discarded, Registry};
use crate::session::store::MemoryStore;
use crate::session::{ClientIdentity, Enqueued, InFlight, QueuePolicy, Session, SessionCore};
use crate::topic::{Subscription, TopicLimits, parse_subscription};

/// Number of shards of the subscription trie and of the retained store.
const SHARDS: usize = 64;

/// A subscriber a publisher should wait for before reading more (flow control).
///
/// The publisher waits when the broker is behind on a subscriber (its inbox is past the mark
/// while its connection could send more), or when a subscriber is the message's only recipient
/// and still draining, even if its own client is the bottleneck: then waiting slows nobody else
/// (point to point, fan-in). A slow subscriber among several recipients is never waited for, so
/// it cannot slow the others' feed: its queue fills and the overflow is dropped and counted.
///
/// In a cluster, a peer whose link is up but behind (more than `cluster::PEER_CONGESTED`
/// messages not yet written to it) holds its publishers back the same way, so the cluster link
/// sets the pace instead of an ever-growing outbox.
#[derive(Debug, Clone)]
pub struct Congestion {
    /// What the publisher waits for.
    pub on: CongestedOn,
    /// Whether it was the only recipient (then its client's slowness does not matter).
    pub sole_recipient: bool,
}

/// The subscriber or the cluster peer a publisher waits for.
#[derive(Debug, Clone)]
pub enum CongestedOn {
    /// A local subscriber's inbox.
    Session(Arc<Session>),
    /// A peer's outbox.
    Peer(Arc<crate::cluster::Peer>),
}

impl Congestion {
    /// Registers `publisher` to be woken when there is room; false if there is nothing to wait
    /// for any more.
    pub fn wait_for_room(&self, publisher: &Arc<Session>) -> bool {
        match &self.on {
            CongestedOn::Session(s) => s.wait_for_room(publisher, self.sole_recipient),
            CongestedOn::Peer(p) => p.wait_for_room(publisher),
        }
    }

    /// Whether the publisher would wait for the session `id` (itself).
    pub fn is_session(&self, id: u64) -> bool {
        matches!(&self.on, CongestedOn::Session(s) if s.id() == id)
    }
}

/// What `Broker::publish` did with a message.
#[derive(Debug, Default)]
pub struct Published {
    /// Local sessions it was offered to.
    pub delivered: usize,
    /// A subscriber or peer the publisher should wait for (see `Congestion`).
    pub congested: Option<Congestion>,
    /// It changed the durable state (queued for a persistent session, or retained): with
    /// `sync: "always"` its acknowledgement waits for the commit.
    pub journaled: bool,
}

/// What routing a message to the local sessions did.
#[derive(Debug, Default)]
struct Routed {
    delivered: usize,
    congested: Option<Congestion>,
    journaled: bool,
}

/// The configuration in the form the connection code reads on every packet.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted, in bytes.
    pub max_packet_size: usize,
    /// Outbound QoS 1/2 window per client.
    pub max_inflight: usize,
    /// Queue bounds.
    pub queue: QueuePolicy,
    /// Inbound QoS 2 messages awaiting PUBREL per client.
    pub max_awaiting_rel: usize,
    /// Topic length and depth limits.
    pub topics: TopicLimits,
    /// Subscriptions per client (0 = unlimited).
    pub max_subscriptions: usize,
    /// How long an offline persistent session is kept (`None` = forever).
    pub session_expiry: Option<Duration>,
    /// How long a takeover waits for the previous connection to let go.
    pub takeover_wait: Duration,
    /// The client certificate's identity is the user name.
    pub use_identity_as_username: bool,
    /// Clients without a user name are accepted.
    pub allow_anonymous: bool,
}

impl Settings {
    /// Derives the settings from a validated configuration.
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(c.connect_timeout),
            max_packet_size: c.max_packet_size as usize,
            max_inflight: c.max_inflight as usize,
            queue: QueuePolicy {
                max_queued: c.max_queued_messages,
                qos0_offline: c.queue_qos0_offline,
            },
            max_awaiting_rel: c.max_awaiting_rel,
            topics: TopicLimits {
                max_length: c.max_topic_length,
                max_levels: c.max_topic_levels,
            },
            max_subscriptions: c.max_subscriptions_per_client,
            session_expiry: (c.session_expiry > 0).then(|| Duration::from_secs(c.session_expiry)),
            takeover_wait: Duration::from_secs(10),
            use_identity_as_username: c.tls_info.use_identity_as_username,
            allow_anonymous: c.allow_anonymous,
        }
    }
}

/// Shared broker state. See the module documentation.
#[derive(Debug)]
pub struct Broker {
    /// Settings from the configuration.
    pub settings: Settings,
    /// Subscriptions.
    pub router: Router,
    /// Retained messages.
    pub retained: RetainedStore,
    /// Sessions by client id.
    pub sessions: Registry,
    /// Metrics.
    pub metrics: Metrics,
    /// The ACL, when `acl` is on.
    acl: Option<ArcSwap<Acl>>,
    /// The password file, when `passwordFile` is set.
    passwords: Option<ArcSwap<PasswordFile>>,
    /// Credentials that verified recently (see `auth::VerifiedCache`).
    verified: Option<Arc<VerifiedCache>>,
    /// Bounds concurrent slow password checks so a flood of bad logins cannot take every
    /// blocking thread.
    slow_checks: tokio::sync::Semaphore,
    /// What `/healthz` and `/readyz` report.
    pub health: crate::http::Health,
    /// The cluster, when `cluster.port` is set (installed once, before serving).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Bumped to ask the background tasks to re-read their files now (SIGHUP).
    pub reload: tokio::sync::watch::Sender<u64>,
    /// Bumped after every attempt to reload a file, successful or not (for tests and tools
    /// that need to know a reload has happened).
    pub reloaded: tokio::sync::watch::Sender<u64>,
    next_conn_id: AtomicU64,
    next_auto_id: AtomicU64,
    /// Distinguishes assigned client ids of this process from a previous one's.
    boot: u64,
    /// The durable state, with `persistence.dir`.
    pub durable: Option<Arc<Durable>>,
    /// When a `disk_full` drop was last logged (ms on the session clock), to log it at most
    /// once a second.
    disk_full_logged: AtomicU64,
}

impl Broker {
    /// A broker with empty state; `acl` is the parsed ACL when the ACL is on, `passwords` the
    /// parsed password file when one is configured.
    pub fn new(config: &Config, acl: Option<Acl>, passwords: Option<PasswordFile>) -> Broker {
        Broker::with_durable(config, acl, passwords, Metrics::new(), None)
    }

    /// Like [`Broker::new`] with its `metrics`, mirroring its state into `durable` (opened by
    /// the caller with `metrics.persist`; the state it read back is applied with
    /// `persist::restore::apply`).
    pub fn with_durable(
        config: &Config,
        acl: Option<Acl>,
        passwords: Option<PasswordFile>,
        metrics: Metrics,
        durable: Option<Arc<Durable>>,
    ) -> Broker {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Broker {
            settings: Settings::from_config(config),
            router: Router::new(SHARDS),
            retained: RetainedStore::new(SHARDS, config.max_retained_messages),
            sessions: Registry::new(Box::new(MemoryStore::default()), config.max_sessions),
            metrics,
            acl: acl.map(ArcSwap::from_pointee),
            verified: passwords
                .as_ref()
                .and_then(|_| VerifiedCache::new(DEFAULT_CACHE_CAPACITY).ok())
                .map(Arc::new),
            passwords: passwords.map(ArcSwap::from_pointee),
            slow_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            health: crate::http::Health::default(),
            cluster: std::sync::OnceLock::new(),
            reload: tokio::sync::watch::Sender::new(0),
            reloaded: tokio::sync::watch::Sender::new(0),
            next_conn_id: AtomicU64::new(1),
            next_auto_id: AtomicU64::new(1),
            boot,
            durable,
            disk_full_logged: AtomicU64::new(0),
        }
    }

    /// A process-unique connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A unique client id for a client that sent an empty one (clean session only).
    pub fn assign_client_id(&self) -> String {
        let n = self.next_auto_id.fetch_add(1, Ordering::Relaxed);
        format!("auto-{:x}-{n:x}", self.boot & 0xFFFF_FFFF)
    }

    /// The ACL compiled for one client (allow-all when the ACL is off).
    pub fn client_acl(&self, who: &ClientIdentity) -> Arc<ClientAcl> {
        match &self.acl {
            Some(acl) => Arc::new(acl.load().for_client(&who.as_acl())),
            None => ClientAcl::shared_allow_all(),
        }
    }

    /// Whether a password file is configured.
    pub fn checks_passwords(&self) -> bool {
        self.passwords.is_some()
    }

    /// Checks a user name and password against the password file (which must be configured).
    /// Slow (PBKDF2) unless the same credentials verified recently; the slow check runs on the
    /// blocking pool, at most one per core at a time.
    pub async fn verify_password(&self, user: &str, password: &[u8]) -> Verdict {
        let Some(file) = self.passwords.as_ref().map(|p| p.load_full()) else {
            return Verdict::UnknownUser;
        };
        if let Some(cache) = &self.verified {
            if cache.is_cached(&file, user, password) {
                return Verdict::Ok;
            }
        }
        let Ok(_permit) = self.slow_checks.acquire().await else {
            return Verdict::BadPassword;
        };
        let cache = self.verified.clone();
        let (user, password) = (user.to_owned(), password.to_vec());
        tokio::task::spawn_blocking(move || match cache {
            Some(c) => c.verify(&file, &user, &password),
            None => file.verify(&user, &password),
        })
        .await
        .unwrap_or(Verdict::BadPassword)
    }

    /// Installs a new password file; clients already connected stay connected.
    pub fn reload_passwords(&self, file: PasswordFile) {
        if let Some(slot) = &self.passwords {
            if let Some(cache) = &self.verified {
                cache.prune(&file);
            }
            slot.store(Arc::new(file));
        }
    }

    /// Whether the ACL is on.
    pub fn acl_enabled(&self) -> bool {
        self.acl.is_some()
    }

    /// Installs a new ACL without dropping connections: every session gets its rules compiled
    /// again and every subscription is classified again. While that runs, subscriptions are
    /// first all switched to per-message checks, so no message slips through on a stale
    /// classification.
    pub fn reload_acl(&self, acl: Acl) {
        let Some(slot) = &self.acl else { return };
        self.router.reclassify(|_, _| true);
        slot.store(Arc::new(acl));
        for session in self.sessions.all() {
            if let Some(who) = session.identity() {
                session.set_acl(self.client_acl(&who));
            }
        }
        self.router
            .reclassify(|session, filter| session.acl().subscribe(filter) != SubscribeCheck::Allow);
    }

    /// Routes a message to every matching session and stores it if retained; in a cluster,
    /// also forwards it to the peers with matching routes. Says how many local sessions it was
    /// offered to, whether the publisher should wait for room (see `Congestion`), and whether
    /// the durable state changed.
    pub fn publish(&self, msg: &Arc<Message>) -> Published {
        let mut journaled = false;
        if msg.retain {
            journaled |= self.store_retained(msg);
        }
        let (routed, peers) = match self.cluster.get() {
            None => (self.route_message(msg, true, false, |_| true), 0),
            Some(cluster) => {
                let mut plan = cluster.plan(&msg.topic);
                let mut routed = if plan.is_empty() {
                    self.route_message(msg, true, false, |_| true)
                } else {
                    self.route_message(msg, true, false, |g| cluster.pick_local_group(&mut plan, g))
                };
                let sent = cluster.send(msg, plan);
                routed.congested = routed.congested.or(sent.congested.map(|p| Congestion {
                    on: CongestedOn::Peer(p),
                    sole_recipient: true,
                }));
                journaled |= sent.journaled;
                (routed, sent.peers)
            }
        };
        if routed.delivered > 0 || peers > 0 {
            self.metrics.routed.inc();
        } else if !msg.retain {
            // A retained message nobody subscribes to yet was stored (or, empty, deleted one):
            // not a loss.
            self.metrics.dropped.no_subscriber.inc();
        }
        Published {
            delivered: routed.delivered,
            congested: routed.congested,
            journaled: journaled || routed.journaled,
        }
    }

    /// Publishes a message the broker itself originates (`$SYS`): routed like any other, but
    /// not counted as a dropped publish when nobody listens, and kept on this node.
    pub fn publish_internal(&self, msg: &Arc<Message>) {
        if msg.retain {
            // A fixed set of `$SYS` topics: not counted against `maxRetainedMessages`, which
            // bounds what clients can make the broker keep.
            self.retained.set_unbounded(msg);
        }
        self.route_message(msg, true, false, |_| true);
    }

    /// Publishes a notification the broker originates that subscribers on every node of a
    /// cluster get (online/offline events): like `publish_internal`, and forwarded.
    pub fn publish_notification(&self, msg: &Arc<Message>) {
        match self.cluster.get() {
            None => self.publish_internal(msg),
            Some(cluster) => {
                let mut plan = cluster.plan(&msg.topic);
                self.route_message(msg, true, false, |g| cluster.pick_local_group(&mut plan, g));
                cluster.send(msg, plan);
            }
        }
    }

    /// Delivers a message a peer forwarded to the local subscribers it names (never forwarded
    /// again: that is what keeps messages from looping between nodes).
    /// Returns a subscriber the link should wait for before it reads more (flow control that
    /// reaches back to the publishing node through the link).
    pub fn deliver_forwarded(&self, f: crate::cluster::proto::Forward) -> Option<Congestion> {
        let msg = Arc::new(Message {
            topic: f.topic,
            payload: f.payload,
            qos: QoS::from_u8(f.qos).unwrap_or(QoS::AtMostOnce),
            retain: f.retain,
            received_at: std::time::Instant::now(),
            stamp: f.stamp,
            durable: Default::default(),
            mid: f.mid,
        });
        if msg.retain {
            self.store_retained(&msg);
        }
        self.route_message(&msg, f.plain, f.resent, |g| f.groups.iter().any(|x| x == g))
            .congested
    }

    /// Stores a retained message a peer sent when its link came up, unless a newer one is here.
    pub fn store_synced_retained(&self, f: &crate::cluster::proto::Forward) {
        let msg = Arc::new(Message {
            topic: f.topic.clone(),
            payload: Bytes::copy_from_slice(&f.payload),
            qos: QoS::from_u8(f.qos).unwrap_or(QoS::AtMostOnce),
            retain: true,
            received_at: std::time::Instant::now(),
            stamp: f.stamp,
            durable: Default::default(),
            mid: f.mid,
        });
        let durable = self.durable.as_deref();
        let outcome = self.retained.set_if_newer_with(&msg, |change| {
            if let Some(d) = durable {
                journal_retained(d, change);
            }
        });
        if outcome == Retained::Full {
            self.metrics.retained_refused.inc();
        }
    }

    /// A client connected here: in a cluster, the other nodes let go of the same client id.
    pub fn client_connected(&self, client_id: &str) {
        if let Some(cluster) = self.cluster.get() {
            cluster.evict_elsewhere(client_id);
        }
    }

    /// Another node took `client_id` over: its connection here is closed as by a takeover
    /// (will published) and its session discarded, so it never exists on two nodes.
    pub fn evict_local(&self, client_id: &str) {
        if let Some(d) = self.sessions.evict(client_id) {
            self.forget(d);
        }
    }

    /// Whether the cluster (if any) has synchronised with its reachable peers.
    pub fn cluster_synced(&self) -> bool {
        self.cluster.get().is_none_or(|c| c.synced())
    }

    /// `dup`: the message may have been delivered here before (a peer resends it after this
    /// node restarted): it goes out with DUP.
    fn route_message(
        &self,
        msg: &Arc<Message>,
        plain: bool,
        dup: bool,
        group: impl FnMut(&str) -> bool,
    ) -> Routed {
        // The first congested subscriber that the broker is behind on, and the first whose own
        // client is slow: the latter matters only if it is the message's only recipient.
        let mut behind = None;
        let mut slow = None;
        let mut journaled = false;
        let policy = self.settings.queue;
        let dropped = &self.metrics.dropped;
        let durable = self.durable.as_deref();
        let n =
            self.router
                .route_with(&msg.topic, plain, group, |session, granted, check| {
                    if check && !session.acl().can_receive(&msg.topic) {
                        self.metrics.acl_denied.receive.inc();
                        return;
                    }
                    let qos = msg.qos.min(granted);
                    if session.is_arriving() {
                        // Moved here moments ago: this message may have come through its old node too.
                        if let Some(c) = self.cluster.get() {
                            if c.seen_moved(session.id(), msg.mid) {
                                return;
                            }
                        }
                    }
                    let journals = session.journals(qos, durable);
                    let d = Delivery {
                        dup,
                        ..Delivery::new(msg.clone(), qos, false)
                    };
                    match session.deliver(d, policy, durable) {
                        Enqueued::Queued => journaled |= journals,
                        Enqueued::Congested => {
                            journaled |= journals;
                            let slot = if session.client_slow() {
                                &mut slow
                            } else {
                                &mut behind
                            };
                            if slot.is_none() {
                                *slot = Some(session.clone());
                            }
                        }
                        Enqueued::QueuedEvictedQos0 => {
                            journaled |= journals;
                            dropped.queue_full.inc()
                        }
                        Enqueued::DroppedQueueFull => dropped.queue_full.inc(),
                        Enqueued::DroppedOffline => dropped.offline_qos0.inc(),
                        Enqueued::DroppedDiskFull => self.count_disk_full(session),
                        Enqueued::Moved => {
                            let sent = self.cluster.get().is_some_and(|c| {
                                crate::cluster::moves::forward(c, session, msg, qos)
                            });
                            if !sent {
                                dropped.no_subscriber.inc();
                            }
                        }
                    }
                });
        let congested = match (behind, slow) {
            (Some(session), _) => Some(Congestion {
                on: CongestedOn::Session(session),
                sole_recipient: n == 1,
            }),
            (None, Some(session)) if n == 1 => Some(Congestion {
                on: CongestedOn::Session(session),
                sole_recipient: true,
            }),
            _ => None,
        };
        Routed {
            delivered: n,
            congested,
            journaled,
        }
    }

    /// Counts (and logs, at most once a second) a message refused for a persistent session
    /// because the durable store refuses changes.
    fn count_disk_full(&self, session: &Session) {
        self.metrics.dropped.disk_full.inc();
        let now = crate::session::clock_ms();
        let last = self.disk_full_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .disk_full_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                client_id = %session.client_id(),
                "message for a persistent session dropped: the durable store is full or failing \
                 (persistence.maxDiskBytes; hmq_publish_dropped_total{{reason=\"disk_full\"}})"
            );
        }
    }

    /// Stores (or, with an empty payload, deletes) a retained message; true if the durable
    /// state changed.
    fn store_retained(&self, msg: &Arc<Message>) -> bool {
        // The retained copy owns exactly its payload bytes: a shared slice would keep the whole
        // read buffer it came from alive for as long as the message stays retained.
        let stored = Arc::new(Message {
            payload: Bytes::copy_from_slice(&msg.payload),
            ..Message::clone(msg)
        });
        let durable = self.durable.as_deref();
        let outcome = self.retained.set_with(&stored, |change| {
            if let Some(d) = durable {
                journal_retained(d, change);
            }
        });
        if outcome == Retained::Full {
            self.metrics.retained_refused.inc();
        }
        durable.is_some() && outcome != Retained::Full
    }

    /// Adds a subscription and queues the matching retained messages (RETAIN=1, at
    /// min(retained QoS, granted QoS)) for the subscriber. Shared subscriptions get no retained
    /// messages. `check`: the filter needs a per-message ACL check.
    pub fn subscribe(&self, session: &Arc<Session>, sub: &Subscription<'_>, qos: QoS, check: bool) {
        if self.router.subscribe(session, sub, qos, check) {
            if let Some(cluster) = self.cluster.get() {
                cluster.local_subscribed(&route_name(sub));
            }
        }
        if sub.group.is_some() {
            return;
        }
        let mut found = Vec::new();
        self.retained.matching(sub.filter, &mut found);
        let acl = session.acl();
        for msg in found {
            if check && !acl.can_receive(&msg.topic) {
                continue;
            }
            let d = Delivery::new(msg.clone(), msg.qos.min(qos), true);
            match session.deliver(d, self.settings.queue, self.durable.as_deref()) {
                Enqueued::DroppedQueueFull | Enqueued::QueuedEvictedQos0 => {
                    self.metrics.dropped.queue_full.inc()
                }
                Enqueued::DroppedDiskFull => self.count_disk_full(session),
                _ => {}
            }
        }
    }

    /// Puts back a subscription read from the durable store: the router and the cluster's
    /// route table, no retained messages (the session had them already).
    pub fn restore_subscription(
        &self,
        session: &Arc<Session>,
        sub: &Subscription<'_>,
        qos: QoS,
        check: bool,
    ) {
        if self.router.subscribe(session, sub, qos, check) {
            if let Some(cluster) = self.cluster.get() {
                cluster.local_subscribed(&route_name(sub));
            }
        }
    }

    /// Puts back the subscriptions of a session read from the durable store or moved from
    /// another node (`subscriptions` as the record keeps them) into the router, the cluster's
    /// route table and `core`. What the rules no longer allow outright is checked per message,
    /// as after an ACL reload; a filter this configuration refuses is dropped, with a warning.
    pub fn restore_subscriptions(
        &self,
        session: &Arc<Session>,
        core: &mut SessionCore,
        subscriptions: &[(String, u8)],
    ) {
        let acl = session.acl();
        for (raw, qos) in subscriptions {
            let (Ok(sub), Some(qos)) = (
                parse_subscription(raw, &self.settings.topics),
                QoS::from_u8(*qos),
            ) else {
                tracing::warn!(client_id = %session.client_id(), filter = %raw,
                    "stored or moved subscription not valid under this configuration: dropped");
                continue;
            };
            let check = acl.subscribe(sub.filter) != crate::acl::SubscribeCheck::Allow;
            self.restore_subscription(session, &sub, qos, check);
            core.subscriptions.insert(raw.clone(), qos);
        }
    }

    /// Removes one subscription of a session. Returns true if it existed.
    pub fn unsubscribe(&self, session_id: u64, sub: &Subscription<'_>) -> bool {
        let removed = self.router.unsubscribe(session_id, sub);
        if removed {
            if let Some(cluster) = self.cluster.get() {
                cluster.local_unsubscribed(&route_name(sub));
            }
        }
        removed
    }

    /// Removes every subscription of a session that no longer exists, and its durable state.
    pub fn forget(&self, discarded: Discarded) {
        for filter in discarded.subscriptions().keys() {
            if let Ok(sub) = parse_subscription(filter, &self.settings.topics) {
                self.unsubscribe(discarded.session.id(), &sub);
            }
        }
        let Discarded { session, mut core } = discarded;
        let queued = session.inbox().drain();
        self.forget_durable(&session, &mut core, &queued);
    }

    /// Deletes a session's durable state (its record, queue, in-flight messages and QoS 2
    /// ids): it was discarded, or it moved to another node (`queued`: its queue, taken out).
    pub fn forget_durable(&self, session: &Session, core: &mut SessionCore, queued: &[Delivery]) {
        let Some(d) = &self.durable else { return };
        if !session.is_journaled() {
            return;
        }
        // First: a publisher that looks after this no longer writes to the store.
        session.set_journaled(false);
        let sid = session.id();
        d.delete(Key::Session(sid));
        let mut rest = session.inbox().drain();
        rest.extend_from_slice(queued);
        for q in rest.iter().filter(|q| q.seq != 0) {
            d.delete(Key::Queue(sid, q.seq));
            d.drop_ref(&q.msg);
        }
        for f in core.outbound.drain() {
            self.journal_done(session, &f);
        }
        for pkid in std::mem::take(&mut core.awaiting_rel) {
            d.delete(Key::Awaiting(sid, pkid));
        }
    }

    /// Writes a journaled session's record: its subscriptions and identity, and when it went
    /// offline (`None` while connected).
    pub fn journal_session(
        &self,
        session: &Session,
        core: &SessionCore,
        offline_since_ms: Option<u64>,
    ) {
        let Some(d) = &self.durable else { return };
        if !session.is_journaled() {
            return;
        }
        let (username, ip) = session.stored_identity();
        let record = SessionRecord {
            client_id: session.client_id().to_string(),
            subscriptions: core.stored_subscriptions(),
            username,
            ip,
            offline_since_ms,
            claim: session.claim(),
        };
        d.put(
            Key::Session(session.id()),
            Value::Session(Box::new(record)),
            false,
        );
    }

    /// A durable delivery was sent with `pkid`, or (QoS 2) released with PUBREL.
    pub fn journal_progress(&self, session: &Session, d: &Delivery, state: QueueState) {
        let Some(durable) = &self.durable else { return };
        if d.seq == 0 {
            return;
        }
        durable.put(
            Key::Queue(session.id(), d.seq),
            Value::Queue(QueueRecord {
                message: d.msg.durable.pid(),
                qos: d.qos as u8,
                retain: d.retain,
                state,
            }),
            false,
        );
    }

    /// A durable delivery is complete (acknowledged, or its session discarded).
    pub fn journal_done(&self, session: &Session, f: &InFlight) {
        let Some(durable) = &self.durable else { return };
        let d = &f.delivery;
        if d.seq == 0 {
            return;
        }
        durable.delete(Key::Queue(session.id(), d.seq));
        durable.drop_ref(&d.msg);
    }

    /// An inbound QoS 2 packet id of a journaled session starts or stops awaiting PUBREL.
    pub fn journal_awaiting(&self, session: &Session, pkid: u16, awaiting: bool) {
        let Some(d) = &self.durable else { return };
        if !session.is_journaled() {
            return;
        }
        if awaiting {
            d.put(Key::Awaiting(session.id(), pkid), Value::Awaiting, true);
        } else {
            d.delete(Key::Awaiting(session.id(), pkid));
        }
    }

    /// Discards offline sessions past their expiry. Returns how many.
    pub fn expire_sessions(&self) -> usize {
        self.expire_sessions_at(std::time::Instant::now())
    }

    /// Discards sessions that are past their expiry at `now` (tests pass a future instant).
    pub fn expire_sessions_at(&self, now: std::time::Instant) -> usize {
        let Some(after) = self.settings.session_expiry else {
            return 0;
        };
        let gone = self.sessions.expire(now, after);
        let n = gone.len();
        for d in gone {
            self.metrics
                .dropped
                .expired
                .inc_by(d.session.queued() as u64);
            self.forget(d);
        }
        n
    }

    /// The metrics in Prometheus text format, with the state gauges computed now. Cost: one pass
    /// over the sessions (an inbox length and an atomic read each), no allocation per session.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let online: i64 = crate::metrics::LISTENERS
            .iter()
            .map(|l| m.connections_current.with_label_values(&[l]).get())
            .sum();
        let (mut queued, mut inflight) = (0usize, 0usize);
        self.sessions.for_each(|s| {
            queued += s.queued();
            inflight += s.inflight();
        });
        let total = self.sessions.len() as i64;
        m.state.sessions.with_label_values(&["online"]).set(online);
        m.state
            .sessions
            .with_label_values(&["offline"])
            .set((total - online).max(0));
        m.state.subscriptions.set(self.router.len() as i64);
        m.state.retained.set(self.retained.len() as i64);
        m.state.queued.set(queued as i64);
        m.state.inflight.set(inflight as i64);
        if let Some(cluster) = self.cluster.get() {
            cluster.update_gauges();
        }
        m.render()
    }
}

/// Mirrors a change of the retained trie (made under its shard lock, so in memory's order).
fn journal_retained(d: &Durable, change: crate::router::retained::Change<'_>) {
    use crate::router::retained::Change;
    match change {
        Change::Stored(m) => d.put(
            Key::Retained(m.topic.clone()),
            Value::Retained(m.clone()),
            false,
        ),
        Change::Deleted(topic) => d.delete(Key::Retained(topic.to_owned())),
    }
}

/// The name of a subscription as a cluster route: the filter, or `$share/<group>/<filter>`.
fn route_name(sub: &Subscription<'_>) -> String {
    match sub.group {
        Some(g) => format!("$share/{g}/{}", sub.filter),
        None => sub.filter.to_owned(),
    }
}
