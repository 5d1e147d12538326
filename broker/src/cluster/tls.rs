//! Mutual TLS on cluster links (`cluster.tls`), with the `tlsInfo` material: every node
//! presents its certificate (`certFile`/`keyFile`) and accepts a peer only with a certificate
//! signed by `caFile`, in both directions. The shared-secret handshake still runs inside.
//!
//! Peers are dialled by the addresses discovery found (a headless Service gives pod IPs), which
//! a node certificate rarely names, so the dialling side checks the peer's chain against the
//! cluster CA and its validity, but not that the certificate names the IP: possession of a
//! certificate from the cluster's own CA is what makes a node a member. rustls has no such
//! verifier, hence the small wrapper below.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::config::TlsInfo;
use crate::transport::tls::{
    PROTOCOL_VERSIONS, TlsError, build, cert_and_key, load_certs, load_key, load_roots, provider,
};

/// The TLS configurations of one node's cluster links.
#[derive(Clone)]
pub struct ClusterTls {
    /// For links peers dial to this node (client certificates required).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// For links this node dials.
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls(mutual TLS)")
    }
}

/// Builds both sides from `tlsInfo` (certFile, keyFile and caFile are required).
pub fn configs(info: &TlsInfo) -> Result<ClusterTls, TlsError> {
    let mut server_info = info.clone();
    server_info.verify = true;
    let (server, _) = build(&server_info)?;

    let ca_path = info
        .ca_file
        .as_deref()
        .ok_or(TlsError::Missing { key: "caFile" })?;
    let roots = load_roots(ca_path)?;
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("tlsInfo.caFile: {e}")))?;
    let (cert_path, key_path) = cert_and_key(info)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberVerifier { inner }))
        .with_client_auth_cert(load_certs("certFile", cert_path)?, load_key(key_path)?)
        .map_err(|e| TlsError::Config(format!("tlsInfo.keyFile: {e}")))?;
    Ok(ClusterTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// Checks a peer's certificate like WebPKI does, except the name (see the module docs).
#[derive(Debug)]
struct MemberVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
