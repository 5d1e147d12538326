//! One MQTT client connection of the generator: the CONNECT/SUBSCRIBE handshake, and the
//! non-blocking I/O step the group task calls for each of its connections (read what is ready,
//! answer and publish into one output buffer, write it in one syscall). What a connection does
//! with the packets is in [`crate::flow`].

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use hmq_codec::{self as codec, Connect, Packet, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flow::{GroupStats, Publisher, Role, RunTimes, Subscriber};
use crate::stats::Budget;

/// The largest packet we accept (MQTT's own limit).
const MAX_PACKET: usize = 268_435_460;
/// Size of one read.
pub const READ_SIZE: usize = 64 * 1024;
/// Reads per connection per step, so that one busy connection cannot starve its group.
const READS_PER_STEP: usize = 4;

/// Settings every connection of a run shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker address.
    pub addr: SocketAddr,
    /// Where subscribers connect (another node of a cluster); `addr` if the same.
    pub sub_addr: SocketAddr,
    /// Publish and subscribe QoS.
    pub qos: QoS,
    /// Payload bytes (at least [`HEADER_LEN`]).
    pub size: usize,
    /// Messages per second per publisher; 0 = as fast as the window allows.
    pub rate: f64,
    /// QoS 1/2: unacknowledged messages per publisher. QoS 0: caps the bytes a publisher
    /// keeps in its output buffer at `inflight` packets.
    pub inflight: usize,
    /// Messages per publisher, at most.
    pub max_messages: u64,
    /// Keepalive in seconds sent in CONNECT; PINGREQ after this long without writing.
    pub keepalive: u16,
    /// Clean session flag.
    pub clean_session: bool,
    /// Publishing time.
    pub duration: Duration,
    /// Time excluded from throughput and latency at the start of publishing.
    pub warmup: Duration,
    /// Time a connection (TCP + CONNECT/CONNACK + SUBSCRIBE/SUBACK) may take.
    pub connect_timeout: Duration,
}

/// What one client does.
#[derive(Debug, Clone)]
pub enum RoleSpec {
    /// Connects and stays idle (keepalive only).
    Idle,
    /// Publishes to `topic`.
    Pub {
        /// Publisher id carried in the payload header.
        id: u32,
        /// Topic name.
        topic: String,
    },
    /// Subscribes to `filters`.
    Sub {
        /// Accounting unit: a subscriber, or a whole `$share` group.
        unit: usize,
        /// Topic filters.
        filters: Vec<String>,
        /// Publisher ids it should receive from; `None` accepts any (`sub` scenario).
        expect: Option<Range<u32>>,
        /// Sequence numbers per publisher to pre-size the duplicate bitsets for.
        reserve: u64,
    },
}

/// One client to open.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Client identifier.
    pub client_id: String,
    /// What it does.
    pub role: RoleSpec,
    /// When to start connecting, from the start of its connect phase (connect-rate pacing).
    pub connect_at: Duration,
}

/// Opens the TCP connection, sends CONNECT (and SUBSCRIBE for a subscriber) and waits for the
/// answers. Packets that arrive before SUBACK (a persistent session's queue) are returned.
pub async fn establish(
    spec: &ClientSpec,
    s: &Settings,
) -> Result<(TcpStream, BytesMut, Vec<Packet>)> {
    let addr = match spec.role {
        RoleSpec::Sub { .. } => s.sub_addr,
        _ => s.addr,
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let connect = Connect {
        protocol: Protocol::V311,
        clean_session: s.clean_session,
        keep_alive: s.keepalive,
        client_id: spec.client_id.clone(),
        will: None,
        username: None,
        password: None,
    };
    codec::encode_connect(&mut out, &connect)?;
    let filters = match &spec.role {
        RoleSpec::Sub { filters, .. } => filters.iter().map(|f| (f.clone(), s.qos)).collect(),
        _ => Vec::new(),
    };
    if !filters.is_empty() {
        // Pipelined behind CONNECT: the broker answers CONNACK first (or closes).
        codec::encode_subscribe(&mut out, 1, &filters)?;
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(256);
    let mut early = Vec::new();
    let mut connacked = false;
    loop {
        while let Some(p) = codec::decode(&mut buf, MAX_PACKET)? {
            match p {
                Packet::ConnAck { code: 0, .. } if !connacked => connacked = true,
                Packet::ConnAck { code, .. } => bail!("CONNACK return code {code}"),
                _ if !connacked => bail!("{} before CONNACK", p.name()),
                Packet::SubAck { pkid: 1, codes } => {
                    if codes.contains(&0x80) {
                        bail!("SUBSCRIBE refused (return codes {codes:?})");
                    }
                    return Ok((stream, buf, early));
                }
                other => early.push(other),
            }
        }
        if connacked && filters.is_empty() {
            return Ok((stream, buf, early));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("connection closed by the broker during the handshake");
        }
    }
}

/// An established connection driven by a group task.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Bytes of a packet not yet complete.
    rbuf: BytesMut,
    /// Encoded output not yet written.
    wbuf: BytesMut,
    last_write: Instant,
    early: Vec<Packet>,
    /// Role and state.
    pub role: Role,
    /// Set when the connection failed; it is skipped from then on.
    pub dead: bool,
}

impl Conn {
    /// Wraps an established connection.
    pub fn new(
        stream: TcpStream,
        leftover: BytesMut,
        early: Vec<Packet>,
        role: &RoleSpec,
        s: &Settings,
        budget: &Budget,
    ) -> Conn {
        let role = match role {
            RoleSpec::Idle => Role::Idle,
            RoleSpec::Pub { id, topic } => Role::Pub(Publisher::new(*id, topic.clone(), s)),
            RoleSpec::Sub {
                unit,
                expect,
                reserve,
                ..
            } => Role::Sub(Subscriber::new(*unit, expect.clone(), *reserve, budget)),
        };
        Conn {
            stream,
            rbuf: leftover,
            wbuf: BytesMut::new(),
            last_write: Instant::now(),
            early,
            role,
            dead: false,
        }
    }

    /// Sends a PINGREQ if nothing was written for a keepalive period.
    pub fn keepalive(&mut self, now: Instant, keepalive: Duration, stats: &mut GroupStats) {
        if !keepalive.is_zero() && now.duration_since(self.last_write) >= keepalive {
            codec::encode_pingreq(&mut self.wbuf);
            self.last_write = now;
            stats.pings += 1;
        }
    }

    /// Publishes what a rate-limited publisher owes (called from the group's ticker).
    pub fn publish_due(
        &mut self,
        now: Instant,
        t: &RunTimes,
        s: &Settings,
        stats: &mut GroupStats,
    ) {
        if let Role::Pub(p) = &mut self.role {
            p.fill(&mut self.wbuf, now, crate::stats::now_ns(), t, s, stats);
        }
    }

    /// Marks the connection failed; a publisher stops counting as publishing.
    pub fn kill(&mut self) {
        self.dead = true;
        if let Role::Pub(p) = &mut self.role {
            p.finish(crate::stats::now_ns());
        }
    }

    /// Handles the packets received during the handshake or buffered before the run started.
    pub fn process_buffered(
        &mut self,
        t: Option<&RunTimes>,
        budget: &Budget,
        stats: &mut GroupStats,
    ) -> Result<()> {
        let now_ns = crate::stats::now_ns();
        for p in std::mem::take(&mut self.early) {
            self.on_packet(p, now_ns, t, budget, stats)?;
        }
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let r = self.decode_all(&mut rbuf, now_ns, t, budget, stats);
        self.rbuf = rbuf;
        r
    }

    fn on_packet(
        &mut self,
        p: Packet,
        now_ns: u64,
        t: Option<&RunTimes>,
        budget: &Budget,
        stats: &mut GroupStats,
    ) -> Result<()> {
        match &mut self.role {
            Role::Sub(sub) => sub.on_packet(p, now_ns, t, budget, &mut self.wbuf, stats),
            Role::Pub(publ) => publ.on_packet(p, &mut self.wbuf, stats),
            Role::Idle => match p {
                Packet::PingResp => {
                    stats.pongs += 1;
                    Ok(())
                }
                other => Err(anyhow!(
                    "unexpected {} sent to an idle client",
                    other.name()
                )),
            },
        }
    }

    fn decode_all(
        &mut self,
        buf: &mut BytesMut,
        now_ns: u64,
        t: Option<&RunTimes>,
        budget: &Budget,
        stats: &mut GroupStats,
    ) -> Result<()> {
        while let Some(p) = codec::decode(buf, MAX_PACKET)? {
            self.on_packet(p, now_ns, t, budget, stats)?;
        }
        Ok(())
    }

    /// One non-blocking step: read once if readable and handle the packets (acks go into the
    /// output buffer), let an unlimited publisher fill its window, then write the output buffer
    /// in one syscall. Returns whether more work is ready without waiting (the caller yields
    /// and comes back). Readiness wakers are registered with `cx` when nothing is ready.
    #[allow(clippy::too_many_arguments)]
    pub fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        scratch: &mut BytesMut,
        t: Option<&RunTimes>,
        s: &Settings,
        budget: &Budget,
        stats: &mut GroupStats,
    ) -> Result<bool> {
        let mut more = false;
        // Read until the socket would block (that registers the waker) or the budget is spent.
        let mut reads = 0;
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r?,
            }
            if reads == READS_PER_STEP {
                more = true;
                break;
            }
            scratch.clear();
            scratch.reserve(READ_SIZE);
            match self.stream.try_read_buf(scratch) {
                Ok(0) => bail!("closed by the broker"),
                Ok(_) => {
                    reads += 1;
                    let now_ns = crate::stats::now_ns();
                    if self.rbuf.is_empty() {
                        self.decode_all(scratch, now_ns, t, budget, stats)?;
                        if !scratch.is_empty() {
                            self.rbuf.extend_from_slice(scratch);
                        }
                    } else {
                        self.rbuf.extend_from_slice(scratch);
                        let mut rbuf = std::mem::take(&mut self.rbuf);
                        self.decode_all(&mut rbuf, now_ns, t, budget, stats)?;
                        self.rbuf = if rbuf.is_empty() && rbuf.capacity() > READ_SIZE {
                            BytesMut::new()
                        } else {
                            rbuf
                        };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if let (Role::Pub(p), Some(t), true) = (&mut self.role, t, s.rate == 0.0) {
            more |= p.fill(&mut self.wbuf, now, crate::stats::now_ns(), t, s, stats);
        }
        // Write until the buffer is empty or the socket would block (registering the waker).
        while !self.wbuf.is_empty() {
            match self.stream.poll_write_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r?,
            }
            match self.stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.last_write = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 4 * READ_SIZE {
            self.wbuf = BytesMut::new();
        }
        Ok(more)
    }

    /// Writes what is buffered plus a DISCONNECT, then closes the write side.
    pub async fn disconnect(&mut self) -> io::Result<()> {
        codec::encode_disconnect(&mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.stream.shutdown().await
    }
}
