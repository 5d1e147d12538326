//! The ACL over real sockets: the seed's example rules, the wildcard guarantee (a client never
//! receives a message on a topic it may not subscribe to, whatever filter it uses), wills, retained
//! messages and reloads without dropping connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;

/// The seed's example ACL (1 = publish, 2 = subscribe, 3 = both).
const SEED: &str = "\
## type clientid , username, ipaddr
##pub 1 ,  sub 2,  pubsub 3
## %c is clientid , %u is username
allow      ip          127.0.0.1   2     $SYS/#
allow      clientid    0001        3     #
allow      username    admin       3     #
allow      username    joy         3     /test,hello/world
allow      clientid    *           1     toCloud/%c
allow      username    *           1     toCloud/%u
deny       clientid    *           3     #
";

fn acl_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hmq-acl-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acl.conf");
    std::fs::write(&path, text).unwrap();
    path
}

async fn broker_with(name: &str, text: &str) -> (TestBroker, PathBuf) {
    let path = acl_file(name, text);
    let p = path.clone();
    let b = TestBroker::start_with(move |c| {
        c.acl = true;
        c.acl_conf = Some(p);
    })
    .await;
    (b, path)
}

fn user(id: &str, name: &str) -> Opts {
    Opts {
        username: Some(name.into()),
        ..Opts::id(id)
    }
}

#[tokio::test]
async fn seed_rules_over_sockets() {
    let (b, _) = broker_with("seed", SEED).await;
    let (mut admin, _) = Client::connect(b.addr, &user("adm", "admin")).await;
    assert_eq!(admin.subscribe(&[("#", 1)]).await, [1]);

    // An ordinary client publishes to its own toCloud topic, not to another's.
    let mut dev = Client::new(b.addr, "dev7").await;
    dev.publish("toCloud/dev7", b"mine", 1, false).await;
    let m = admin.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("toCloud/dev7", &b"mine"[..])
    );
    admin.ack(&m).await;
    dev.publish("toCloud/dev8", b"forged", 1, false).await; // acknowledged, then dropped
    dev.publish("other", b"x", 2, false).await;
    admin.expect_silence().await;
    assert_eq!(b.metric("hmq_acl_denied_total", "action=\"publish\""), 2.0);
    assert_eq!(b.metric("hmq_publish_dropped_total", "reason=\"acl\""), 2.0);

    // It may subscribe to nothing; $SYS/# is allowed from 127.0.0.1.
    assert_eq!(
        dev.subscribe(&[("#", 0), ("toCloud/+", 0), ("$SYS/#", 0)])
            .await,
        [0x80, 0x80, 0]
    );

    // joy: exactly /test and hello/world, both ways. hello/+ and +/world straddle allowed and
    // denied topics: granted, and checked per message.
    let (mut joy, _) = Client::connect(b.addr, &user("j", "joy")).await;
    assert_eq!(
        joy.subscribe(&[("/test", 1), ("hello/+", 1), ("+/world", 1)])
            .await,
        [1, 1, 1]
    );
    let (mut zero, _) = Client::connect(b.addr, &Opts::id("0001")).await;
    for topic in ["hello/mars", "hi/world", "hello/world"] {
        zero.publish(topic, b"m", 1, false).await;
        let m = admin.recv_publish().await;
        assert_eq!(m.topic, topic);
        admin.ack(&m).await;
    }
    let m = joy.recv_publish().await;
    assert_eq!(m.topic, "hello/world");
    joy.ack(&m).await;
    joy.expect_silence().await;
    joy.publish("/test", b"t", 1, false).await;
    let m = admin.recv_publish().await;
    assert_eq!(m.topic, "/test");
    b.stop().await;
}

#[tokio::test]
async fn straddling_wildcards_never_leak_denied_topics() {
    let rules = "\
allow clientid * 2 sensors/%c/#
deny  clientid * 2 public/secret
allow clientid * 2 public/#
allow clientid * 1 #
deny  clientid * 3 #
";
    let (b, _) = broker_with("straddle", rules).await;
    let mut a = Client::new(b.addr, "a").await;
    // Filters that straddle allowed and denied topics are granted and checked per message.
    assert_eq!(
        a.subscribe(&[("#", 1), ("sensors/+/temp", 1)]).await,
        [1, 1]
    );
    let mut p = Client::new(b.addr, "p").await;
    for topic in [
        "sensors/b/temp",
        "public/secret",
        "other",
        "sensors/a/temp",
        "public/news",
    ] {
        p.publish(topic, topic.as_bytes(), 1, false).await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = a.recv_publish().await;
        a.ack(&m).await;
        got.push(m.topic);
    }
    a.expect_silence().await;
    assert_eq!(got, ["sensors/a/temp", "public/news"]);
    assert_eq!(b.metric("hmq_acl_denied_total", "action=\"receive\""), 3.0);
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_follow_the_acl_too() {
    let rules = "\
allow clientid pub 1 #
allow clientid * 2 r/open/#
deny  clientid * 3 #
";
    let (b, _) = broker_with("retained", rules).await;
    let mut p = Client::new(b.addr, "pub").await;
    p.publish("r/open/1", b"ok", 1, true).await;
    p.publish("r/closed/1", b"secret", 1, true).await;
    let mut s = Client::new(b.addr, "s").await;
    assert_eq!(s.subscribe(&[("r/#", 1)]).await, [1]);
    let m = s.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.retain), ("r/open/1", true));
    s.ack(&m).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn wills_are_checked_against_the_acl() {
    let rules = "\
allow clientid watcher 2 #
allow clientid * 1 status/%c
deny  clientid * 3 #
";
    let (b, _) = broker_with("will", rules).await;
    let mut w = Client::new(b.addr, "watcher").await;
    w.subscribe(&[("#", 0)]).await;
    let (good, _) =
        Client::connect(b.addr, &Opts::id("g").will("status/g", b"gone", 0, false)).await;
    let (bad, _) = Client::connect(
        b.addr,
        &Opts::id("h").will("status/other", b"forged", 0, false),
    )
    .await;
    drop(bad);
    drop(good);
    let m = w.recv_publish().await;
    assert_eq!(m.topic, "status/g");
    w.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn client_id_wildcards_do_not_widen_access() {
    let rules = "\
allow clientid * 3 toCloud/%c
deny  clientid * 3 #
";
    let (b, _) = broker_with("wild-id", rules).await;
    let mut plus = Client::new(b.addr, "+").await;
    assert_eq!(
        plus.subscribe(&[("toCloud/+", 0), ("toCloud/#", 0)]).await,
        [0x80, 0x80]
    );
    b.stop().await;
}

#[tokio::test]
async fn reload_applies_to_connected_clients_and_bad_files_keep_the_old_rules() {
    let open = "allow clientid * 3 #\n";
    let (b, path) = broker_with("reload", open).await;
    let mut s = Client::new(b.addr, "s").await;
    assert_eq!(s.subscribe(&[("t/#", 0)]).await, [0]);
    let mut p = Client::new(b.addr, "p").await;
    p.publish("t/1", b"before", 0, false).await;
    assert_eq!(s.recv_publish().await.payload, &b"before"[..]);

    // Replace the file the way Kubernetes does (a rename over it) and ask for a reload.
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        "allow clientid p 1 #\nallow clientid s 2 t/public\ndeny clientid * 3 #\n",
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    reload_now(&b).await;
    p.publish("t/1", b"after", 0, false).await;
    p.publish("t/public", b"public", 0, false).await;
    assert_eq!(
        s.recv_publish().await.payload,
        &b"public"[..],
        "t/1 is now denied"
    );

    // A broken file keeps the rules in force.
    std::fs::write(&tmp, "allow bogus * 3 #\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    reload_now(&b).await;
    assert_eq!(
        b.metric("hmq_file_reloads_total", "file=\"acl\",result=\"error\""),
        1.0
    );
    p.publish("t/public", b"still", 0, false).await;
    assert_eq!(s.recv_publish().await.payload, &b"still"[..]);
    p.publish("t/1", b"still denied", 0, false).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn a_bad_acl_file_stops_the_broker_with_file_and_line() {
    let path = acl_file("bad", "allow clientid * 3 #\n\nallow clientid * 4 a\n");
    let config = hmq::config::Config {
        http_port: None,
        host: "127.0.0.1".into(),
        port: hmq::config::Port(0),
        acl: true,
        acl_conf: Some(path.clone()),
        ..Default::default()
    };
    let err = hmq::server::Server::bind(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
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
