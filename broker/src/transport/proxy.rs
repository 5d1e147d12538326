//! The PROXY protocol header (v1 text, v2 binary) that load balancers (HAProxy, AWS NLB, …) put
//! in front of a TCP connection to pass the real client address. See
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//!
//! Framing is done here, parsing by the `ppp` crate. The header is read from the socket exactly,
//! never a byte further, so the MQTT bytes a client sends right behind it stay in the socket for
//! the connection task: v2 says its length up front; a v1 line is peeked at and only the bytes up
//! to its line feed are consumed (at most 107 bytes, the v1 limit). Anything that is not a
//! complete, valid header is an error, and the server closes the connection.
//!
//! The address returned is the source of a `PROXY` header with an IPv4 or IPv6 address. A v2
//! `LOCAL` header (health checks from the proxy itself), a v1 `UNKNOWN` header, and v2 headers
//! with an unspecified or Unix-socket address return `None`: the socket peer stands. v2 TLVs are
//! skipped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A v1 header's longest length, `PROXY` to `\r\n` included.
const V1_MAX: usize = 107;

/// What a v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a v2 header starts with (12 bytes), followed by version/command, family/protocol and a
/// 2-byte length of the rest.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Reading the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection ended inside the header.
    #[error("connection closed inside the PROXY header")]
    Closed,
    /// The connection does not start with a PROXY header.
    #[error("no PROXY protocol header (the connection starts with {0:02x?})")]
    Missing(Vec<u8>),
    /// A v1 header without its line end within 107 bytes.
    #[error("PROXY v1 header longer than 107 bytes")]
    TooLong,
    /// A header that does not parse.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Reads and removes the PROXY header at the start of `stream`; returns the client address it
/// names (`None` for a `LOCAL`/`UNKNOWN` header: use the socket peer).
///
/// Not bounded in time: the caller runs it under the connection's connect deadline.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    // Six bytes tell the versions apart, and every valid header is longer.
    let mut start = [0u8; 6];
    read_exact(stream, &mut start).await?;
    if start == V1_PREFIX {
        let mut line = start.to_vec();
        read_v1_line(stream, &mut line).await?;
        parse_v1(&line)
    } else if start == V2_SIGNATURE[..6] {
        let mut header = vec![0u8; 16];
        header[..6].copy_from_slice(&start);
        read_exact(stream, &mut header[6..]).await?;
        if header[..12] != V2_SIGNATURE[..] {
            return Err(ProxyError::Missing(header));
        }
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(16 + len, 0);
        read_exact(stream, &mut header[16..]).await?;
        parse_v2(&header)
    } else {
        Err(ProxyError::Missing(start.to_vec()))
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProxyError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ProxyError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Reads the rest of a v1 line, through its `\n`, and nothing more: each round peeks at what
/// has arrived and consumes only the bytes up to the first line feed.
async fn read_v1_line(stream: &mut TcpStream, line: &mut Vec<u8>) -> Result<(), ProxyError> {
    let mut peeked = [0u8; V1_MAX];
    loop {
        let room = V1_MAX - line.len();
        if room == 0 {
            return Err(ProxyError::TooLong);
        }
        let n = stream.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let (take, done) = match peeked[..n].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (n, false),
        };
        // Already in the socket buffer: returns at once.
        read_exact(stream, &mut peeked[..take]).await?;
        line.extend_from_slice(&peeked[..take]);
        if done {
            return Ok(());
        }
    }
}

/// Parses a complete v1 line (`PROXY ... \r\n`).
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(line).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.header.len() != line.len() {
        // ppp stops at the first '\r'; a lone one earlier in the line is not a line end.
        return Err(ProxyError::Malformed("v1 header with a stray '\\r'".into()));
    }
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        Addresses::Unknown => None,
    })
}

/// Parses a complete v2 header (16 bytes plus the length they announce).
fn parse_v2(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// What follows the header in every case: an MQTT PINGREQ that must stay in the socket.
    const AFTER: &[u8] = &[0xC0, 0x00];

    /// Sends `chunks` (pausing between them) and then `AFTER` and closes; returns what
    /// `read_header` says and the bytes left in the socket after it.
    async fn run(chunks: &[&[u8]]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            // The server may give up early and close: write errors are fine.
            for c in chunks {
                if s.write_all(&c).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if s.write_all(AFTER).await.is_err() || s.shutdown().await.is_err() {
                return;
            }
            // Hold the socket until the server side has read everything.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), read_header(&mut server))
            .await
            .unwrap();
        let mut rest = Vec::new();
        if got.is_ok() {
            tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
        }
        drop(server);
        client.await.unwrap();
        (got, rest)
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// A v2 header: version 2, `cmd`, `fam`, then `body` (addresses and TLVs).
    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v4_body() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 10, 198, 51, 100, 1];
        b.extend_from_slice(&4711u16.to_be_bytes());
        b.extend_from_slice(&1883u16.to_be_bytes());
        b
    }

    #[tokio::test]
    async fn v1_headers() {
        let ok: &[(&[u8], Option<SocketAddr>)] = &[
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n",
                addr("1.2.3.4:111"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 1883\r\n",
                addr("[2001:db8::1]:4711"),
            ),
            (b"PROXY UNKNOWN\r\n", None),
            (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n", None),
        ];
        for (header, want) in ok {
            let (got, rest) = run(&[header]).await;
            assert_eq!(got.unwrap(), *want, "{}", String::from_utf8_lossy(header));
            assert_eq!(rest, AFTER, "{}", String::from_utf8_lossy(header));
        }
    }

    #[tokio::test]
    async fn v1_header_in_pieces() {
        let (got, rest) = run(&[b"PRO", b"XY TCP4 1.2.3", b".4 5.6.7.8 111 222\r", b"\n"]).await;
        assert_eq!(got.unwrap(), addr("1.2.3.4:111"));
        assert_eq!(rest, AFTER);
    }

    #[tokio::test]
    async fn v1_malformed() {
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(100));
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 111\r\n",
            b"PROXY TCP4 1.2.3.400 5.6.7.8 111 222\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 111 70000\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 111 222\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\n",
            b"PROXY TCP4 1.2.\r3.4 5.6.7.8 111 222\r\n",
            long.as_bytes(),
            b"PROXY TCP4 1.2.3.4",
        ];
        for header in bad {
            let (got, _) = run(&[header]).await;
            assert!(got.is_err(), "{}: {got:?}", String::from_utf8_lossy(header));
        }
        let (got, _) = run(&[long.as_bytes()]).await;
        assert!(matches!(got, Err(ProxyError::TooLong)), "{got:?}");
    }

    #[tokio::test]
    async fn v2_headers() {
        let mut v6 = Vec::new();
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(
            &"2001:db8::8"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(&[0x12, 0x67, 0x07, 0x5B]);
        let mut with_tlvs = v4_body();
        // PP2_TYPE_AUTHORITY "example.com", then a NOOP TLV.
        with_tlvs.extend_from_slice(&[0x02, 0x00, 11]);
        with_tlvs.extend_from_slice(b"example.com");
        with_tlvs.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
        let ok: &[(Vec<u8>, Option<SocketAddr>)] = &[
            (v2(1, 0x11, &v4_body()), addr("192.0.2.10:4711")),
            (v2(1, 0x11, &with_tlvs), addr("192.0.2.10:4711")),
            (v2(1, 0x21, &v6), addr("[2001:db8::7]:4711")),
            // LOCAL: health checks from the proxy itself; its addresses are ignored.
            (v2(0, 0x11, &v4_body()), None),
            (v2(0, 0x00, &[]), None),
            (v2(1, 0x00, &[]), None),
        ];
        for (header, want) in ok {
            let (got, rest) = run(&[header]).await;
            assert_eq!(got.unwrap(), *want, "{header:02x?}");
            assert_eq!(rest, AFTER, "{header:02x?}");
        }
        // In pieces, split inside the signature and inside the addresses.
        let h = v2(1, 0x11, &with_tlvs);
        let (got, rest) = run(&[&h[..3], &h[3..14], &h[14..20], &h[20..]]).await;
        assert_eq!(got.unwrap(), addr("192.0.2.10:4711"));
        assert_eq!(rest, AFTER);
    }

    #[tokio::test]
    async fn v2_malformed() {
        let mut version1 = v2(1, 0x11, &v4_body());
        version1[12] = 0x11;
        let mut bad_sig = v2(1, 0x11, &v4_body());
        bad_sig[8] = b'X';
        let short = v2(1, 0x11, &v4_body()[..8]);
        let bad: &[Vec<u8>] = &[
            version1,
            bad_sig,
            short,
            v2(2, 0x11, &v4_body()),
            v2(1, 0x41, &v4_body()),
            v2(1, 0x11, &v4_body())[..20].to_vec(),
        ];
        for header in bad {
            let (got, _) = run(&[header]).await;
            assert!(got.is_err(), "{header:02x?}: {got:?}");
        }
    }

    #[tokio::test]
    async fn not_a_proxy_header() {
        // An MQTT CONNECT where a header was expected, and an empty connection.
        let (got, _) = run(&[&[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 2, 0, 60]]).await;
        assert!(matches!(got, Err(ProxyError::Missing(_))), "{got:?}");
        let (got, _) = run(&[b"PROX"]).await;
        assert!(got.is_err(), "{got:?}");
    }
}
