//! TLS for the MQTT/TLS listener and WSS (placeholder until the TLS listener lands).

use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::config::TlsInfo;

/// Why TLS could not be set up or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Not built yet.
    #[error("TLS is not available in this version of hmq yet")]
    Unavailable,
    /// I/O during the handshake.
    #[error("TLS handshake: {0}")]
    Io(#[from] io::Error),
}

/// Accepts TLS connections with the current certificate.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {}

impl TlsAcceptor {
    /// Loads the certificate, key and (with `verify`) the client CA.
    pub fn from_config(_info: &TlsInfo) -> Result<TlsAcceptor, TlsError> {
        Err(TlsError::Unavailable)
    }

    /// Runs the server side of a handshake; returns the stream and the verified client
    /// certificate's identity, if any.
    pub async fn accept<IO>(
        &self,
        _io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Option<String>), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        Err(TlsError::Unavailable)
    }

    /// Watches the certificate and key files and reloads them when they change, until
    /// `shutdown`.
    pub fn spawn_reloader(&self, _shutdown: CancellationToken) {}
}
