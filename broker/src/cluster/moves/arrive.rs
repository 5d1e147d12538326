//! The receiving side of a move: the parts assembled, the session installed (or merged into
//! the one here) and made durable before it is confirmed, and what the old node forwards.

use super::*;

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
pub(super) async fn install(
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
            let identity = ClientIdentity::stored(
                session.client_id().clone(),
                base.header.username.as_deref(),
                base.header.ip.as_deref(),
            );
            session.set_access(identity.clone(), broker.client_acl(&identity));
            arriving(&session, arrived.len() > 1);
            let mut core = SessionCore::default();
            broker.restore_subscriptions(&session, &mut core, &base.header.subscriptions);
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
        d.until_durable(d.ticket(), Duration::from_secs(10)).await;
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
pub(super) fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtLeastOnce)
}
pub(super) fn message(m: &MovedMessage) -> Arc<Message> {
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
