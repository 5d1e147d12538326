//! Persistent sessions that follow their client across the cluster: real brokers in one
//! process (cluster listeners on 127.0.0.1-3), real client sockets. An offline session with a
//! queue moves to the node the client reconnects to; a connected one moves with its in-flight
//! messages (resent with DUP, same packet ids); concurrent connects of one id to two nodes end
//! with one owner; a node that stops hands its sessions to the others; a node that comes back
//! with its disk gives up the sessions whose clients reconnected elsewhere, with their queues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cluster.rs"]
mod cluster_support;
mod common;

use cluster_support::*;
use common::{Client, Opts, Pkt, TestBroker};
use std::collections::BTreeSet;
use std::time::Duration;

/// Two linked nodes.
async fn two_nodes() -> (u16, TestBroker, TestBroker) {
    let port = free_port();
    let n1 = node(1, port, all_peers(port, 2)).await;
    let n2 = node(2, port, all_peers(port, 2)).await;
    wait_mesh(&[&n1, &n2]).await;
    (port, n1, n2)
}

/// Publishes `n` QoS 1 messages `prefix-i` to `topic` from a fresh client on `b`.
async fn publish_n(b: &TestBroker, id: &str, topic: &str, prefix: &str, n: usize) {
    let mut p = Client::new(b.addr, id).await;
    for i in 0..n {
        p.publish(topic, format!("{prefix}-{i}").as_bytes(), 1, false)
            .await;
    }
    p.disconnect().await;
}

fn payloads(msgs: &[common::Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect()
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn an_offline_session_moves_with_its_queue_to_the_node_the_client_returns_to() {
    let (_, n1, n2) = two_nodes().await;
    let (mut c, present) = Client::connect(n1.addr, &Opts::id("dev").persistent()).await;
    assert!(!present);
    c.subscribe(&[("t/#", 1)]).await;
    c.disconnect().await;
    wait_routes(&n2, 1.0).await;
    // Queued on n1 while the client is away: from n1 itself and from n2.
    publish_n(&n1, "p1", "t/a", "one", 5).await;
    publish_n(&n2, "p2", "t/b", "two", 5).await;
    wait_until("10 queued on n1", || {
        n1.broker
            .sessions
            .get("dev")
            .is_some_and(|s| s.queued() == 10)
    })
    .await;

    let (mut c, present) = Client::connect(n2.addr, &Opts::id("dev").persistent()).await;
    assert!(present, "session present: it came from n1");
    let got = recv_n(&mut c, 10).await;
    let mut want = expected("one", 5);
    want.extend(expected("two", 5));
    assert_eq!(payloads(&got), want, "the whole queue, in order, once");
    assert!(
        n1.broker.sessions.get("dev").is_none(),
        "one session, on n2"
    );
    assert_eq!(
        metric(&n2, "hmq_cluster_sessions_moved_total", "direction=\"in\""),
        1.0
    );
    wait_until("n1 counts the confirmed handover", || {
        metric(&n1, "hmq_cluster_sessions_moved_total", "direction=\"out\"") == 1.0
    })
    .await;

    // The subscription moved too: messages published on either node arrive once, also while
    // n1 still forwards what its routes bring it.
    publish_n(&n1, "p3", "t/c", "three", 3).await;
    publish_n(&n2, "p4", "t/d", "four", 3).await;
    let got = recv_n(&mut c, 6).await;
    let mut got = payloads(&got);
    got.sort();
    let mut want = expected("three", 3);
    want.extend(expected("four", 3));
    want.sort();
    assert_eq!(got, want);
    for b in [n1, n2] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_connected_session_moves_with_its_in_flight_messages_resent_with_dup() {
    let (_, n1, n2) = two_nodes().await;
    let (mut first, _) = Client::connect(n1.addr, &Opts::id("dev").persistent()).await;
    first.subscribe(&[("q/#", 2)]).await;
    wait_routes(&n2, 1.0).await;
    publish_n(&n2, "p", "q/x", "m", 3).await;
    // Received and not acknowledged: in flight on n1.
    let mut inflight = Vec::new();
    for _ in 0..3 {
        inflight.push(first.recv_publish().await);
    }
    assert!(inflight.iter().all(|m| m.qos == 1 && !m.dup));

    let (mut second, present) = Client::connect(n2.addr, &Opts::id("dev").persistent()).await;
    assert!(present);
    first.expect_closed().await;
    let again = recv_n(&mut second, 3).await;
    assert_eq!(payloads(&again), expected("m", 3));
    for (a, b) in inflight.iter().zip(&again) {
        assert!(b.dup, "resent with DUP");
        assert_eq!(a.pkid, b.pkid, "same packet id");
    }
    for b in [n1, n2] {
        b.stop().await;
    }
}

#[tokio::test]
async fn concurrent_connects_of_one_id_to_two_nodes_end_with_one_owner() {
    let (_, n1, n2) = two_nodes().await;
    for round in 0..5 {
        let id = format!("racer-{round}");
        let opts = Opts::id(&id).persistent();
        let (a, b) = tokio::join!(
            Client::connect_opts(n1.addr, &opts),
            Client::connect_opts(n2.addr, &opts)
        );
        let mut open = Vec::new();
        for (mut c, ack) in [a, b] {
            if !matches!(ack, Pkt::ConnAck { code: 0, .. }) {
                continue;
            }
            // A connection that lost is closed; the winner answers a ping.
            c.send(&[0xC0, 0]).await;
            match c.next_within(Duration::from_secs(3)).await {
                Ok(Some(Pkt::PingResp)) => open.push(c),
                Ok(Some(other)) => panic!("unexpected {other:?}"),
                Ok(None) | Err(()) => {}
            }
        }
        wait_until("one node holds the session", || {
            let held = [&n1, &n2]
                .iter()
                .filter(|b| b.broker.sessions.get(&id).is_some())
                .count();
            held == 1
        })
        .await;
        // Settled: nothing moves any more, and the survivor is still connected.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let holders: BTreeSet<_> = [(1, &n1), (2, &n2)]
            .iter()
            .filter(|(_, b)| b.broker.sessions.get(&id).is_some_and(|s| s.is_online()))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "round {round}: one online owner, got {holders:?}"
        );
        assert!(
            open.len() <= 1,
            "round {round}: {} connections open",
            open.len()
        );
    }
    for b in [n1, n2] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_stopping_node_hands_its_sessions_to_the_others() {
    let (_, n1, n2, n3) = three_nodes().await;
    let ids: Vec<String> = (0..20).map(|i| format!("leaver-{i}")).collect();
    for id in &ids {
        let (mut c, _) = Client::connect(n3.addr, &Opts::id(id).persistent()).await;
        c.subscribe(&[(&format!("to/{id}"), 1)]).await;
        c.disconnect().await;
    }
    wait_routes(&n1, 20.0).await;
    for id in &ids {
        publish_n(&n1, "p", &format!("to/{id}"), id, 2).await;
    }
    wait_until("queued on n3", || {
        ids.iter()
            .all(|id| n3.broker.sessions.get(id).is_some_and(|s| s.queued() == 2))
    })
    .await;

    n3.stop().await;
    let on = |b: &TestBroker| {
        ids.iter()
            .filter(|id| b.broker.sessions.get(id).is_some())
            .count()
    };
    assert_eq!(
        on(&n1) + on(&n2),
        20,
        "every session went to a remaining node"
    );
    assert!(on(&n1) > 0 && on(&n2) > 0, "spread over both");
    // Each client finds its session whichever node it reconnects to.
    for (i, id) in ids.iter().enumerate() {
        let b = if i % 2 == 0 { &n1 } else { &n2 };
        let (mut c, present) = Client::connect(b.addr, &Opts::id(id).persistent()).await;
        assert!(present, "{id}");
        assert_eq!(payloads(&recv_n(&mut c, 2).await), expected(id, 2), "{id}");
        c.disconnect().await;
    }
    for b in [n1, n2] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_node_back_with_its_disk_gives_a_session_to_where_its_client_went_meanwhile() {
    let port = free_port();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("moves")
        .join(format!("returning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let durable = |c: &mut hmq::config::Config| {
        c.persistence.dir = Some(dir.clone());
    };
    // n1 alone holds the session and a queue (on disk), then stops while no peer is there.
    let n1 = node_with(1, port, all_peers(port, 2), durable).await;
    let (mut c, _) = Client::connect(n1.addr, &Opts::id("dev").persistent()).await;
    c.subscribe(&[("d/#", 1)]).await;
    c.disconnect().await;
    publish_n(&n1, "p", "d/x", "kept", 4).await;
    n1.stop().await;

    // Meanwhile the client reconnects to n2: a new session there.
    let n2 = node(2, port, all_peers(port, 2)).await;
    let (mut c, present) = Client::connect(n2.addr, &Opts::id("dev").persistent()).await;
    assert!(!present, "n1 is away: nothing to move");
    c.subscribe(&[("d/#", 1)]).await;

    // n1 returns with its disk: the session it held goes to n2, where the client is, with
    // what was queued in it; one session remains.
    let n1 = node_with(1, port, all_peers(port, 2), durable).await;
    let got = recv_n(&mut c, 4).await;
    assert_eq!(payloads(&got), expected("kept", 4));
    wait_until("n1 let go", || n1.broker.sessions.get("dev").is_none()).await;
    assert!(n2.broker.sessions.get("dev").is_some_and(|s| s.is_online()));
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
    for b in [n1, n2] {
        b.stop().await;
    }
}
