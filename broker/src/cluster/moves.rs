//! Persistent sessions that follow their client across the cluster (protocol version 2).
//!
//! Each session carries a **claim**: when its client last connected, cluster-wide
//! (`claim_now`: milliseconds since the Unix epoch, shifted left 16 bits, with a hash of the node
//! name in the low bits, strictly increasing per node). Of two nodes holding the same client
//! id, the one with the newer claim keeps the session; the other hands it over. There is no
//! leader and no shared store: each session lives on exactly one node, and moves.
//!
//! * **Connect.** A client connects to node B with clean session 0. Before opening the session
//!   B sends `Claim` to every peer linked at version 2 and waits (at most `CLAIM_WAIT`, longer
//!   while a handover is announced) for each to answer. A peer A that holds the client id with
//!   an older claim takes it from its connection (closed as by a takeover), stops queueing for
//!   it, and sends `ClaimReply { handing_over }` and the session as `Handover` parts (header with
//!   subscriptions, the messages in order, in-flight ones first with their packet ids, then the
//!   inbound QoS 2 ids). B installs the session (in the router, announced as routes, in its
//!   durable store), waits until that is durable, and sends `HandoverDone`; only then does A
//!   delete its own copy. The client gets CONNACK session present = 1 and its in-flight
//!   messages again with DUP. A clean-session connect makes the peers discard the client id.
//! * **Concurrent connects.** A node that gets a `Claim` while its own claim for the same id is
//!   in progress answers "nothing here" if its own is newer (the other node will hand over to
//!   it when its `Claim` arrives there), else waits for its own to finish and then hands over:
//!   the newest connect wins, the older connection is closed, one owner remains.
//! * **Stub.** After handing over, A keeps the session's subscriptions in its router for `GRACE`
//!   (routes elsewhere still point at A until B's route announcements arrive): what still
//!   reaches it is sent on to B as `SessionForward`. B drops a message it has already queued
//!   for the session (by its cluster-wide id, `Message::mid`) during the same window, so a
//!   message that reaches B both ways is delivered once.
//! * **Leave.** A node told to stop hands every persistent session to a remaining node (chosen
//!   per client id by rendezvous hashing, so a restart spreads them), `LEAVE_BATCH` at a time,
//!   and waits for each `HandoverDone` before it exits.
//! * **Return.** When a link comes up, the dialler sends its `SessionTable` (client ids and
//!   claims): a node holding one of them with an older claim hands it over. So a node that
//!   crashed and comes back with its disk gives the sessions it held, with what was queued in
//!   them, to wherever their clients reconnected meanwhile; one session remains.
//! * **Failure.** A handover that gets no `HandoverDone` within `ROLLBACK` (the link broke, the
//!   receiver died) is undone: the session is put back, nothing was deleted.
//!
//! Peers of the previous release (version 1 links) get `Evict` instead, as before: a session
//! does not move to or from them.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::proto::{Forward, Frame, HandoverPart, Mid, MovedMessage, SessionHeader};
use super::routes::PeerId;
use super::{Cluster, Peer};
use crate::acl::SubscribeCheck;
use crate::broker::Broker;
use crate::codec::QoS;
use crate::message::{Delivery, Message, now_millis};
use crate::persist::journal::Value;
use crate::persist::record::{Key, QueueRecord, QueueState};
use crate::session::registry::Discarded;
use crate::session::{Awaiting, ClientIdentity, Session, SessionCore};
use crate::topic::parse_subscription;

/// Longest wait for the peers' answers to a claim.
pub const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for a session a peer announced it is handing over.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);
/// How long a node that handed a session over forwards what still arrives for it, and how
/// long the receiver drops messages it already has for it.
pub const GRACE: Duration = Duration::from_secs(10);
/// A handover not confirmed within this is undone.
pub const ROLLBACK: Duration = Duration::from_secs(60);
/// Messages in one `Handover` part.
const PART: usize = 256;
/// Sessions handed over at once by a leaving node (bounds the memory of the outboxes).
pub const LEAVE_BATCH: usize = 256;
/// A leaving node stops waiting for confirmations when none arrived for this long.
const LEAVE_STALL: Duration = Duration::from_secs(5);
/// Entries in one `SessionTable` part.
const TABLE_PART: usize = 1024;
/// Message ids remembered per arriving session (beyond, a duplicate may get through).
const MAX_SEEN: usize = 65_536;

/// A claim this node made for a connecting client, waiting for the peers' answers.
#[derive(Debug)]
struct Pending {
    claim: u64,
    /// Peers that have not answered.
    waiting: Vec<PeerId>,
    /// A peer announced a handover: wait up to `HANDOVER_WAIT`.
    extended: bool,
    arrived: Vec<Arrived>,
    /// Peers named in a `moved_to`: asked again once the others have answered.
    ask_again: Vec<String>,
}

/// A whole session received from a peer.
#[derive(Debug)]
struct Arrived {
    from: Arc<Peer>,
    claim: u64,
    header: SessionHeader,
    messages: Vec<MovedMessage>,
    awaiting_rel: Vec<u16>,
}

/// A session being received, part by part.
#[derive(Debug)]
struct Incoming {
    claim: u64,
    header: SessionHeader,
    messages: Vec<MovedMessage>,
}

/// A session handed over from here, until its receiver confirmed it and the grace ended.
#[derive(Debug)]
struct Stub {
    session: Arc<Session>,
    core: SessionCore,
    queue: Vec<Delivery>,
    to: Arc<Peer>,
    claim: u64,
    confirmed: bool,
}

/// A session that arrived here recently: the ids of the messages it has, to drop a second copy.
#[derive(Debug)]
struct Arrival {
    seen: HashSet<Mid>,
    /// Merged into a session that was here already (an older copy came back): what its old
    /// node still sends on may have reached the client through this one, so it goes with DUP.
    merged: bool,
}

/// The state of sessions on the move. See the module documentation.
#[derive(Debug)]
pub struct Moves {
    tag: u64,
    last_claim: AtomicU64,
    pending: Mutex<HashMap<String, Pending>>,
    incoming: Mutex<HashMap<(PeerId, String), Incoming>>,
    stubs: Mutex<HashMap<String, Stub>>,
    arrivals: Mutex<HashMap<u64, Arrival>>,
    /// Client ids whose arrived session is being installed.
    installing: Mutex<HashSet<String>>,
    /// Woken by every answer, arrival and confirmation (the waiters check their own state).
    changed: Notify,
}

impl Moves {
    /// The state for the node `name`.
    pub fn new(name: &str) -> Moves {
        // FNV-1a: a stable hash of the name, so the low bits of claims tell nodes apart.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Moves {
            tag: h & 0xffff,
            last_claim: AtomicU64::new(0),
            pending: Mutex::default(),
            incoming: Mutex::default(),
            stubs: Mutex::default(),
            arrivals: Mutex::default(),
            installing: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// A new claim: later than every claim this node made before.
    pub fn claim_now(&self) -> u64 {
        let now = (now_millis() << 16) | self.tag;
        let mut prev = self.last_claim.load(Ordering::Relaxed);
        loop {
            let next = now.max((((prev >> 16) + 1) << 16) | self.tag);
            match self.last_claim.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// A claim made elsewhere: claims made here from now on are later (a Lamport clock over
    /// the wall clock, so that skew between nodes cannot order a later connect first).
    pub fn observe(&self, claim: u64) {
        self.last_claim.fetch_max(claim, Ordering::Relaxed);
    }

    /// Whether message `mid` reached the arriving session `sid` before (and records it).
    pub fn seen(&self, sid: u64, mid: Mid) -> bool {
        if mid == (0, 0) {
            return false; // from a version 1 peer: no id
        }
        let mut arrivals = self.arrivals.lock();
        let Some(a) = arrivals.get_mut(&sid) else {
            return false;
        };
        if a.seen.len() >= MAX_SEEN {
            return a.seen.contains(&mid);
        }
        !a.seen.insert(mid)
    }

    /// Sessions handed over and not yet confirmed, to peers whose link is still up (one whose
    /// link went down will not confirm: its handovers are undone after `ROLLBACK`).
    pub fn unconfirmed(&self) -> usize {
        self.stubs
            .lock()
            .values()
            .filter(|s| !s.confirmed && s.to.version.load(Ordering::Acquire) > 0)
            .count()
    }

    /// Waits until `done` or `until`; `done` is checked at every change and every 250 ms (for
    /// conditions such as a link going down, which are not signalled here).
    async fn wait_changed(&self, until: tokio::time::Instant, mut done: impl FnMut() -> bool) {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let now = tokio::time::Instant::now();
            if done() || now >= until {
                return;
            }
            let slice = until.min(now + Duration::from_millis(250));
            let _ = tokio::time::timeout_at(slice, notified).await;
        }
    }
}

impl Cluster {
    /// Peers whose link from here is up at version 2 or newer.
    fn movers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .iter()
            .filter(|p| p.version.load(Ordering::Acquire) >= 2)
            .cloned()
            .collect()
    }

    /// Queues `frames` for `peer` if its link is up at version 2; false if not.
    fn send_v2(&self, peer: &Peer, frames: impl IntoIterator<Item = Frame>) -> bool {
        let mut out = peer.outbox.lock();
        if !out.up || peer.version.load(Ordering::Acquire) < 2 {
            return false;
        }
        out.control.extend(frames);
        drop(out);
        peer.wake.notify_one();
        true
    }
}

/// Before opening the session of `client_id` (a client connecting here): claims it from the
/// peers and installs what they hand over. Returns the claim, for the session.
pub async fn claim(broker: &Broker, cluster: &Arc<Cluster>, client_id: &str, clean: bool) -> u64 {
    let moves = &cluster.moves;
    // A node that has just started asks its peers only once it is linked to them.
    let until = tokio::time::Instant::now() + CLAIM_WAIT;
    while !cluster.synced() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claim = moves.claim_now();
    let peers = cluster.movers();
    if peers.is_empty() {
        return claim;
    }
    moves.pending.lock().insert(
        client_id.to_owned(),
        Pending {
            claim,
            waiting: peers.iter().map(|p| p.id).collect(),
            extended: false,
            arrived: Vec::new(),
            ask_again: Vec::new(),
        },
    );
    for p in &peers {
        let frame = Frame::Claim {
            client_id: client_id.to_owned(),
            claim,
            resume: !clean,
        };
        if !cluster.send_v2(p, [frame]) {
            if let Some(pending) = moves.pending.lock().get_mut(client_id) {
                pending.waiting.retain(|id| *id != p.id);
            }
        }
    }
    if clean {
        // The peers discard what they hold; nothing to wait for.
        moves.pending.lock().remove(client_id);
        return claim;
    }
    let start = tokio::time::Instant::now();
    let mut until = start + CLAIM_WAIT;
    let mut asked_again = false;
    loop {
        let mut extended = false;
        moves
            .wait_changed(until, || {
                let pending = moves.pending.lock();
                match pending.get(client_id) {
                    Some(p) if p.claim == claim => {
                        extended = p.extended;
                        p.waiting.is_empty() || (p.extended && until < start + HANDOVER_WAIT)
                    }
                    _ => true, // replaced by a newer connect of the same id here
                }
            })
            .await;
        let waiting = {
            let pending = moves.pending.lock();
            pending
                .get(client_id)
                .filter(|p| p.claim == claim)
                .map_or(0, |p| p.waiting.len())
        };
        if waiting > 0 && extended && until < start + HANDOVER_WAIT {
            until = start + HANDOVER_WAIT;
            continue;
        }
        if waiting > 0 {
            warn!(
                client_id,
                peers = waiting,
                "cluster peers did not answer a session claim in time"
            );
        }
        // A peer said the session had just moved on to another peer, which answered before
        // it had the session: that one is asked once more.
        let again: Vec<Arc<Peer>> = {
            let mut pending = moves.pending.lock();
            match pending.get_mut(client_id).filter(|p| p.claim == claim) {
                Some(p) => {
                    let names = std::mem::take(&mut p.ask_again);
                    let have: Vec<&str> = p.arrived.iter().map(|a| &*a.from.name).collect();
                    let again: Vec<Arc<Peer>> = peers
                        .iter()
                        .filter(|q| {
                            names.iter().any(|n| **n == *q.name) && !have.contains(&&*q.name)
                        })
                        .cloned()
                        .collect();
                    p.waiting.extend(again.iter().map(|q| q.id));
                    again
                }
                None => Vec::new(),
            }
        };
        if again.is_empty() || asked_again {
            break;
        }
        asked_again = true;
        for q in &again {
            cluster.send_v2(
                q,
                [Frame::Claim {
                    client_id: client_id.to_owned(),
                    claim,
                    resume: true,
                }],
            );
        }
        until = tokio::time::Instant::now() + CLAIM_WAIT;
    }
    let arrived = {
        let mut pending = moves.pending.lock();
        match pending.get(client_id) {
            Some(p) if p.claim == claim => pending.remove(client_id).map(|p| p.arrived),
            _ => None,
        }
        .unwrap_or_default()
    };
    if !arrived.is_empty() {
        moves.installing.lock().insert(client_id.to_owned());
        moves.changed.notify_waiters();
        install(broker, cluster, client_id, arrived).await;
        moves.installing.lock().remove(client_id);
    }
    moves.changed.notify_waiters();
    claim
}

/// A peer claims `client_id` for a client that connected there.
pub fn on_claim(
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    from: Arc<Peer>,
    client_id: String,
    claim: u64,
    resume: bool,
) {
    cluster.moves.observe(claim);
    tokio::spawn(async move {
        let moves = &cluster.moves;
        // The answer goes on this node's own link to the peer: a peer that just restarted
        // may not have it back yet (the dial loop is woken by its link to here).
        let linked = tokio::time::Instant::now() + CLAIM_WAIT - Duration::from_secs(1);
        moves
            .wait_changed(linked, || from.version.load(Ordering::Acquire) >= 2)
            .await;
        let reply = |handing_over| Frame::ClaimReply {
            client_id: client_id.clone(),
            claim,
            handing_over,
            moved_to: None,
        };
        // This node keeps the client (its connect is newer): the peer answers nothing to the
        // claim, and gives up what it opens once its own connect is done.
        let keep = |mine| {
            let counter = Frame::Claim {
                client_id: client_id.clone(),
                claim: mine,
                resume: true,
            };
            cluster.send_v2(&from, [reply(false), counter]);
        };
        // A connect of the same id here, in progress: the newer claim wins.
        let mine = moves.pending.lock().get(&client_id).map(|p| p.claim);
        if let Some(mine) = mine {
            if mine > claim {
                keep(mine);
                return;
            }
            let until = tokio::time::Instant::now() + HANDOVER_WAIT + CLAIM_WAIT;
            moves
                .wait_changed(until, || {
                    moves
                        .pending
                        .lock()
                        .get(&client_id)
                        .is_none_or(|p| p.claim != mine)
                })
                .await;
        }
        // A session arriving here right now: answered once it is installed.
        let until = tokio::time::Instant::now() + HANDOVER_WAIT;
        moves
            .wait_changed(until, || {
                !moves.installing.lock().contains(&client_id)
                    && !moves.incoming.lock().keys().any(|(_, c)| *c == client_id)
            })
            .await;
        let Some(session) = broker.sessions.get(&client_id) else {
            // Handed over from here moments ago: once the receiver has it, say where it went.
            let stub_to = |confirmed_only: bool| {
                moves
                    .stubs
                    .lock()
                    .get(&client_id)
                    .filter(|s| s.confirmed || !confirmed_only)
                    .map(|s| s.to.clone())
            };
            if stub_to(false).is_some() {
                moves
                    .wait_changed(until, || {
                        stub_to(true).is_some() || stub_to(false).is_none()
                    })
                    .await;
            }
            let moved_to = stub_to(true)
                .filter(|to| to.id != from.id)
                .map(|to| to.name.to_string());
            cluster.send_v2(
                &from,
                [Frame::ClaimReply {
                    client_id: client_id.clone(),
                    claim,
                    handing_over: false,
                    moved_to,
                }],
            );
            return;
        };
        // Connected here with a newer claim: concurrent connects, the newer one stays. An
        // offline session goes to the connecting client whatever its claim.
        if session.is_online() && session.claim() > claim {
            keep(session.claim());
            return;
        }
        if !resume || !session.is_persistent() {
            broker.evict_local(&client_id);
            cluster.send_v2(&from, [reply(false)]);
            return;
        }
        match broker
            .sessions
            .detach(&client_id, broker.settings.takeover_wait)
            .await
        {
            Some(d) => hand_over(&broker, &cluster, &from, claim, d, true),
            None => {
                cluster.send_v2(&from, [reply(false)]);
            }
        }
    });
}

/// Sends a detached session to `to` and keeps a stub of it here until confirmed.
fn hand_over(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    to: &Arc<Peer>,
    claim: u64,
    detached: Discarded,
    reply: bool,
) {
    let Discarded { session, core } = detached;
    let client_id = session.client_id().to_string();
    // From here on, what is routed to the session is forwarded, not queued (checked under
    // the inbox lock, so nothing falls between the snapshot and the stub).
    let queue = {
        let mut inbox = session.inbox();
        session.set_moved(true);
        inbox.drain()
    };
    let mut messages = Vec::with_capacity(core.outbound.len() + queue.len());
    for (pkid, f) in core.outbound.in_order() {
        messages.push(moved(
            &f.delivery,
            Some((pkid, f.awaiting == Awaiting::PubComp)),
            true,
        ));
    }
    messages.extend(queue.iter().map(|d| moved(d, None, d.dup)));
    let who = session.identity();
    let header = SessionHeader {
        subscriptions: core
            .subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q as u8))
            .collect(),
        username: who
            .as_ref()
            .and_then(|w| w.username.as_deref().map(str::to_owned)),
        ip: who.map(|w| w.ip.to_string()),
        offline_since_ms: session
            .offline_for()
            .map(|d| now_millis().saturating_sub(d.as_millis() as u64)),
    };
    let n = messages.len();
    let mut frames = Vec::with_capacity(3 + n / PART);
    if reply {
        frames.push(Frame::ClaimReply {
            client_id: client_id.clone(),
            claim,
            handing_over: true,
            moved_to: None,
        });
    }
    let part = |part| Frame::Handover {
        client_id: client_id.clone(),
        claim,
        part,
    };
    frames.push(part(HandoverPart::Start(Box::new(header))));
    let mut rest = messages;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(PART));
        frames.push(part(HandoverPart::Messages(std::mem::replace(
            &mut rest, tail,
        ))));
    }
    frames.push(part(HandoverPart::End {
        awaiting_rel: core.awaiting_rel.iter().copied().collect(),
    }));
    let sid = session.id();
    cluster.moves.stubs.lock().insert(
        client_id.clone(),
        Stub {
            session,
            core,
            queue,
            to: to.clone(),
            claim,
            confirmed: false,
        },
    );
    if !cluster.send_v2(to, frames) {
        debug!(client_id, peer = %to.name, "link down before a handover: undone");
        roll_back(broker, cluster, &client_id, sid);
        return;
    }
    info!(client_id, peer = %to.name, messages = n, "persistent session handed over");
    let (broker, cluster) = (broker.clone(), cluster.clone());
    tokio::spawn(async move {
        tokio::time::sleep(ROLLBACK).await;
        roll_back(&broker, &cluster, &client_id, sid);
    });
}

fn moved(d: &Delivery, inflight: Option<(u16, bool)>, dup: bool) -> MovedMessage {
    MovedMessage {
        topic: d.msg.topic.clone(),
        payload: d.msg.payload.clone(),
        qos: d.qos as u8,
        published_qos: d.msg.qos as u8,
        retain: d.retain,
        stamp: d.msg.stamp,
        inflight,
        dup,
        mid: d.msg.mid,
    }
}

/// Puts back a session whose handover was not confirmed (if it still is unconfirmed).
fn roll_back(broker: &Broker, cluster: &Cluster, client_id: &str, sid: u64) {
    let stub = {
        let mut stubs = cluster.moves.stubs.lock();
        match stubs.get(client_id) {
            Some(s) if s.session.id() == sid && !s.confirmed => stubs.remove(client_id),
            _ => None,
        }
    };
    let Some(Stub {
        session,
        mut core,
        queue,
        to,
        ..
    }) = stub
    else {
        return;
    };
    warn!(client_id, peer = %to.name, "session handover not confirmed: the session stays here");
    {
        let mut inbox = session.inbox();
        session.set_moved(false);
        inbox.requeue_front(queue.into_iter());
    }
    if broker.sessions.get(client_id).is_some() {
        // The client connected here again meanwhile: that session is the client's now.
        broker.forget(Discarded { session, core });
        return;
    }
    let offline = session.offline_for().unwrap_or_default();
    core.outbound.shrink();
    broker.sessions.restore(
        session,
        core,
        Instant::now()
            .checked_sub(offline)
            .unwrap_or_else(Instant::now),
    );
}

/// A peer answered a claim of this node.
pub fn on_claim_reply(
    cluster: &Cluster,
    from: &Peer,
    client_id: &str,
    claim: u64,
    handing_over: bool,
    moved_to: Option<String>,
) {
    let mut pending = cluster.moves.pending.lock();
    if let Some(p) = pending.get_mut(client_id).filter(|p| p.claim == claim) {
        if handing_over {
            p.extended = true;
        } else {
            p.waiting.retain(|id| *id != from.id);
            p.ask_again.extend(moved_to);
        }
    }
    drop(pending);
    cluster.moves.changed.notify_waiters();
}

/// A part of a session a peer hands to this node.
pub fn on_handover(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    from: &Arc<Peer>,
    client_id: String,
    claim: u64,
    part: HandoverPart,
) {
    let moves = &cluster.moves;
    moves.observe(claim);
    let key = (from.id, client_id);
    match part {
        HandoverPart::Start(header) => {
            moves.incoming.lock().insert(
                key,
                Incoming {
                    claim,
                    header: *header,
                    messages: Vec::new(),
                },
            );
        }
        HandoverPart::Messages(m) => {
            if let Some(i) = moves
                .incoming
                .lock()
                .get_mut(&key)
                .filter(|i| i.claim == claim)
            {
                i.messages.extend(m);
            }
        }
        HandoverPart::End { awaiting_rel } => {
            let Some(i) = moves
                .incoming
                .lock()
                .remove(&key)
                .filter(|i| i.claim == claim)
            else {
                return;
            };
            let client_id = key.1;
            let arrived = Arrived {
                from: from.clone(),
                claim,
                header: i.header,
                messages: i.messages,
                awaiting_rel,
            };
            let mut pending = moves.pending.lock();
            if let Some(p) = pending.get_mut(&client_id).filter(|p| p.claim == claim) {
                p.waiting.retain(|id| *id != from.id);
                p.arrived.push(arrived);
                drop(pending);
                moves.changed.notify_waiters();
                return;
            }
            drop(pending);
            // Not asked for by a connect here: a leaving or returning node's session.
            moves.installing.lock().insert(client_id.clone());
            let (broker, cluster) = (broker.clone(), cluster.clone());
            tokio::spawn(async move {
                install(&broker, &cluster, &client_id, vec![arrived]).await;
                cluster.moves.installing.lock().remove(&client_id);
                cluster.moves.changed.notify_waiters();
            });
        }
    }
}

/// Installs arrived sessions of `client_id` here (merged into one), makes them durable, and
/// confirms them to their senders.
async fn install(
    broker: &Broker,
    cluster: &Arc<Cluster>,
    client_id: &str,
    mut arrived: Vec<Arrived>,
) {
    arrived.sort_by_key(|a| std::cmp::Reverse(a.claim));
    let moves = &cluster.moves;
    for a in &arrived {
        moves.observe(a.claim);
    }
    let durable = broker.durable.as_deref();
    let policy = broker.settings.queue;
    // Messages that reach this node both directly and through the old node's stub, or in two
    // handed-over sessions: once. Recorded from before the subscriptions are in the router.
    let arriving = |s: &Session, merged: bool| {
        moves.arrivals.lock().insert(
            s.id(),
            Arrival {
                seen: HashSet::new(),
                merged,
            },
        );
        s.set_arriving(true);
    };
    let existing = broker.sessions.get(client_id).filter(|s| s.is_persistent());
    let (session, messages) = match existing {
        Some(s) => {
            // A session is here already (its client connected here later): it keeps its
            // subscriptions; what the others had queued is added to its queue, but for what
            // it has queued itself.
            arriving(&s, true);
            let queued: Vec<Mid> = s.inbox().mids();
            for mid in queued {
                moves.seen(s.id(), mid);
            }
            let mut count = 0;
            for a in &arrived {
                for m in &a.messages {
                    if !moves.seen(s.id(), m.mid) {
                        let d = Delivery {
                            // An older copy of the session (its node crashed and came
                            // back, or was cut off): the client may have had these from the
                            // other copy already.
                            dup: true,
                            ..Delivery::new(message(m), qos(m.qos), m.retain)
                        };
                        s.deliver(d, policy, durable);
                        count += 1;
                    }
                }
            }
            s.set_claim(s.claim().max(arrived[0].claim));
            (s, count)
        }
        None => {
            let base = &arrived[0];
            let session = Arc::new(Session::new(
                broker.sessions.new_id(),
                client_id.into(),
                true,
            ));
            session.set_journaled(durable.is_some());
            session.set_claim(base.claim);
            let identity = ClientIdentity {
                client_id: session.client_id().clone(),
                username: base.header.username.as_deref().map(Arc::from),
                ip: base
                    .header
                    .ip
                    .as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            };
            session.set_access(identity.clone(), broker.client_acl(&identity));
            arriving(&session, arrived.len() > 1);
            let mut core = SessionCore::default();
            {
                let acl = session.acl();
                for (raw, q) in &base.header.subscriptions {
                    let (Ok(sub), Some(q)) = (
                        parse_subscription(raw, &broker.settings.topics),
                        QoS::from_u8(*q),
                    ) else {
                        warn!(client_id, filter = %raw, "moved subscription not valid under this configuration: dropped");
                        continue;
                    };
                    let check = acl.subscribe(sub.filter) != SubscribeCheck::Allow;
                    broker.restore_subscription(&session, &sub, q, check);
                    core.subscriptions.insert(raw.clone(), q);
                }
            }
            let mut count = 0;
            {
                let mut inbox = session.inbox();
                for (i, a) in arrived.iter().enumerate() {
                    for m in &a.messages {
                        if moves.seen(session.id(), m.mid) {
                            continue;
                        }
                        count += 1;
                        let msg = message(m);
                        let qos = qos(m.qos);
                        let mut d = Delivery {
                            // In flight, or from a second, older copy: maybe delivered before.
                            dup: m.dup || m.inflight.is_some() || i > 0,
                            ..Delivery::new(msg, qos, m.retain)
                        };
                        let journal = durable.filter(|_| qos != QoS::AtMostOnce);
                        if journal.is_some() {
                            d.seq = inbox.next_seq();
                        }
                        // Only the newest session's packet ids are kept (the client holds those).
                        let restored = match m.inflight.filter(|_| i == 0) {
                            Some((pkid, released)) => {
                                let awaiting = match (qos, released) {
                                    (QoS::ExactlyOnce, true) => Awaiting::PubComp,
                                    (QoS::ExactlyOnce, false) => Awaiting::PubRec,
                                    _ => Awaiting::PubAck,
                                };
                                core.outbound
                                    .restore(pkid, d.clone(), awaiting)
                                    .then_some((pkid, released))
                            }
                            None => None,
                        };
                        if let Some(j) = journal {
                            let state = match restored {
                                Some((pkid, true)) => QueueState::Released(pkid),
                                Some((pkid, false)) => QueueState::Sent(pkid),
                                None => QueueState::Queued,
                            };
                            let pid = j.add_ref(&d.msg);
                            j.put(
                                Key::Queue(session.id(), d.seq),
                                Value::Queue(QueueRecord {
                                    message: pid,
                                    qos: qos as u8,
                                    retain: d.retain,
                                    state,
                                }),
                                true,
                            );
                        }
                        if restored.is_none() {
                            inbox.restore(d);
                        }
                    }
                }
            }
            core.awaiting_rel.extend(base.awaiting_rel.iter().copied());
            for pkid in &core.awaiting_rel {
                broker.journal_awaiting(&session, *pkid, true);
            }
            let offline_ms = base
                .header
                .offline_since_ms
                .map_or(0, |t| now_millis().saturating_sub(t));
            broker.journal_session(&session, &core, Some(now_millis() - offline_ms));
            let now = Instant::now();
            let since = now
                .checked_sub(Duration::from_millis(offline_ms))
                .unwrap_or(now);
            broker.sessions.restore(session.clone(), core, since);
            (session, count)
        }
    };
    if let Some(d) = durable {
        let ticket = d.ticket();
        let until = Instant::now() + Duration::from_secs(10);
        while !d.is_durable(ticket) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for a in &arrived {
        let sent = cluster.send_v2(
            &a.from,
            [Frame::HandoverDone {
                client_id: client_id.to_owned(),
                claim: a.claim,
            }],
        );
        if !sent {
            warn!(client_id, peer = %a.from.name, "cannot confirm a session handover: no link to its sender (it keeps its copy until the next link-up settles them)");
        }
    }
    info!(
        client_id,
        messages,
        from = arrived.len(),
        "persistent session arrived"
    );
    cluster
        .metrics
        .sessions_moved_in
        .inc_by(arrived.len() as u64);
    let (cluster, sid) = (cluster.clone(), session.id());
    tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        cluster.moves.arrivals.lock().remove(&sid);
        session.set_arriving(false);
    });
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtLeastOnce)
}

fn message(m: &MovedMessage) -> Arc<Message> {
    Arc::new(Message {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: qos(m.published_qos),
        retain: m.retain,
        received_at: Instant::now(),
        stamp: m.stamp,
        durable: Default::default(),
        mid: m.mid,
    })
}

/// The receiver has the session `client_id` (durably): delete it here, keep forwarding for
/// `GRACE`, then remove its subscriptions.
pub fn on_handover_done(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    client_id: String,
    claim: u64,
) {
    let sid = {
        let mut stubs = cluster.moves.stubs.lock();
        let Some(stub) = stubs
            .get_mut(&client_id)
            .filter(|s| s.claim == claim && !s.confirmed)
        else {
            debug!(
                client_id,
                claim, "confirmation of a handover this node does not wait for"
            );
            return;
        };
        stub.confirmed = true;
        broker.forget_durable(&stub.session, &mut stub.core, &stub.queue);
        stub.queue.clear();
        stub.session.id()
    };
    cluster.moves.changed.notify_waiters();
    cluster.metrics.sessions_moved_out.inc();
    let (broker, cluster) = (broker.clone(), cluster.clone());
    tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        let stub = {
            let mut stubs = cluster.moves.stubs.lock();
            match stubs.get(&client_id) {
                Some(s) if s.session.id() == sid => stubs.remove(&client_id),
                _ => None,
            }
        };
        if let Some(s) = stub {
            broker.forget(Discarded {
                session: s.session,
                core: s.core,
            });
        }
    });
}

/// A message routed to a session that moved away: sent on to where it went.
pub fn forward(cluster: &Cluster, session: &Session, msg: &Message, qos: QoS) -> bool {
    let to = {
        let stubs = cluster.moves.stubs.lock();
        match stubs.get(&**session.client_id()) {
            Some(s) if s.session.id() == session.id() => s.to.clone(),
            _ => return false,
        }
    };
    let frame = Frame::SessionForward {
        client_id: session.client_id().to_string(),
        mid: msg.mid,
        qos: qos as u8,
        forward: Arc::new(Forward {
            seq: 0,
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos: msg.qos as u8,
            retain: false,
            stamp: msg.stamp,
            plain: true,
            groups: Vec::new(),
            mid: msg.mid,
        }),
    };
    cluster.send_v2(&to, [frame])
}

/// A message the old node of a session that moved here sent on.
pub fn on_session_forward(
    broker: &Broker,
    cluster: &Cluster,
    from: &Peer,
    client_id: String,
    mid: Mid,
    q: u8,
    f: &Forward,
) {
    let m = MovedMessage {
        topic: f.topic.clone(),
        payload: f.payload.clone(),
        qos: q.min(2),
        published_qos: f.qos.min(2),
        retain: false,
        stamp: f.stamp,
        inflight: None,
        dup: false,
        mid,
    };
    if let Some(s) = broker
        .sessions
        .get(&client_id)
        .filter(|s| s.is_persistent())
    {
        if s.is_arriving() && cluster.moves.seen(s.id(), mid) {
            cluster.metrics.duplicates.inc();
            return;
        }
        let merged = cluster
            .moves
            .arrivals
            .lock()
            .get(&s.id())
            .is_some_and(|a| a.merged);
        s.deliver(
            Delivery {
                dup: merged,
                ..Delivery::new(message(&m), qos(m.qos), false)
            },
            broker.settings.queue,
            broker.durable.as_deref(),
        );
        return;
    }
    // Still arriving: kept with the parts.
    let mut pending = cluster.moves.pending.lock();
    if let Some(a) = pending
        .get_mut(&client_id)
        .and_then(|p| p.arrived.iter_mut().find(|a| a.from.id == from.id))
    {
        a.messages.push(m);
        return;
    }
    drop(pending);
    if let Some(i) = cluster.moves.incoming.lock().get_mut(&(from.id, client_id)) {
        i.messages.push(m);
    }
}

/// The dialler's half of the reconciliation when a link comes up: this node's persistent
/// sessions and their claims.
pub fn session_table(broker: &Broker) -> Vec<Frame> {
    let mut entries = Vec::new();
    broker.sessions.for_each(|s| {
        if s.is_persistent() && !s.is_moved() {
            entries.push((s.client_id().to_string(), s.claim()));
        }
    });
    let mut frames: Vec<Frame> = entries
        .chunks(TABLE_PART)
        .map(|c| Frame::SessionTable {
            entries: c.to_vec(),
            last: false,
        })
        .collect();
    match frames.last_mut() {
        Some(Frame::SessionTable { last, .. }) => *last = true,
        _ => frames.push(Frame::SessionTable {
            entries: Vec::new(),
            last: true,
        }),
    }
    frames
}

/// A peer's session table: hand it the sessions held here with an older claim (on a tie, the
/// node with the greater name gives way).
pub fn on_session_table(
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    from: Arc<Peer>,
    entries: Vec<(String, u64)>,
) {
    let mut yield_ = Vec::new();
    let mut claim_back = Vec::new();
    for (client_id, claim) in entries {
        let Some(s) = broker
            .sessions
            .get(&client_id)
            .filter(|s| s.is_persistent())
        else {
            continue;
        };
        let mine = s.claim();
        if mine < claim || (mine == claim && *cluster.name > *from.name) {
            yield_.push((client_id, claim));
        } else {
            // Newer here: the peer's copy comes here (with what it queued), as for a connect.
            claim_back.push(Frame::Claim {
                client_id,
                claim: mine,
                resume: true,
            });
        }
    }
    if !claim_back.is_empty() {
        cluster.send_v2(&from, claim_back);
    }
    if yield_.is_empty() {
        return;
    }
    tokio::spawn(async move {
        info!(peer = %from.name, sessions = yield_.len(), "sessions held by a peer with a newer claim: handing them over");
        for (client_id, claim) in yield_ {
            if let Some(d) = broker
                .sessions
                .detach(&client_id, broker.settings.takeover_wait)
                .await
            {
                hand_over(&broker, &cluster, &from, claim, d, false);
            }
        }
    });
}

/// Graceful leave: hands every persistent session to a remaining node, `LEAVE_BATCH` at a
/// time, and waits (until `deadline`) for them to be confirmed. Returns (handed over, not
/// confirmed).
pub async fn leave(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    deadline: tokio::time::Instant,
) -> (usize, usize) {
    let peers = cluster.movers();
    if peers.is_empty() {
        return (0, 0);
    }
    let mut ids = Vec::new();
    broker.sessions.for_each(|s| {
        if s.is_persistent() && !s.is_moved() {
            ids.push(s.client_id().to_string());
        }
    });
    info!(
        sessions = ids.len(),
        peers = peers.len(),
        "leaving the cluster: handing persistent sessions over"
    );
    let mut handed = 0;
    for batch in ids.chunks(LEAVE_BATCH) {
        for client_id in batch {
            let to = rendezvous(client_id, &peers);
            let Some(d) = broker.sessions.detach(client_id, Duration::ZERO).await else {
                continue;
            };
            let claim = d.session.claim();
            hand_over(broker, cluster, to, claim, d, false);
            handed += 1;
        }
        // Until all are confirmed, or none has been for LEAVE_STALL: an unconfirmed session
        // stays in this node's store (not deleted), and the session table settles the two
        // copies when this node is back.
        let moves = &cluster.moves;
        let mut last = usize::MAX;
        let mut progress = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            let left = moves.unconfirmed();
            if left == 0 {
                break;
            }
            if left != last {
                last = left;
                progress = tokio::time::Instant::now();
            } else if progress.elapsed() >= LEAVE_STALL {
                break;
            }
            let slice = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            moves
                .wait_changed(slice, || moves.unconfirmed() != left)
                .await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let left = cluster.moves.unconfirmed();
    if left > 0 {
        let ids: Vec<String> = cluster
            .moves
            .stubs
            .lock()
            .iter()
            .filter(|(_, s)| !s.confirmed)
            .map(|(id, s)| format!("{id} -> {}", s.to.name))
            .take(10)
            .collect();
        warn!(unconfirmed = left, sessions = ?ids, "handovers not confirmed by the shutdown deadline: those sessions stay in this node's store");
    }
    (handed, left)
}

/// The peer a leaving node gives `client_id` to: the highest hash of (client id, peer name).
fn rendezvous<'a>(client_id: &str, peers: &'a [Arc<Peer>]) -> &'a Arc<Peer> {
    use std::hash::{BuildHasher, Hasher};
    let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
    peers
        .iter()
        .max_by_key(|p| {
            let mut h = state.build_hasher();
            h.write(client_id.as_bytes());
            h.write(p.name.as_bytes());
            h.finish()
        })
        .unwrap_or(&peers[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_increase_carry_the_node_and_pass_every_claim_seen() {
        let a = Moves::new("hmq-0");
        let b = Moves::new("hmq-1");
        assert_ne!(a.tag, b.tag);
        let mut last = 0;
        for _ in 0..1000 {
            let c = a.claim_now();
            assert!(c > last);
            assert_eq!(c & 0xffff, a.tag);
            last = c;
        }
        // A claim from a node whose clock is an hour ahead: the next one here is later still.
        let ahead = ((now_millis() + 3_600_000) << 16) | b.tag;
        a.observe(ahead);
        let next = a.claim_now();
        assert!(next > ahead);
        assert_eq!(next & 0xffff, a.tag);
    }

    #[test]
    fn an_arrival_drops_a_second_copy_but_not_messages_without_an_id() {
        let m = Moves::new("n");
        assert!(!m.seen(1, (7, 7)), "no arrival: nothing dropped");
        m.arrivals.lock().insert(
            1,
            Arrival {
                seen: HashSet::new(),
                merged: false,
            },
        );
        assert!(!m.seen(1, (7, 7)));
        assert!(m.seen(1, (7, 7)));
        assert!(!m.seen(1, (0, 0)));
        assert!(!m.seen(1, (0, 0)), "a version 1 peer's message has no id");
    }
}
