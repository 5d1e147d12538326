//! Clusters of real brokers in one process: each node's cluster listener on its own loopback
//! address (127.0.0.1, .2, .3) and the same port, peers listed statically (or found through
//! DNS), clients on real sockets. Cross-node delivery at each QoS, wildcard routes,
//! unsubscribe, one route for many subscribers, takeover across nodes, retained messages
//! (live and synchronised when a node joins), shared groups across nodes, presence
//! notifications, a node stopped and restarted, a cut link healed without loss or duplicates,
//! and a node with the wrong secret refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cluster.rs"]
mod cluster_support;
mod common;
#[path = "common/tls.rs"]
mod tls_support;

use cluster_support::*;

use common::{Client, Opts, Pkt, QUIET, WAIT};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn cross_node_delivery_at_each_qos_once() {
    let (_, n1, n2, n3) = three_nodes().await;

    let mut s2 = Client::new(n2.addr, "s2").await;
    assert_eq!(s2.subscribe(&[("t/#", 2)]).await, [2]);
    let mut s3 = Client::new(n3.addr, "s3").await;
    assert_eq!(s3.subscribe(&[("t/+", 1), ("t/x", 0)]).await, [1, 0]);
    // n1 learns one route from n2 and two from n3.
    wait_routes(&n1, 3.0).await;

    let mut p = Client::new(n1.addr, "p").await;
    for qos in 0..=2u8 {
        p.publish("t/x", &[qos], qos, false).await;
        let got = recv_n(&mut s2, 1).await;
        assert_eq!((got[0].qos, &got[0].payload[..]), (qos, &[qos][..]));
        // Two matching filters on n3: one copy, at the highest granted QoS.
        let got = recv_n(&mut s3, 1).await;
        assert_eq!((got[0].qos, &got[0].payload[..]), (qos.min(1), &[qos][..]));
    }
    // The publisher's node has no local subscriber: nothing is counted as unrouted.
    assert_eq!(
        metric(&n1, "hmq_publish_dropped_total", "no_subscriber"),
        0.0
    );
    // Counted when the peer acknowledges.
    wait_until("6 acknowledged forwards", || {
        metric(&n1, "hmq_cluster_forwarded_total", "") == 6.0
    })
    .await;
    assert_eq!(metric(&n2, "hmq_cluster_received_total", ""), 3.0);
    assert_eq!(metric(&n3, "hmq_cluster_received_total", ""), 3.0);
    // Messages received from a peer are never forwarded again.
    assert_eq!(metric(&n2, "hmq_cluster_forwarded_total", ""), 0.0);
    assert_eq!(metric(&n3, "hmq_cluster_forwarded_total", ""), 0.0);
    // A subscriber on the publisher's own node and one elsewhere: one copy each.
    let mut s1 = Client::new(n1.addr, "s1").await;
    s1.subscribe(&[("t/#", 1)]).await;
    // n2 now knows n1's filter besides n3's two.
    wait_routes(&n2, 3.0).await;
    p.publish("t/y", b"both", 1, false).await;
    assert_eq!(recv_n(&mut s1, 1).await[0].payload, &b"both"[..]);
    assert_eq!(recv_n(&mut s2, 1).await[0].payload, &b"both"[..]);
    assert_eq!(recv_n(&mut s3, 1).await[0].payload, &b"both"[..]);
    for b in [n1, n2, n3] {
        b.stop().await;
    }
}

#[tokio::test]
async fn many_subscribers_are_one_route_and_unsubscribe_withdraws_it() {
    let port = free_port();
    let n1 = node(1, port, all_peers(port, 2)).await;
    let n2 = node(2, port, all_peers(port, 2)).await;
    wait_mesh(&[&n1, &n2]).await;

    let mut subs = Vec::new();
    for i in 0..3 {
        let mut c = Client::new(n2.addr, &format!("s{i}")).await;
        c.subscribe(&[("a/+/c", 1)]).await;
        subs.push(c);
    }
    wait_routes(&n1, 1.0).await;
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("a/b/c", b"m", 1, false).await;
    for c in &mut subs {
        assert_eq!(recv_n(c, 1).await[0].topic, "a/b/c");
    }
    wait_until("1 acknowledged forward", || {
        metric(&n1, "hmq_cluster_forwarded_total", "") == 1.0
    })
    .await;
    // Non-matching topics are not forwarded.
    p.publish("a/b/d", b"m", 1, false).await;
    p.publish("x", b"m", 0, false).await;
    assert_eq!(metric(&n1, "hmq_cluster_forwarded_total", ""), 1.0);

    // Two of three go: the route stays; the last goes: it is withdrawn.
    subs[0].unsubscribe(&["a/+/c"]).await;
    subs.remove(1).disconnect().await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(metric(&n1, "hmq_cluster_routes", ""), 1.0);
    subs[1].unsubscribe(&["a/+/c"]).await;
    wait_routes(&n1, 0.0).await;
    p.publish("a/b/c", b"gone", 1, false).await;
    for c in &mut subs {
        c.expect_silence().await;
    }
    assert_eq!(metric(&n1, "hmq_cluster_forwarded_total", ""), 1.0);
    assert_eq!(
        metric(&n1, "hmq_publish_dropped_total", "no_subscriber"),
        3.0
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn takeover_across_nodes_publishes_the_will_everywhere() {
    let (_, n1, n2, n3) = three_nodes().await;
    let mut watcher = Client::new(n3.addr, "watcher").await;
    watcher
        .subscribe(&[("will/#", 1), ("$SYS/broker/connection/clients/+", 0)])
        .await;
    wait_routes(&n1, 2.0).await;
    wait_routes(&n2, 2.0).await;

    let opts = Opts::id("device")
        .persistent()
        .will("will/device", b"gone", 1, false);
    let (mut first, present) = Client::connect(n1.addr, &opts).await;
    assert!(!present);
    first.subscribe(&[("cmd/device", 1)]).await;
    // The online notification from n1 reaches n3.
    let online = watcher.recv_publish().await;
    assert_eq!(online.topic, "$SYS/broker/connection/clients/device");
    assert!(
        std::str::from_utf8(&online.payload)
            .unwrap()
            .contains("\"online\":true")
    );
    wait_routes(&n2, 3.0).await;

    // The same client id on n2: n1 closes its connection (the will reaches n3) and hands the
    // session over: n2 resumes it, with its subscription.
    let (mut second, present) = Client::connect(n2.addr, &Opts::id("device").persistent()).await;
    assert!(present, "the session moved from n1");
    first.expect_closed().await;
    let mut topics = BTreeMap::new();
    for _ in 0..3 {
        let m = watcher.recv_publish().await;
        watcher.ack(&m).await;
        *topics.entry(m.topic.clone()).or_insert(0) += 1;
        if m.topic == "will/device" {
            assert_eq!(m.payload, &b"gone"[..]);
        }
    }
    // The will, n1's offline notification and n2's online notification.
    assert_eq!(topics["will/device"], 1);
    assert_eq!(topics["$SYS/broker/connection/clients/device"], 2);
    assert!(n1.broker.sessions.get("device").is_none());
    // The moved subscription works from either node, once per message.
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("cmd/device", b"on", 1, false).await;
    assert_eq!(recv_n(&mut second, 1).await[0].payload, &b"on"[..]);
    let mut p3 = Client::new(n3.addr, "p3").await;
    p3.publish("cmd/device", b"off", 1, false).await;
    assert_eq!(recv_n(&mut second, 1).await[0].payload, &b"off"[..]);
    for b in [n1, n2, n3] {
        b.stop().await;
    }
}

#[tokio::test]
async fn retained_messages_reach_every_node_live_and_when_joining() {
    let port = free_port();
    let n1 = node(1, port, all_peers(port, 3)).await;
    let n2 = node(2, port, all_peers(port, 3)).await;
    wait_mesh(&[&n1, &n2]).await;
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("state/a", b"A1", 1, true).await;
    p.publish("state/b", b"B1", 0, true).await;
    // Live: the retained message is stored on n2 although nobody there subscribed.
    wait_until("n2 stores the retained messages", || {
        n2.broker.retained.len() >= 2
    })
    .await;
    let mut s2 = Client::new(n2.addr, "s2").await;
    s2.subscribe(&[("state/+", 1)]).await;
    let mut got: Vec<_> = recv_n(&mut s2, 2)
        .await
        .into_iter()
        .map(|m| (m.topic, m.payload, m.retain))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "state/a".to_string(),
                bytes::Bytes::from_static(b"A1"),
                true
            ),
            (
                "state/b".to_string(),
                bytes::Bytes::from_static(b"B1"),
                true
            )
        ]
    );
    // A deletion is replicated too.
    p.publish("state/b", b"", 1, true).await;
    recv_n(&mut s2, 1).await;
    wait_until("the deletion reaches n2", || {
        let mut out = Vec::new();
        n2.broker.retained.matching("state/b", &mut out);
        out.is_empty()
    })
    .await;

    // A node that joins later gets the retained messages when its links come up.
    let n3 = node(3, port, all_peers(port, 3)).await;
    wait_mesh(&[&n1, &n2, &n3]).await;
    let mut s3 = Client::new(n3.addr, "s3").await;
    s3.subscribe(&[("state/#", 1)]).await;
    let got = recv_n(&mut s3, 1).await;
    assert_eq!(
        (got[0].topic.as_str(), &got[0].payload[..], got[0].retain),
        ("state/a", &b"A1"[..], true)
    );
    for b in [n1, n2, n3] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_shared_group_gets_each_message_once_across_nodes() {
    let (_, n1, n2, n3) = three_nodes().await;
    let mut members = Vec::new();
    for (b, id) in [(&n1, "m1"), (&n2, "m2a"), (&n2, "m2b"), (&n3, "m3")] {
        let mut c = Client::new(b.addr, id).await;
        c.subscribe(&[("$share/workers/jobs/+", 1)]).await;
        members.push(c);
    }
    // A plain subscriber on n3 too: it gets every message, independently of the group.
    let mut plain = Client::new(n3.addr, "plain").await;
    plain.subscribe(&[("jobs/#", 0)]).await;
    wait_routes(&n1, 3.0).await;
    wait_routes(&n2, 3.0).await;

    const N: usize = 60;
    let mut p = Client::new(n1.addr, "p").await;
    for i in 0..N {
        p.publish("jobs/x", format!("{i}").as_bytes(), 1, false)
            .await;
    }
    let mut seen = BTreeMap::new();
    let mut per_member = Vec::new();
    for c in &mut members {
        let mut n = 0;
        while let Some(pkt) = c.recv_within(Duration::from_millis(500)).await {
            let Pkt::Publish(m) = pkt else {
                panic!("unexpected {pkt:?}")
            };
            c.ack(&m).await;
            *seen.entry(m.payload.clone()).or_insert(0) += 1;
            n += 1;
        }
        per_member.push(n);
    }
    assert_eq!(
        seen.len(),
        N,
        "every message reached the group: {per_member:?}"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no message twice: {per_member:?}"
    );
    assert!(
        per_member.iter().all(|n| *n > 0),
        "every member got some: {per_member:?}"
    );
    assert_eq!(recv_n(&mut plain, N).await.len(), N);
    for b in [n1, n2, n3] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_stopped_node_restarts_and_delivery_resumes() {
    let (port, n1, n2, n3) = three_nodes().await;
    let mut s3 = Client::new(n3.addr, "s3").await;
    s3.subscribe(&[("k/#", 1)]).await;
    wait_routes(&n1, 1.0).await;

    n2.stop().await;
    wait_until("n1 sees n2 gone", || {
        metric(&n1, "hmq_cluster_peers", "state=\"linked\"") == 1.0
    })
    .await;
    // The rest of the cluster keeps working.
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("k/1", b"while n2 is down", 1, false).await;
    assert_eq!(
        recv_n(&mut s3, 1).await[0].payload,
        &b"while n2 is down"[..]
    );

    // n2 comes back under the same name and address, and is a full member again.
    let n2 = node(2, port, all_peers(port, 3)).await;
    wait_mesh(&[&n1, &n2, &n3]).await;
    let mut s2 = Client::new(n2.addr, "s2").await;
    s2.subscribe(&[("k/#", 1)]).await;
    wait_routes(&n1, 2.0).await;
    p.publish("k/2", b"after", 1, false).await;
    assert_eq!(recv_n(&mut s2, 1).await[0].payload, &b"after"[..]);
    assert_eq!(recv_n(&mut s3, 1).await[0].payload, &b"after"[..]);
    let mut p2 = Client::new(n2.addr, "p2").await;
    p2.publish("k/3", b"from n2", 1, false).await;
    assert_eq!(recv_n(&mut s3, 1).await[0].payload, &b"from n2"[..]);
    assert_eq!(recv_n(&mut s2, 1).await[0].payload, &b"from n2"[..]);
    for b in [n1, n2, n3] {
        b.stop().await;
    }
}

/// A TCP relay the test can cut: while `up` is false it refuses new connections and closes
/// the ones it carries; while `silent` is true it keeps them open but passes nothing (a network
/// that drops every packet).
async fn relay(target: SocketAddr, up: Arc<AtomicBool>) -> SocketAddr {
    relay_with(target, up, Arc::new(AtomicBool::new(false))).await
}

async fn relay_with(
    target: SocketAddr,
    up: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            if !up.load(Ordering::SeqCst) {
                continue;
            }
            let (up, silent) = (up.clone(), silent.clone());
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let pump = |silent: Arc<AtomicBool>| {
                    move |mut r: tokio::net::tcp::OwnedReadHalf,
                          mut w: tokio::net::tcp::OwnedWriteHalf| async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if silent.load(Ordering::SeqCst) {
                                continue; // swallowed
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let a = tokio::spawn(pump(silent.clone())(ir, ow));
                let b = tokio::spawn(pump(silent)(or, iw));
                while up.load(Ordering::SeqCst) && !a.is_finished() && !b.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Aborting the pumps drops (closes) both connections.
                a.abort();
                b.abort();
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_silent_link_is_noticed_by_the_heartbeat() {
    let port = free_port();
    let up = Arc::new(AtomicBool::new(true));
    let silent = Arc::new(AtomicBool::new(false));
    let relay_addr = relay_with(
        format!("{}:{port}", ip(2)).parse().unwrap(),
        up.clone(),
        silent.clone(),
    )
    .await;
    let n1 = node(1, port, vec![relay_addr.to_string()]).await;
    let n2 = node(2, port, vec![format!("{}:{port}", ip(1))]).await;
    wait_mesh(&[&n1, &n2]).await;
    let (mut sub, _) = Client::connect(n2.addr, &Opts::id("sub").persistent()).await;
    sub.subscribe(&[("h/#", 1)]).await;
    wait_routes(&n1, 1.0).await;

    // The relay swallows everything but keeps both connections open: only the heartbeat can
    // tell, within a few seconds.
    silent.store(true, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    wait_until("n1 notices the silent link", || {
        metric(&n1, "hmq_cluster_peers", "state=\"linked\"") == 0.0
    })
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(9),
        "noticed after {:?}",
        cut.elapsed()
    );
    let mut p = Client::new(n1.addr, "p").await;
    for i in 1..=5 {
        p.publish(&format!("h/{i}"), format!("{i}").as_bytes(), 1, false)
            .await;
    }
    // The network comes back: node 1 dials again and delivers what waited, once.
    silent.store(false, Ordering::SeqCst);
    let got = recv_n(&mut sub, 5).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(payloads, ["1", "2", "3", "4", "5"]);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn a_cut_link_heals_without_loss_or_duplicates() {
    let port = free_port();
    // n1 reaches n2 only through a relay the test cuts; n2 reaches n1 directly.
    let up = Arc::new(AtomicBool::new(true));
    let relay_addr = relay(format!("{}:{port}", ip(2)).parse().unwrap(), up.clone()).await;
    let n1 = node(1, port, vec![relay_addr.to_string()]).await;
    let n2 = node(2, port, vec![format!("{}:{port}", ip(1))]).await;
    wait_mesh(&[&n1, &n2]).await;
    let (mut sub, _) = Client::connect(n2.addr, &Opts::id("sub").persistent()).await;
    sub.subscribe(&[("q/#", 1)]).await;
    wait_routes(&n1, 1.0).await;
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("q/0", b"0", 1, false).await;
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, &b"0"[..]);

    // Cut: messages accepted from the publisher meanwhile wait in n1's outbox.
    up.store(false, Ordering::SeqCst);
    wait_until("n1's link to n2 is down", || {
        metric(&n1, "hmq_cluster_peers", "state=\"linked\"") == 0.0
    })
    .await;
    for i in 1..=20 {
        p.publish(&format!("q/{i}"), format!("{i}").as_bytes(), 1, false)
            .await;
    }
    sub.expect_silence().await;
    assert_eq!(metric(&n1, "hmq_cluster_queued_messages", ""), 20.0);

    // Heal: every message arrives once, in order.
    up.store(true, Ordering::SeqCst);
    let got = recv_n(&mut sub, 20).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (1..=20).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    wait_until("the outbox is acknowledged", || {
        metric(&n1, "hmq_cluster_queued_messages", "") == 0.0
    })
    .await;
    assert_eq!(metric(&n1, "hmq_cluster_dropped_total", ""), 0.0);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn a_node_without_the_secret_is_refused() {
    let port = free_port();
    let n1 = node(1, port, vec![]).await;
    let intruder = node_with(2, port, all_peers(port, 2), |c| {
        c.cluster.secret = Some("not-the-secret".into());
    })
    .await;
    wait_until("the refusal is counted", || {
        metric(&n1, "hmq_cluster_links_refused_total", "reason=\"auth\"") >= 1.0
    })
    .await;
    let mut s = Client::new(intruder.addr, "s").await;
    s.subscribe(&[("#", 0)]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metric(&n1, "hmq_cluster_routes", ""), 0.0);
    assert_eq!(metric(&n1, "hmq_cluster_peers", "state=\"known\""), 0.0);
    assert!(
        metric(
            &intruder,
            "hmq_cluster_links_refused_total",
            "reason=\"auth\""
        ) >= 1.0
    );
    // The intruder's SUBSCRIBE did not make n1 forward anything.
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("secret/topic", b"x", 0, false).await;
    s.expect_silence().await;
    n1.stop().await;
    intruder.stop().await;
}

#[tokio::test]
async fn peers_found_through_dns_and_raw_garbage_is_refused() {
    let port = free_port();
    // "localhost" resolves to 127.0.0.1 (n1) for n2; n1 lists n2 statically.
    let n1 = node(1, port, vec![format!("{}:{port}", ip(2))]).await;
    let n2 = node_with(2, port, vec![], |c| c.router = Some("localhost".into())).await;
    wait_mesh(&[&n1, &n2]).await;
    let mut s = Client::new(n1.addr, "s").await;
    s.subscribe(&[("d", 0)]).await;
    wait_routes(&n2, 1.0).await;
    let mut p = Client::new(n2.addr, "p").await;
    p.publish("d", b"via dns", 0, false).await;
    assert_eq!(recv_n(&mut s, 1).await[0].payload, &b"via dns"[..]);

    // Garbage on the cluster port: that connection is closed and counted, nothing else breaks.
    let before = metric(
        &n1,
        "hmq_cluster_links_refused_total",
        "reason=\"handshake\"",
    );
    let mut raw = TcpStream::connect(format!("{}:{port}", ip(1)))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"\x00\x00\x00\x05GET /")
        .await
        .unwrap();
    wait_until("garbage refused", || {
        metric(
            &n1,
            "hmq_cluster_links_refused_total",
            "reason=\"handshake\"",
        ) > before
    })
    .await;
    // Before authentication a frame may be 4 KiB at most: announcing 1 MiB closes the
    // connection at once, before anything is buffered.
    let before = metric(
        &n1,
        "hmq_cluster_links_refused_total",
        "reason=\"handshake\"",
    );
    let mut big = TcpStream::connect(format!("{}:{port}", ip(1)))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut big, &[0, 0x10, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut big, &mut buf))
        .await
        .expect("the node closes a connection announcing a 1 MiB handshake frame");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    wait_until("the oversized frame is counted", || {
        metric(
            &n1,
            "hmq_cluster_links_refused_total",
            "reason=\"handshake\"",
        ) > before
    })
    .await;
    p.publish("d", b"still", 0, false).await;
    assert_eq!(recv_n(&mut s, 1).await[0].payload, &b"still"[..]);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_reachable_peers_only() {
    let port = free_port();
    // A peer that never answers does not hold readiness beyond the first attempt.
    let n1 = node(1, port, vec![format!("{}:{}", ip(9), free_port())]).await;
    tokio::time::timeout(WAIT, async {
        while !n1.broker.cluster_synced() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ready although the peer is down");
    n1.stop().await;
}

#[tokio::test]
async fn mutual_tls_links_admit_only_the_cluster_ca() {
    let pki = tls_support::Pki::new();
    let port = free_port();
    let with_cert = |n: u8, foreign: bool| {
        let (cert, key) = pki.node_files(&format!("node-{n}"), foreign);
        let ca = pki.ca_file();
        move |c: &mut hmq::config::Config| {
            c.cluster.tls = true;
            c.tls_info.cert_file = Some(cert);
            c.tls_info.key_file = Some(key);
            c.tls_info.ca_file = Some(ca);
        }
    };
    let n1 = node_with(1, port, all_peers(port, 2), with_cert(1, false)).await;
    let n2 = node_with(2, port, all_peers(port, 2), with_cert(2, false)).await;
    wait_mesh(&[&n1, &n2]).await;
    let mut s = Client::new(n2.addr, "s").await;
    s.subscribe(&[("m/#", 2)]).await;
    wait_routes(&n1, 1.0).await;
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("m/1", b"over mTLS", 2, false).await;
    assert_eq!(recv_n(&mut s, 1).await[0].payload, &b"over mTLS"[..]);

    // A node with the right secret but a certificate from another CA is refused by TLS.
    let n3 = node_with(3, port, all_peers(port, 3), with_cert(3, true)).await;
    wait_until("n1 refuses n3's certificate", || {
        metric(&n1, "hmq_cluster_links_refused_total", "reason=\"tls\"") >= 1.0
    })
    .await;
    assert_eq!(metric(&n1, "hmq_cluster_peers", "state=\"known\""), 1.0);
    // A plain TCP peer (no TLS) is refused as well.
    let before = metric(&n2, "hmq_cluster_links_refused_total", "reason=\"tls\"");
    let plain = node(4, port, all_peers(port, 2)).await;
    wait_until("n2 refuses a peer without TLS", || {
        metric(&n2, "hmq_cluster_links_refused_total", "reason=\"tls\"") > before
    })
    .await;
    assert_eq!(metric(&n2, "hmq_cluster_peers", "state=\"known\""), 1.0);
    for b in [n1, n2, n3, plain] {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_renewed_link_certificate_is_used_without_a_restart() {
    let pki = tls_support::Pki::new();
    let port = free_port();
    let with_cert = |n: u8, foreign: bool| {
        let (cert, key) = pki.node_files(&format!("node-{n}"), foreign);
        let ca = pki.ca_file();
        move |c: &mut hmq::config::Config| {
            c.cluster.tls = true;
            c.tls_info.cert_file = Some(cert);
            c.tls_info.key_file = Some(key);
            c.tls_info.ca_file = Some(ca);
        }
    };
    let n1 = node_with(1, port, all_peers(port, 2), with_cert(1, false)).await;
    // n2 starts with a certificate of another CA: n1 refuses it.
    let n2 = node_with(2, port, all_peers(port, 2), with_cert(2, true)).await;
    wait_until("n1 refuses n2's certificate", || {
        metric(&n1, "hmq_cluster_links_refused_total", "reason=\"tls\"") >= 1.0
    })
    .await;
    assert_eq!(metric(&n1, "hmq_cluster_peers", "state=\"linked\""), 0.0);
    // The certificate is renewed in place (as cert-manager rewrites a mounted Secret): the
    // running n2 picks it up and links, with no restart.
    pki.node_files("node-2", false);
    wait_mesh(&[&n1, &n2]).await;
    let mut s = Client::new(n2.addr, "s").await;
    s.subscribe(&[("r/#", 1)]).await;
    wait_routes(&n1, 1.0).await;
    let mut p = Client::new(n1.addr, "p").await;
    p.publish("r/1", b"renewed", 1, false).await;
    assert_eq!(recv_n(&mut s, 1).await[0].payload, &b"renewed"[..]);
    n1.stop().await;
    n2.stop().await;
}
