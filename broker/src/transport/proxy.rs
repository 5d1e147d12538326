//! The PROXY protocol header (v1 text, v2 binary) that load balancers put in front of a TCP
//! connection to pass the real client address (placeholder until it lands).

use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Not built yet.
    #[error("the PROXY protocol is not available in this version of hmq yet")]
    Unavailable,
}

/// Reads and removes the PROXY header at the start of `stream`; returns the client address it
/// names (`None` for a `LOCAL`/`UNKNOWN` header: use the socket peer).
pub async fn read_header(_stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    Err(ProxyError::Unavailable)
}
