//! The start of a connection: read the CONNECT (within `connectTimeout`), validate it, open the
//! session and queue the CONNACK. Runs inside the connection's own task, never in the accept loop.

use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::outbound::WriteQueue;
use super::{Close, ConnInfo};
use crate::acl::SubscribeCheck;
use crate::auth::Verdict;
use crate::broker::Broker;
use crate::codec::{self, Connect, ConnectCode, DecodeError, Packet, Protocol};
use crate::session::ClientIdentity;
use crate::session::Owner;
use crate::session::registry::{OpenError, Opened};
use crate::topic::validate_name;
use crate::topic::{Shown, parse_subscription};
use tracing::debug;

/// MQTT 3.1 limits client ids to 23 characters (3.1 spec, section 3.1); 3.1.1 lets servers accept
/// more and so do we.
const MQTT31_MAX_CLIENT_ID: usize = 23;

/// A client that is connected: its CONNECT, effective client id and opened session.
#[derive(Debug)]
pub struct Accepted {
    /// The CONNECT as received (the will is taken out of it by the caller).
    pub connect: Connect,
    /// Client id, assigned if the client sent none.
    pub client_id: Arc<str>,
    /// The session and its state.
    pub opened: Opened,
}

/// Outcome of reading the first packet.
pub enum First {
    /// A decodable CONNECT.
    Connect(Box<Connect>),
    /// A CONNECT for a protocol level we do not speak: answer CONNACK 1.
    UnsupportedProtocol(u8),
}

/// Reads the first packet, which must be a CONNECT. The caller bounds this with the connect
/// timeout.
pub async fn read_first<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    broker: &Broker,
) -> Result<First, Close> {
    loop {
        match codec::decode(rbuf, broker.settings.max_packet_size) {
            Ok(Some(Packet::Connect(c))) => return Ok(First::Connect(c)),
            Ok(Some(other)) => {
                return Err(Close::Protocol(format!(
                    "first packet was {}, not CONNECT",
                    other.name()
                )));
            }
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocol(level)) => {
                return Ok(First::UnsupportedProtocol(level));
            }
            Err(e) => return Err(Close::Protocol(e.to_string())),
        }
        if rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(1024);
        }
        let n = reader
            .read_buf(rbuf)
            .await
            .map_err(|e| Close::Network(e.to_string()))?;
        if n == 0 {
            return Err(Close::PeerClosed);
        }
        broker.metrics.bytes_in.inc_by(n as u64);
    }
}

/// Validates the CONNECT and opens the session. On refusal, the CONNACK to send (if any) is
/// already in `wq` and the error says why.
pub async fn accept(
    connect: Connect,
    info: &ConnInfo,
    broker: &Broker,
    owner: Owner,
    wq: &mut WriteQueue,
) -> Result<Accepted, Close> {
    let refuse = |wq: &mut WriteQueue, code: ConnectCode, why: &str| {
        codec::encode_connack(wq.buf(), false, code);
        broker
            .metrics
            .connects_refused
            .with_label_values(&[refused_label(code)])
            .inc();
        Close::Refused(format!("{why} (CONNACK {})", code as u8))
    };

    if let Some(w) = &connect.will {
        validate_name(&w.topic, &broker.settings.topics)
            .map_err(|e| Close::Protocol(format!("will topic: {e}")))?;
    }

    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if connect.protocol == Protocol::V31 {
            return Err(refuse(
                wq,
                ConnectCode::IdentifierRejected,
                "MQTT 3.1 requires a client id",
            ));
        }
        if !connect.clean_session {
            // [MQTT-3.1.3-8]
            return Err(refuse(
                wq,
                ConnectCode::IdentifierRejected,
                "empty client id with clean session 0",
            ));
        }
        broker.assign_client_id().into()
    } else {
        if connect.protocol == Protocol::V31
            && connect.client_id.chars().count() > MQTT31_MAX_CLIENT_ID
        {
            return Err(refuse(
                wq,
                ConnectCode::IdentifierRejected,
                "MQTT 3.1 client id longer than 23 characters",
            ));
        }
        connect.client_id.as_str().into()
    };

    // Authentication. A verified client certificate's identity stands for the user name (and
    // needs no password) when `useIdentityAsUsername` is on; otherwise the CONNECT's.
    let from_cert = broker.settings.use_identity_as_username && info.cert_identity.is_some();
    let username = if from_cert {
        info.cert_identity.as_deref()
    } else {
        connect.username.as_deref()
    };
    match username {
        None if !broker.settings.allow_anonymous => {
            return Err(refuse(
                wq,
                ConnectCode::NotAuthorized,
                "anonymous clients are not allowed",
            ));
        }
        Some(user) if !from_cert && broker.checks_passwords() => {
            let password = connect.password.as_deref().unwrap_or_default();
            let verdict = broker.verify_password(user, password).await;
            if verdict != Verdict::Ok {
                debug!(user = %Shown(user), ?verdict, "authentication failed");
                return Err(refuse(
                    wq,
                    ConnectCode::BadUsernamePassword,
                    "bad user name or password",
                ));
            }
        }
        _ => {}
    }
    let username: Option<Arc<str>> = username.map(Arc::from);

    // In a cluster, the session may be on another node: it moves here first.
    let claim = match broker.cluster.get() {
        Some(cluster) => {
            crate::cluster::moves::claim(broker, cluster, &client_id, connect.clean_session).await
        }
        None => 0,
    };
    let opened = match broker
        .sessions
        .open(
            client_id.clone(),
            connect.clean_session,
            owner,
            broker.settings.takeover_wait,
        )
        .await
    {
        Ok(o) => o,
        Err(e @ (OpenError::TooManySessions | OpenError::TakeoverTimeout)) => {
            return Err(refuse(wq, ConnectCode::ServerUnavailable, &e.to_string()));
        }
    };
    let Opened {
        session,
        core,
        present,
        discarded,
    } = opened;
    if let Some(d) = discarded {
        broker.forget(d);
    }
    // A session that moved here may carry a claim from a node whose clock is ahead.
    session.set_claim(claim.max(session.claim()));
    broker.client_connected(&client_id);

    let identity = ClientIdentity {
        client_id: client_id.clone(),
        username,
        ip: info.peer.ip(),
    };
    session.set_access(identity.clone(), broker.client_acl(&identity));
    if broker.durable.is_some() && !connect.clean_session {
        // A persistent session is mirrored in the durable store from now on (a resumed one
        // already is): its record carries this connection's identity.
        session.set_journaled(true);
        broker.journal_session(&session, &core, None);
    }
    if present && broker.acl_enabled() {
        // A resumed session's subscriptions were classified for the previous connection's
        // identity (the address may differ): classify them again.
        let acl = session.acl();
        for (raw, qos) in &core.subscriptions {
            if let Ok(sub) = parse_subscription(raw, &broker.settings.topics) {
                let check = acl.subscribe(sub.filter) != SubscribeCheck::Allow;
                broker.router.subscribe(&session, &sub, *qos, check);
            }
        }
    }
    // MQTT 3.1 has no session-present flag: that byte of its CONNACK is reserved, 0.
    codec::encode_connack(
        wq.buf(),
        present && !connect.clean_session && connect.protocol != Protocol::V31,
        ConnectCode::Accepted,
    );
    Ok(Accepted {
        connect,
        client_id,
        opened: Opened {
            session,
            core,
            present,
            discarded: None,
        },
    })
}

/// Writes the CONNACK for an unsupported protocol level.
pub fn refuse_protocol(broker: &Broker, wq: &mut WriteQueue, level: u8) -> Close {
    codec::encode_connack(wq.buf(), false, ConnectCode::UnacceptableProtocol);
    broker
        .metrics
        .connects_refused
        .with_label_values(&[refused_label(ConnectCode::UnacceptableProtocol)])
        .inc();
    Close::Refused(format!("unsupported protocol level {level} (CONNACK 1)"))
}

fn refused_label(code: ConnectCode) -> &'static str {
    match code {
        ConnectCode::UnacceptableProtocol => "protocol_version",
        ConnectCode::IdentifierRejected => "identifier_rejected",
        ConnectCode::ServerUnavailable => "server_unavailable",
        ConnectCode::BadUsernamePassword => "bad_credentials",
        ConnectCode::NotAuthorized => "not_authorized",
        ConnectCode::Accepted => "accepted",
    }
}
