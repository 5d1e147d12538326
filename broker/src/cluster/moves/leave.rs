//! A node leaving the cluster hands its sessions over; a link coming up settles sessions held
//! on both sides (the session table).

use super::*;

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
pub(super) fn rendezvous<'a>(client_id: &str, peers: &'a [Arc<Peer>]) -> &'a Arc<Peer> {
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
