//! Tests of certificate loading, reload and client-certificate identity, with certificates made
//! at test time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "hmq-tls-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn leaf(
    cn: Option<&str>,
    sans: Vec<SanType>,
    issuer: &Issuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = sans;
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

fn ca() -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "unit CA");
    Issuer::new(params, KeyPair::generate().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

fn email(s: &str) -> SanType {
    SanType::Rfc822Name(s.try_into().unwrap())
}

#[test]
fn identity_prefers_dns_then_email_then_cn() {
    let ca = ca();
    let cases: Vec<(Option<&str>, Vec<SanType>, Option<&str>)> = vec![
        (
            Some("the-cn"),
            vec![email("a@example.com"), dns("dev1.example.com"), dns("dev2")],
            Some("dev1.example.com"),
        ),
        (
            Some("the-cn"),
            vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                email("a@example.com"),
                email("b@example.com"),
            ],
            Some("a@example.com"),
        ),
        (Some("sensor-42"), vec![], Some("sensor-42")),
        (
            Some("sensor-43"),
            vec![SanType::IpAddress("10.0.0.1".parse().unwrap())],
            Some("sensor-43"),
        ),
        (None, vec![], None),
    ];
    for (cn, sans, want) in cases {
        let (cert, _) = leaf(cn, sans.clone(), &ca);
        assert_eq!(
            cert_identity(cert.der()).as_deref(),
            want,
            "cn {cn:?} sans {sans:?}"
        );
    }
    assert_eq!(cert_identity(b"not a certificate"), None);
}

fn info(cert: &Path, key: &Path) -> TlsInfo {
    TlsInfo {
        cert_file: Some(cert.to_owned()),
        key_file: Some(key.to_owned()),
        ..TlsInfo::default()
    }
}

/// Rewraps a PKCS#8 ECDSA key (as rcgen writes it) as SEC1 `EC PRIVATE KEY`: the SEC1
/// structure is the PKCS#8 privateKey OCTET STRING's content.
fn pkcs8_to_sec1_pem(pkcs8: &[u8]) -> String {
    use x509_parser::der_parser::ber::BerObjectContent;
    let (_, seq) = x509_parser::der_parser::parse_der(pkcs8).unwrap();
    let items = seq.as_sequence().unwrap();
    let BerObjectContent::OctetString(sec1) = &items[2].content else {
        panic!("PKCS#8 privateKey is not an OCTET STRING")
    };
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sec1);
    format!("-----BEGIN EC PRIVATE KEY-----\n{b64}\n-----END EC PRIVATE KEY-----\n")
}

#[test]
fn loads_pkcs8_sec1_and_ed25519_keys() {
    let dir = Dir::new();
    let ca = ca();
    for (name, alg) in [
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca).unwrap();
        let cert_path = dir.write(&format!("{name}.crt"), cert.pem());
        let key_path = dir.write(&format!("{name}.key"), key.serialize_pem());
        TlsAcceptor::from_config(&info(&cert_path, &key_path))
            .unwrap_or_else(|e| panic!("{name} PKCS#8: {e}"));
        if name != "ed25519" {
            let sec1 = dir.write(
                &format!("{name}.sec1"),
                pkcs8_to_sec1_pem(key.serialized_der()),
            );
            TlsAcceptor::from_config(&info(&cert_path, &sec1))
                .unwrap_or_else(|e| panic!("{name} SEC1: {e}"));
        }
    }
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = Dir::new();
    let ca = ca();
    let (cert, key) = leaf(Some("server"), vec![dns("localhost")], &ca);
    let (_, other_key) = leaf(Some("other"), vec![], &ca);
    let cert_path = dir.write("cert.pem", cert.pem());
    let key_path = dir.write("key.pem", key.serialize_pem());
    let missing = dir.0.join("missing.pem");
    let garbage = dir.write("garbage.pem", "hello\n");
    let wrong_key = dir.write("wrong.key", other_key.serialize_pem());
    let broken_pem = dir.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let encrypted = dir.write(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let not_x509 = dir.write(
        "notx509.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let err = |i: TlsInfo| TlsAcceptor::from_config(&i).unwrap_err().to_string();
    let cases = [
        (
            info(&missing, &key_path),
            "tlsInfo.certFile",
            "missing.pem: cannot open",
        ),
        (
            info(&garbage, &key_path),
            "tlsInfo.certFile",
            "no certificate found",
        ),
        (info(&broken_pem, &key_path), "tlsInfo.certFile", "bad PEM"),
        (
            info(&not_x509, &key_path),
            "tlsInfo.certFile",
            "not valid X.509",
        ),
        (
            info(&cert_path, &garbage),
            "tlsInfo.keyFile",
            "no private key found",
        ),
        (
            info(&cert_path, &cert_path),
            "tlsInfo.keyFile",
            "no private key found",
        ),
        (info(&cert_path, &encrypted), "tlsInfo.keyFile", "encrypted"),
        (
            info(&cert_path, &wrong_key),
            "tlsInfo.keyFile",
            "does not belong to the certificate",
        ),
        (
            TlsInfo {
                verify: true,
                ca_file: Some(garbage.clone()),
                ..info(&cert_path, &key_path)
            },
            "tlsInfo.caFile",
            "no certificate found",
        ),
    ];
    for (i, key, what) in cases {
        let e = err(i);
        assert!(
            e.starts_with(key) && e.contains(what),
            "{e:?} should name {key} and say {what:?}"
        );
    }
    assert_eq!(
        err(TlsInfo {
            key_file: None,
            ..info(&cert_path, &key_path)
        }),
        "tlsInfo.keyFile is not set"
    );
}

#[test]
fn only_tls12_and_tls13() {
    let versions: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        [
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2
        ]
    );
}

#[test]
fn debug_shows_paths_not_keys() {
    let dir = Dir::new();
    let ca = ca();
    let (cert, key) = leaf(Some("server"), vec![dns("localhost")], &ca);
    let cert_path = dir.write("cert.pem", cert.pem());
    let key_path = dir.write("key.pem", key.serialize_pem());
    let acceptor = TlsAcceptor::from_config(&info(&cert_path, &key_path)).unwrap();
    let shown = format!("{acceptor:?}");
    assert!(shown.contains("key.pem"), "{shown}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn acceptor_is_clone_debug_send_sync() {
    fn check<T: Clone + fmt::Debug + Send + Sync>() {}
    check::<TlsAcceptor>();
}

#[test]
fn handshake_errors_read_well() {
    use rustls::CertificateError as C;
    assert_eq!(
        describe(&rustls::Error::NoCertificatesPresented),
        "client certificate required (the client sent none)"
    );
    assert_eq!(
        describe(&rustls::Error::InvalidCertificate(C::UnknownIssuer)),
        "client certificate rejected: unknown CA (not signed by tlsInfo.caFile)"
    );
    assert!(describe(&rustls::Error::InvalidCertificate(C::Expired)).contains("expired"));
    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
    assert!(describe_io(&eof).contains("closed the connection"));
}
