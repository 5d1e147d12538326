//! Mutual TLS on cluster links (`cluster.tls`), with the `tlsInfo` material: every node
//! presents its certificate (`certFile`/`keyFile`) and accepts a peer only with a certificate
//! signed by `caFile`, in both directions. The shared-secret handshake still runs inside.
//!
//! Peers are dialled by the addresses discovery found (a headless Service gives pod IPs), which
//! a node certificate rarely names, so the dialling side checks the peer's chain against the
//! cluster CA and its validity, but not that the certificate names the IP: possession of a
//! certificate from the cluster's own CA is what makes a node a member. rustls has no such
//! verifier, hence the small wrapper below.
//!
//! The files are watched like the client listeners' ([`LinkTls::spawn_reloader`]): a renewed
//! certificate (cert-manager rewrites the mounted Secret) is used by the next link, without a
//! restart; links already up keep their session.

use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::config::TlsInfo;
use crate::transport::tls::{
    PROTOCOL_VERSIONS, RELOAD_INTERVAL, Stamps, TlsError, build, cert_and_key, load_certs,
    load_key, load_roots, provider, stamp_all, watched_files,
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

/// The cluster links' TLS, reloaded when its files change.
#[derive(Debug)]
pub struct LinkTls {
    info: TlsInfo,
    current: RwLock<ClusterTls>,
    /// The files' metadata just before the current configurations were read.
    stamps: Stamps,
}

impl LinkTls {
    /// Loads certificate, key and CA (`certFile`, `keyFile` and `caFile` are required).
    pub fn load(info: &TlsInfo) -> Result<LinkTls, TlsError> {
        let stamps = stamp_all(&watched_files(&linked(info))?);
        Ok(LinkTls {
            info: info.clone(),
            current: RwLock::new(configs(info)?),
            stamps,
        })
    }

    /// The configurations a new link uses.
    pub fn current(&self) -> ClusterTls {
        self.current.read().clone()
    }

    /// Watches the files and swaps in new configurations when they change and load, until
    /// `shutdown` (a set that does not load is logged, and the previous one stays).
    pub fn spawn_reloader(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = this.stamps.clone();
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let task = this.clone();
                let previous = last.clone();
                match tokio::task::spawn_blocking(move || task.poll(&previous)).await {
                    Ok(stamps) => last = stamps,
                    Err(e) => warn!(error = %e, "cluster TLS reload check failed"),
                }
            }
        });
    }

    fn poll(&self, last: &Stamps) -> Stamps {
        let Ok(files) = watched_files(&linked(&self.info)) else {
            return last.clone();
        };
        // Stamped before reading, so a change that lands during the read is seen next time.
        let stamps = stamp_all(&files);
        if stamps == *last {
            return stamps;
        }
        match configs(&self.info) {
            Ok(tls) => {
                *self.current.write() = tls;
                info!("cluster TLS certificate reloaded: new links use it");
            }
            Err(e) => warn!(
                error = %e,
                "cluster TLS files changed but do not load; new links keep the previous ones"
            ),
        }
        stamps
    }
}

/// `info` as the links use it: the CA is always checked.
fn linked(info: &TlsInfo) -> TlsInfo {
    let mut info = info.clone();
    info.verify = true;
    info
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
