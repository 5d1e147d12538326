//! MQTT over WebSocket: the HTTP upgrade on the configured path, subprotocol negotiation, the
//! client address from `X-Forwarded-For`, and [`WsStream`], the byte stream the connection task
//! reads MQTT from and writes MQTT to.
//!
//! The upgrade request is read and answered here rather than by tungstenite's server handshake,
//! because tungstenite answers only requests that are already valid WebSocket upgrades (it drops a
//! plain `GET` or a `POST` without a word) and refuses bytes sent right behind the request. Here:
//!
//! - a path other than `wsPath` gets `404 Not Found` (the query string is ignored);
//! - a method other than `GET` gets `405`, a request that is not an upgrade gets `426 Upgrade
//!   Required`, other malformed requests `400`, an oversized head `431`;
//! - the subprotocol is `mqtt` if the client offers it, else `mqttv3.1`, from every offer in every
//!   `Sec-WebSocket-Protocol` header (`mqttv3.1, mqtt` picks `mqtt`). A client that offers neither,
//!   or none at all, is served without the header, as EMQX does: RFC 6455 leaves it to such a
//!   client to give up, and clients that name no subprotocol keep working;
//! - with `wsForwardedFor`, the client address is the last `X-Forwarded-For` entry (the one the
//!   nearest proxy added; earlier entries come from the client and can be forged), or the peer
//!   address when that entry is missing or is not an IP address.
//!
//! On the stream, binary frames carry MQTT bytes: a packet may span frames and a frame may hold
//! several packets, because reads simply continue with the next frame. A text frame ends the
//! connection (MQTT-6.0.0-1) with close code 1003; pings are answered by tungstenite; a close frame
//! is answered and reads end as at end of file. Frames and messages larger than the maximum MQTT
//! packet size (at least [`MIN_MESSAGE_LIMIT`]) are refused before their payload is buffered.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use std::fmt::Write as _;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// Subprotocols served, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Largest HTTP request head accepted (browsers send cookies; 16 KiB is generous).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Smallest limit on an incoming WebSocket message, whatever `maxPacketSize` is: one frame may
/// carry several small packets, and the MQTT codec enforces the per-packet limit anyway.
pub const MIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// Largest frame written at once: longer writes go out as several frames (MQTT over WebSocket
/// allows packets to span frames), so each copy into a frame stays bounded.
const MAX_FRAME_OUT: usize = 64 * 1024;

/// Bytes tungstenite reads from the socket at once. Its default (128 KiB, allocated eagerly per
/// connection) is far more than an MQTT connection needs.
const READ_BUFFER: usize = 8 * 1024;

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Reading the request or writing the response failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client closed the connection before its request was complete.
    #[error("connection closed during the HTTP request")]
    Closed,
    /// The request was answered with an HTTP error status and the connection closed.
    #[error("answered HTTP {status}: {reason}")]
    Refused {
        /// The HTTP status sent.
        status: u16,
        /// What was wrong with the request.
        reason: String,
    },
}

/// Runs the server side of the WebSocket upgrade on `path`. Returns the stream and, with
/// `forwarded_for`, the client address from `X-Forwarded-For`. Incoming messages larger than
/// `max_packet_size` (but at least [`MIN_MESSAGE_LIMIT`]) close the connection.
///
/// Not bounded in time: the caller runs it under the connection's connect deadline.
pub async fn accept<S>(
    mut stream: S,
    path: &str,
    forwarded_for: bool,
    max_packet_size: usize,
) -> Result<(WsStream<S>, Option<IpAddr>), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, tail) = match read_request(&mut stream).await? {
        Ok(pair) => pair,
        Err(refusal) => return Err(refuse(&mut stream, refusal).await),
    };
    let response = match upgrade_response(&request, path) {
        Ok(response) => response,
        Err(refusal) => return Err(refuse(&mut stream, refusal).await),
    };
    stream.write_all(&response).await?;
    stream.flush().await?;
    let client = if forwarded_for {
        forwarded_client(request.headers())
    } else {
        None
    };
    let limit = max_packet_size.max(MIN_MESSAGE_LIMIT);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    // `tail`: frames the client sent right behind its request, without waiting for the answer.
    let ws = WebSocketStream::from_partially_read(stream, tail, Role::Server, Some(config)).await;
    Ok((WsStream::new(ws), client))
}

/// An HTTP error answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: u16,
    reason: String,
    /// Extra response headers (name, value).
    headers: Vec<(&'static str, &'static str)>,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Refusal {
        self.headers.push((name, value));
        self
    }

    /// The full HTTP response, closing the connection.
    fn to_bytes(&self) -> Vec<u8> {
        let text = match self.status {
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let body = format!("{}\n", self.reason);
        let mut head = format!(
            "HTTP/1.1 {} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        head.push_str(&body);
        head.into_bytes()
    }
}

/// Sends the refusal (best effort: the connection is closed either way) and returns the error.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, refusal: Refusal) -> WsError {
    if stream.write_all(&refusal.to_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
    WsError::Refused {
        status: refusal.status,
        reason: refusal.reason,
    }
}

/// Reads the request head. Returns it with the bytes read past it, or the answer to a malformed
/// request.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Result<(Request, Vec<u8>), Refusal>, WsError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(WsError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf) {
            Ok(Some((len, request))) => return Ok(Ok((request, buf.split_off(len)))),
            Ok(None) if buf.len() >= MAX_REQUEST_HEAD => {
                return Ok(Err(Refusal::new(431, "request head too large")));
            }
            Ok(None) => {}
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
}

/// Parses a complete request head at the start of `buf` (`None`: incomplete).
fn parse_request(buf: &[u8]) -> Result<Option<(usize, Request)>, Refusal> {
    use tungstenite::error::{CapacityError, Error, ProtocolError};
    Request::try_parse(buf).map_err(|e| match e {
        Error::Protocol(ProtocolError::WrongHttpMethod) => {
            Refusal::new(405, "only GET upgrades to WebSocket").header("Allow", "GET")
        }
        Error::Capacity(CapacityError::TooManyHeaders) => Refusal::new(431, "too many headers"),
        e => Refusal::new(400, format!("malformed request: {e}")),
    })
}

/// The `101 Switching Protocols` answer to `request`, or why it gets none.
fn upgrade_response(request: &Request, path: &str) -> Result<Vec<u8>, Refusal> {
    use tungstenite::error::{Error, ProtocolError};
    if request.uri().path() != path {
        return Err(Refusal::new(404, "no WebSocket endpoint at this path"));
    }
    let mut response = create_response(request).map_err(|e| match e {
        Error::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader
            | ProtocolError::MissingUpgradeWebSocketHeader,
        ) => Refusal::new(
            426,
            "this is an MQTT over WebSocket endpoint: upgrade to websocket",
        )
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade"),
        Error::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => {
            Refusal::new(426, "unsupported WebSocket version (13 is)")
                .header("Sec-WebSocket-Version", "13")
        }
        e => Refusal::new(400, format!("bad WebSocket upgrade: {e}")),
    })?;
    if let Some(chosen) = choose_subprotocol(request.headers()) {
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static(chosen),
        );
    }
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &response)
        .map_err(|e| Refusal::new(400, format!("cannot answer: {e}")))?;
    Ok(out)
}

/// The subprotocol to answer with: `mqtt` if offered, else `mqttv3.1` if offered, else none.
/// Offers may come as one comma-separated list or as several headers.
fn choose_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<&str> = headers
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|wanted| offered.contains(wanted))
}

/// The client address named by the last `X-Forwarded-For` entry, if that entry is an IP address
/// (optionally bracketed, optionally with a port, as some proxies write it).
fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("X-Forwarded-For")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim();
    if let Ok(ip) = last.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = last.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    last.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<IpAddr>().ok())
}

/// Where reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The client sent a close frame: flush the answer, then report end of file.
    Closing,
    Done,
}

/// MQTT bytes carried in binary WebSocket frames.
///
/// Reads return the bytes of the current binary frame (keeping what does not fit for the next
/// read). Each write sends one binary frame (vectored writes gather their slices into it). A write
/// completes once the frame is queued; the frame is pushed to the socket at once, and if the
/// socket is full, the next read or write (or flush) carries on with it, so a connection task
/// that keeps polling its reader or its writer never leaves a frame behind.
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// Unread bytes of the current binary frame.
    rx: Bytes,
    read: ReadState,
    /// A written frame is not yet fully on the socket.
    flushing: bool,
    /// A writer waiting for `flushing` to clear, woken when a read completes the flush.
    blocked_writer: Option<Waker>,
}

fn io_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::Error;
    match e {
        Error::Io(e) => e,
        Error::ConnectionClosed | Error::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        Error::Capacity(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        Error::Protocol(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        e => io::Error::other(e.to_string()),
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            rx: Bytes::new(),
            read: ReadState::Open,
            flushing: false,
            blocked_writer: None,
        }
    }

    /// Drives a pending flush. Ready once nothing written is left unsent.
    fn poll_pending_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.flushing {
            return Poll::Ready(Ok(()));
        }
        let r = ready!(Pin::new(&mut self.ws).poll_flush(cx));
        self.flushing = false;
        if let Some(w) = self.blocked_writer.take() {
            w.wake();
        }
        Poll::Ready(r.map_err(io_error))
    }

    /// Fails the connection: queues a close frame with `code` and pushes it out if the socket
    /// takes it now (the connection is dropped either way).
    fn fail(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &'static str) {
        self.read = ReadState::Done;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if Pin::new(&mut self.ws)
            .start_send(Message::Close(Some(frame)))
            .is_ok()
            && Pin::new(&mut self.ws).poll_flush(cx).is_pending()
        {
            self.flushing = true;
        }
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rx.is_empty() {
                let n = this.rx.len().min(buf.remaining());
                buf.put_slice(&this.rx[..n]);
                this.rx.advance(n);
                return Poll::Ready(Ok(()));
            }
            // A frame the writer left half-sent: carry on with it while reading (errors show
            // up on the next write).
            let _ = this.poll_pending_flush(cx);
            match this.read {
                ReadState::Open => {}
                ReadState::Closing => {
                    // Sends tungstenite's answer to the client's close frame.
                    let _ = ready!(Pin::new(&mut this.ws).poll_flush(cx));
                    this.read = ReadState::Done;
                    return Poll::Ready(Ok(()));
                }
                ReadState::Done => return Poll::Ready(Ok(())),
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.rx = data,
                // tungstenite queued the pong; the next read sends it.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    this.fail(cx, CloseCode::Unsupported, "MQTT needs binary frames");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket frame (MQTT needs binary frames)",
                    )));
                }
                Some(Ok(Message::Close(_))) => this.read = ReadState::Closing,
                None => {
                    this.read = ReadState::Done;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => {
                    // The client dropped the TCP connection without a close frame: as far as
                    // MQTT is concerned, that is the end of the stream.
                    this.read = ReadState::Done;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => {
                    let code = match &e {
                        tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
                        tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
                        _ => None,
                    };
                    match code {
                        Some(code) => this.fail(cx, code, "WebSocket error"),
                        None => this.read = ReadState::Done,
                    }
                    return Poll::Ready(Err(io_error(e)));
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Nothing is accepted while an earlier frame is still on its way: that keeps what
        // tungstenite buffers to one frame, and a write that returns Pending wrote nothing.
        if this.flushing {
            this.blocked_writer = Some(cx.waker().clone());
            ready!(this.poll_pending_flush(cx))?;
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        let total = bufs
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
            .min(MAX_FRAME_OUT);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut frame = BytesMut::with_capacity(total);
        for b in bufs {
            let room = total - frame.len();
            if room == 0 {
                break;
            }
            frame.extend_from_slice(&b[..b.len().min(room)]);
        }
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(frame.freeze()))
            .map_err(io_error)?;
        match Pin::new(&mut this.ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => this.flushing = true,
            // The frame was accepted, but the connection is broken: say so now.
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.flushing = true;
        this.poll_pending_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending_flush(cx))?;
        // Sends a close frame (and waits until it is on the socket), then closes the socket.
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::AlreadyClosed) => {}
            Err(e) => return Poll::Ready(Err(io_error(e))),
        }
        Pin::new(this.ws.get_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

    /// Header lines (name, value) of one test request.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn headers(pairs: Pairs<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn subprotocol_choice() {
        let p = "Sec-WebSocket-Protocol";
        let cases: &[(Pairs<'_>, Option<&str>)] = &[
            (&[], None),
            (&[(p, "mqtt")], Some("mqtt")),
            (&[(p, "mqttv3.1")], Some("mqttv3.1")),
            (&[(p, "mqttv3.1, mqtt")], Some("mqtt")),
            (&[(p, "mqttv3.1,mqtt")], Some("mqtt")),
            (&[(p, "mqttv3.1"), (p, "mqtt")], Some("mqtt")),
            (&[(p, "chat, mqttv3.1")], Some("mqttv3.1")),
            (&[(p, "chat, superchat")], None),
            (&[(p, "MQTT")], None),
            (&[(p, "")], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(choose_subprotocol(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn forwarded_for_takes_the_last_entry() {
        let x = "X-Forwarded-For";
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cases: &[(Pairs<'_>, Option<IpAddr>)] = &[
            (&[], None),
            (&[(x, "203.0.113.7")], ip("203.0.113.7")),
            (&[(x, "10.0.0.1, 203.0.113.7")], ip("203.0.113.7")),
            (&[(x, "10.0.0.1,203.0.113.7 ")], ip("203.0.113.7")),
            (&[(x, "10.0.0.1"), (x, "198.51.100.2")], ip("198.51.100.2")),
            (&[(x, "2001:db8::1")], ip("2001:db8::1")),
            (&[(x, "[2001:db8::1]")], ip("2001:db8::1")),
            (&[(x, "[2001:db8::1]:4711")], ip("2001:db8::1")),
            (&[(x, "203.0.113.7:4711")], ip("203.0.113.7")),
            // The last entry is what the trusted proxy added: if it is not an address, the
            // entries before it (written by the client) are not trusted instead.
            (&[(x, "203.0.113.7, unknown")], None),
            (&[(x, "203.0.113.7, ")], None),
            (&[(x, "not an address")], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(forwarded_client(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    fn request(text: &str) -> Request {
        let (_, r) = parse_request(text.as_bytes()).unwrap().unwrap();
        r
    }

    const UPGRADE: &str = "Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn upgrade_answers() {
        let ok = upgrade_response(
            &request(&format!(
                "GET /ws?x=1 HTTP/1.1\r\n{UPGRADE}Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n"
            )),
            "/ws",
        )
        .unwrap();
        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
        assert!(ok.contains("sec-websocket-protocol: mqtt\r\n"), "{ok}");
        assert!(ok.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{ok}");

        let none = upgrade_response(
            &request(&format!("GET /ws HTTP/1.1\r\n{UPGRADE}\r\n")),
            "/ws",
        );
        let none = String::from_utf8(none.unwrap()).unwrap();
        assert!(!none.to_ascii_lowercase().contains("sec-websocket-protocol"));

        let status = |text: &str| upgrade_response(&request(text), "/ws").unwrap_err().status;
        assert_eq!(
            status(&format!("GET /other HTTP/1.1\r\n{UPGRADE}\r\n")),
            404
        );
        assert_eq!(status(&format!("GET /ws/ HTTP/1.1\r\n{UPGRADE}\r\n")), 404);
        assert_eq!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), 426);
        assert_eq!(status("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(
            status(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ),
            426
        );
        assert_eq!(
            status(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            ),
            400
        );
    }

    #[test]
    fn request_parsing() {
        assert!(
            parse_request(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_request(b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            parse_request(b"\x10\x0c\x00\x04MQTT\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let (len, _) = parse_request(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n\x82\x80")
            .unwrap()
            .unwrap();
        assert_eq!(len, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".len());
    }

    #[test]
    fn refusal_is_a_complete_response() {
        let r = Refusal::new(405, "only GET").header("Allow", "GET");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 9\r\nConnection: close\r\nAllow: GET\r\n\r\nonly GET\n"
        );
    }
}
