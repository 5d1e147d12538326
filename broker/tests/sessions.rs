//! Persistent sessions (clean session = 0) over real sockets: CONNACK session-present, stored
//! subscriptions, the bounded offline queue, redelivery of unacknowledged messages and inbound
//! QoS 2 state across reconnects, empty client ids. MQTT 3.1.1 sections 3.1.2.4, 3.1.3.1, 3.2.2.2,
//! 4.1 and 4.4.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn persistent(id: &str) -> Opts {
    Opts::id(id).persistent()
}

/// Sends DISCONNECT and waits until the broker has closed the connection, so the session is
/// offline (released) when this returns.
async fn disconnect(mut c: Client) {
    c.send(&[0xE0, 0]).await;
    let left = c.expect_closed().await;
    assert!(left.is_empty(), "packets after DISCONNECT: {left:?}");
}

/// Ends the TCP connection without DISCONNECT (a half-close, as a client that goes away) and waits
/// until the broker has closed its side, so the session is offline when this returns. Returns
/// what the broker sent in between.
async fn drop_connection(mut c: Client) -> Vec<Pkt> {
    c.stream.shutdown().await.unwrap();
    c.expect_closed().await
}

/// A PINGREQ/PINGRESP round trip: everything sent before it has been handled by the broker.
async fn sync(c: &mut Client) {
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
}

/// Reconnects with clean session 0 and asserts session present = 1.
async fn resume(b: &TestBroker, id: &str) -> Client {
    let (c, present) = Client::connect(b.addr, &persistent(id)).await;
    assert!(
        present,
        "{id}: CONNACK session present must be 1 [MQTT-3.2.2-2]"
    );
    c
}

fn body(m: &Msg) -> (&str, &[u8], u8) {
    (m.topic.as_str(), &m.payload[..], m.qos)
}

#[tokio::test]
async fn session_present_flag_follows_the_stored_session() {
    let b = TestBroker::start().await;

    let (mut c, present) = Client::connect(b.addr, &persistent("sp")).await;
    assert!(
        !present,
        "new persistent session: session present 0 [MQTT-3.2.2-3]"
    );
    assert_eq!(c.subscribe(&[("sp/t", 1)]).await, [1]);
    disconnect(c).await;

    let c = resume(&b, "sp").await;
    disconnect(c).await;

    // Clean session 1 with a stored session: present 0, and the stored session is discarded.
    let (c, present) = Client::connect(b.addr, &Opts::id("sp")).await;
    assert!(
        !present,
        "clean session 1: session present 0 [MQTT-3.2.2-1]"
    );
    disconnect(c).await;

    let (mut c, present) = Client::connect(b.addr, &persistent("sp")).await;
    assert!(
        !present,
        "the clean-session connection discarded the stored session [MQTT-3.1.2-6]"
    );
    let mut p = Client::new(b.addr, "sp-pub").await;
    let no_subscriber = b.metric("hmq_publish_dropped_total", "reason=\"no_subscriber\"");
    p.publish("sp/t", b"x", 1, false).await;
    c.expect_silence().await;
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"no_subscriber\"") - no_subscriber,
        1.0,
        "the old subscription must be gone"
    );
    b.stop().await;
}

#[tokio::test]
async fn clean_session_one_is_never_present_even_right_after_a_clean_session() {
    let b = TestBroker::start().await;
    let (mut c, present) = Client::connect(b.addr, &Opts::id("cs")).await;
    assert!(!present);
    assert_eq!(c.subscribe(&[("cs/t", 1)]).await, [1]);
    disconnect(c).await;
    // A clean session ends with its connection [MQTT-3.1.2-6]: nothing is stored.
    let (mut c, present) = Client::connect(b.addr, &persistent("cs")).await;
    assert!(!present, "a clean session must not be stored");
    let mut p = Client::new(b.addr, "cs-pub").await;
    p.publish("cs/t", b"x", 1, false).await;
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn subscriptions_survive_disconnect_and_qos1_qos2_are_queued_offline() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("sub")).await;
    assert_eq!(s.subscribe(&[("q/#", 2)]).await, [2]);
    disconnect(s).await;

    let mut p = Client::new(b.addr, "pub").await;
    let offline0 = b.metric("hmq_publish_dropped_total", "reason=\"offline_qos0\"");
    p.publish("q/1", b"one", 1, false).await;
    p.publish("q/2", b"two", 2, false).await;
    p.publish("q/0", b"zero", 0, false).await;
    p.publish("q/3", b"three", 1, false).await; // PUBACK: the QoS 0 before it was routed too
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"offline_qos0\"") - offline0,
        1.0,
        "QoS 0 for an offline session is dropped (and counted) by default"
    );

    // No SUBSCRIBE after reconnecting: the stored subscription delivers.
    let mut s = resume(&b, "sub").await;
    let got = [
        s.recv_publish().await,
        s.recv_publish().await,
        s.recv_publish().await,
    ];
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        [
            ("q/1", &b"one"[..], 1),
            ("q/2", &b"two"[..], 2),
            ("q/3", &b"three"[..], 1)
        ],
        "queued QoS 1/2 messages in publish order, QoS 0 not delivered"
    );
    for m in &got {
        assert!(!m.dup, "first transmission must have DUP=0: {m:?}");
        assert!(!m.retain, "live message must have RETAIN=0: {m:?}");
        assert_ne!(m.pkid, 0);
    }
    assert_ne!(got[0].pkid, got[1].pkid);
    assert_ne!(got[1].pkid, got[2].pkid);
    assert_ne!(got[0].pkid, got[2].pkid);
    for m in &got {
        s.ack(m).await;
    }
    s.expect_silence().await;

    // The restored subscription also serves live traffic.
    p.publish("q/live", b"live", 1, false).await;
    let m = s.recv_publish().await;
    assert_eq!(body(&m), ("q/live", &b"live"[..], 1));
    s.ack(&m).await;
    b.stop().await;
}

#[tokio::test]
async fn qos0_is_queued_offline_when_configured() {
    let b = TestBroker::start_with(|c| c.queue_qos0_offline = true).await;
    let (mut s, _) = Client::connect(b.addr, &persistent("sub0")).await;
    assert_eq!(s.subscribe(&[("z/#", 1)]).await, [1]);
    disconnect(s).await;

    let mut p = Client::new(b.addr, "pub0").await;
    let offline0 = b.metric("hmq_publish_dropped_total", "reason=\"offline_qos0\"");
    p.publish("z/a", b"a", 0, false).await;
    p.publish("z/b", b"b", 1, false).await;
    p.publish("z/c", b"c", 0, false).await;
    sync(&mut p).await;
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"offline_qos0\""),
        offline0
    );

    let mut s = resume(&b, "sub0").await;
    let got = [
        s.recv_publish().await,
        s.recv_publish().await,
        s.recv_publish().await,
    ];
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        [
            ("z/a", &b"a"[..], 0),
            ("z/b", &b"b"[..], 1),
            ("z/c", &b"c"[..], 0)
        ]
    );
    s.ack(&got[1]).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn offline_queue_is_bounded_and_overflow_is_counted() {
    let b = TestBroker::start_with(|c| c.max_queued_messages = 5).await;
    let (mut s, _) = Client::connect(b.addr, &persistent("bounded")).await;
    assert_eq!(s.subscribe(&[("bq", 1)]).await, [1]);
    disconnect(s).await;

    let full = b.metric("hmq_publish_dropped_total", "reason=\"queue_full\"");
    let mut p = Client::new(b.addr, "bq-pub").await;
    for i in 0..20 {
        p.publish("bq", format!("m{i}").as_bytes(), 1, false).await;
    }
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"queue_full\"") - full,
        15.0,
        "15 of 20 messages overflow a queue of 5"
    );

    // A full queue of QoS 1 messages drops the new message: the first five are kept.
    let mut s = resume(&b, "bounded").await;
    for i in 0..5 {
        let m = s.recv_publish().await;
        assert_eq!(body(&m), ("bq", format!("m{i}").as_bytes(), 1));
        s.ack(&m).await;
    }
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn full_offline_queue_evicts_the_oldest_qos0_first() {
    let b = TestBroker::start_with(|c| {
        c.max_queued_messages = 3;
        c.queue_qos0_offline = true;
    })
    .await;
    let (mut s, _) = Client::connect(b.addr, &persistent("evict")).await;
    assert_eq!(s.subscribe(&[("ev", 1)]).await, [1]);
    disconnect(s).await;

    let full = b.metric("hmq_publish_dropped_total", "reason=\"queue_full\"");
    let mut p = Client::new(b.addr, "ev-pub").await;
    p.publish("ev", b"a0", 0, false).await;
    p.publish("ev", b"b1", 1, false).await;
    p.publish("ev", b"c0", 0, false).await;
    p.publish("ev", b"d1", 1, false).await; // evicts a0
    p.publish("ev", b"e1", 1, false).await; // evicts c0
    p.publish("ev", b"f1", 1, false).await; // no QoS 0 left: dropped
    assert_eq!(
        b.metric("hmq_publish_dropped_total", "reason=\"queue_full\"") - full,
        3.0
    );

    let mut s = resume(&b, "evict").await;
    for want in ["b1", "d1", "e1"] {
        let m = s.recv_publish().await;
        assert_eq!(body(&m), ("ev", want.as_bytes(), 1));
        s.ack(&m).await;
    }
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup_and_same_ids_before_new_messages() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("r1")).await;
    assert_eq!(s.subscribe(&[("r/#", 1)]).await, [1]);
    let mut p = Client::new(b.addr, "r1-pub").await;
    for (t, m) in [("r/1", "m1"), ("r/2", "m2"), ("r/3", "m3")] {
        p.publish(t, m.as_bytes(), 1, false).await;
    }
    let m1 = s.recv_publish().await;
    let m2 = s.recv_publish().await;
    let m3 = s.recv_publish().await;
    assert_eq!(
        [&m1, &m2, &m3].map(|m| (&m.payload[..], m.dup)),
        [
            (&b"m1"[..], false),
            (&b"m2"[..], false),
            (&b"m3"[..], false)
        ]
    );
    // Acknowledge only the middle one, then vanish without DISCONNECT.
    s.send(&ack_bytes(0x40, m2.pkid)).await;
    sync(&mut s).await;
    assert_eq!(drop_connection(s).await, Vec::<Pkt>::new());

    p.publish("r/4", b"m4", 1, false).await; // while offline

    let mut s = resume(&b, "r1").await;
    let r1 = s.recv_publish().await;
    let r3 = s.recv_publish().await;
    let r4 = s.recv_publish().await;
    // [MQTT-4.4.0-1]: resent with their original packet ids, DUP=1 [MQTT-3.3.1-1], first.
    assert_eq!(
        r1,
        Msg {
            dup: true,
            ..m1.clone()
        }
    );
    assert_eq!(
        r3,
        Msg {
            dup: true,
            ..m3.clone()
        }
    );
    assert_eq!(body(&r4), ("r/4", &b"m4"[..], 1));
    assert!(!r4.dup, "a message sent for the first time has DUP=0");
    assert!(
        r4.pkid != m1.pkid && r4.pkid != m3.pkid && r4.pkid != 0,
        "a new message must not reuse an id still in flight: {} vs {}/{}",
        r4.pkid,
        m1.pkid,
        m3.pkid
    );
    for m in [&r1, &r3, &r4] {
        s.ack(m).await;
    }
    s.expect_silence().await;
    disconnect(s).await;

    // Everything acknowledged: nothing is resent next time.
    let mut s = resume(&b, "r1").await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn qos2_past_pubrec_gets_pubrel_resent_on_reconnect() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("r2")).await;
    assert_eq!(s.subscribe(&[("r2/#", 2)]).await, [2]);
    let mut p = Client::new(b.addr, "r2-pub").await;
    p.publish("r2/a", b"a", 2, false).await;
    p.publish("r2/b", b"b", 2, false).await;
    let ma = s.recv_publish().await;
    let mb = s.recv_publish().await;
    assert_eq!((ma.qos, mb.qos), (2, 2));
    // Message a: PUBREC sent, PUBREL received, PUBCOMP never sent. Message b: nothing sent.
    s.send(&ack_bytes(0x50, ma.pkid)).await;
    assert_eq!(s.recv().await, Pkt::PubRel(ma.pkid));
    sync(&mut s).await;
    assert_eq!(drop_connection(s).await, Vec::<Pkt>::new());

    let mut s = resume(&b, "r2").await;
    // [MQTT-4.4.0-1]: unacknowledged PUBLISH and PUBREL packets are resent, in order.
    assert_eq!(
        s.recv().await,
        Pkt::PubRel(ma.pkid),
        "PUBREL resent for a message past PUBREC"
    );
    assert_eq!(
        s.recv_publish().await,
        Msg {
            dup: true,
            ..mb.clone()
        }
    );
    s.send(&ack_bytes(0x70, ma.pkid)).await;
    s.ack(&mb).await;
    sync(&mut s).await;
    s.expect_silence().await;
    disconnect(s).await;

    let mut s = resume(&b, "r2").await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn inbound_qos2_state_survives_reconnect() {
    let b = TestBroker::start().await;
    let mut watcher = Client::new(b.addr, "in-watch").await;
    assert_eq!(watcher.subscribe(&[("in/#", 2)]).await, [2]);

    let (mut p, _) = Client::connect(b.addr, &persistent("in-pub")).await;
    p.send(&publish_bytes("in/x", b"once", 2, false, false, 5))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(5));
    let m = watcher.recv_publish().await;
    assert_eq!(body(&m), ("in/x", &b"once"[..], 2));
    watcher.ack(&m).await;
    assert_eq!(drop_connection(p).await, Vec::<Pkt>::new()); // no PUBREL

    let mut p = resume(&b, "in-pub").await;
    // The client retransmits the PUBLISH it never saw completed [MQTT-4.4.0-1].
    p.send(&publish_bytes("in/x", b"once", 2, false, true, 5))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(5));
    // Exactly once [MQTT-4.3.3-2]: the retransmission is not delivered again.
    watcher.expect_silence().await;
    p.send(&ack_bytes(0x62, 5)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(5));
    watcher.expect_silence().await;

    // After PUBREL the id is free: a new message with it is a new message.
    p.send(&publish_bytes("in/x", b"again", 2, false, false, 5))
        .await;
    assert_eq!(p.recv().await, Pkt::PubRec(5));
    let m = watcher.recv_publish().await;
    assert_eq!(body(&m), ("in/x", &b"again"[..], 2));
    watcher.ack(&m).await;
    p.send(&ack_bytes(0x62, 5)).await;
    assert_eq!(p.recv().await, Pkt::PubComp(5));
    b.stop().await;
}

#[tokio::test]
async fn empty_client_ids_with_clean_session_get_separate_sessions() {
    let b = TestBroker::start().await;
    let (mut a, present_a) = Client::connect(b.addr, &Opts::default()).await;
    let (mut c, present_c) = Client::connect(b.addr, &Opts::default()).await;
    assert!(!present_a && !present_c);
    // Neither kicked the other out: both still answer and subscribe.
    assert_eq!(a.subscribe(&[("e/a", 1)]).await, [1]);
    assert_eq!(c.subscribe(&[("e/c", 1)]).await, [1]);
    let (mut d, _) = Client::connect(b.addr, &Opts::default()).await;
    sync(&mut d).await;

    let mut p = Client::new(b.addr, "e-pub").await;
    p.publish("e/a", b"for a", 1, false).await;
    p.publish("e/c", b"for c", 1, false).await;
    let ma = a.recv_publish().await;
    assert_eq!(body(&ma), ("e/a", &b"for a"[..], 1));
    a.ack(&ma).await;
    let mc = c.recv_publish().await;
    assert_eq!(body(&mc), ("e/c", &b"for c"[..], 1));
    c.ack(&mc).await;
    a.expect_silence().await;
    c.expect_silence().await;
    sync(&mut a).await;
    sync(&mut c).await;
    sync(&mut d).await;
    b.stop().await;
}

#[tokio::test]
async fn empty_client_id_with_persistent_session_is_rejected() {
    let b = TestBroker::start().await;
    let refused = b.metric(
        "hmq_connects_refused_total",
        "reason=\"identifier_rejected\"",
    );
    let (mut c, ack) = Client::connect_opts(b.addr, &Opts::default().persistent()).await;
    // [MQTT-3.1.3-8]: CONNACK 0x02, then close.
    assert_eq!(
        ack,
        Pkt::ConnAck {
            session_present: false,
            code: 2
        }
    );
    assert_eq!(c.expect_closed().await, Vec::<Pkt>::new());
    assert_eq!(
        b.metric(
            "hmq_connects_refused_total",
            "reason=\"identifier_rejected\""
        ) - refused,
        1.0
    );
    b.stop().await;
}

/// The expiry sweep runs every 30 s, too slowly for a test; this drives the same expiry the
/// sweep calls (`Broker::expire_sessions`) with a 1-second expiry.
#[tokio::test]
async fn offline_session_expires_after_session_expiry() {
    let b = TestBroker::start_with(|c| c.session_expiry = 1).await;
    let (mut s, _) = Client::connect(b.addr, &persistent("exp")).await;
    assert_eq!(s.subscribe(&[("exp/t", 1)]).await, [1]);
    disconnect(s).await;
    // An online persistent session never expires.
    let (mut online, _) = Client::connect(b.addr, &persistent("exp-online")).await;
    assert_eq!(online.subscribe(&[("exp/t", 1)]).await, [1]);

    // The broker releases the session when it sees the close; wait for that.
    for _ in 0..500 {
        if b.broker.sessions.counts() == (1, 1) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        b.broker.sessions.counts(),
        (1, 1),
        "one online, one offline"
    );
    let now = std::time::Instant::now();
    assert_eq!(
        b.broker.expire_sessions_at(now),
        0,
        "offline for less than 1 s"
    );
    assert_eq!(
        b.broker.expire_sessions_at(now + Duration::from_secs(2)),
        1,
        "only the offline session expires"
    );

    let mut p = Client::new(b.addr, "exp-pub").await;
    p.publish("exp/t", b"x", 1, false).await;
    let m = online.recv_publish().await;
    assert_eq!(body(&m), ("exp/t", &b"x"[..], 1));
    online.ack(&m).await;

    let (mut s, present) = Client::connect(b.addr, &persistent("exp")).await;
    assert!(!present, "an expired session is gone");
    s.expect_silence().await; // and so is its subscription (and the message for it)
    p.publish("exp/t", b"y", 1, false).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn stored_subscription_keeps_its_granted_qos_and_unsubscribe_is_stored_too() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("gq")).await;
    assert_eq!(s.subscribe(&[("gq/one", 1), ("gq/gone", 2)]).await, [1, 2]);
    s.unsubscribe(&["gq/gone"]).await;
    disconnect(s).await;

    let mut p = Client::new(b.addr, "gq-pub").await;
    p.publish("gq/gone", b"unsubscribed", 2, false).await;
    p.publish("gq/one", b"downgraded", 2, false).await;

    let mut s = resume(&b, "gq").await;
    let m = s.recv_publish().await;
    // Delivered at min(published QoS 2, granted QoS 1) [MQTT-3.8.4-6].
    assert_eq!(body(&m), ("gq/one", &b"downgraded"[..], 1));
    s.ack(&m).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn clean_session_discards_queued_and_inflight_messages() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("dq")).await;
    assert_eq!(s.subscribe(&[("dq", 1)]).await, [1]);
    let mut p = Client::new(b.addr, "dq-pub").await;
    p.publish("dq", b"inflight", 1, false).await;
    let m = s.recv_publish().await;
    assert_eq!(body(&m), ("dq", &b"inflight"[..], 1));
    assert_eq!(drop_connection(s).await, Vec::<Pkt>::new()); // never acknowledged
    p.publish("dq", b"queued", 1, false).await;

    let (mut s, present) = Client::connect(b.addr, &Opts::id("dq")).await;
    assert!(!present);
    s.expect_silence().await;
    disconnect(s).await;
    let (mut s, present) = Client::connect(b.addr, &persistent("dq")).await;
    assert!(!present);
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn takeover_of_a_persistent_session_resumes_it_on_the_new_connection() {
    let b = TestBroker::start().await;
    let (mut old, _) = Client::connect(b.addr, &persistent("tk")).await;
    assert_eq!(old.subscribe(&[("tk", 1)]).await, [1]);
    let mut p = Client::new(b.addr, "tk-pub").await;
    p.publish("tk", b"m1", 1, false).await;
    let m1 = old.recv_publish().await;
    assert!(!m1.dup);

    // Same client id while the first connection is open: the old one is closed [MQTT-3.1.4-2]
    // and the new one gets its session, with the unacknowledged message resent.
    let (mut new, present) = Client::connect(b.addr, &persistent("tk")).await;
    assert!(present, "a taken-over persistent session is present");
    assert_eq!(old.expect_closed().await, Vec::<Pkt>::new());
    assert_eq!(
        new.recv_publish().await,
        Msg {
            dup: true,
            ..m1.clone()
        }
    );
    new.ack(&m1).await;
    p.publish("tk", b"m2", 1, false).await;
    let m2 = new.recv_publish().await;
    assert_eq!(body(&m2), ("tk", &b"m2"[..], 1));
    new.ack(&m2).await;
    new.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn messages_behind_a_full_inflight_window_stay_queued_across_reconnect() {
    let b = TestBroker::start_with(|c| c.max_inflight = 1).await;
    let (mut s, _) = Client::connect(b.addr, &persistent("win")).await;
    assert_eq!(s.subscribe(&[("win", 1)]).await, [1]);
    let mut p = Client::new(b.addr, "win-pub").await;
    for m in ["m1", "m2", "m3"] {
        p.publish("win", m.as_bytes(), 1, false).await;
    }
    // Window of one: only m1 is sent while it is unacknowledged.
    let m1 = s.recv_publish().await;
    assert_eq!(body(&m1), ("win", &b"m1"[..], 1));
    s.expect_silence().await;
    assert_eq!(drop_connection(s).await, Vec::<Pkt>::new());
    p.publish("win", b"m4", 1, false).await;

    let mut s = resume(&b, "win").await;
    let r1 = s.recv_publish().await;
    assert_eq!(
        r1,
        Msg {
            dup: true,
            ..m1.clone()
        }
    );
    s.expect_silence().await; // the window is still full
    s.ack(&r1).await;
    for want in ["m2", "m3", "m4"] {
        let m = s.recv_publish().await;
        assert_eq!(body(&m), ("win", want.as_bytes(), 1));
        assert!(!m.dup, "{want} was never sent before: DUP=0");
        s.expect_silence().await;
        s.ack(&m).await;
    }
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn persistent_session_survives_a_protocol_error_close() {
    let b = TestBroker::start().await;
    let (mut s, _) = Client::connect(b.addr, &persistent("perr")).await;
    assert_eq!(s.subscribe(&[("perr", 1)]).await, [1]);
    s.send(&[0x00, 0x00]).await; // reserved packet type
    assert_eq!(s.expect_closed().await, Vec::<Pkt>::new());

    let mut p = Client::new(b.addr, "perr-pub").await;
    p.publish("perr", b"kept", 1, false).await;
    let mut s = resume(&b, "perr").await;
    let m = s.recv_publish().await;
    assert_eq!(body(&m), ("perr", &b"kept"[..], 1));
    s.ack(&m).await;
    b.stop().await;
}
