//! The giving side of a move: a claim from a peer, the session sent in parts, the stub that
//! forwards what still arrives, the confirmation, and the rollback of an unconfirmed handover.

use super::*;

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
pub(super) fn hand_over(
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
    let (username, ip) = session.stored_identity();
    let header = SessionHeader {
        subscriptions: core.stored_subscriptions(),
        username,
        ip,
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
pub(super) fn moved(d: &Delivery, inflight: Option<(u16, bool)>, dup: bool) -> MovedMessage {
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
pub(super) fn roll_back(broker: &Broker, cluster: &Cluster, client_id: &str, sid: u64) {
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
            resent: false,
            journaled: false,
        }),
    };
    cluster.send_v2(&to, [frame])
}
