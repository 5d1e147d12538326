//! Persistent sessions that follow their client across the cluster (protocol version 2).
//!
//! Each session carries a **claim**: when its client last connected, cluster-wide
//! (`claim_now`: milliseconds since the Unix epoch, shifted left 16 bits, with a hash of the node
//! name in the low bits, strictly increasing per node). Of two nodes holding the same client
//! id, the one with the newer claim keeps the session; the other hands it over. There is no
//! leader and no shared store: each session lives on exactly one node, and moves.
//!
//! * **Connect.** A client connects to node B with clean session 0. Before opening the session
//!   B sends `Claim` to every peer linked at version 2 and waits (at most `CLAIM_WAIT`; up to
//!   `HANDOVER_WAIT` for a peer that announced a handover; not for a peer whose link went
//!   down) for each to answer. A peer A that holds the client id with
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::proto::{Forward, Frame, HandoverPart, Mid, MovedMessage, SessionHeader};
use super::routes::PeerId;
use super::{Cluster, Peer};
use crate::broker::Broker;
use crate::codec::QoS;
use crate::message::{Delivery, Message, now_millis};
use crate::persist::journal::Value;
use crate::persist::record::{Key, QueueRecord, QueueState};
use crate::session::registry::Discarded;
use crate::session::{Awaiting, ClientIdentity, Session, SessionCore};

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
    /// Peers that announced a handover: waited for up to `HANDOVER_WAIT`, the others for
    /// `CLAIM_WAIT`.
    handing: Vec<PeerId>,
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

    /// This node's link to `peer` went down: a claim it had not answered will not be answered
    /// (the claim may not even have been written: the link's control queue is dropped, and a
    /// restarted peer knows nothing of it). Waiting for it would hold the connecting client
    /// for up to `HANDOVER_WAIT`, past its messages and past a drain. (Parts of a session that
    /// peer still sends on its own link are installed when they end, as for a leaving node.)
    pub fn peer_down(&self, peer: PeerId) {
        let mut changed = false;
        for p in self.pending.lock().values_mut() {
            let before = p.waiting.len();
            p.waiting.retain(|id| *id != peer);
            changed |= p.waiting.len() != before;
        }
        if changed {
            self.changed.notify_waiters();
        }
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

mod arrive;
mod claim;
mod handover;
mod leave;

use arrive::install;
pub use arrive::{on_handover, on_session_forward};
pub use claim::{claim, on_claim_reply};
use handover::hand_over;
pub use handover::{forward, on_claim, on_handover_done};
pub use leave::{leave, on_session_table, session_table};

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
