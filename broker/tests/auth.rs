//! Authentication over real sockets: the password file, anonymous clients, CONNACK codes, the
//! authenticated user name in the ACL, and reloading the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hmq::auth::hash_password;
use std::path::PathBuf;
use std::time::Duration;

/// Few iterations: the tests check behaviour, not the cost.
const ITER: u32 = 1000;

fn write_passwords(name: &str, users: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hmq-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passwd");
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", hash_password(p.as_bytes(), ITER).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn login(id: &str, user: &str, password: &[u8]) -> Opts {
    Opts {
        username: Some(user.into()),
        password: Some(password.to_vec()),
        ..Opts::id(id)
    }
}

async fn connack(b: &TestBroker, opts: &Opts) -> u8 {
    match Client::connect_opts(b.addr, opts).await.1 {
        Pkt::ConnAck { code, .. } => code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn password_file_decides_and_connack_codes_say_why() {
    let path = write_passwords("codes", &[("alice", "s3cret"), ("bob", "hunter2")]);
    let b = TestBroker::start_with(|c| {
        c.password_file = Some(path);
        c.allow_anonymous = false;
    })
    .await;
    assert_eq!(connack(&b, &login("a", "alice", b"s3cret")).await, 0);
    assert_eq!(connack(&b, &login("a2", "alice", b"wrong")).await, 4);
    assert_eq!(connack(&b, &login("m", "mallory", b"s3cret")).await, 4);
    assert_eq!(connack(&b, &Opts::id("anon")).await, 5);
    let no_password = Opts {
        username: Some("bob".into()),
        ..Opts::id("b")
    };
    assert_eq!(connack(&b, &no_password).await, 4);
    assert_eq!(
        b.metric("hmq_connects_refused_total", "reason=\"bad_credentials\""),
        3.0
    );
    assert_eq!(
        b.metric("hmq_connects_refused_total", "reason=\"not_authorized\""),
        1.0
    );
    // The same credentials again (answered from the verified cache) still work.
    assert_eq!(connack(&b, &login("a3", "alice", b"s3cret")).await, 0);
    b.stop().await;
}

#[tokio::test]
async fn anonymous_clients_are_accepted_by_default() {
    let path = write_passwords("anon", &[("alice", "pw")]);
    let b = TestBroker::start_with(|c| c.password_file = Some(path)).await;
    assert_eq!(connack(&b, &Opts::id("anon")).await, 0);
    assert_eq!(connack(&b, &login("x", "alice", b"nope")).await, 4);
    b.stop().await;
}

#[tokio::test]
async fn the_authenticated_user_name_is_what_the_acl_sees() {
    let path = write_passwords("acl", &[("alice", "pw"), ("bob", "pw")]);
    let dir = path.parent().unwrap().to_path_buf();
    let acl = dir.join("acl.conf");
    std::fs::write(&acl, "allow username * 3 users/%u/#\ndeny clientid * 3 #\n").unwrap();
    let b = TestBroker::start_with(|c| {
        c.password_file = Some(path);
        c.acl = true;
        c.acl_conf = Some(acl);
    })
    .await;
    let (mut alice, _) = Client::connect(b.addr, &login("a", "alice", b"pw")).await;
    assert_eq!(
        alice
            .subscribe(&[("users/alice/#", 1), ("users/bob/#", 1)])
            .await,
        [1, 0x80]
    );
    let (mut bob, _) = Client::connect(b.addr, &login("b", "bob", b"pw")).await;
    bob.publish("users/alice/inbox", b"hi", 1, false).await; // denied: not bob's tree
    bob.publish("users/bob/x", b"mine", 1, false).await;
    alice.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn a_changed_password_file_applies_to_new_connections() {
    let path = write_passwords("reload", &[("alice", "old")]);
    let p = path.clone();
    let b = TestBroker::start_with(move |c| {
        c.password_file = Some(p);
        c.allow_anonymous = false;
    })
    .await;
    let (mut connected, _) = Client::connect(b.addr, &login("keep", "alice", b"old")).await;
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("alice:{}\n", hash_password(b"new", ITER).unwrap()),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    reload_now(&b).await;
    assert_eq!(connack(&b, &login("n", "alice", b"new")).await, 0);
    assert_eq!(connack(&b, &login("o", "alice", b"old")).await, 4);
    // A broken file keeps the previous one.
    std::fs::write(&tmp, "alice plain text\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    reload_now(&b).await;
    assert_eq!(
        b.metric(
            "hmq_file_reloads_total",
            "file=\"passwords\",result=\"error\""
        ),
        1.0
    );
    assert_eq!(connack(&b, &login("n2", "alice", b"new")).await, 0);
    // The connection made before the change is still there.
    connected.send(&[0xC0, 0]).await;
    assert_eq!(connected.recv().await, Pkt::PingResp);
    b.stop().await;
}

#[tokio::test]
async fn a_bad_password_file_stops_the_broker_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("hmq-auth-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passwd");
    std::fs::write(&path, "# users\nalice\n").unwrap();
    let config = hmq::config::Config {
        http_port: None,
        host: "127.0.0.1".into(),
        port: hmq::config::Port(0),
        password_file: Some(path.clone()),
        ..Default::default()
    };
    let err = hmq::server::Server::bind(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("{}:2:", path.display())), "{err}");
}

/// Asks for a reload (as SIGHUP does) and waits until it has been attempted.
async fn reload_now(b: &TestBroker) {
    let mut done = b.broker.reloaded.subscribe();
    done.mark_unchanged();
    b.broker.reload.send_modify(|g| *g += 1);
    tokio::time::timeout(Duration::from_secs(10), done.changed())
        .await
        .expect("reload attempted")
        .unwrap();
}
