//! Test support for MQTT over WebSocket: a broker with a WebSocket listener, a raw WebSocket
//! client (tokio-tungstenite's client side) that sends exactly the frames a test asks for, and a
//! raw HTTP exchange for the upgrade answers.
//!
//! Declared by `tests/ws.rs` with `#[path = "common/ws_client.rs"] mod ws_client;`; builds MQTT
//! bytes with `common`'s builders and splits what the broker sends into whole packets, compared
//! byte for byte.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::common::WAIT;
use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hmq::broker::Broker;
use hmq::config::{Config, Port};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

/// A broker running in this process with MQTT on TCP and on WebSocket (`wsPath` "/mqtt"; WSS
/// with `ws_tls`).
pub struct WsBroker {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub broker: Arc<Broker>,
    inner: crate::common::TestBroker,
}

/// The `wsPath` the test brokers serve.
pub const PATH: &str = "/mqtt";

impl WsBroker {
    pub async fn start() -> WsBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> WsBroker {
        let inner = crate::common::TestBroker::start_with(|c| {
            c.ws_port = Some(Port(0));
            c.ws_path = PATH.into();
            tweak(c);
        })
        .await;
        WsBroker {
            tcp: inner.addr,
            ws: inner.ws_addr.expect("WebSocket listener"),
            broker: inner.broker.clone(),
            inner,
        }
    }

    /// Sum of a counter's series whose labels contain `labels`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.inner.metric(name, labels)
    }

    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

/// A WebSocket client connection speaking raw MQTT bytes (over TCP, or over a TLS stream).
pub struct WsClient<S = TcpStream> {
    pub ws: WebSocketStream<S>,
    /// Bytes received and not yet returned as packets.
    buf: BytesMut,
}

/// Opens a WebSocket to `addr` + `path`, offering `protocols` (each entry one
/// `Sec-WebSocket-Protocol` header; an entry may itself be a comma-separated list) and sending
/// `headers` too. tungstenite checks the answer as a browser does: a subprotocol must be picked
/// if any was offered.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
    headers: &[(&'static str, &str)],
) -> Result<(WsClient, Response), tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    open_on(tcp, addr, path, protocols, headers).await
}

/// `open` on a stream that is already connected (e.g. a TLS session, for WSS).
pub async fn open_on<S>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
    headers: &[(&'static str, &str)],
) -> Result<(WsClient<S>, Response), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for p in protocols {
        request
            .headers_mut()
            .append("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    for (k, v) in headers {
        request
            .headers_mut()
            .append(*k, HeaderValue::from_str(v).unwrap());
    }
    let (ws, response) = tokio::time::timeout(WAIT, client_async(request, stream))
        .await
        .expect("WebSocket handshake within WAIT")?;
    Ok((
        WsClient {
            ws,
            buf: BytesMut::new(),
        },
        response,
    ))
}

/// The subprotocol the broker picked, if any.
pub fn chosen_protocol(response: &Response) -> Option<String> {
    response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Splits one whole MQTT packet off the front of `buf`, if there is one.
fn split_packet(buf: &mut BytesMut) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        assert!(i <= 5, "broker sent a bad remaining length");
    }
    if buf.len() < i + len {
        return None;
    }
    Some(buf.split_to(i + len).to_vec())
}

/// A PUBLISH as received: topic, payload, QoS, packet id (0 for QoS 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub pkid: u16,
}

/// Decodes a PUBLISH packet (panics on anything else).
pub fn parse_publish(packet: &[u8]) -> Publish {
    assert_eq!(packet[0] >> 4, 3, "expected PUBLISH, got {packet:02x?}");
    let qos = (packet[0] >> 1) & 3;
    let mut i = 1;
    while packet[i] & 0x80 != 0 {
        i += 1;
    }
    let mut body = &packet[i + 1..];
    let tlen = usize::from(body.get_u16());
    let topic = String::from_utf8(body[..tlen].to_vec()).unwrap();
    body.advance(tlen);
    let pkid = if qos > 0 { body.get_u16() } else { 0 };
    Publish {
        topic,
        payload: body.to_vec(),
        qos,
        pkid,
    }
}

impl WsClient {
    /// Connects, offering subprotocol `mqtt`.
    pub async fn new(addr: SocketAddr) -> WsClient {
        open(addr, PATH, &["mqtt"], &[]).await.expect("upgrade").0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    /// Sends `bytes` as one binary frame.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// Sends any message.
    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next message that is not a binary frame, after the binary frames before it (which are
    /// kept for `recv`), within `WAIT`; `None` if the stream ends.
    pub async fn next_control(&mut self) -> Option<Message> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("nothing from the broker within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(m))) => return Some(m),
            }
        }
    }

    /// The next whole MQTT packet, failing the test after `WAIT`.
    pub async fn recv(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(p) = split_packet(&mut self.buf) {
                return p;
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no packet from the broker within {WAIT:?}"),
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        parse_publish(&self.recv().await)
    }

    /// Waits for the broker to end the WebSocket; returns its close frame, if it sent one.
    pub async fn expect_closed(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut close = None;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("WebSocket still open after {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return close,
                Ok(Some(Ok(Message::Close(c)))) => close = c,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Sends `request` on a fresh connection and returns everything the broker sends back until it
/// closes (or until `WAIT` passes, failing the test).
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("broker closes after answering")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// A valid upgrade request for `path` with extra header lines (each ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A masked client frame (FIN, `opcode`) carrying `payload`, as the wire has it.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}
