//! TLS for the MQTT/TLS listener and WSS: rustls with the ring provider, TLS 1.2 and 1.3 only.
//!
//! [`TlsAcceptor`] owns the rustls server configuration built from `tlsInfo`:
//! - `certFile`: the server certificate chain (PEM, leaf first); `keyFile`: its private key (PEM:
//!   PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA or Ed25519). Every load error names the key, the
//!   file and what is wrong with it.
//! - `verify: true`: every client must present a certificate that chains to `caFile`
//!   (webpki, with its validity period checked), or the handshake fails; `verify: false`: no client
//!   certificate is requested.
//!
//! Handshakes run in the connection's own task, under the connect deadline (`server.rs` calls
//! [`TlsAcceptor::accept`] there, never in the accept loop). With `verify`, `accept` also returns
//! the identity of the verified client certificate ([`cert_identity`]: the first DNS name, else
//! the first e-mail address of its subject alternative names, else its subject common name), which
//! `useIdentityAsUsername` makes the client's user name.
//!
//! Reload: [`TlsAcceptor::spawn_reloader`] polls the metadata (modification time, length, inode,
//! following symlinks) of the certificate, key and CA files every [`RELOAD_INTERVAL`]. Following
//! symlinks matters: Kubernetes updates a mounted Secret by swapping the `..data` symlink, which
//! leaves the paths as they were but points them at new inodes. On a change the configuration is
//! rebuilt and swapped in atomically: new handshakes use it, established connections keep the
//! session they negotiated. A file that does not load keeps the previous configuration in service
//! and logs why; each change is tried once (a cert-manager rotation that writes the certificate and
//! the key one after the other is picked up when the second file lands).

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use x509_parser::extensions::GeneralName;

use crate::config::TlsInfo;

/// How often [`TlsAcceptor::spawn_reloader`] looks at the certificate, key and CA files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The protocol versions offered: TLS 1.3 and 1.2. Older versions are not implemented by rustls
/// and a client offering only those fails the handshake.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Largest certificate, key or CA file read (a CA bundle of a few hundred certificates fits).
const MAX_FILE_SIZE: u64 = 16 << 20;

/// Why TLS could not be set up or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file the configuration needs is not configured.
    #[error("tlsInfo.{key} is not set")]
    Missing {
        /// The `tlsInfo` key.
        key: &'static str,
    },
    /// A certificate, key or CA file that cannot be read or used.
    #[error("tlsInfo.{key} {}: {what}", path.display())]
    File {
        /// The `tlsInfo` key naming the file (`certFile`, `keyFile`, `caFile`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The server configuration could not be built from otherwise readable files.
    #[error("tlsInfo: {0}")]
    Config(String),
    /// The handshake with a client failed; the text says why ("client certificate required",
    /// "client certificate rejected: unknown CA", ...).
    #[error("{0}")]
    Handshake(String),
}

impl TlsError {
    fn file(key: &'static str, path: &Path, what: impl Into<String>) -> TlsError {
        TlsError::File {
            key,
            path: path.to_owned(),
            what: what.into(),
        }
    }
}

/// Accepts TLS connections with the current certificate. Cheap to clone: clones share the
/// configuration, so a reload is seen by all of them.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    info: TlsInfo,
    /// The configuration new handshakes use; replaced whole on reload. The lock is held only to
    /// clone or replace the `Arc`, never across a handshake.
    current: RwLock<Arc<ServerConfig>>,
    /// The files' metadata as they were just before the current configuration was read.
    stamps: Stamps,
}

impl fmt::Debug for TlsAcceptor {
    /// Paths and settings only: never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = &self.inner.info;
        f.debug_struct("TlsAcceptor")
            .field("cert_file", &info.cert_file)
            .field("key_file", &info.key_file)
            .field("ca_file", &info.ca_file)
            .field("verify", &info.verify)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the certificate, key and (with `verify`) the client CA.
    pub fn from_config(info: &TlsInfo) -> Result<TlsAcceptor, TlsError> {
        let files = watched_files(info)?;
        let stamps = stamp_all(&files);
        let (config, summary) = build(info)?;
        info!(
            cert_file = %files[0].display(),
            subject = %summary.subject,
            serial = %summary.serial,
            not_after = %summary.not_after,
            verify_clients = info.verify,
            "TLS certificate loaded"
        );
        summary.warn_if_out_of_date();
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                info: info.clone(),
                current: RwLock::new(Arc::new(config)),
                stamps,
            }),
        })
    }

    /// Runs the server side of a handshake; returns the stream and the verified client
    /// certificate's identity, if any (only with `verify`). Time limits are the caller's.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Option<String>), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.inner.current.read().clone();
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(io)
            .await
            .map_err(|e| TlsError::Handshake(describe_io(&e)))?;
        let identity = if self.inner.info.verify {
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first());
            let identity = leaf.and_then(|der| cert_identity(der));
            if identity.is_none() {
                debug!(
                    "verified client certificate has no DNS name, e-mail address or common name"
                );
            }
            identity
        } else {
            None
        };
        Ok((stream, identity))
    }

    /// Watches the certificate, key and CA files and reloads them when they change, until
    /// `shutdown`. Needs a Tokio runtime.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut last = inner.stamps.clone();
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let task_inner = inner.clone();
                let previous = last.clone();
                match tokio::task::spawn_blocking(move || task_inner.poll(&previous)).await {
                    Ok(stamps) => last = stamps,
                    Err(e) => warn!(error = %e, "TLS reload check failed"),
                }
            }
        });
    }
}

impl Inner {
    /// One reload check (blocking file I/O): if any file changed since `last`, rebuilds the
    /// configuration and swaps it in, or keeps the current one and logs why. Returns the stamps
    /// to compare against next time.
    fn poll(&self, last: &Stamps) -> Stamps {
        let Ok(files) = watched_files(&self.info) else {
            return last.clone(); // not reachable: checked at startup and the paths are fixed
        };
        // Stamped before reading, so a change that lands during the read is seen next time.
        let stamps = stamp_all(&files);
        if stamps == *last {
            return stamps;
        }
        match build(&self.info) {
            Ok((config, summary)) => {
                *self.current.write() = Arc::new(config);
                info!(
                    cert_file = %files[0].display(),
                    subject = %summary.subject,
                    serial = %summary.serial,
                    not_after = %summary.not_after,
                    "TLS certificate reloaded: new connections use it"
                );
                summary.warn_if_out_of_date();
            }
            Err(e) => warn!(
                error = %e,
                "TLS files changed but do not load; still serving the previous certificate"
            ),
        }
        stamps
    }
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

/// One entry per watched file; `None` where the file could not be looked at.
pub(crate) type Stamps = Vec<Option<Stamp>>;

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks, so a swapped Kubernetes `..data` link shows as a new inode.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        dev: m.dev(),
        ino: m.ino(),
    })
}

pub(crate) fn stamp_all(files: &[PathBuf]) -> Stamps {
    files.iter().map(|f| stamp(f)).collect()
}

/// Certificate and key, then the CA with `verify`.
pub(crate) fn watched_files(info: &TlsInfo) -> Result<Vec<PathBuf>, TlsError> {
    let (cert, key) = cert_and_key(info)?;
    let mut files = vec![cert.to_path_buf(), key.to_path_buf()];
    if info.verify {
        files.push(
            info.ca_file
                .clone()
                .ok_or(TlsError::Missing { key: "caFile" })?,
        );
    }
    Ok(files)
}

/// What the log says about a loaded server certificate.
pub(crate) struct Summary {
    subject: String,
    serial: String,
    not_after: String,
    expired: bool,
    not_yet_valid: bool,
}

impl Summary {
    fn warn_if_out_of_date(&self) {
        if self.expired {
            warn!(not_after = %self.not_after, subject = %self.subject, "the TLS server certificate has expired: clients will refuse it");
        } else if self.not_yet_valid {
            warn!(subject = %self.subject, "the TLS server certificate is not valid yet: clients will refuse it");
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks every file, and builds the rustls configuration.
pub(crate) fn build(info: &TlsInfo) -> Result<(ServerConfig, Summary), TlsError> {
    let (cert_path, key_path) = cert_and_key(info)?;
    let chain = load_certs("certFile", cert_path)?;
    let summary =
        summarize(&chain[0]).map_err(|what| TlsError::file("certFile", cert_path, what))?;
    let key = load_key(key_path)?;

    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if info.verify {
        let ca_path = info
            .ca_file
            .as_deref()
            .ok_or(TlsError::Missing { key: "caFile" })?;
        let roots = load_roots(ca_path)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::file("caFile", ca_path, e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::file(
            "keyFile",
            key_path,
            format!(
                "the private key does not belong to the certificate in tlsInfo.certFile {}",
                cert_path.display()
            ),
        ),
        other => TlsError::file(
            "keyFile",
            key_path,
            format!("unusable private key: {other}"),
        ),
    })?;
    Ok((config, summary))
}

/// The paths of `tlsInfo.certFile` and `tlsInfo.keyFile`, both required.
pub(crate) fn cert_and_key(info: &TlsInfo) -> Result<(&Path, &Path), TlsError> {
    let cert = info
        .cert_file
        .as_deref()
        .ok_or(TlsError::Missing { key: "certFile" })?;
    let key = info
        .key_file
        .as_deref()
        .ok_or(TlsError::Missing { key: "keyFile" })?;
    Ok((cert, key))
}

/// The CA certificates of `tlsInfo.caFile` as a trust store.
pub(crate) fn load_roots(ca_path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, ca) in load_certs("caFile", ca_path)?.into_iter().enumerate() {
        roots.add(ca).map_err(|e| {
            TlsError::file(
                "caFile",
                ca_path,
                format!("certificate {} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// Reads a (small) file whole, with errors naming it.
fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TlsError::file(key, path, format!("cannot open: {e}")))?;
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| TlsError::file(key, path, format!("cannot read: {e}")))?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(TlsError::file(
            key,
            path,
            format!("larger than {MAX_FILE_SIZE} bytes: not a PEM file"),
        ));
    }
    Ok(data)
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("bad PEM: missing {:?}", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => format!(
            "bad PEM: malformed line {:?}",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(e) => format!("bad PEM: invalid base64 ({e})"),
        other => format!("bad PEM: {other:?}"),
    }
}

/// All `CERTIFICATE` sections of a PEM file, in order; at least one.
pub(crate) fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(key, path, pem_error(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            key,
            path,
            "no certificate found (expected a PEM \"-----BEGIN CERTIFICATE-----\" section)",
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(TlsError::file(
                key,
                path,
                format!("certificate {} is not valid X.509: {e}", i + 1),
            ));
        }
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
/// SEC1 (`EC PRIVATE KEY`).
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read_file("keyFile", path)?;
    match PrivateKeyDer::from_pem_slice(&data) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let text = String::from_utf8_lossy(&data);
            let what = if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || text.contains("Proc-Type: 4,ENCRYPTED")
            {
                "the private key is encrypted: hmq needs it unencrypted (e.g. openssl pkey -in KEY -out PLAIN)"
            } else {
                "no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section)"
            };
            Err(TlsError::file("keyFile", path, what))
        }
        Err(e) => Err(TlsError::file("keyFile", path, pem_error(&e))),
    }
}

fn summarize(leaf: &CertificateDer<'_>) -> Result<Summary, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("certificate 1 is not valid X.509: {e}"))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    Ok(Summary {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string(),
        not_after: validity.not_after.to_string(),
        expired: validity.not_after < now,
        not_yet_valid: validity.not_before > now,
    })
}

/// The identity `useIdentityAsUsername` takes from a client certificate (DER): its first DNS
/// subject alternative name, else its first e-mail (rfc822) one, else its subject common name.
/// `None` if the certificate has none of these or does not parse.
pub fn cert_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let dns = names.iter().find_map(|n| match n {
            GeneralName::DNSName(s) if !s.is_empty() => Some(*s),
            _ => None,
        });
        let email = || {
            names.iter().find_map(|n| match n {
                GeneralName::RFC822Name(s) if !s.is_empty() => Some(*s),
                _ => None,
            })
        };
        if let Some(name) = dns.or_else(email) {
            return Some(name.to_owned());
        }
    }
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned)
}

/// Why a handshake failed, for the log line `server.rs` writes.
fn describe_io(e: &io::Error) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe(tls);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during the handshake".into()
        }
        io::ErrorKind::ConnectionReset => {
            "the client reset the connection during the handshake".into()
        }
        _ => format!("I/O error during the handshake: {e}"),
    }
}

fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::NoCertificatesPresented => "client certificate required (the client sent none)".into(),
        E::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer => "unknown CA (not signed by tlsInfo.caFile)".into(),
                C::Expired | C::ExpiredContext { .. } => format!("expired ({c})"),
                C::NotValidYet | C::NotValidYetContext { .. } => format!("not valid yet ({c})"),
                C::BadSignature => "bad signature".to_owned(),
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                    format!("not valid for client authentication ({c})")
                }
                other => other.to_string(),
            };
            format!("client certificate rejected: {why}")
        }
        E::AlertReceived(alert) => {
            let hint = match alert {
                A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::DecryptError => {
                    " (the client does not trust the server certificate?)"
                }
                A::ProtocolVersion => " (the client wants a TLS version other than 1.2 and 1.3)",
                _ => "",
            };
            format!("the client aborted the handshake with alert {alert:?}{hint}")
        }
        E::PeerIncompatible(p) => {
            use rustls::PeerIncompatible as P;
            match p {
                // What a TLS 1.1-or-older ClientHello runs into first.
                P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::SupportedVersionsExtensionRequired
                | P::SignatureAlgorithmsExtensionRequired => format!(
                    "the client does not offer TLS 1.2 or 1.3 (TLS 1.1 or older?): {p:?}"
                ),
                P::NoCipherSuitesInCommon => {
                    "no cipher suite in common (hmq offers AES-GCM and ChaCha20-Poly1305 with ECDHE)"
                        .to_owned()
                }
                other => format!("incompatible client: {other:?}"),
            }
        }
        E::InvalidMessage(m) => {
            format!("not a TLS handshake (plain MQTT on the TLS port?): invalid message {m:?}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
