//! What the broker publishes under `$SYS`: online/offline notifications in hmq's format on every
//! kind of connect and disconnect, and the periodic statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

const PRESENCE: &str = "$SYS/broker/connection/clients/";

/// The next presence notification: (client id, online), after checking the payload's shape.
async fn next_presence(watcher: &mut Client) -> (String, bool) {
    let m = watcher.recv_publish().await;
    assert!(m.topic.starts_with(PRESENCE), "{}", m.topic);
    assert_eq!((m.qos, m.retain), (0, false));
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["clientID", "online", "timestamp"],
        "no other fields (no secrets)"
    );
    let id = obj["clientID"].as_str().unwrap().to_string();
    assert_eq!(m.topic, format!("{PRESENCE}{id}"));
    let ts = obj["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 20,
        "RFC 3339 UTC seconds: {ts}"
    );
    humantime::parse_rfc3339(ts).unwrap();
    (id, obj["online"].as_bool().unwrap())
}

#[tokio::test]
async fn presence_on_connect_and_every_kind_of_disconnect() {
    let b = TestBroker::start().await;
    let mut w = Client::new(b.addr, "watcher").await;
    assert_eq!(
        w.subscribe(&[("$SYS/broker/connection/clients/+", 0)])
            .await,
        [0]
    );

    let clean = Client::new(b.addr, "clean").await;
    assert_eq!(next_presence(&mut w).await, ("clean".into(), true));
    clean.disconnect().await;
    assert_eq!(next_presence(&mut w).await, ("clean".into(), false));

    let dropped = Client::new(b.addr, "dropped").await;
    assert_eq!(next_presence(&mut w).await, ("dropped".into(), true));
    drop(dropped);
    assert_eq!(next_presence(&mut w).await, ("dropped".into(), false));

    let (mut bad, _) = Client::connect(b.addr, &Opts::id("bad")).await;
    assert_eq!(next_presence(&mut w).await, ("bad".into(), true));
    bad.send(&[0xF0, 0]).await;
    assert_eq!(next_presence(&mut w).await, ("bad".into(), false));

    let (_quiet, _) = Client::connect(b.addr, &Opts::id("quiet").keep_alive(1)).await;
    assert_eq!(next_presence(&mut w).await, ("quiet".into(), true));
    assert_eq!(next_presence(&mut w).await, ("quiet".into(), false)); // keepalive timeout

    // Takeover: the old connection goes offline before the new one comes online.
    let _first = Client::new(b.addr, "twin").await;
    assert_eq!(next_presence(&mut w).await, ("twin".into(), true));
    let _second = Client::new(b.addr, "twin").await;
    assert_eq!(next_presence(&mut w).await, ("twin".into(), false));
    assert_eq!(next_presence(&mut w).await, ("twin".into(), true));
    b.stop().await;
}

#[tokio::test]
async fn shutdown_sends_offline_notifications() {
    let b = TestBroker::start().await;
    let mut w = Client::new(b.addr, "watcher").await;
    w.subscribe(&[("$SYS/broker/connection/clients/+", 0)])
        .await;
    let _c = Client::new(b.addr, "c").await;
    assert_eq!(next_presence(&mut w).await, ("c".into(), true));
    let stop = tokio::spawn(b.stop());
    // The watcher sees c's offline notification if c is closed before it; either way, nothing
    // but offline notifications, and the connection ends.
    let seen = w.expect_closed().await;
    stop.await.unwrap();
    for p in &seen {
        let Pkt::Publish(m) = p else { panic!("{p:?}") };
        assert!(String::from_utf8_lossy(&m.payload).contains("\"online\":false"));
    }
}

#[tokio::test]
async fn clients_cannot_forge_presence_and_the_acl_applies() {
    let dir = std::env::temp_dir().join(format!("hmq-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("acl.conf");
    std::fs::write(
        &acl,
        "allow clientid ops 2 $SYS/#\nallow clientid * 3 app/#\n",
    )
    .unwrap();
    let b = TestBroker::start_with(|c| {
        c.acl = true;
        c.acl_conf = Some(acl);
    })
    .await;
    let mut ops = Client::new(b.addr, "ops").await;
    assert_eq!(
        ops.subscribe(&[("$SYS/broker/connection/clients/+", 0)])
            .await,
        [0]
    );
    let mut app = Client::new(b.addr, "app").await;
    assert_eq!(next_presence(&mut ops).await, ("app".into(), true));
    // Others may not subscribe to $SYS, and nobody can publish there.
    assert_eq!(app.subscribe(&[("$SYS/#", 0)]).await, [0x80]);
    app.publish(
        "$SYS/broker/connection/clients/ops",
        b"{\"online\":false}",
        1,
        false,
    )
    .await;
    ops.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn statistics_are_published_every_sys_interval() {
    let b = TestBroker::start_with(|c| c.sys_interval = 1).await;
    let mut s = Client::new(b.addr, "stats").await;
    let mut p = Client::new(b.addr, "p").await;
    s.subscribe(&[("x", 0)]).await;
    p.publish("x", b"1", 0, false).await;
    assert_eq!(s.recv_publish().await.topic, "x");
    s.subscribe(&[("$SYS/broker/#", 0)]).await;
    // Retained statistics arrive at once, then again every second: collect for a little over
    // two ticks, keeping the latest value of each topic.
    let mut values = std::collections::BTreeMap::new();
    let mut uptimes = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(Pkt::Publish(m)) = s.recv_within(left).await else {
            break;
        };
        if m.topic.starts_with(PRESENCE) {
            continue;
        }
        let value = String::from_utf8(m.payload.to_vec()).unwrap();
        if m.topic == "$SYS/broker/uptime" {
            uptimes.insert(value.clone());
        }
        values.insert(m.topic.clone(), value);
    }
    assert_eq!(values.len(), 12, "{values:?}");
    assert!(
        uptimes.len() >= 2,
        "published again every second: {uptimes:?}"
    );
    assert!(values["$SYS/broker/version"].starts_with("hmq "));
    assert!(values["$SYS/broker/uptime"].ends_with(" seconds"));
    assert_eq!(values["$SYS/broker/clients/connected"], "2");
    assert!(
        values["$SYS/broker/messages/received"]
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(
        values["$SYS/broker/subscriptions/count"]
            .parse::<u64>()
            .unwrap()
            >= 2
    );
    b.stop().await;
}
