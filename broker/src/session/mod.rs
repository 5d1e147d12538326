//! Sessions: what the broker keeps for a client id, online or offline.
//!
//! A [`Session`] is shared (`Arc`) between the router (subscriptions point at it) and the
//! connection that currently owns it. It has two halves with different owners:
//!
//! * the **inbox**: messages routed to the client and not yet sent, behind a small mutex that
//!   publishers take for one push; bounded, with the overflow dropped and counted. Online or
//!   offline, messages land here: a persistent session simply has no connection draining it.
//! * the **core** ([`SessionCore`]): subscriptions, the outbound in-flight window and the inbound
//!   QoS 2 packet ids. Owned by the connection task while the client is connected (no lock on the
//!   per-message path) and parked in the session when it disconnects.
//!
//! This module is I/O-free; [`registry`] decides who owns which session.

mod inbox;
mod outbound;
pub mod registry;
pub mod store;

pub use inbox::Inbox;

use arc_swap::ArcSwap;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::acl::{self, ClientAcl};
use crate::codec::QoS;
use crate::message::Delivery;
use crate::persist::Durable;
use crate::persist::journal::Value;
use crate::persist::record::{Key, QueueRecord, QueueState};

/// `Session::flags` bits.
const JOURNALED: u8 = 1;
const MOVED: u8 = 2;
const ARRIVING: u8 = 4;

/// What happened to a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued,
    /// Queued, and the inbox is past [`CONGESTED`] while its connection is still draining it:
    /// the publisher may have to wait for room (see [`Session::wait_for_room`] for who waits).
    Congested,
    /// Queued, and the oldest queued QoS 0 message was dropped to make room.
    QueuedEvictedQos0,
    /// Not queued: the session moved to another cluster node (the caller forwards it there).
    Moved,
    /// Dropped: the queue is full of QoS 1/2 messages.
    DroppedQueueFull,
    /// Dropped: QoS 0 for an offline session, not queued by configuration.
    DroppedOffline,
    /// Dropped: the session is persistent and the durable store refuses new changes (disk
    /// full, or the store failing).
    DroppedDiskFull,
}

/// Inbox length from which a connected subscriber whose connection can still send counts as
/// congested: publishers feeding it wait (briefly) for it to drain, so that a burst is absorbed by
/// flow control rather than by a growing queue or by drops.
pub const CONGESTED: usize = 256;

/// Inbox length below which waiting publishers are woken.
const RELIEVED: usize = CONGESTED / 4;

/// Longest a publisher waits for a congested subscriber before reading again: flow control
/// slows a publisher down to what the broker can deliver, it never stops it. Long enough that
/// many publishers feeding one subscriber (fan-in) cannot outrun it by each sending a burst per
/// wait; waiters are woken early when the inbox drains, when its client turns out to be the slow
/// one, or when it disconnects.
pub const MAX_WAIT_FOR_ROOM: std::time::Duration = std::time::Duration::from_secs(1);

/// A subscriber whose client is the bottleneck and has taken nothing for this long is stuck:
/// publishers never wait for it (its queue fills and the overflow is dropped and counted).
const STALLED_MS: u64 = 1000;

/// The origin of `clock_ms`.
static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// Milliseconds on a process-wide monotonic clock.
pub(crate) fn clock_ms() -> u64 {
    START.elapsed().as_millis() as u64
}

/// `at` on the `clock_ms` clock, rounded up (0 if before its origin).
pub(crate) fn clock_ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(*START)
        .as_micros()
        .div_ceil(1000) as u64
}

/// The instant `ms` on the `clock_ms` clock.
pub(crate) fn instant_at_ms(ms: u64) -> Instant {
    *START + std::time::Duration::from_millis(ms)
}

/// Queueing policy, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueuePolicy {
    /// Most messages waiting per session.
    pub max_queued: usize,
    /// Whether QoS 0 messages are queued while the client is offline.
    pub qos0_offline: bool,
}

/// Asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Another connection with the same client id took the session over.
    Takeover,
    /// The broker is shutting down.
    Shutdown,
}

/// The connection that owns a session: how to ask it to close and how to know it has let go.
///
/// One small shared allocation per connection: an idle connection's memory is what an idle
/// broker is made of, so this is a flag and a waker rather than cancellation tokens.
#[derive(Debug, Clone)]
pub struct Owner(Arc<OwnerState>);

#[derive(Debug)]
struct OwnerState {
    conn_id: u64,
    /// 0 while not kicked, else `KickReason as u8 + 1` (the first reason given wins).
    kick: AtomicU8,
    /// Woken when kicked: the connection's task, or the parking thread while it is parked.
    kicked: Signal,
    /// Set by `Registry::release`, which then wakes the connections waiting for it.
    released: AtomicBool,
}

impl Owner {
    /// A fresh owner handle for connection `conn_id`.
    pub fn new(conn_id: u64) -> Owner {
        Owner(Arc::new(OwnerState {
            conn_id,
            kick: AtomicU8::new(0),
            kicked: Signal::default(),
            released: AtomicBool::new(false),
        }))
    }

    /// Unique id of the connection.
    pub fn conn_id(&self) -> u64 {
        self.0.conn_id
    }

    /// Asks the connection to close for `reason` (the first reason given wins).
    pub fn kick(&self, reason: KickReason) {
        let code = match reason {
            KickReason::Takeover => 1,
            KickReason::Shutdown => 2,
        };
        let _ = self
            .0
            .kick
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.0.kicked.notify();
    }

    /// Why the connection was asked to close, if it was.
    pub fn kick_reason(&self) -> Option<KickReason> {
        match self.0.kick.load(Ordering::Acquire) {
            0 => None,
            1 => Some(KickReason::Takeover),
            _ => Some(KickReason::Shutdown),
        }
    }

    /// Whether the connection was asked to close.
    pub fn is_kicked(&self) -> bool {
        self.kick_reason().is_some()
    }

    /// The signal a kick wakes (the connection registers its waker there).
    pub fn kicked(&self) -> &Signal {
        &self.0.kicked
    }

    /// Marks the session released by this connection (will published, core parked or
    /// discarded); `Registry::release` does this and wakes the waiters.
    pub(crate) fn set_released(&self) {
        self.0.released.store(true, Ordering::Release);
    }

    /// Whether the connection has released the session.
    pub fn is_released(&self) -> bool {
        self.0.released.load(Ordering::Acquire)
    }
}

/// A wake-up for one consumer that is remembered when nobody is waiting (like a
/// `tokio::sync::Notify` permit), in one flag and one waker slot. The consumer is either a
/// connection's task or, while the connection is parked, the parking thread
/// (`connection::park`): whoever registered its waker last.
#[derive(Debug, Default)]
pub struct Signal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Wakes the consumer, or remembers the wake-up for its next `poll_wait`/`take`.
    pub fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready (and consumed) if notified since the last time; otherwise registers `cx`'s waker.
    pub fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.take() {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration woke the previous waker: look again.
        if self.take() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Waits for the next notification.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Consumes a pending notification, if any.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Whether a notification is pending (not consumed).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Makes `waker` the one woken by the next notification.
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Drops the registered waker (a consumer that goes away: a waker keeps its task's memory
    /// alive, and a session can outlive its connection by days).
    pub fn clear(&self) {
        drop(self.waker.take());
    }
}

#[derive(Debug)]
struct Control {
    /// Parked while offline; boxed, because while the client is online (the common case) the
    /// connection holds the state and this slot is empty.
    core: Option<Box<SessionCore>>,
    owner: Option<Owner>,
    persistent: bool,
    offline_since: Option<Instant>,
    /// Set when the session has been discarded; a connection still holding it must not park
    /// anything in it again.
    discarded: bool,
    /// Who connected last (set at CONNECT): user name and address. Boxed: every session,
    /// idle ones included, carries the slot.
    who: Option<Box<(Option<Arc<str>>, IpAddr)>>,
    /// When its client last connected, cluster-wide (see `cluster::moves::claim_now`): of two
    /// nodes holding the session, the one with the newer claim keeps it.
    claim: u64,
}

/// Who a client is, as far as authorisation cares: kept with the session so that the ACL can
/// be applied again when it is reloaded, online or offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Client id.
    pub client_id: Arc<str>,
    /// Authenticated user name (from CONNECT, or from the client certificate).
    pub username: Option<Arc<str>>,
    /// Client address of the latest connection.
    pub ip: IpAddr,
}

impl ClientIdentity {
    /// The borrowed form the ACL evaluates.
    pub fn as_acl(&self) -> acl::Identity<'_> {
        acl::Identity {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            ip: self.ip,
        }
    }

    /// The identity a stored or moved session record names (user name and address as text;
    /// an address that does not parse is the unspecified one).
    pub fn stored(client_id: Arc<str>, username: Option<&str>, ip: Option<&str>) -> ClientIdentity {
        ClientIdentity {
            client_id,
            username: username.map(Arc::from),
            ip: ip
                .and_then(|ip| ip.parse().ok())
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        }
    }
}

/// A client's session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    id: u64,
    client_id: Arc<str>,
    inbox: Mutex<Inbox>,
    /// Wakes the owning connection (inbox no longer empty; a subscriber it waits for drained).
    notify: Signal,
    online: AtomicBool,
    /// `JOURNALED`: its state is mirrored in the durable store (a persistent session on a
    /// broker with `persistence.dir`; cleared when it is discarded). `MOVED`: it moved to another
    /// cluster node and what still arrives here is forwarded there. `ARRIVING`: it just moved
    /// here, and messages may arrive twice for a while (see `cluster::moves`).
    flags: AtomicU8,
    control: Mutex<Control>,
    /// This client's compiled ACL: read per message by the client's own task (publish) and by
    /// publishers (delivery through a subscription that needs a per-message check).
    acl: ArcSwap<ClientAcl>,
    /// Set by the owning connection while the client itself is the bottleneck (its socket is
    /// backed up or its in-flight window is full). Such a subscriber never slows publishers: its
    /// queue fills and the overflow is dropped and counted instead.
    client_slow: AtomicBool,
    /// When the owning connection last took messages out of the inbox (`clock_ms`): a slow
    /// client that has taken nothing for `STALLED_MS` is stuck, and nobody waits for it.
    last_drain: AtomicU64,
    /// QoS 1/2 messages in flight to the client (kept by the owning connection, for metrics).
    inflight: std::sync::atomic::AtomicU32,
    /// Publishers waiting for this inbox to drain (see `wait_for_room`); woken through their
    /// own `notify` when it drops below `RELIEVED`. Boxed: rarely anyone, and every session,
    /// idle ones included, carries the slot (8 bytes rather than a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    waiting: Mutex<Option<Box<Vec<Weak<Session>>>>>,
}

impl Session {
    /// A new, empty session for `client_id`, with a process-unique `id`.
    pub fn new(id: u64, client_id: Arc<str>, persistent: bool) -> Session {
        Session {
            id,
            client_id,
            inbox: Mutex::new(Inbox::default()),
            notify: Signal::default(),
            online: AtomicBool::new(false),
            flags: AtomicU8::new(0),
            control: Mutex::new(Control {
                core: Some(Box::default()),
                owner: None,
                persistent,
                offline_since: None,
                discarded: false,
                who: None,
                claim: 0,
            }),
            acl: ArcSwap::new(ClientAcl::shared_allow_all()),
            client_slow: AtomicBool::new(false),
            last_drain: AtomicU64::new(0),
            inflight: std::sync::atomic::AtomicU32::new(0),
            waiting: Mutex::new(None),
        }
    }

    /// Records whether the client is the bottleneck (see the field's documentation).
    pub fn set_client_slow(&self, slow: bool) {
        self.client_slow.store(slow, Ordering::Relaxed);
        if slow {
            // The client is the bottleneck now: publishers must not wait for it.
            self.wake_waiting();
        }
    }

    /// Wakes every publisher waiting for room in this inbox.
    pub fn wake_waiting(&self) {
        let Some(waiting) = self.waiting.lock().take() else {
            return;
        };
        for publisher in waiting.iter().filter_map(Weak::upgrade) {
            publisher.notify.notify();
        }
    }

    /// Called by the owning connection after it took messages out of the inbox: wakes the
    /// publishers waiting for room once the inbox has drained enough.
    pub fn drained(&self, before: usize, after: usize) {
        if before >= RELIEVED && after < RELIEVED {
            self.wake_waiting();
        }
    }

    /// Records how many messages are in flight to the client (for metrics).
    pub fn set_inflight(&self, n: usize) {
        self.inflight
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Messages in flight to the client, as last recorded by its connection.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed) as usize
    }

    /// Messages queued (not yet sent).
    pub fn queued(&self) -> usize {
        self.inbox.lock().len()
    }

    /// Records that the owning connection took messages out of the inbox.
    pub fn mark_drained(&self) {
        self.last_drain.store(clock_ms(), Ordering::Relaxed);
    }

    /// Whether the client itself is the bottleneck (see the field).
    pub fn client_slow(&self) -> bool {
        self.client_slow.load(Ordering::Relaxed)
    }

    /// Whether a publisher should wait for this inbox: past the congestion mark and connected,
    /// and either the broker is behind on it (its client could take more), or, with
    /// `sole_recipient` (the publisher's messages go to this subscriber alone, so waiting slows
    /// nobody else: point to point, fan-in), its client is the bottleneck but still taking
    /// messages. A client that has taken nothing for `STALLED_MS` is stuck: nobody waits for it.
    pub fn congested(&self, sole_recipient: bool) -> bool {
        if !self.is_online() || self.inbox.lock().len() < CONGESTED {
            return false;
        }
        if !self.client_slow() {
            return true;
        }
        sole_recipient
            && clock_ms().saturating_sub(self.last_drain.load(Ordering::Relaxed)) < STALLED_MS
    }

    /// Registers `publisher` to be woken (through its own `notify`) when this inbox drains.
    /// Returns false if there is nothing to wait for (see `congested`).
    pub fn wait_for_room(&self, publisher: &Arc<Session>, sole_recipient: bool) -> bool {
        // Register first, then look: a drain in between wakes us (at worst spuriously). The two
        // locks are never held together (the draining connection holds the inbox lock while it
        // decides to wake, and takes `waiting` only after).
        {
            let mut waiting = self.waiting.lock();
            let waiting = waiting.get_or_insert_with(Box::default);
            if !waiting.iter().any(|w| w.as_ptr() == Arc::as_ptr(publisher)) {
                waiting.push(Arc::downgrade(publisher));
            }
        }
        self.congested(sole_recipient)
    }

    /// Sets who the client is and its compiled ACL (at CONNECT, and after an ACL reload).
    pub fn set_access(&self, identity: ClientIdentity, acl: Arc<ClientAcl>) {
        self.control.lock().who = Some(Box::new((identity.username, identity.ip)));
        self.acl.store(acl);
    }

    /// Replaces the compiled ACL (after a reload), keeping the identity.
    pub fn set_acl(&self, acl: Arc<ClientAcl>) {
        self.acl.store(acl);
    }

    /// The client's identity, once it has connected.
    pub fn identity(&self) -> Option<ClientIdentity> {
        let who = self.control.lock().who.clone();
        who.map(|who| ClientIdentity {
            username: who.0,
            ip: who.1,
            client_id: self.client_id.clone(),
        })
    }

    /// The user name and address of its last connection, as a stored or moved record keeps
    /// them.
    pub fn stored_identity(&self) -> (Option<String>, Option<String>) {
        let who = self.identity();
        (
            who.as_ref()
                .and_then(|w| w.username.as_deref().map(str::to_owned)),
            who.map(|w| w.ip.to_string()),
        )
    }

    /// The client's compiled ACL (allow-all until set).
    pub fn acl(&self) -> arc_swap::Guard<Arc<ClientAcl>> {
        self.acl.load()
    }

    /// Process-unique id of this session object (a new session for the same client id gets a
    /// new id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client id.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// Whether a connection currently owns the session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the session connected or not (the registry does this; tests of other modules too).
    #[cfg(test)]
    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!flag, Ordering::AcqRel);
        }
    }

    fn flag(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    /// Whether the session's state is mirrored in the durable store.
    pub fn is_journaled(&self) -> bool {
        self.flag(JOURNALED)
    }

    /// Marks the session mirrored in the durable store, or no longer (discarded).
    pub fn set_journaled(&self, on: bool) {
        self.set_flag(JOURNALED, on);
    }

    /// Whether the session moved to another cluster node (deliveries are forwarded there).
    pub fn is_moved(&self) -> bool {
        self.flag(MOVED)
    }

    /// Marks the session moved to another node, or not.
    pub fn set_moved(&self, on: bool) {
        self.set_flag(MOVED, on);
    }

    /// Whether the session arrived from another node recently (deliveries are checked for
    /// messages that came twice).
    pub fn is_arriving(&self) -> bool {
        self.flag(ARRIVING)
    }

    /// Marks the session as recently arrived, or no longer.
    pub fn set_arriving(&self, on: bool) {
        self.set_flag(ARRIVING, on);
    }

    /// The session's cluster-wide claim (see `Control::claim`).
    pub fn claim(&self) -> u64 {
        self.control.lock().claim
    }

    /// Sets the claim (at CONNECT, or when the session arrives from another node).
    pub fn set_claim(&self, claim: u64) {
        self.control.lock().claim = claim;
    }

    /// How long it has been offline (`None` while connected).
    pub fn offline_for(&self) -> Option<std::time::Duration> {
        self.control.lock().offline_since.map(|t| t.elapsed())
    }

    /// Whether the session is kept after its connection ends (clean session 0).
    pub fn is_persistent(&self) -> bool {
        self.control.lock().persistent
    }

    /// Whether a delivery of `qos` to this session would be stored in `durable`.
    pub fn journals(&self, qos: QoS, durable: Option<&Durable>) -> bool {
        durable.is_some() && qos != QoS::AtMostOnce && self.is_journaled()
    }

    /// Offers a message. Never blocks on the client: a full queue drops (and says so). With
    /// a durable store and a persistent session, a QoS 1/2 message is also written to the
    /// session's durable queue, under the inbox lock so that the store sees it before the
    /// connection can send and acknowledge it.
    pub fn deliver(
        &self,
        mut d: Delivery,
        policy: QueuePolicy,
        durable: Option<&Durable>,
    ) -> Enqueued {
        let online = self.is_online();
        if !online && d.qos == QoS::AtMostOnce && !policy.qos0_offline {
            return Enqueued::DroppedOffline;
        }
        let journal = durable.filter(|_| self.journals(d.qos, durable));
        if journal.is_some_and(Durable::is_refusing) {
            return Enqueued::DroppedDiskFull;
        }
        let mut inbox = self.inbox.lock();
        // Checked under the inbox lock: a session being handed over sets it under the same
        // lock before it takes the queue.
        if self.is_moved() {
            return Enqueued::Moved;
        }
        let mut outcome = Enqueued::Queued;
        if inbox.len() >= policy.max_queued {
            if inbox.evict_oldest_qos0() {
                outcome = Enqueued::QueuedEvictedQos0;
            } else {
                return Enqueued::DroppedQueueFull;
            }
        }
        if let Some(j) = journal {
            inbox.last_seq += 1;
            d.seq = inbox.last_seq;
            let pid = j.add_ref(&d.msg);
            j.put(
                Key::Queue(self.id, d.seq),
                Value::Queue(QueueRecord {
                    message: pid,
                    qos: d.qos as u8,
                    retain: d.retain,
                    state: QueueState::Queued,
                }),
                true,
            );
        }
        let was_empty = inbox.is_empty();
        inbox.push(d);
        let len = inbox.len();
        drop(inbox);
        if was_empty && online {
            self.notify.notify();
        }
        if outcome == Enqueued::Queued && len >= CONGESTED && online {
            return Enqueued::Congested;
        }
        outcome
    }

    /// The inbox, for the owning connection to drain.
    pub fn inbox(&self) -> parking_lot::MutexGuard<'_, Inbox> {
        self.inbox.lock()
    }

    /// Wakes the owning connection when the inbox goes from empty to non-empty.
    pub fn notify(&self) -> &Signal {
        &self.notify
    }
}

pub use outbound::{Awaiting, InFlight, Outbound};

/// Session state owned by the connected client's task (or parked while offline).
#[derive(Debug, Default)]
pub struct SessionCore {
    /// Subscriptions by the filter string as the client sent it (including `$share/...`).
    /// Ordered maps rather than hash maps here: 24 bytes empty instead of 64 (a hash map
    /// carries its random hasher state), and this state is part of every connection, idle or
    /// not; they are only looked up per SUBSCRIBE, UNSUBSCRIBE and QoS 2 PUBLISH.
    pub subscriptions: BTreeMap<String, QoS>,
    /// Outbound QoS 1/2 window.
    pub outbound: Outbound,
    /// Inbound QoS 2 packet ids received and not yet released: a PUBLISH retransmitted with one
    /// of these ids is not routed again (exactly once).
    pub awaiting_rel: BTreeSet<u16>,
}

impl SessionCore {
    /// Its subscriptions as a stored or moved record keeps them: filter, granted QoS.
    pub fn stored_subscriptions(&self) -> Vec<(String, u8)> {
        self.subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q as u8))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    fn d(qos: QoS, tag: &str) -> Delivery {
        Delivery::new(
            Message::new(tag.into(), Bytes::new(), qos, false),
            qos,
            false,
        )
    }

    const P: QueuePolicy = QueuePolicy {
        max_queued: 3,
        qos0_offline: false,
    };

    fn online() -> Session {
        let s = Session::new(1, "c".into(), true);
        s.set_online(true);
        s
    }

    #[test]
    fn bounded_queue_evicts_oldest_qos0_first() {
        let s = online();
        assert_eq!(
            s.deliver(d(QoS::AtLeastOnce, "a"), P, None),
            Enqueued::Queued
        );
        assert_eq!(
            s.deliver(d(QoS::AtMostOnce, "b"), P, None),
            Enqueued::Queued
        );
        assert_eq!(
            s.deliver(d(QoS::AtMostOnce, "c"), P, None),
            Enqueued::Queued
        );
        assert_eq!(
            s.deliver(d(QoS::AtLeastOnce, "d"), P, None),
            Enqueued::QueuedEvictedQos0
        );
        assert_eq!(
            s.deliver(d(QoS::AtLeastOnce, "e"), P, None),
            Enqueued::QueuedEvictedQos0
        );
        assert_eq!(
            s.deliver(d(QoS::AtLeastOnce, "f"), P, None),
            Enqueued::DroppedQueueFull
        );
        assert_eq!(
            s.deliver(d(QoS::AtMostOnce, "g"), P, None),
            Enqueued::DroppedQueueFull
        );
        let mut inbox = s.inbox();
        let order: Vec<_> = std::iter::from_fn(|| inbox.pop())
            .map(|d| d.msg.topic.clone())
            .collect();
        assert_eq!(order, ["a", "d", "e"]);
    }

    #[test]
    fn offline_qos0_follows_policy() {
        let s = Session::new(1, "c".into(), true);
        assert_eq!(
            s.deliver(d(QoS::AtMostOnce, "a"), P, None),
            Enqueued::DroppedOffline
        );
        assert_eq!(
            s.deliver(d(QoS::AtLeastOnce, "b"), P, None),
            Enqueued::Queued
        );
        let keep = QueuePolicy {
            qos0_offline: true,
            ..P
        };
        assert_eq!(
            s.deliver(d(QoS::AtMostOnce, "c"), keep, None),
            Enqueued::Queued
        );
        assert_eq!(s.inbox().len(), 2);
    }

    #[test]
    fn requeue_front_keeps_order_and_counts() {
        let s = online();
        s.deliver(d(QoS::AtMostOnce, "c"), P, None);
        s.inbox()
            .requeue_front(vec![d(QoS::AtMostOnce, "a"), d(QoS::AtLeastOnce, "b")].into_iter());
        let mut inbox = s.inbox();
        assert_eq!(inbox.qos0, 2);
        let order: Vec<_> = std::iter::from_fn(|| inbox.pop())
            .map(|d| d.msg.topic.clone())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(inbox.qos0, 0);
    }
}
