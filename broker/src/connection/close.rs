//! How a connection ends: why (`Close`, its metrics label and log line), the last flush, the will,
//! the offline notification and the release of the session, and the close of the transport.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tracing::{debug, info, warn};

use super::outbound::WriteQueue;
use super::{Connection, ListenerKind, is_sys_topic};
use crate::broker::Broker;
use crate::message::Message;
use crate::topic::Shown;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The client closed the socket without DISCONNECT.
    PeerClosed,
    /// Reading or writing failed.
    Network(String),
    /// No packet within 1.5 × keepalive.
    KeepaliveTimeout,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// The client broke the protocol (malformed packet, wrong packet, bad topic).
    Protocol(String),
    /// The client exceeded a configured limit.
    Limit(String),
    /// CONNECT refused with a CONNACK return code.
    Refused(String),
    /// Another connection took the session over.
    Takeover,
    /// The broker is shutting down.
    Shutdown,
}

impl Close {
    /// Whether the will message is published: on every close but DISCONNECT [MQTT-3.1.2-8] and a
    /// broker shutdown (a drained client is not a crashed client).
    pub(super) fn publishes_will(&self) -> bool {
        !matches!(self, Close::ClientDisconnect | Close::Shutdown)
    }

    /// The metrics label.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Close::ClientDisconnect => "client_disconnect",
            Close::PeerClosed => "peer_closed",
            Close::Network(_) => "network_error",
            Close::KeepaliveTimeout => "keepalive_timeout",
            Close::ConnectTimeout => "connect_timeout",
            Close::Protocol(_) => "protocol_error",
            Close::Limit(_) => "limit_exceeded",
            Close::Refused(_) => "refused",
            Close::Takeover => "takeover",
            Close::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::ClientDisconnect => f.write_str("client sent DISCONNECT"),
            Close::PeerClosed => f.write_str("connection closed by client"),
            Close::Network(e) => write!(f, "network error: {e}"),
            Close::KeepaliveTimeout => f.write_str("keepalive timeout"),
            Close::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            Close::Protocol(e) => write!(f, "protocol error: {e}"),
            Close::Limit(e) => write!(f, "limit exceeded: {e}"),
            Close::Refused(e) => write!(f, "refused: {e}"),
            Close::Takeover => f.write_str("session taken over by a new connection"),
            Close::Shutdown => f.write_str("broker shutting down"),
        }
    }
}

/// Time allowed for the last writes (CONNACK refusal, pending acks) when a connection closes.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

pub(super) fn log_close(client_id: &str, peer: SocketAddr, listener: ListenerKind, why: &Close) {
    let listener = listener.as_str();
    match why {
        Close::Protocol(_) | Close::Limit(_) => {
            warn!(client_id, %peer, listener, reason = %why, "client disconnected");
        }
        _ => info!(client_id, %peer, listener, reason = %why, "client disconnected"),
    }
}

/// Ends a connection that never got a session: flush a refusal CONNACK if one is queued, log,
/// count.
pub(crate) async fn end_before_session<W: AsyncWrite + Unpin>(
    broker: &Broker,
    writer: &mut W,
    wq: &mut WriteQueue,
    peer: SocketAddr,
    listener: ListenerKind,
    why: Close,
) {
    if !wq.is_empty() {
        let _ = tokio::time::timeout(FINAL_FLUSH, wq.flush_all(writer, &broker.metrics.bytes_out))
            .await;
    }
    close_transport(writer).await;
    match &why {
        Close::Refused(_) => {}
        Close::ConnectTimeout => {
            broker
                .metrics
                .connects_refused
                .with_label_values(&["connect_timeout"])
                .inc();
        }
        _ => {
            broker
                .metrics
                .connects_refused
                .with_label_values(&["bad_connect"])
                .inc();
        }
    }
    match &why {
        Close::Protocol(_) | Close::ConnectTimeout => {
            warn!(%peer, listener = listener.as_str(), reason = %why, "connection closed before CONNECT completed");
        }
        _ => {
            info!(%peer, listener = listener.as_str(), reason = %why, "connection closed before CONNECT completed")
        }
    }
}

impl Connection {
    /// Closes the connection: flush, will, session release, then the transport; counted and
    /// logged.
    pub(super) async fn end<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, why: Close) {
        self.finish(writer, &why).await;
        close_transport(writer).await;
        let metrics = &self.broker.metrics;
        metrics
            .connections_current
            .with_label_values(&[self.listener.as_str()])
            .dec();
        metrics.disconnects.with_label_values(&[why.label()]).inc();
        log_close(&self.client_id, self.peer, self.listener, &why);
    }

    /// Flushes what can be flushed, publishes the will if this close calls for it, and gives the
    /// session back.
    pub(super) async fn finish<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, why: &Close) {
        if !matches!(why, Close::Network(_) | Close::PeerClosed) && !self.wq.is_empty() {
            let _ = tokio::time::timeout(
                FINAL_FLUSH,
                self.wq.flush_all(writer, &self.broker.metrics.bytes_out),
            )
            .await;
        }
        if why.publishes_will() {
            if let Some(w) = self.will.take() {
                debug!(client_id = %self.client_id, topic = %Shown(&w.topic), "publishing will");
                if is_sys_topic(&w.topic) {
                    self.broker.metrics.dropped.sys_topic.inc();
                } else if !self.session.acl().can_publish(&w.topic) {
                    self.broker.metrics.dropped.acl.inc();
                    self.broker.metrics.acl_denied.publish.inc();
                    debug!(client_id = %self.client_id, topic = %Shown(&w.topic), "will denied by the ACL");
                } else {
                    let w = *w;
                    self.broker
                        .publish(&Message::new(w.topic, w.payload, w.qos, w.retain));
                }
            }
        }
        // Every close, a broker shutdown included, ends with the offline notification: a
        // drained client looks offline, not crashed (no will), to the others.
        crate::sys::publish_presence(&self.broker, &self.client_id, false);
        // Before the release: after it, the next owner may have registered its own waker.
        self.session.notify().clear();
        if self.session.is_journaled() {
            self.broker.journal_session(
                &self.session,
                &self.core,
                Some(crate::message::now_millis()),
            );
        }
        let core = std::mem::take(&mut self.core);
        if let Some(discarded) = self
            .broker
            .sessions
            .release(&self.session, core, &self.owner)
        {
            self.broker.forget(discarded);
        }
    }
}

/// Closes the transport properly, briefly: a WebSocket close frame, a TLS close_notify, a TCP
/// FIN. Without it browsers report the WebSocket as dropped (1006) rather than closed.
pub(super) async fn close_transport<W: AsyncWrite + Unpin>(writer: &mut W) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}
