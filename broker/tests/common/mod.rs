//! Test support: a broker started in-process on 127.0.0.1:0 through the same `Server::bind` /
//! `Server::run` as the binary, and a raw MQTT 3.1.1 client written from the specification,
//! independent of the broker's codec, so that tests can send exactly the bytes a case needs
//! (including ones no well-behaved client would send) and see exactly what the broker answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmq::broker::Broker;
use hmq::config::{Config, Port};
use hmq::connection::ListenerKind;
use hmq::server::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A broker running in this process.
pub struct TestBroker {
    pub addr: SocketAddr,
    /// The TLS listener, when the configuration has one.
    pub tls_addr: Option<SocketAddr>,
    /// The WebSocket (or WSS) listener, when the configuration has one.
    pub ws_addr: Option<SocketAddr>,
    /// The HTTP listener, when the configuration has one.
    pub http_addr: Option<SocketAddr>,
    pub broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config {
            host: "127.0.0.1".into(),
            port: Port(0),
            http_host: "127.0.0.1".into(),
            http_port: None,
            ..Config::default()
        };
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let server = Server::bind(&config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let http_addr = server.http_addr();
        let tls_addr = server.listener_addr(ListenerKind::Tls);
        let ws_addr = server
            .listener_addr(ListenerKind::Ws)
            .or_else(|| server.listener_addr(ListenerKind::Wss));
        let broker = server.broker();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            server.run(token).await.expect("broker run");
        });
        TestBroker {
            addr,
            tls_addr,
            ws_addr,
            http_addr,
            broker,
            shutdown,
            task,
        }
    }

    /// Scrapes a counter or gauge value (sum over labels matching `labels`, e.g. `reason="x"`),
    /// with the state gauges computed as for a real scrape.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.broker
            .render_metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let (series, _) = l.rsplit_once(' ').unwrap();
                series == name
                    || (series.starts_with(&format!("{name}{{")) && series.contains(labels))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("broker stops within the deadline")
            .unwrap();
    }
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt {
    ConnAck { session_present: bool, code: u8 },
    Publish(Msg),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck { pkid: u16, codes: Vec<u8> },
    UnsubAck(u16),
    PingResp,
}

/// A PUBLISH as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
}

/// CONNECT options; `Default` is a 3.1.1 clean session with keepalive 60.
#[derive(Debug, Clone)]
pub struct Opts {
    pub protocol: (&'static str, u8),
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            protocol: ("MQTT", 4),
            client_id: String::new(),
            clean: true,
            keep_alive: 60,
            will: None,
            username: None,
            password: None,
        }
    }
}

impl Opts {
    pub fn id(client_id: &str) -> Opts {
        Opts {
            client_id: client_id.into(),
            ..Opts::default()
        }
    }
    pub fn persistent(mut self) -> Opts {
        self.clean = false;
        self
    }
    pub fn keep_alive(mut self, secs: u16) -> Opts {
        self.keep_alive = secs;
        self
    }
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Opts {
        self.will = Some((topic.into(), payload.to_vec(), qos, retain));
        self
    }
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn put_len(b: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Frames a packet: first byte, remaining length, body.
pub fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(byte1);
    put_len(&mut b, body.len());
    b.put_slice(body);
    b.to_vec()
}

pub fn connect_bytes(o: &Opts) -> Vec<u8> {
    let mut body = BytesMut::new();
    put_str(&mut body, o.protocol.0.as_bytes());
    body.put_u8(o.protocol.1);
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if let Some((_, _, qos, retain)) = &o.will {
        flags |= 0x04 | (qos << 3) | if *retain { 0x20 } else { 0 };
    }
    if o.username.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    body.put_u8(flags);
    body.put_u16(o.keep_alive);
    put_str(&mut body, o.client_id.as_bytes());
    if let Some((topic, payload, _, _)) = &o.will {
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    if let Some(u) = &o.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = &o.password {
        put_str(&mut body, p);
    }
    frame(0x10, &body)
}

pub fn publish_bytes(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Vec<u8> {
    let mut body = BytesMut::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.put_u16(pkid);
    }
    body.put_slice(payload);
    frame(0x30 | (dup as u8) << 3 | qos << 1 | retain as u8, &body)
}

pub fn subscribe_bytes(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.put_u8(*q);
    }
    frame(0x82, &body)
}

pub fn unsubscribe_bytes(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    frame(0xA2, &body)
}

pub fn ack_bytes(byte1: u8, pkid: u16) -> Vec<u8> {
    vec![byte1, 2, (pkid >> 8) as u8, pkid as u8]
}

/// Decodes one packet from the front of `buf`, if complete.
fn decode(buf: &mut BytesMut) -> Option<Pkt> {
    if buf.len() < 2 {
        return None;
    }
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len |= ((b & 0x7F) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        assert!(shift <= 21, "broker sent a bad remaining length");
    }
    if buf.len() < i + len {
        return None;
    }
    let byte1 = buf[0];
    buf.advance(i);
    let mut body = buf.split_to(len).freeze();
    let pkt = match byte1 >> 4 {
        2 => {
            assert_eq!(byte1, 0x20);
            assert_eq!(len, 2, "CONNACK length");
            Pkt::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        3 => {
            let qos = (byte1 >> 1) & 3;
            let tlen = body.get_u16() as usize;
            let topic = String::from_utf8(body.split_to(tlen).to_vec()).expect("UTF-8 topic");
            let pkid = if qos > 0 { body.get_u16() } else { 0 };
            assert!(qos < 3);
            Pkt::Publish(Msg {
                topic,
                payload: body,
                qos,
                retain: byte1 & 1 == 1,
                dup: byte1 & 8 == 8,
                pkid,
            })
        }
        4 => Pkt::PubAck(body.get_u16()),
        5 => Pkt::PubRec(body.get_u16()),
        6 => {
            assert_eq!(byte1, 0x62, "PUBREL flags");
            Pkt::PubRel(body.get_u16())
        }
        7 => Pkt::PubComp(body.get_u16()),
        9 => {
            let pkid = body.get_u16();
            Pkt::SubAck {
                pkid,
                codes: body.to_vec(),
            }
        }
        11 => Pkt::UnsubAck(body.get_u16()),
        13 => Pkt::PingResp,
        other => panic!("broker sent packet type {other}"),
    };
    Some(pkt)
}

/// A raw client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Opens a TCP connection without sending anything.
    pub async fn raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects with `opts` and returns the client and the CONNACK.
    pub async fn connect_opts(addr: SocketAddr, opts: &Opts) -> (Client, Pkt) {
        let mut c = Client::raw(addr).await;
        c.send(&connect_bytes(opts)).await;
        let ack = c.recv().await;
        (c, ack)
    }

    /// Connects and asserts CONNACK 0; returns the session-present flag.
    pub async fn connect(addr: SocketAddr, opts: &Opts) -> (Client, bool) {
        let (c, ack) = Client::connect_opts(addr, opts).await;
        match ack {
            Pkt::ConnAck {
                session_present,
                code: 0,
            } => (c, session_present),
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }

    /// Clean-session client with this id.
    pub async fn new(addr: SocketAddr, id: &str) -> Client {
        Client::connect(addr, &Opts::id(id)).await.0
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, failing the test after `WAIT`.
    pub async fn recv(&mut self) -> Pkt {
        match self.recv_within(WAIT).await {
            Some(p) => p,
            None => panic!("no packet from the broker within {WAIT:?}"),
        }
    }

    /// The next packet within `d`, or `None` on timeout. Panics if the connection closes.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Pkt> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(p) = decode(&mut self.buf) {
                return Some(p);
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
            {
                Err(_) => return None,
                Ok(r) => r.expect("read"),
            };
            assert!(n > 0, "connection closed while waiting for a packet");
        }
    }

    /// The next packet within `d` (`Ok(None)` on timeout), or `Err(())` once the connection is
    /// closed or broken: for tests where the broker may die.
    pub async fn next_within(&mut self, d: Duration) -> Result<Option<Pkt>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(p) = decode(&mut self.buf) {
                return Ok(Some(p));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts nothing arrives for `QUIET`.
    pub async fn expect_silence(&mut self) {
        if let Some(p) = self.recv_within(QUIET).await {
            panic!("unexpected packet {p:?}");
        }
    }

    /// Asserts the broker closes this client, connected with keepalive 1 s and silent since
    /// `since`, for its keepalive: within 4 s, and not before 1.5 × the keepalive.
    pub async fn expect_keepalive_close(&mut self, since: tokio::time::Instant) {
        self.expect_closed_within(Duration::from_secs(4)).await;
        let waited = since.elapsed();
        assert!(
            waited >= Duration::from_millis(1400),
            "closed after {waited:?}, before 1.5 x keepalive"
        );
    }

    /// Asserts the broker closes the connection within `d` (packets before the close are
    /// returned).
    pub async fn expect_closed_within(&mut self, d: Duration) -> Vec<Pkt> {
        let deadline = tokio::time::Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            while let Some(p) = decode(&mut self.buf) {
                seen.push(p);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("connection still open after {d:?}; received {seen:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return seen,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn expect_closed(&mut self) -> Vec<Pkt> {
        self.expect_closed_within(WAIT).await
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Msg {
        match self.recv().await {
            Pkt::Publish(m) => m,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe_bytes(1, filters)).await;
        match self.recv().await {
            Pkt::SubAck { pkid: 1, codes } => codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) {
        self.send(&unsubscribe_bytes(2, filters)).await;
        assert_eq!(self.recv().await, Pkt::UnsubAck(2));
    }

    /// Publishes and completes the QoS flow from the publisher's side.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        let pkid = 77;
        self.send(&publish_bytes(topic, payload, qos, retain, false, pkid))
            .await;
        match qos {
            0 => {}
            1 => assert_eq!(self.recv().await, Pkt::PubAck(pkid)),
            _ => {
                assert_eq!(self.recv().await, Pkt::PubRec(pkid));
                self.send(&ack_bytes(0x62, pkid)).await;
                assert_eq!(self.recv().await, Pkt::PubComp(pkid));
            }
        }
    }

    /// Acknowledges a received PUBLISH as its QoS requires (PUBREC then waits for PUBREL and
    /// sends PUBCOMP for QoS 2).
    pub async fn ack(&mut self, m: &Msg) {
        match m.qos {
            0 => {}
            1 => self.send(&ack_bytes(0x40, m.pkid)).await,
            _ => {
                self.send(&ack_bytes(0x50, m.pkid)).await;
                assert_eq!(self.recv().await, Pkt::PubRel(m.pkid));
                self.send(&ack_bytes(0x70, m.pkid)).await;
            }
        }
    }

    pub async fn disconnect(mut self) {
        self.send(&[0xE0, 0]).await;
        let _ = self.stream.shutdown().await;
    }
}
