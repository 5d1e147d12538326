//! TLS test support: a throw-away PKI generated with rcgen at test time (a CA, a server
//! certificate for localhost/127.0.0.1, client certificates: good, from another CA, expired), laid
//! out on disk the way Kubernetes mounts a Secret (`tls.crt -> ..data/tls.crt`, `..data ->
//! ..<version>`), a broker with a TLS listener started through `Server::bind`/`Server::run`, and
//! a rustls client. `tunnel` hands an established TLS session to the raw MQTT `Client` of
//! `common` as a plain loopback socket, so TLS tests speak MQTT with the same client as the rest.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use hmq::broker::Broker;
use hmq::config::{Config, Port, TlsInfo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::common::{Client, Opts, WAIT, connect_bytes};

static SERIAL: AtomicU64 = AtomicU64::new(1000);

fn next_serial() -> SerialNumber {
    SerialNumber::from(SERIAL.fetch_add(1, Ordering::Relaxed))
}

/// A certificate and its key, as PEM (for files) and DER (for rustls).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn issue(params: CertificateParams, issuer: &CertifiedIssuer<'static, KeyPair>) -> Issued {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialized_der().to_vec(),
    }
}

fn server_cert(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> Issued {
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(next_serial());
    issue(params, ca)
}

fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(next_serial());
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A CA, a second unrelated CA, and the files a broker reads, in a temp directory removed on
/// drop.
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    other_ca: CertifiedIssuer<'static, KeyPair>,
    /// The server certificate the broker was started with.
    pub server: Issued,
    versions: u32,
}

impl Pki {
    pub fn new() -> Pki {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hmq-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = new_ca("hmq test CA");
        let other_ca = new_ca("some other CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let server = server_cert(&ca, "hmq test server");
        let (cert_pem, key_pem) = (server.cert_pem.clone(), server.key_pem.clone());
        let mut pki = Pki {
            dir,
            server,
            ca,
            other_ca,
            versions: 0,
        };
        pki.swap_secret(&cert_pem, &key_pem);
        pki
    }

    /// A server certificate for localhost and 127.0.0.1 signed by the CA.
    pub fn server_cert(&self, cn: &str) -> Issued {
        server_cert(&self.ca, cn)
    }

    fn client_params(cn: &str, sans: Vec<SanType>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(next_serial());
        params
    }

    /// A client certificate signed by the CA.
    pub fn client(&self, cn: &str) -> Issued {
        issue(Self::client_params(cn, vec![]), &self.ca)
    }

    /// A client certificate signed by the CA with subject alternative names.
    pub fn client_with_sans(&self, cn: &str, sans: Vec<SanType>) -> Issued {
        issue(Self::client_params(cn, sans), &self.ca)
    }

    /// A client certificate signed by another CA.
    pub fn foreign_client(&self, cn: &str) -> Issued {
        issue(Self::client_params(cn, vec![]), &self.other_ca)
    }

    /// A client certificate signed by the CA that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Issued {
        let mut params = Self::client_params(cn, vec![]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        issue(params, &self.ca)
    }

    /// A cluster node's certificate and key files (both client and server use, named
    /// `<cn>.cluster.test`, not by IP), signed by the CA or, if `foreign`, by the other CA.
    pub fn node_files(&self, cn: &str, foreign: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![format!("{cn}.cluster.test")]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(next_serial());
        let issued = issue(params, if foreign { &self.other_ca } else { &self.ca });
        let (cert, key) = (
            self.dir.join(format!("{cn}.crt")),
            self.dir.join(format!("{cn}.key")),
        );
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        (cert, key)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The paths the broker is configured with: symlinks through `..data`.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    pub fn tls_info(&self, verify: bool) -> TlsInfo {
        TlsInfo {
            verify,
            ca_file: verify.then(|| self.ca_file()),
            cert_file: Some(self.cert_file()),
            key_file: Some(self.key_file()),
            use_identity_as_username: false,
        }
    }

    /// Publishes a new certificate and key the way the kubelet updates a Secret volume: both
    /// files in a fresh directory, then one atomic rename of the `..data` symlink.
    pub fn swap_secret(&mut self, cert_pem: &str, key_pem: &str) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        let vdir = self.dir.join(&version);
        std::fs::create_dir(&vdir).unwrap();
        std::fs::write(vdir.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(vdir.join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
    }

    /// Overwrites the file the `..data` link currently points at, in place (as a careless
    /// `cp` or an editor would).
    pub fn overwrite_in_place(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.join(name), contents).unwrap();
    }

    /// A rustls client trusting the CA, optionally with a client certificate, speaking only
    /// `versions` (all of TLS 1.2 and 1.3 if empty).
    pub fn client_config(
        &self,
        cert: Option<&Issued>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let versions = if versions.is_empty() {
            rustls::ALL_VERSIONS
        } else {
            versions
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let config = match cert {
            Some(c) => builder
                .with_client_auth_cert(vec![c.der.clone()], c.key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker in this process with a plain TCP and a TLS listener on 127.0.0.1.
pub struct TlsBroker {
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub broker: Arc<Broker>,
    inner: crate::common::TestBroker,
}

impl TlsBroker {
    pub async fn start(pki: &Pki, verify: bool) -> TlsBroker {
        Self::start_with(pki, verify, |_| {}).await
    }

    pub async fn start_with(pki: &Pki, verify: bool, tweak: impl FnOnce(&mut Config)) -> TlsBroker {
        let tls_info = pki.tls_info(verify);
        let inner = crate::common::TestBroker::start_with(move |c| {
            c.tls_host = "127.0.0.1".into();
            c.tls_port = Some(Port(0));
            c.tls_info = tls_info;
            tweak(c);
        })
        .await;
        TlsBroker {
            tcp: inner.addr,
            tls: inner.tls_addr.expect("TLS listener"),
            broker: inner.broker.clone(),
            inner,
        }
    }

    /// A counter or gauge value (summed over its series).
    pub fn metric(&self, name: &str) -> f64 {
        self.inner.metric(name, "")
    }

    /// Waits (up to `WAIT`) until `name` reaches `value`, then asserts it is exactly that.
    pub async fn expect_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.metric(name) < value && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.metric(name), value, "{name}");
    }

    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

/// A TLS handshake with the broker at `addr` as "localhost".
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The leaf certificate the server presented.
pub fn server_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Relays a TLS session to a plain loopback socket and returns its address: connect `Client`
/// there. The relay ends when either side closes.
pub async fn tunnel(mut tls: TlsStream<TcpStream>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok(Ok((mut plain, _))) = tokio::time::timeout(WAIT, listener.accept()).await {
            let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
        }
    });
    addr
}

/// An MQTT client over TLS, connected (CONNACK 0) with a clean session and id `id`.
pub async fn tls_client(addr: SocketAddr, config: Arc<ClientConfig>, id: &str) -> Client {
    let tls = handshake(addr, config).await.expect("TLS handshake");
    Client::connect(tunnel(tls).await, &Opts::id(id)).await.0
}

/// Asserts the broker refuses this client: the handshake fails, or (TLS 1.3, where the client
/// finishes before the server has checked its certificate) the connection closes without a
/// CONNACK. Returns how it ended, for the message.
pub async fn expect_refused(addr: SocketAddr, config: Arc<ClientConfig>) -> String {
    let mut tls = match handshake(addr, config).await {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(s) => s,
    };
    let _ = tls.write_all(&connect_bytes(&Opts::id("refused"))).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, tls.read(&mut buf)).await {
        Err(_) => panic!("connection still open after {WAIT:?}"),
        Ok(Ok(0)) => "closed".to_owned(),
        Ok(Ok(n)) => panic!("broker answered a refused client with {:02x?}", &buf[..n]),
        Ok(Err(e)) => format!("closed: {e}"),
    }
}
