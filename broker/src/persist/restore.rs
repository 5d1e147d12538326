//! Putting what [`recover`](super::recover) read back into a broker before it serves: offline
//! persistent sessions with their subscriptions (in the router and announced to the cluster),
//! their queues and in-flight windows (packet ids kept, so the client gets them again with
//! DUP), their QoS 2 ids awaiting PUBREL; retained messages; the messages waiting in the cluster
//! outboxes (sent again, with DUP). What belongs to nothing is
//! deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Durable;
use super::record::QueueState;
use super::recover::Recovered;
use crate::broker::Broker;
use crate::codec::QoS;
use crate::message::{Delivery, now_millis};
use crate::session::{Awaiting, ClientIdentity, Session, SessionCore};

/// Applies `recovered` to `broker` (empty, not serving yet).
pub fn apply(broker: &Broker, durable: &Durable, recovered: Recovered) {
    let now_ms = now_millis();
    let now = Instant::now();
    broker.sessions.reserve_ids(recovered.max_sid + 1);
    let unclean = recovered.unclean;
    for rs in recovered.sessions {
        let session = Arc::new(Session::new(
            rs.sid,
            rs.record.client_id.as_str().into(),
            true,
        ));
        session.set_journaled(true);
        session.set_claim(rs.record.claim);
        let identity = ClientIdentity::stored(
            session.client_id().clone(),
            rs.record.username.as_deref(),
            rs.record.ip.as_deref(),
        );
        session.set_access(identity.clone(), broker.client_acl(&identity));
        let mut core = SessionCore::default();
        broker.restore_subscriptions(&session, &mut core, &rs.record.subscriptions);
        // Connected when the broker died: what it had queued may have gone out already (the
        // "sent" mark is written behind the send), so it goes out with DUP.
        let maybe_sent = unclean && rs.record.offline_since_ms.is_none();
        let mut last_seq = 0;
        {
            let mut inbox = session.inbox();
            for (seq, q, msg) in rs.queue {
                last_seq = last_seq.max(seq);
                let qos = QoS::from_u8(q.qos).unwrap_or(QoS::AtLeastOnce);
                let d = Delivery {
                    msg,
                    qos,
                    retain: q.retain,
                    seq,
                    dup: maybe_sent,
                };
                let restored = match q.state {
                    QueueState::Queued => false,
                    QueueState::Sent(pkid) => {
                        let awaiting = if qos == QoS::ExactlyOnce {
                            Awaiting::PubRec
                        } else {
                            Awaiting::PubAck
                        };
                        core.outbound.restore(pkid, d.clone(), awaiting)
                    }
                    QueueState::Released(pkid) => {
                        core.outbound.restore(pkid, d.clone(), Awaiting::PubComp)
                    }
                };
                if !restored {
                    inbox.restore(d);
                }
            }
            inbox.continue_after(last_seq);
        }
        core.awaiting_rel.extend(rs.awaiting);
        // A session stored while connected went offline when the broker stopped: its expiry
        // counts from now.
        let offline_ms = rs
            .record
            .offline_since_ms
            .map_or(0, |t| now_ms.saturating_sub(t));
        let offline_since = now
            .checked_sub(Duration::from_millis(offline_ms))
            .unwrap_or(now);
        broker.sessions.restore(session, core, offline_since);
    }
    for msg in recovered.retained {
        broker.retained.set(&msg);
    }
    // Messages for cluster peers that were acknowledged to their publishers: sent again.
    if !recovered.outbox.is_empty() {
        let n = recovered.outbox.len();
        match broker.cluster.get() {
            Some(cluster) => {
                cluster.restore_outbox(recovered.outbox);
                info!(
                    messages = n,
                    "messages for cluster peers recovered; they go out with DUP"
                );
            }
            None => {
                warn!(
                    messages = n,
                    "messages stored for cluster peers are dropped: this node has no cluster.port \
                     now"
                );
                for (peer, seq, _) in recovered.outbox {
                    durable.delete(crate::persist::record::Key::Outbox(peer, seq));
                }
            }
        }
    }
    if recovered.lost_entries > 0 {
        warn!(
            entries = recovered.lost_entries,
            "queue entries whose message was not stored (written just before a crash, after \
             the last sync) were dropped"
        );
    }
    for key in recovered.garbage {
        durable.delete(key);
    }
}
