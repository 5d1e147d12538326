//! Cluster links: the dialling side (which sends this node's routes and messages to one peer),
//! and the accepting side (which applies what a peer sends). Discovery, which runs one dial loop
//! per address it finds, is in [`discovery`](super::discovery).
//!
//! A dial loop that reaches this node itself (its own name in the handshake)
//! goes idle; one that reaches a peer already linked through another address backs off. A
//! failed or broken link is dialled again with a growing pause (0.2 s to 5 s).

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::proto::{self, Forward, Frame, OLDEST, Side, VERSION};
use super::{Cluster, Peer, moves};
use crate::broker::Broker;
use crate::topic::{TopicLimits, parse_subscription, validate_name};

/// Longest wait for a TCP connect or one handshake frame.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between dial attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most messages written in one batch.
const BATCH: usize = 256;
/// How often the dialling side sends `Ping` on a link.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A link on which nothing arrives for this long, or whose writes block this long, is closed.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages written to a link and not yet acknowledged, at most.
const WINDOW: usize = 1024;
/// The receiver acknowledges at least every this many messages.
const ACK_EVERY: usize = 256;
/// Retained messages sent in one write when a link comes up.
const RETAINED_BATCH: usize = 512;

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Network error.
    #[error("network: {0}")]
    Io(#[from] io::Error),
    /// A frame did not decode, or was not expected here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer did not answer in time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer proved no knowledge of the shared secret, or refused ours.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer speaks no protocol version this node speaks (the number it offered or
    /// answered with; a dialler that offered a newer version than the peer speaks tries again
    /// with an older one).
    #[error("protocol version {0} is not one of {OLDEST} to {VERSION}")]
    Version(u16),
    /// The address is this node.
    #[error("the address is this node")]
    SelfLink,
    /// The peer closed the link.
    #[error("closed by the peer")]
    Closed,
    /// The TLS handshake failed (no certificate, or one the cluster CA did not sign).
    #[error("TLS: {0}")]
    Tls(io::Error),
    /// Nothing arrived, or a write could not complete, for `LINK_TIMEOUT`.
    #[error("no answer for {} s", LINK_TIMEOUT.as_secs())]
    Silent,
}

type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, LengthDelimitedCodec>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The two halves of a link's stream, over TLS when `cluster.tls` is on.
async fn halves(
    cluster: &Cluster,
    stream: TcpStream,
    dialled: Option<SocketAddr>,
) -> Result<(Reader, Writer), LinkError> {
    let _ = stream.set_nodelay(true);
    let (r, w): (Box<dyn AsyncRead + Send + Unpin>, Writer) = match (&cluster.tls, dialled) {
        (None, _) => {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        (Some(tls), Some(addr)) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let s = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tls.current().connector.connect(name, stream),
            )
            .await
            .map_err(|_| LinkError::Timeout)?
            .map_err(LinkError::Tls)?;
            let (r, w) = tokio::io::split(s);
            (Box::new(r), Box::new(w))
        }
        (Some(tls), None) => {
            let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.current().acceptor.accept(stream))
                .await
                .map_err(|_| LinkError::Timeout)?
                .map_err(LinkError::Tls)?;
            let (r, w) = tokio::io::split(s);
            (Box::new(r), Box::new(w))
        }
    };
    Ok((FramedRead::new(r, codec()), w))
}

/// Handshake frames are small: until a peer has proved it knows the secret, a frame may not be
/// larger than this, so an unauthenticated connection cannot make the node buffer much.
const HANDSHAKE_FRAME: usize = 4096;
/// Inbound connections in their handshake at once; more are closed at once (and counted).
const MAX_HANDSHAKES: usize = 64;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(HANDSHAKE_FRAME)
        .new_codec()
}

/// Writes frames, each with its 4-byte length, in one write.
async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Frame]) -> Result<(), LinkError> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode_into(&mut buf)
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
    }
    // A peer that stops reading (or a network gone silent) fills the socket buffer: give up on
    // the link rather than wait for TCP's retransmissions.
    tokio::time::timeout(LINK_TIMEOUT, w.write_all(&buf))
        .await
        .map_err(|_| LinkError::Silent)??;
    Ok(())
}

fn decode(item: Option<Result<BytesMut, io::Error>>) -> Result<Frame, LinkError> {
    match item {
        None => Err(LinkError::Closed),
        Some(Err(e)) => Err(LinkError::Io(e)),
        Some(Ok(body)) => Frame::decode(&body).map_err(|e| LinkError::Protocol(e.to_string())),
    }
}

async fn read_frame(r: &mut Reader) -> Result<Frame, LinkError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, r.next()).await {
        Err(_) => Err(LinkError::Timeout),
        // A frame over the handshake limit is a malformed handshake, not a network error.
        Ok(item) => match decode(item).map_err(|e| match e {
            LinkError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                LinkError::Protocol(e.to_string())
            }
            other => other,
        })? {
            Frame::Refused { reason } => Err(LinkError::Auth(format!("refused: {reason}"))),
            f => Ok(f),
        },
    }
}

/// A link this node dialled, after the handshake.
struct Dialled {
    reader: Reader,
    writer: Writer,
    peer: String,
    last_seq: u64,
    /// The protocol version the link runs at.
    version: u16,
}

/// Dials `addr` offering protocol version `offer`.
async fn dial(cluster: &Cluster, addr: SocketAddr, offer: u16) -> Result<Dialled, LinkError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::Timeout)??;
    let (mut reader, mut writer) = halves(cluster, stream, Some(addr)).await?;
    let mine = proto::nonce();
    write_frames(
        &mut writer,
        &[Frame::Hello {
            version: offer,
            name: cluster.name.to_string(),
            epoch: cluster.epoch,
            nonce: mine,
        }],
    )
    .await?;
    let challenge = match read_frame(&mut reader).await {
        // A node of an older release refuses a version it does not know, saying so.
        Err(LinkError::Auth(reason)) if reason.contains("protocol version") => {
            return Err(LinkError::Version(offer));
        }
        r => r?,
    };
    let (peer, theirs, version) = match challenge {
        Frame::Challenge {
            version,
            name,
            nonce,
        } => {
            if !(OLDEST..=offer).contains(&version) {
                return Err(LinkError::Version(version));
            }
            (name, nonce, version)
        }
        f => {
            return Err(LinkError::Protocol(format!(
                "expected Challenge, got {}",
                f.kind()
            )));
        }
    };
    if peer == *cluster.name {
        return Err(LinkError::SelfLink);
    }
    let secret = cluster.secret.bytes();
    let proof = proto::proof(secret, Side::Dialer, &mine, &theirs, &cluster.name, &peer);
    write_frames(&mut writer, &[Frame::Auth { proof }]).await?;
    match read_frame(&mut reader).await? {
        Frame::Welcome { proof, last_seq } => {
            let want = proto::proof(secret, Side::Acceptor, &mine, &theirs, &cluster.name, &peer);
            if !proto::proofs_match(&proof, &want) {
                return Err(LinkError::Auth(format!(
                    "{peer} does not know the cluster secret"
                )));
            }
            reader.decoder_mut().set_max_frame_length(cluster.max_frame);
            Ok(Dialled {
                reader,
                writer,
                peer,
                last_seq,
                version,
            })
        }
        f => Err(LinkError::Protocol(format!(
            "expected Welcome, got {}",
            f.kind()
        ))),
    }
}

/// Runs a dialled link: sends the full route table and the retained messages, then routes,
/// evictions and messages as they come, and drops acknowledged messages.
async fn run_outbound(
    cluster: &Cluster,
    broker: &Broker,
    peer: &Peer,
    mut link: Dialled,
    cancel: &CancellationToken,
) -> Result<(), LinkError> {
    // Under the local-routes lock, so that no route change falls between the snapshot and the
    // control queue.
    let filters = {
        let local = cluster.local.lock();
        let mut out = peer.outbox.lock();
        out.control.clear();
        out.up = true;
        peer.version.store(link.version, Ordering::Release);
        let acked = cluster.pop_front_upto(peer, &mut out, link.last_seq);
        cluster.metrics.forwarded.inc_by(acked);
        // Written on the previous link and not acknowledged: perhaps delivered by the peer
        // before it restarted (it then says so with a smaller last_seq).
        let resend_upto = out.written;
        out.written = link.last_seq;
        (local.filters(), resend_upto)
    };
    let (filters, resend_upto) = filters;
    write_frames(&mut link.writer, &[Frame::Routes { filters }]).await?;
    let mut retained = Vec::new();
    broker.retained.matching("#", &mut retained);
    for chunk in retained.chunks(RETAINED_BATCH) {
        let frames: Vec<Frame> = chunk
            .iter()
            .map(|m| {
                Frame::Retained(Forward {
                    seq: 0,
                    topic: m.topic.clone(),
                    payload: m.payload.clone(),
                    qos: m.qos as u8,
                    retain: true,
                    stamp: m.stamp,
                    plain: false,
                    groups: Vec::new(),
                    mid: m.mid,
                    resent: false,
                    journaled: false,
                })
            })
            .collect();
        write_frames(&mut link.writer, &frames).await?;
    }
    if link.version >= 2 {
        // The persistent sessions held here, so that the peer gives up any it holds with an
        // older claim (after a partition, or a crash and return).
        for chunk in moves::session_table(broker).chunks(16) {
            write_frames(&mut link.writer, chunk).await?;
        }
    }
    let mut frames = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        // Under a steady stream the select below may not run for a while: check here too.
        if last_heard.elapsed() >= LINK_TIMEOUT + HEARTBEAT {
            return Err(LinkError::Silent);
        }
        let relieved = {
            let mut out = peer.outbox.lock();
            // A frame this link's version does not have is not sent (the senders check the
            // version first; this is the last guard).
            frames.extend(
                out.control
                    .drain(..)
                    .filter(|f| f.version() <= link.version),
            );
            // The outbox holds consecutive sequence numbers from its front: the first unsent
            // message is found by index, not by a scan of the unacknowledged ones.
            let start = out
                .messages
                .front()
                .map_or(0, |m| (out.written + 1).saturating_sub(m.seq) as usize);
            let unsent_before = out.messages.len().saturating_sub(start);
            // At most WINDOW messages written and not yet acknowledged: the socket buffers
            // hold no more than that, so a peer that reads slowly (its subscribers are behind)
            // makes the outbox, and so the publishers, wait instead of piling up in flight.
            let end = (start + BATCH)
                .min(out.messages.len())
                .min(WINDOW.max(start));
            if start < end {
                if link.version >= 2 {
                    frames.extend(out.messages.range(start..end).map(|m| Frame::Publish2 {
                        mid: m.mid,
                        resent: m.resent || m.seq <= resend_upto,
                        forward: m.clone(),
                    }));
                } else {
                    frames.extend(
                        out.messages
                            .range(start..end)
                            .map(|m| Frame::Publish(m.clone())),
                    );
                }
                out.written = out.messages[end - 1].seq;
            }
            let unsent_after = out.messages.len() - end.max(start);
            unsent_before >= super::PEER_RELIEVED && unsent_after < super::PEER_RELIEVED
        };
        if relieved {
            peer.wake_waiting();
        }
        if !frames.is_empty() {
            write_frames(&mut link.writer, &frames).await?;
            frames.clear();
            continue;
        }
        tokio::select! {
            _ = peer.wake.notified() => {}
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= LINK_TIMEOUT {
                    return Err(LinkError::Silent);
                }
                frames.push(Frame::Ping);
            }
            item = link.reader.next() => match decode(item)? {
                Frame::Ack { seq } => {
                    last_heard = Instant::now();
                    let mut out = peer.outbox.lock();
                    let acked = cluster.pop_front_upto(peer, &mut out, seq);
                    cluster.metrics.forwarded.inc_by(acked);
                }
                Frame::Pong => last_heard = Instant::now(),
                Frame::Refused { reason } => return Err(LinkError::Protocol(reason)),
                f => return Err(LinkError::Protocol(format!("unexpected {}", f.kind()))),
            },
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Dials `addr` until `cancel`, keeping one link up.
pub(super) async fn dial_loop(
    cluster: Arc<Cluster>,
    broker: Arc<Broker>,
    addr: SocketAddr,
    cancel: CancellationToken,
) {
    let mut first = true;
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    // Offered in the handshake: the newest version, or an older one for a peer that refused
    // it (a node of the previous release during a rolling upgrade), until that link ends.
    let mut offer = VERSION;
    let done_first = |first: &mut bool| {
        if std::mem::take(first) {
            cluster.pending_dials.fetch_sub(1, Ordering::Relaxed);
        }
    };
    loop {
        let attempt = tokio::select! {
            r = dial(&cluster, addr, offer) => r,
            _ = cancel.cancelled() => break,
        };
        match attempt {
            Err(LinkError::Version(v)) if v == offer && offer > OLDEST => {
                info!(%addr, offered = offer, "cluster peer speaks an older protocol; offering version {OLDEST}");
                offer = OLDEST;
                continue;
            }
            Err(LinkError::SelfLink) => {
                debug!(%addr, "cluster address is this node");
                done_first(&mut first);
                cancel.cancelled().await;
                break;
            }
            Ok(link) => {
                let peer = cluster.peer(&link.peer);
                if peer.linked.swap(true, Ordering::AcqRel) {
                    debug!(%addr, peer = %peer.name, "already linked to this peer through another address");
                    done_first(&mut first);
                } else {
                    *peer.last_seen.lock() = Instant::now();
                    info!(%addr, peer = %peer.name, resume_after = link.last_seq, version = link.version, "cluster link up");
                    done_first(&mut first);
                    warned = false;
                    backoff = MIN_BACKOFF;
                    let result = run_outbound(&cluster, &broker, &peer, link, &cancel).await;
                    {
                        let mut out = peer.outbox.lock();
                        out.up = false;
                        out.control.clear();
                    }
                    // Publishers held back by this link go on; their messages queue meanwhile.
                    peer.wake_waiting();
                    peer.version.store(0, Ordering::Release);
                    peer.linked.store(false, Ordering::Release);
                    cluster.moves.peer_down(peer.id);
                    *peer.last_seen.lock() = Instant::now();
                    offer = VERSION;
                    match result {
                        Ok(()) => break,
                        Err(e) => warn!(%addr, peer = %peer.name, reason = %e, "cluster link down"),
                    }
                }
            }
            Err(e) => {
                if let LinkError::Auth(_) = e {
                    cluster
                        .metrics
                        .links_refused
                        .with_label_values(&["auth"])
                        .inc();
                }
                if !warned {
                    warn!(%addr, reason = %e, "cannot link to cluster peer; retrying");
                    warned = true;
                } else {
                    debug!(%addr, reason = %e, "cannot link to cluster peer");
                }
                done_first(&mut first);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
            // A peer linked to this node: if it is the one this loop dials, it is up now.
            _ = cluster.redial.notified() => backoff = MIN_BACKOFF,
            _ = cancel.cancelled() => break,
        }
    }
    done_first(&mut first);
}

/// Accepts peers' links until `shutdown`.
pub async fn serve(
    cluster: Arc<Cluster>,
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            drop(stream);
            cluster
                .metrics
                .links_refused
                .with_label_values(&["handshake"])
                .inc();
            debug!(peer_addr = %addr, "too many cluster handshakes at once: connection closed");
            continue;
        };
        let (cluster, broker, shutdown) = (cluster.clone(), broker.clone(), shutdown.clone());
        tokio::spawn(async move {
            match accept(&cluster, &broker, stream, permit, &shutdown).await {
                Ok(()) | Err(LinkError::Closed) => {}
                Err(e) => {
                    let reason = match e {
                        LinkError::Auth(_) => Some("auth"),
                        LinkError::Version(_) => Some("version"),
                        LinkError::Tls(_) => Some("tls"),
                        LinkError::Timeout | LinkError::Protocol(_) => Some("handshake"),
                        _ => None,
                    };
                    if let Some(reason) = reason {
                        cluster
                            .metrics
                            .links_refused
                            .with_label_values(&[reason])
                            .inc();
                    }
                    warn!(peer_addr = %addr, reason = %e, "cluster link from peer closed");
                }
            }
        });
    }
}

/// The accepting side of one link: handshake, then apply what the peer sends.
async fn accept(
    cluster: &Arc<Cluster>,
    broker: &Arc<Broker>,
    stream: TcpStream,
    handshake: tokio::sync::OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let (mut reader, mut writer) = halves(cluster, stream, None).await?;
    let (name, epoch, theirs, version) = match read_frame(&mut reader).await? {
        Frame::Hello {
            version,
            name,
            epoch,
            nonce,
        } => {
            if version < OLDEST {
                let reason =
                    format!("protocol version {version} is not one of {OLDEST} to {VERSION}");
                let _ = write_frames(&mut writer, &[Frame::Refused { reason }]).await;
                return Err(LinkError::Version(version));
            }
            // The newest version both speak: the dialler's offer, or this node's newest.
            (name, epoch, nonce, version.min(VERSION))
        }
        f => {
            return Err(LinkError::Protocol(format!(
                "expected Hello, got {}",
                f.kind()
            )));
        }
    };
    let mine = proto::nonce();
    write_frames(
        &mut writer,
        &[Frame::Challenge {
            version,
            name: cluster.name.to_string(),
            nonce: mine,
        }],
    )
    .await?;
    let secret = cluster.secret.bytes();
    match read_frame(&mut reader).await? {
        Frame::Auth { proof } => {
            let want = proto::proof(secret, Side::Dialer, &theirs, &mine, &name, &cluster.name);
            if !proto::proofs_match(&proof, &want) {
                let reason = "authentication failed".to_owned();
                let _ = write_frames(&mut writer, &[Frame::Refused { reason }]).await;
                return Err(LinkError::Auth(format!(
                    "{name:?} does not know the cluster secret"
                )));
            }
        }
        f => {
            return Err(LinkError::Protocol(format!(
                "expected Auth, got {}",
                f.kind()
            )));
        }
    }
    if name == *cluster.name {
        // This node dialled itself; the dialler stops there.
        let proof = proto::proof(secret, Side::Acceptor, &theirs, &mine, &name, &cluster.name);
        let _ = write_frames(&mut writer, &[Frame::Welcome { proof, last_seq: 0 }]).await;
        return Ok(());
    }
    let peer = cluster.peer(&name);
    let last_seq = cluster.last_seq(&name, epoch);
    let proof = proto::proof(secret, Side::Acceptor, &theirs, &mine, &name, &cluster.name);
    write_frames(&mut writer, &[Frame::Welcome { proof, last_seq }]).await?;
    drop(handshake);
    reader.decoder_mut().set_max_frame_length(cluster.max_frame);
    peer.inbound.fetch_add(1, Ordering::AcqRel);
    if !peer.linked.load(Ordering::Acquire) {
        cluster.redial.notify_waiters();
    }
    let generation = peer.inbound_gen.fetch_add(1, Ordering::AcqRel) + 1;
    *peer.last_seen.lock() = Instant::now();
    let result = inbound(cluster, broker, &peer, epoch, reader, &mut writer, shutdown).await;
    peer.inbound.fetch_sub(1, Ordering::AcqRel);
    // Only the newest link from the peer speaks for its routes (an older one may end later).
    if peer.inbound_gen.load(Ordering::Acquire) == generation {
        peer.routes_synced.store(false, Ordering::Release);
    }
    *peer.last_seen.lock() = Instant::now();
    if let Err(e) = &result {
        info!(peer = %peer.name, reason = %e, "cluster link from peer down");
    }
    result
}

/// A route filter from a peer, checked as a client's would be.
fn valid_route(filter: &str) -> bool {
    parse_subscription(filter, &TopicLimits::default()).is_ok()
}

async fn inbound(
    cluster: &Arc<Cluster>,
    broker: &Arc<Broker>,
    peer: &Arc<Peer>,
    epoch: u64,
    mut reader: Reader,
    writer: &mut Writer,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let mut ready = None;
    let mut ack: Option<u64> = None;
    let mut unacked = 0usize;
    // What local subscribers wake when they have drained, as they wake a waiting publisher.
    let waiter = Arc::new(crate::session::Session::new(
        u64::MAX - u64::from(peer.id),
        format!("$cluster/{}", peer.name).into(),
        false,
    ));
    loop {
        // Under a steady stream the buffer is never empty: acknowledge every ACK_EVERY too, so
        // the sender's outbox does not grow with it.
        if unacked >= ACK_EVERY {
            if let Some(seq) = ack.take() {
                write_frames(writer, &[Frame::Ack { seq }]).await?;
            }
            unacked = 0;
        }
        let item = match ready.take() {
            Some(item) => item,
            None => {
                // Nothing more buffered: acknowledge what was processed, then wait.
                if let Some(seq) = ack.take() {
                    write_frames(writer, &[Frame::Ack { seq }]).await?;
                }
                unacked = 0;
                tokio::select! {
                    item = reader.next() => item,
                    // The dialler pings every second: silence means the link is dead.
                    _ = tokio::time::sleep(LINK_TIMEOUT) => return Err(LinkError::Silent),
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        };
        let frame = match decode(item)? {
            // Version 2 carries the message's id beside it; the rest is handled alike.
            Frame::Publish2 {
                mid,
                resent,
                mut forward,
            } => {
                if let Some(f) = Arc::get_mut(&mut forward) {
                    f.mid = mid;
                    f.resent = resent;
                }
                Frame::Publish(forward)
            }
            f => f,
        };
        match frame {
            Frame::Routes { filters } => {
                let n = filters.len();
                let valid: Vec<String> = filters.into_iter().filter(|f| valid_route(f)).collect();
                if valid.len() != n {
                    warn!(peer = %peer.name, invalid = n - valid.len(), "cluster peer sent invalid routes (ignored)");
                }
                cluster.remote.write().replace(peer.id, valid);
                peer.routes_synced.store(true, Ordering::Release);
                debug!(peer = %peer.name, routes = n, "cluster routes received");
            }
            Frame::RouteAdd(filter) => {
                if valid_route(&filter) {
                    cluster.remote.write().add(peer.id, &filter);
                }
            }
            Frame::RouteDel(filter) => cluster.remote.write().remove(peer.id, &filter),
            Frame::Publish(f) => {
                if validate_name(&f.topic, &TopicLimits::default()).is_err() || f.qos > 2 {
                    return Err(LinkError::Protocol("invalid forwarded message".into()));
                }
                let seq = f.seq;
                let mut congested = None;
                if cluster.accept_seq(&peer.name, epoch, seq) {
                    cluster.metrics.received.inc();
                    congested = broker.deliver_forwarded(Arc::unwrap_or_clone(f));
                } else {
                    cluster.metrics.duplicates.inc();
                }
                ack = Some(ack.map_or(seq, |a: u64| a.max(seq)));
                unacked += 1;
                // A local subscriber is behind: stop reading (as a local publisher would), so the
                // peer's writer, and then its publishers, wait too.
                if let Some(c) = congested {
                    if c.wait_for_room(&waiter) {
                        if let Some(seq) = ack.take() {
                            write_frames(writer, &[Frame::Ack { seq }]).await?;
                        }
                        unacked = 0;
                        tokio::select! {
                            _ = waiter.notify().wait() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.cancelled() => return Ok(()),
                        }
                    }
                }
            }
            Frame::Retained(f) => {
                if validate_name(&f.topic, &TopicLimits::default()).is_ok() && f.qos <= 2 {
                    broker.store_synced_retained(&f);
                }
            }
            Frame::Evict { client_id } => broker.evict_local(&client_id),
            Frame::Claim {
                client_id,
                claim,
                resume,
            } => moves::on_claim(
                broker.clone(),
                cluster.clone(),
                peer.clone(),
                client_id,
                claim,
                resume,
            ),
            Frame::ClaimReply {
                client_id,
                claim,
                handing_over,
                moved_to,
            } => moves::on_claim_reply(cluster, peer, &client_id, claim, handing_over, moved_to),
            Frame::Handover {
                client_id,
                claim,
                part,
            } => moves::on_handover(broker, cluster, peer, client_id, claim, part),
            Frame::HandoverDone { client_id, claim } => {
                moves::on_handover_done(broker, cluster, client_id, claim)
            }
            Frame::SessionForward {
                client_id,
                mid,
                qos,
                forward,
            } => {
                if validate_name(&forward.topic, &TopicLimits::default()).is_err() {
                    return Err(LinkError::Protocol("invalid forwarded message".into()));
                }
                moves::on_session_forward(broker, cluster, peer, client_id, mid, qos, &forward)
            }
            Frame::SessionTable { entries, .. } => {
                moves::on_session_table(broker.clone(), cluster.clone(), peer.clone(), entries)
            }
            Frame::Ping => {
                if let Some(seq) = ack.take() {
                    write_frames(writer, &[Frame::Ack { seq }, Frame::Pong]).await?;
                    unacked = 0;
                } else {
                    write_frames(writer, &[Frame::Pong]).await?;
                }
            }
            f => return Err(LinkError::Protocol(format!("unexpected {}", f.kind()))),
        }
        ready = reader.next().now_or_never();
    }
}

pub use super::discovery::{Discovery, discover};
