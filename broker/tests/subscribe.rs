//! SUBSCRIBE and UNSUBSCRIBE over real sockets: filter validation, wildcard matching, overlapping
//! subscriptions, re-subscription, retained messages, shared subscriptions and the subscription
//! limit (MQTT 3.1.1 sections 3.3.1.3, 3.8 to 3.11, 4.7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::{BTreeSet, HashSet};

const RETAINED_REFUSED: &str = "hmq_retained_refused_total";

/// A clean-session client subscribed to `filters`, asserting every requested QoS is granted.
async fn subscriber(b: &TestBroker, id: &str, filters: &[(&str, u8)]) -> Client {
    let mut c = Client::new(b.addr, id).await;
    let granted = c.subscribe(filters).await;
    let wanted: Vec<u8> = filters.iter().map(|f| f.1).collect();
    assert_eq!(granted, wanted, "SUBACK for {filters:?}");
    c
}

/// Receives `n` PUBLISH packets, acknowledges them, and returns them.
async fn recv_n(c: &mut Client, n: usize) -> Vec<Msg> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.recv_publish().await);
    }
    // Acknowledged after all have arrived: a QoS 2 ack waits for PUBREL, which would otherwise
    // queue behind the next PUBLISH.
    for m in &out {
        c.ack(m).await;
    }
    out
}

fn topics(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter().map(|m| m.topic.clone()).collect()
}

#[tokio::test]
async fn an_empty_filter_closes_the_connection() {
    // [MQTT-4.7.3-1]: a zero-length filter is a protocol violation, in SUBSCRIBE and in
    // UNSUBSCRIBE alike; the other clients are not affected.
    let b = TestBroker::start().await;
    let mut bystander = Client::new(b.addr, "by").await;
    assert_eq!(bystander.subscribe(&[("ok", 0)]).await, [0]);
    let mut c = Client::new(b.addr, "empty-sub").await;
    c.send(&subscribe_bytes(1, &[("a", 1), ("", 1)])).await;
    let before_close = c.expect_closed().await;
    assert!(before_close.is_empty(), "no SUBACK: {before_close:?}");
    let mut c = Client::new(b.addr, "empty-unsub").await;
    c.send(&unsubscribe_bytes(2, &[""])).await;
    assert!(c.expect_closed().await.is_empty());
    let mut p = Client::new(b.addr, "p").await;
    p.publish("ok", b"still", 0, false).await;
    assert_eq!(&bystander.recv_publish().await.payload[..], b"still");
    b.stop().await;
}

#[tokio::test]
async fn invalid_filters_are_refused_one_by_one_and_valid_ones_granted() {
    let b = TestBroker::start().await;
    let mut c = Client::new(b.addr, "c").await;
    let codes = c
        .subscribe(&[
            ("a/#/b", 1), // `#` not last [MQTT-4.7.1-2]
            ("v/+", 1),
            ("a+", 0), // `+` sharing a level [MQTT-4.7.1-3]
            ("v/#", 2),
            ("#a", 1),
            ("solo", 0),
            ("a/b+", 2),
            ("+a/b", 1),
            ("a/#/", 1),
            ("$share/g", 1),    // shared without a filter
            ("$share//t", 1),   // shared with an empty group
            ("$share/g+/t", 1), // wildcard in the group
        ])
        .await;
    assert_eq!(
        codes,
        [
            0x80, 1, 0x80, 2, 0x80, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80
        ]
    );

    // Granted QoS equals requested QoS, for each QoS.
    assert_eq!(
        c.subscribe(&[("g/0", 0), ("g/1", 1), ("g/2", 2)]).await,
        [0, 1, 2]
    );

    // The granted filters are live; the refused ones are not.
    let mut p = Client::new(b.addr, "p").await;
    p.publish("solo", b"1", 2, false).await;
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.qos), ("solo", 0));
    p.publish("g/1", b"2", 2, false).await;
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.qos), ("g/1", 1));
    c.ack(&m).await;
    p.publish("a/x/b", b"3", 0, false).await; // would match a refused `a/#/b`-like reading
    p.publish("v/x", b"4", 1, false).await;
    let m = c.recv_publish().await;
    assert_eq!(
        (m.topic.as_str(), m.qos),
        ("v/x", 1),
        "v/+ (1) and v/# (2) overlap"
    );
    c.ack(&m).await;
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn topic_length_and_depth_limits_apply_to_filters_and_names() {
    let b = TestBroker::start_with(|c| {
        c.max_topic_levels = 3;
        c.max_topic_length = 16;
    })
    .await;
    let mut c = Client::new(b.addr, "c").await;
    let codes = c
        .subscribe(&[
            ("a/b/c", 1),
            ("a/b/c/d", 1),           // 4 levels
            ("a/b/#", 1),             // 3 levels
            ("a/+/+/#", 1),           // 4 levels
            ("0123456789abcdef", 1),  // 16 bytes
            ("0123456789abcdefg", 1), // 17 bytes
        ])
        .await;
    assert_eq!(codes, [1, 0x80, 1, 0x80, 1, 0x80]);
    for topic in ["a/b/c/d", "0123456789abcdefg"] {
        let mut p = Client::new(b.addr, "p").await;
        p.send(&publish_bytes(topic, b"x", 1, false, false, 1))
            .await;
        let seen = p.expect_closed().await;
        assert!(seen.is_empty(), "PUBLISH to {topic:?}: {seen:?}");
    }
    let mut p = Client::new(b.addr, "p").await;
    p.publish("a/b/c", b"ok", 1, false).await;
    let m = c.recv_publish().await;
    assert_eq!(m.topic, "a/b/c");
    c.ack(&m).await;
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_subscribe_and_unsubscribe_close_the_connection() {
    let b = TestBroker::start().await;
    let mut bystander = subscriber(&b, "bystander", &[("t", 0)]).await;
    let mut qos3 = subscribe_bytes(1, &[("t", 0)]);
    *qos3.last_mut().unwrap() = 3;
    let mut reserved = subscribe_bytes(1, &[("t", 0)]);
    *reserved.last_mut().unwrap() = 0x41;
    let mut bad_flags = subscribe_bytes(1, &[("t", 0)]);
    bad_flags[0] = 0x80;
    let mut bad_unsub_flags = unsubscribe_bytes(1, &["t"]);
    bad_unsub_flags[0] = 0xA0;
    let bad_utf8 = [0, 1, 0, 2, 0xC3, 0x28, 0];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("requested QoS 3 [MQTT-3.8.3-4]", qos3),
        ("reserved bits in the QoS byte [MQTT-3.8.3-4]", reserved),
        ("SUBSCRIBE header flags 0000 [MQTT-3.8.1-1]", bad_flags),
        (
            "SUBSCRIBE without filters [MQTT-3.8.3-3]",
            subscribe_bytes(1, &[]),
        ),
        (
            "SUBSCRIBE packet id 0 [MQTT-2.3.1-1]",
            subscribe_bytes(0, &[("t", 0)]),
        ),
        (
            "UNSUBSCRIBE header flags 0000 [MQTT-3.10.1-1]",
            bad_unsub_flags,
        ),
        (
            "UNSUBSCRIBE without filters [MQTT-3.10.3-2]",
            unsubscribe_bytes(1, &[]),
        ),
        (
            "U+0000 in a SUBSCRIBE filter [MQTT-1.5.3-2]",
            subscribe_bytes(1, &[("a\0b", 0)]),
        ),
        (
            "invalid UTF-8 in a SUBSCRIBE filter [MQTT-1.5.3-1]",
            frame(0x82, &bad_utf8),
        ),
        (
            "invalid UTF-8 in an UNSUBSCRIBE filter [MQTT-1.5.3-1]",
            frame(0xA2, &bad_utf8[..6]),
        ),
        (
            "U+0000 in an UNSUBSCRIBE filter [MQTT-1.5.3-2]",
            unsubscribe_bytes(1, &["a\0b"]),
        ),
    ];
    for (i, (case, bytes)) in cases.iter().enumerate() {
        let mut c = Client::new(b.addr, &format!("bad{i}")).await;
        c.send(bytes).await;
        eprintln!("case: {case}"); // names the case if `expect_closed` fails
        let seen = c.expect_closed().await;
        assert!(
            seen.is_empty(),
            "{case}: expected a close only, got {seen:?}"
        );
    }
    let mut p = Client::new(b.addr, "p").await;
    p.publish("t", b"still here", 0, false).await;
    assert_eq!(&bystander.recv_publish().await.payload[..], b"still here");
    b.stop().await;
}

#[tokio::test]
async fn wildcards_match_levels_as_the_spec_says() {
    let b = TestBroker::start().await;
    let published = [
        "a", "a/b", "a/b/c", "a//c", "a/", "/a", "/", "b", "$d/a", "a/b/c/d", "A/b", "ü/ß",
    ];
    let table: [(&str, &[&str]); 19] = [
        ("+", &["a", "b"]),
        (
            "#",
            &[
                "a", "a/b", "a/b/c", "a//c", "a/", "/a", "/", "b", "a/b/c/d", "A/b", "ü/ß",
            ],
        ),
        ("a/#", &["a", "a/b", "a/b/c", "a//c", "a/", "a/b/c/d"]),
        ("a/+", &["a/b", "a/"]),
        ("+/+", &["a/b", "a/", "/a", "/", "A/b", "ü/ß"]),
        ("/+", &["/a", "/"]),
        ("/#", &["/a", "/"]),
        ("a/+/c", &["a/b/c", "a//c"]),
        ("+/b", &["a/b", "A/b"]),
        ("A/+", &["A/b"]),
        ("+/ß", &["ü/ß"]),
        ("+/+/+", &["a/b/c", "a//c"]),
        ("a/+/#", &["a/b", "a/b/c", "a//c", "a/", "a/b/c/d"]),
        ("a/", &["a/"]),
        ("a", &["a"]),
        ("a//c", &["a//c"]),
        ("+/a", &["/a"]),
        ("$d/+", &["$d/a"]),
        ("$d/#", &["$d/a"]),
    ];
    // One client per filter, also subscribed to "end": when "end" arrives, everything published
    // before it has arrived too.
    let mut readers = Vec::new();
    for (i, (filter, expected)) in table.iter().enumerate() {
        let mut c = subscriber(&b, &format!("w{i}"), &[(filter, 0), ("end", 0)]).await;
        let (filter, expected) = (filter.to_string(), expected.to_vec());
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let m = c.recv_publish().await;
                if m.topic == "end" {
                    break;
                }
                got.push(m.topic);
            }
            got.sort();
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "filter {filter:?}");
            c.expect_silence().await;
        }));
    }
    let mut p = Client::new(b.addr, "p").await;
    for t in published {
        p.publish(t, t.as_bytes(), 0, false).await;
    }
    p.publish("end", b"", 1, false).await;
    for r in readers {
        r.await.unwrap();
    }
    b.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_granted_qos() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("a/+", 0), ("a/b", 2), ("#", 1)]).await;
    let mut p = Client::new(b.addr, "p").await;
    for (topic, published, expected) in [
        ("a/b", 2, 2), // a/+ (0), a/b (2), # (1)
        ("a/c", 2, 1), // a/+ (0), # (1)
        ("z", 2, 1),   // # (1)
        ("a/b", 1, 1), // min(1, max granted 2)
        ("a/b", 0, 0),
    ] {
        p.publish(topic, b"x", published, false).await;
        let m = s.recv_publish().await;
        assert_eq!(
            (m.topic.as_str(), m.qos),
            (topic, expected),
            "published at {published}"
        );
        s.ack(&m).await;
    }
    s.expect_silence().await; // no duplicates
    b.stop().await;
}

#[tokio::test]
async fn resubscribing_replaces_the_qos_and_resends_retained_messages() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("r/t", b"kept", 2, true).await;
    let mut s = Client::new(b.addr, "s").await;
    for qos in [0u8, 2, 1] {
        assert_eq!(s.subscribe(&[("r/t", qos)]).await, [qos]);
        let m = s.recv_publish().await;
        assert!(m.retain, "retained message re-sent on re-subscribe: {m:?}");
        assert_eq!((&m.payload[..], m.qos), (&b"kept"[..], qos));
        s.ack(&m).await;
        s.expect_silence().await;
        // Live delivery at the new QoS, one copy: the subscription was replaced, not added.
        p.publish("r/t", b"live", 2, false).await;
        let m = s.recv_publish().await;
        assert_eq!(
            (&m.payload[..], m.qos, m.retain),
            (&b"live"[..], qos, false)
        );
        s.ack(&m).await;
        s.expect_silence().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_always_acknowledged() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("u/a", 1), ("u/b", 1), ("u/#", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;

    s.send(&unsubscribe_bytes(0x0A0B, &["u/a", "u/#"])).await;
    assert_eq!(s.recv().await, Pkt::UnsubAck(0x0A0B));
    // Filters the client is not subscribed to are still acknowledged [MQTT-3.10.4-4/5].
    s.send(&unsubscribe_bytes(0x0C0D, &["nope/#"])).await;
    assert_eq!(s.recv().await, Pkt::UnsubAck(0x0C0D));
    s.send(&unsubscribe_bytes(0x0E0F, &["u/a"])).await;
    assert_eq!(s.recv().await, Pkt::UnsubAck(0x0E0F));

    p.publish("u/a", b"gone", 1, false).await;
    p.publish("u/b", b"kept", 1, false).await;
    let m = s.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.qos), ("u/b", 1));
    s.ack(&m).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn subscriptions_end_with_a_clean_session_and_survive_a_persistent_one() {
    let b = TestBroker::start().await;
    let no_subscriber = "reason=\"no_subscriber\"";
    let s = subscriber(&b, "s", &[("gone/t", 1)]).await;
    let (mut ps, _) = Client::connect(b.addr, &Opts::id("ps").persistent()).await;
    assert_eq!(ps.subscribe(&[("kept/t", 1)]).await, [1]);
    s.disconnect().await;
    ps.disconnect().await;
    // Same client ids again; once CONNACK is back the previous connections have let go.
    let mut s = Client::new(b.addr, "s").await;
    let (mut ps, present) = Client::connect(b.addr, &Opts::id("ps").persistent()).await;
    assert!(present);

    let mut p = Client::new(b.addr, "p").await;
    let before = b.metric("hmq_publish_dropped_total", no_subscriber);
    p.publish("gone/t", b"x", 1, false).await;
    assert_eq!(
        b.metric("hmq_publish_dropped_total", no_subscriber) - before,
        1.0,
        "the clean session's subscription went with it"
    );
    p.publish("kept/t", b"y", 1, false).await;
    let m = ps.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.qos), ("kept/t", 1));
    ps.ack(&m).await;
    s.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn retained_keeps_the_latest_per_topic_and_empty_payload_deletes() {
    let b = TestBroker::start().await;
    let mut live = subscriber(&b, "live", &[("k/#", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("k/a", b"1", 0, true).await;
    p.publish("k/a", b"2", 0, true).await;
    p.publish("k/b", b"x", 0, true).await;
    p.publish("k/gone", b"soon deleted", 0, true).await;
    p.publish("k/gone", b"", 0, true).await;
    // [MQTT-3.3.1-10]: the empty retained PUBLISH still goes to current subscribers.
    let got = recv_n(&mut live, 5).await;
    let last = got.last().unwrap();
    assert_eq!(
        (last.topic.as_str(), last.payload.len(), last.retain),
        ("k/gone", 0, false)
    );

    let mut s = Client::new(b.addr, "s").await;
    assert_eq!(s.subscribe(&[("k/a", 1)]).await, [1]);
    let m = s.recv_publish().await;
    assert_eq!((&m.payload[..], m.retain), (&b"2"[..], true));
    s.expect_silence().await;
    assert_eq!(s.subscribe(&[("k/gone", 1)]).await, [1]);
    s.expect_silence().await; // deleted

    let mut w = Client::new(b.addr, "w").await;
    assert_eq!(w.subscribe(&[("k/+", 0)]).await, [0]);
    let got = recv_n(&mut w, 2).await;
    assert!(got.iter().all(|m| m.retain));
    let mut pairs: Vec<(String, Vec<u8>)> = got
        .iter()
        .map(|m| (m.topic.clone(), m.payload.to_vec()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [("k/a".into(), b"2".to_vec()), ("k/b".into(), b"x".to_vec())]
    );
    w.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_go_to_new_wildcard_subscriptions_with_retain_set() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    for t in ["h", "h/1/t", "h/2/t", "h/x", "/h", "other"] {
        p.publish(t, t.as_bytes(), 1, true).await;
    }
    for (filter, expected) in [
        ("h/+/t", &["h/1/t", "h/2/t"][..]),
        ("h/#", &["h", "h/1/t", "h/2/t", "h/x"]),
        ("+", &["h", "other"]),
        ("+/h", &["/h"]),
        ("#", &["h", "h/1/t", "h/2/t", "h/x", "/h", "other"]),
    ] {
        let mut c = Client::new(b.addr, "c").await;
        assert_eq!(c.subscribe(&[(filter, 0)]).await, [0]);
        let got = recv_n(&mut c, expected.len()).await;
        assert!(got.iter().all(|m| m.retain), "{filter}: {got:?}");
        assert!(got.iter().all(|m| m.payload[..] == *m.topic.as_bytes()));
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(topics(&got), want, "filter {filter}");
        c.expect_silence().await;
        c.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn retained_delivery_is_at_the_lower_of_retained_and_granted_qos() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    for q in 0..3u8 {
        p.publish(&format!("mq/{q}"), &[q], q, true).await;
    }
    for granted in 0..3u8 {
        let mut c = Client::new(b.addr, &format!("c{granted}")).await;
        assert_eq!(c.subscribe(&[("mq/+", granted)]).await, [granted]);
        let mut got = recv_n(&mut c, 3).await;
        got.sort_by_key(|m| m.payload[0]);
        for m in &got {
            let retained_qos = m.payload[0];
            assert_eq!(
                m.qos,
                retained_qos.min(granted),
                "retained at {retained_qos}, granted {granted}"
            );
            assert!(m.retain);
        }
        c.expect_silence().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn retained_qos1_and_qos2_are_tracked_and_redelivered_to_a_persistent_session() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("rt/1", b"one", 1, true).await;
    p.publish("rt/2", b"two", 2, true).await;

    let opts = Opts::id("x").persistent();
    let (mut x, present) = Client::connect(b.addr, &opts).await;
    assert!(!present);
    assert_eq!(x.subscribe(&[("rt/+", 2)]).await, [2]);
    let first = vec![x.recv_publish().await, x.recv_publish().await];
    let mut ids = HashSet::new();
    for m in &first {
        assert!(m.retain && !m.dup, "{m:?}");
        assert_ne!(m.pkid, 0, "retained QoS > 0 gets its own packet id: {m:?}");
        assert!(ids.insert(m.pkid), "packet ids unique in flight");
        let expected_qos = if m.topic == "rt/1" { 1 } else { 2 };
        assert_eq!(m.qos, expected_qos);
    }
    // Not acknowledged: the session still owes them.
    x.disconnect().await;

    let (mut x, present) = Client::connect(b.addr, &opts).await;
    assert!(present);
    let again = vec![x.recv_publish().await, x.recv_publish().await];
    for (before, after) in first.iter().zip(&again) {
        assert!(after.dup, "redelivery sets DUP [MQTT-4.4.0-1]: {after:?}");
        assert_eq!(
            (
                &after.topic,
                &after.payload,
                after.pkid,
                after.qos,
                after.retain
            ),
            (
                &before.topic,
                &before.payload,
                before.pkid,
                before.qos,
                before.retain
            ),
            "the same PUBLISH again"
        );
    }
    for m in &again {
        x.ack(m).await;
    }
    x.expect_silence().await;
    x.disconnect().await;

    // Acknowledged now: a resumed session gets nothing (no new SUBSCRIBE, no retained resend).
    let (mut x, present) = Client::connect(b.addr, &opts).await;
    assert!(present);
    x.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn retained_dollar_topics_are_not_returned_to_leading_wildcards() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("$foo/x", b"dollar", 1, true).await;
    p.publish("plain/x", b"plain", 1, true).await;

    for filter in ["#", "+/x", "+/#"] {
        let mut c = Client::new(b.addr, "c").await;
        assert_eq!(c.subscribe(&[(filter, 0)]).await, [0]);
        let m = c.recv_publish().await;
        assert_eq!(m.topic, "plain/x", "filter {filter}");
        c.expect_silence().await;
        c.disconnect().await;
    }
    let mut c = Client::new(b.addr, "c").await;
    assert_eq!(c.subscribe(&[("$foo/#", 0)]).await, [0]);
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.retain), ("$foo/x", true));
    c.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn max_retained_messages_refuses_new_topics_but_updates_existing_ones() {
    let b = TestBroker::start_with(|c| c.max_retained_messages = 2).await;
    let mut live = subscriber(&b, "live", &[("lim/#", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;
    let before = b.metric(RETAINED_REFUSED, "");
    // QoS 1: the PUBACK comes after the broker has handled the message.
    p.publish("lim/1", b"a", 1, true).await;
    p.publish("lim/2", b"b", 1, true).await;
    p.publish("lim/3", b"c", 1, true).await; // store full: not stored
    p.publish("lim/1", b"a2", 1, true).await; // an update is not a new topic
    assert_eq!(b.metric(RETAINED_REFUSED, "") - before, 1.0);
    // Refused for storage, still delivered live.
    let got = recv_n(&mut live, 4).await;
    assert_eq!(got[2].topic, "lim/3");

    let mut c = Client::new(b.addr, "c").await;
    assert_eq!(c.subscribe(&[("lim/#", 0)]).await, [0]);
    let mut pairs: Vec<(String, Vec<u8>)> = recv_n(&mut c, 2)
        .await
        .iter()
        .map(|m| (m.topic.clone(), m.payload.to_vec()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("lim/1".into(), b"a2".to_vec()),
            ("lim/2".into(), b"b".to_vec())
        ]
    );
    c.expect_silence().await;

    // Deleting one makes room again.
    p.publish("lim/2", b"", 1, true).await;
    p.publish("lim/3", b"c", 1, true).await;
    assert_eq!(b.metric(RETAINED_REFUSED, "") - before, 1.0);
    let mut d = Client::new(b.addr, "d").await;
    assert_eq!(d.subscribe(&[("lim/3", 0)]).await, [0]);
    assert_eq!(&d.recv_publish().await.payload[..], b"c");
    b.stop().await;
}

#[tokio::test]
async fn shared_subscriptions_deliver_to_one_member_per_group() {
    let b = TestBroker::start().await;
    let mut g = [
        subscriber(&b, "g1", &[("$share/g/s/t", 1)]).await,
        subscriber(&b, "g2", &[("$share/g/s/t", 1)]).await,
        subscriber(&b, "g3", &[("$share/g/s/t", 1)]).await,
    ];
    let mut h = subscriber(&b, "h1", &[("$share/h/s/+", 0)]).await;
    let mut plain = subscriber(&b, "plain", &[("s/t", 0)]).await;
    let mut p = Client::new(b.addr, "p").await;

    let mut counts = [0usize; 3];
    for i in 0..30u8 {
        p.publish("s/t", &[i], 1, false).await;
        // Exactly one member of g gets it: whichever does, the payload is this message's.
        let [g1, g2, g3] = &mut g;
        let (k, m) = tokio::select! {
            m = g1.recv_publish() => (0, m),
            m = g2.recv_publish() => (1, m),
            m = g3.recv_publish() => (2, m),
        };
        assert_eq!(
            (&m.payload[..], m.qos, m.topic.as_str()),
            (&[i][..], 1, "s/t")
        );
        g[k].ack(&m).await;
        counts[k] += 1;
        // The only member of h gets every message, and so does the plain subscriber.
        let m = h.recv_publish().await;
        assert_eq!((&m.payload[..], m.qos), (&[i][..], 0));
        assert_eq!(&plain.recv_publish().await.payload[..], &[i]);
    }
    for c in g.iter_mut().chain([&mut h, &mut plain]) {
        c.expect_silence().await; // nobody got a second copy
    }
    assert_eq!(counts.iter().sum::<usize>(), 30);
    assert!(
        counts.iter().all(|&n| n > 0),
        "every member of g gets some: {counts:?}"
    );
    b.stop().await;
}

#[tokio::test]
async fn shared_subscriptions_get_no_retained_messages() {
    let b = TestBroker::start().await;
    let mut p = Client::new(b.addr, "p").await;
    p.publish("sr/t", b"kept", 1, true).await;
    let mut shared = Client::new(b.addr, "shared").await;
    assert_eq!(shared.subscribe(&[("$share/g/sr/t", 1)]).await, [1]);
    shared.expect_silence().await;
    // Control: a plain subscription gets it, and the shared one gets live messages.
    let mut plain = Client::new(b.addr, "plain").await;
    assert_eq!(plain.subscribe(&[("sr/t", 1)]).await, [1]);
    assert!(plain.recv_publish().await.retain);
    p.publish("sr/t", b"live", 1, false).await;
    let m = shared.recv_publish().await;
    assert_eq!((&m.payload[..], m.retain), (&b"live"[..], false));
    b.stop().await;
}

#[tokio::test]
async fn a_shared_member_that_unsubscribes_stops_receiving() {
    let b = TestBroker::start().await;
    let mut leaver = subscriber(&b, "leaver", &[("$share/g/su/t", 0)]).await;
    let mut stayer = subscriber(&b, "stayer", &[("$share/g/su/t", 0)]).await;
    leaver.send(&unsubscribe_bytes(7, &["$share/g/su/t"])).await;
    assert_eq!(leaver.recv().await, Pkt::UnsubAck(7));
    let mut p = Client::new(b.addr, "p").await;
    for i in 0..10u8 {
        p.publish("su/t", &[i], 1, false).await;
    }
    for i in 0..10u8 {
        assert_eq!(&stayer.recv_publish().await.payload[..], &[i]);
    }
    leaver.expect_silence().await;
    stayer.expect_silence().await;
    b.stop().await;
}

#[tokio::test]
async fn subscription_limit_per_client() {
    let b = TestBroker::start_with(|c| c.max_subscriptions_per_client = 2).await;
    let mut c = Client::new(b.addr, "c").await;
    assert_eq!(c.subscribe(&[("l/a", 1), ("l/b", 1)]).await, [1, 1]);
    assert_eq!(
        c.subscribe(&[("l/c", 1)]).await,
        [0x80],
        "third distinct filter"
    );
    assert_eq!(
        c.subscribe(&[("l/a", 2)]).await,
        [2],
        "re-subscribing is not a new one"
    );
    assert_eq!(c.subscribe(&[("l/b", 0), ("l/d", 1)]).await, [0, 0x80]);

    let mut p = Client::new(b.addr, "p").await;
    p.publish("l/c", b"refused", 2, false).await;
    p.publish("l/a", b"granted", 2, false).await;
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.qos), ("l/a", 2));
    c.ack(&m).await;
    c.expect_silence().await;

    // The limit is per client, and unsubscribing frees a slot.
    let mut other = Client::new(b.addr, "other").await;
    assert_eq!(other.subscribe(&[("l/x", 0), ("l/y", 0)]).await, [0, 0]);
    c.unsubscribe(&["l/b"]).await;
    assert_eq!(c.subscribe(&[("l/c", 1)]).await, [1]);
    b.stop().await;
}
