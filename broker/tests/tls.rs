//! MQTT over TLS with real sockets and certificates generated at test time: server-only TLS and
//! mutual TLS round trips, the clients `verify` refuses (no certificate, another CA, expired),
//! TLS 1.2 and 1.3 (and not 1.1), handshakes bounded by the connect deadline and kept out of the
//! accept loop, and certificate rotation on disk (Kubernetes-style symlink swap, in-place writes,
//! broken files that must not replace a working certificate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tls.rs"]
mod tls_support;

use common::*;
use hmq::transport::tls::RELOAD_INTERVAL;
use std::time::Duration;
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const FAILURES: &str = "hmq_tls_handshake_failures_total";

/// How long a rotation may take to show: three reload periods.
const ROTATION_WAIT: Duration = Duration::from_secs(6);

/// Subscribes with `sub`, publishes with `publ`, and checks the message arrives.
async fn round_trip(sub: &mut Client, publ: &mut Client, topic: &str) {
    assert_eq!(sub.subscribe(&[(topic, 1)]).await, vec![1]);
    publ.publish(topic, b"over tls", 1, false).await;
    let m = sub.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        (topic, &b"over tls"[..])
    );
    sub.ack(&m).await;
}

#[tokio::test]
async fn tls_publish_subscribe_round_trip() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false).await;
    let cfg = pki.client_config(None, &[]);
    let mut sub = tls_client(b.tls, cfg.clone(), "tls-sub").await;
    let mut publ = tls_client(b.tls, cfg, "tls-pub").await;
    round_trip(&mut sub, &mut publ, "tls/a").await;
    // TLS and plain TCP clients share one broker.
    let mut tcp = Client::new(b.tcp, "tcp-pub").await;
    tcp.publish("tls/a", b"from tcp", 0, false).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"from tcp");
    assert_eq!(b.metric(FAILURES), 0.0);
    b.stop().await;
}

#[tokio::test]
async fn mtls_publish_subscribe_round_trip() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, true).await;
    let cfg = pki.client_config(Some(&pki.client("device-1")), &[]);
    let mut sub = tls_client(b.tls, cfg.clone(), "mtls-sub").await;
    let mut publ = tls_client(b.tls, cfg, "mtls-pub").await;
    round_trip(&mut sub, &mut publ, "mtls/a").await;
    assert_eq!(b.metric(FAILURES), 0.0);
    b.stop().await;
}

#[tokio::test]
async fn verify_refuses_a_client_without_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, true).await;
    let how = expect_refused(b.tls, pki.client_config(None, &[])).await;
    eprintln!("no client certificate: {how}");
    b.expect_metric(FAILURES, 1.0).await;
    // The broker goes on serving clients with a good certificate.
    let cfg = pki.client_config(Some(&pki.client("good")), &[]);
    tls_client(b.tls, cfg, "good").await.disconnect().await;
    assert_eq!(b.metric(FAILURES), 1.0);
    b.stop().await;
}

#[tokio::test]
async fn verify_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, true).await;
    let how = expect_refused(
        b.tls,
        pki.client_config(Some(&pki.foreign_client("intruder")), &[]),
    )
    .await;
    eprintln!("client certificate from another CA: {how}");
    b.expect_metric(FAILURES, 1.0).await;
    b.stop().await;
}

#[tokio::test]
async fn verify_refuses_an_expired_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, true).await;
    let how = expect_refused(
        b.tls,
        pki.client_config(Some(&pki.expired_client("old-device")), &[]),
    )
    .await;
    eprintln!("expired client certificate: {how}");
    b.expect_metric(FAILURES, 1.0).await;
    b.stop().await;
}

#[tokio::test]
async fn tls12_and_tls13_both_work_with_and_without_client_certificates() {
    let pki = Pki::new();
    let client_cert = pki.client("device-v");
    for verify in [false, true] {
        let b = TlsBroker::start(&pki, verify).await;
        for (version, want) in [
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        ] {
            let cfg = pki.client_config(verify.then_some(&client_cert), &[version]);
            let s = handshake(b.tls, cfg).await.expect("handshake");
            assert_eq!(s.get_ref().1.protocol_version(), Some(want));
            let id = format!("v-{verify}-{want:?}");
            let (mut c, _) = Client::connect(tunnel(s).await, &Opts::id(&id)).await;
            c.publish("v/x", b"x", 1, false).await;
            c.disconnect().await;
        }
        assert_eq!(b.metric(FAILURES), 0.0, "verify {verify}");
        b.stop().await;
    }
}

/// A TLS 1.1 ClientHello (no supported_versions extension, CBC suites), as an old client sends
/// it; with `sig_algs`, also the TLS 1.2 signature_algorithms extension, so that the server gets
/// as far as choosing the version.
fn tls11_client_hello(sig_algs: bool) -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version: TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression methods: null
    if sig_algs {
        // extensions: signature_algorithms (13) = ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        let ext = [0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01];
        hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        hello.extend_from_slice(&ext);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Sends `hello` and returns the alert the broker answers with (level, description).
async fn alert_for(addr: std::net::SocketAddr, hello: &[u8]) -> (u8, u8) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
        .await
        .expect("broker closes the connection")
        .unwrap();
    // One alert record and nothing else: no ServerHello.
    assert_eq!(answer.len(), 7, "answer {answer:02x?}");
    assert_eq!(answer[0], 0x15, "an alert record, got {answer:02x?}");
    (answer[5], answer[6])
}

#[tokio::test]
async fn tls11_is_refused() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false).await;
    // Fatal (2) protocol_version (70).
    assert_eq!(alert_for(b.tls, &tls11_client_hello(true)).await, (2, 70));
    // A real TLS 1.1 client (no TLS 1.2 extensions) fails even earlier: handshake_failure (40).
    assert_eq!(alert_for(b.tls, &tls11_client_hello(false)).await, (2, 40));
    b.expect_metric(FAILURES, 2.0).await;
    b.stop().await;
}

#[tokio::test]
async fn plain_mqtt_on_the_tls_port_is_refused() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false).await;
    let mut c = Client::raw(b.tls).await;
    c.send(&connect_bytes(&Opts::id("plain"))).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, c.stream.read_to_end(&mut answer))
        .await
        .expect("broker closes the connection");
    assert!(
        answer.first() != Some(&0x20),
        "no CONNACK in plain text on the TLS port: {answer:02x?}"
    );
    b.expect_metric(FAILURES, 1.0).await;
    b.stop().await;
}

#[tokio::test]
async fn stalled_handshake_times_out_without_blocking_other_clients() {
    let pki = Pki::new();
    let b = TlsBroker::start_with(&pki, true, |c| c.connect_timeout = 1).await;
    // Connects and never says a word: the handshake waits in that connection's task.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(b.tls).await.unwrap();
    // Meanwhile other clients get through at once.
    let cfg = pki.client_config(Some(&pki.client("prompt")), &[]);
    let mut prompt = tls_client(b.tls, cfg, "prompt").await;
    prompt.send(&[0xC0, 0]).await;
    assert_eq!(prompt.recv().await, Pkt::PingResp);
    assert!(started.elapsed() < Duration::from_millis(900));
    // The stalled one is closed at the connect deadline.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, stalled.read(&mut buf))
        .await
        .expect("stalled handshake closed within the connect timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?} (connectTimeout 1 s)"
    );
    b.expect_metric(FAILURES, 1.0).await;
    prompt.disconnect().await;
    b.stop().await;
}

/// Reconnects every 100 ms (bounded) until the server presents `want`; returns that session.
async fn wait_for_cert(
    addr: std::net::SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    want: &rustls::pki_types::CertificateDer<'static>,
    old: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let deadline = Instant::now() + ROTATION_WAIT;
    loop {
        let s = handshake(addr, cfg.clone()).await.expect("handshake");
        let leaf = server_leaf(&s);
        if leaf == *want {
            return s;
        }
        assert_eq!(
            leaf, *old,
            "the server presents a certificate it was never given"
        );
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {ROTATION_WAIT:?}"
        );
        drop(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rotation_serves_the_new_certificate_and_keeps_existing_connections() {
    let mut pki = Pki::new();
    let b = TlsBroker::start(&pki, true).await;
    let cfg = pki.client_config(Some(&pki.client("device-r")), &[]);
    let old = pki.server.der.clone();

    // A connection made before the rotation, on the old certificate.
    let s = handshake(b.tls, cfg.clone()).await.unwrap();
    assert_eq!(server_leaf(&s), old);
    let (mut before, _) = Client::connect(tunnel(s).await, &Opts::id("before")).await;
    assert_eq!(before.subscribe(&[("rot/#", 1)]).await, vec![1]);

    // The kubelet swaps the Secret: new key, new certificate (other serial and CN).
    let new = pki.server_cert("hmq rotated server");
    pki.swap_secret(&new.cert_pem, &new.key_pem);
    let s = wait_for_cert(b.tls, cfg.clone(), &new.der, &old).await;
    let (mut after, _) = Client::connect(tunnel(s).await, &Opts::id("after")).await;

    // Both connections work, in both directions.
    after.publish("rot/1", b"from after", 1, false).await;
    let m = before.recv_publish().await;
    assert_eq!(&m.payload[..], b"from after");
    before.ack(&m).await;
    assert_eq!(after.subscribe(&[("rot/#", 1)]).await, vec![1]);
    before.publish("rot/2", b"from before", 1, false).await;
    for c in [&mut before, &mut after] {
        let m = c.recv_publish().await;
        assert_eq!(&m.payload[..], b"from before");
        c.ack(&m).await;
    }
    assert_eq!(b.metric(FAILURES), 0.0);
    b.stop().await;
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, false).await;
    let cfg = pki.client_config(None, &[]);
    let old = pki.server.der.clone();
    // Long enough for at least one reload check to have seen the change.
    let settle = RELOAD_INTERVAL + Duration::from_secs(1);
    let addr = b.tls;
    let still_old = |what: &'static str| {
        let cfg = cfg.clone();
        let old = old.clone();
        async move {
            let s = handshake(addr, cfg).await.expect("handshake");
            assert_eq!(
                server_leaf(&s),
                old,
                "after {what}: the old certificate is kept"
            );
            let (c, _) = Client::connect(tunnel(s).await, &Opts::id(what)).await;
            c.disconnect().await;
        }
    };

    // Garbage where the certificate was.
    pki.overwrite_in_place("tls.crt", "this is not a certificate\n");
    tokio::time::sleep(settle).await;
    still_old("garbage certificate").await;

    // A new certificate whose key has not arrived yet (files written one after the other).
    let new = pki.server_cert("hmq replacement");
    pki.overwrite_in_place("tls.crt", &new.cert_pem);
    tokio::time::sleep(settle).await;
    still_old("certificate without its key").await;

    // The key lands: the reloader, still running, picks the pair up.
    pki.overwrite_in_place("tls.key", &new.key_pem);
    let s = wait_for_cert(b.tls, cfg.clone(), &new.der, &old).await;
    Client::connect(tunnel(s).await, &Opts::id("new"))
        .await
        .0
        .disconnect()
        .await;
    assert_eq!(b.metric(FAILURES), 0.0);
    b.stop().await;
}

#[tokio::test]
async fn use_identity_as_username_accepts_verified_clients() {
    let pki = Pki::new();
    let b = TlsBroker::start_with(&pki, true, |c| {
        c.tls_info.use_identity_as_username = true;
    })
    .await;
    let cert = pki.client_with_sans(
        "cn-ignored",
        vec![rcgen::SanType::DnsName(
            "sensor-7.example".try_into().unwrap(),
        )],
    );
    let s = handshake(b.tls, pki.client_config(Some(&cert), &[]))
        .await
        .unwrap();
    let (c, _) = Client::connect(tunnel(s).await, &Opts::id("sensor-7")).await;
    c.disconnect().await;
    // The identity the broker will use is the one `cert_identity` finds.
    assert_eq!(
        hmq::transport::tls::cert_identity(&cert.der).as_deref(),
        Some("sensor-7.example")
    );
    b.stop().await;
}

#[tokio::test]
async fn unreadable_tls_files_stop_startup_with_the_file_named() {
    let pki = Pki::new();
    let missing = pki.dir.join("nope.key");
    let config = hmq::config::Config {
        http_port: None,
        host: "127.0.0.1".into(),
        port: hmq::config::Port(0),
        tls_host: "127.0.0.1".into(),
        tls_port: Some(hmq::config::Port(0)),
        tls_info: hmq::config::TlsInfo {
            key_file: Some(missing.clone()),
            ..pki.tls_info(false)
        },
        ..hmq::config::Config::default()
    };
    let err = hmq::server::Server::bind(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tlsInfo.keyFile") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.contains("cannot open"), "{err}");
}
