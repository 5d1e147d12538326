//! MQTT over WebSocket (placeholder until the WebSocket listener lands).

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Not built yet.
    #[error("WebSocket is not available in this version of hmq yet")]
    Unavailable,
}

/// MQTT bytes carried in binary WebSocket frames.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
}

/// Runs the server side of the WebSocket upgrade on `path`. Returns the stream and, with
/// `forwarded_for`, the client address from `X-Forwarded-For`.
pub async fn accept<S>(
    _stream: S,
    _path: &str,
    _forwarded_for: bool,
) -> Result<(WsStream<S>, Option<IpAddr>), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Err(WsError::Unavailable)
}

impl<S: AsyncRead + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
