//! The connecting side of a move: the claim a connect sends to the peers, and the answers.

use super::*;

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
            handing: Vec::new(),
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
    let mut until = start + HANDOVER_WAIT;
    let mut asked_again = false;
    loop {
        // Every peer answered; or the ones left announced no handover and had `CLAIM_WAIT`.
        let short = until.min(tokio::time::Instant::now() + CLAIM_WAIT);
        moves
            .wait_changed(until, || {
                let pending = moves.pending.lock();
                match pending.get(client_id) {
                    Some(p) if p.claim == claim => {
                        p.waiting.is_empty()
                            || (!p.waiting.iter().any(|id| p.handing.contains(id))
                                && tokio::time::Instant::now() >= short)
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
        until = tokio::time::Instant::now() + HANDOVER_WAIT;
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
            p.handing.push(from.id);
        } else {
            p.waiting.retain(|id| *id != from.id);
            p.ask_again.extend(moved_to);
        }
    }
    drop(pending);
    cluster.moves.changed.notify_waiters();
}
