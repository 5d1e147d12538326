//! ACL micro-benchmarks: per-message checks (`can_publish`, `can_receive`), SUBSCRIBE
//! classification and `for_client` (once per connection), with the seed's example rules and with
//! 1,000-rule files, one mostly per-user (where `for_client` leaves each client a handful of rules)
//! and one where every rule applies to every client (the cost that pre-filtering avoids).
//!
//! Run one group with `cargo bench -p hmq-model --bench acl -- seed`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hmq_model::acl::{Acl, Identity, SubscribeCheck};

/// The example rules of the seed's "ACL Config" section.
const SEED_RULES: &str = "\
allow      ip          127.0.0.1   2     $SYS/#
allow      clientid    0001        3     #
allow      username    admin       3     #
allow      username    joy         3     /test,hello/world
allow      clientid    *           1     toCloud/%c
allow      username    *           1     toCloud/%u
deny       clientid    *           3     #
";

/// Rules in the large files.
const RULES: usize = 1_000;

/// 996 per-user rules, then the seed's catch-all rules: each client keeps about five.
fn per_user_rules() -> String {
    let mut text = String::new();
    for i in 0..RULES - 4 {
        writeln!(
            text,
            "allow username user{i} 3 users/user{i}/#,shared/{i}/+"
        )
        .unwrap();
    }
    text.push_str("allow clientid * 1 toCloud/%c\n");
    text.push_str("allow username * 1 toCloud/%u\n");
    text.push_str("allow ip 10.0.0.0/8 2 metrics/#\n");
    text.push_str("deny clientid * 3 #\n");
    text
}

/// 999 rules that select every client, then a deny: nothing for `for_client` to leave out.
fn all_apply_rules() -> String {
    let mut text = String::new();
    for i in 0..RULES - 1 {
        writeln!(text, "allow clientid * 3 t/{i}/#").unwrap();
    }
    text.push_str("deny clientid * 3 #\n");
    text
}

fn ordinary() -> Identity<'static> {
    Identity {
        client_id: "sensor-17",
        username: Some("user500"),
        ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    }
}

fn seed(c: &mut Criterion) {
    let acl = Acl::parse(SEED_RULES, "seed.acl").unwrap();
    let who = ordinary();
    let client = acl.for_client(&who);
    assert!(client.can_publish("toCloud/sensor-17"));
    assert!(!client.can_publish("devices/sensor-17/cmd"));
    assert!(!client.can_receive("toCloud/sensor-17"));
    assert_eq!(client.subscribe("toCloud/+"), SubscribeCheck::Deny);
    let admin = acl.for_client(&Identity {
        client_id: "ops",
        username: Some("admin"),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    });
    assert_eq!(admin.subscribe("$SYS/#"), SubscribeCheck::Allow);

    let mut group = c.benchmark_group("acl/seed");
    group.bench_function("can_publish_own_topic", |b| {
        b.iter(|| client.can_publish(black_box("toCloud/sensor-17")))
    });
    group.bench_function("can_publish_denied", |b| {
        b.iter(|| client.can_publish(black_box("devices/sensor-17/cmd")))
    });
    group.bench_function("can_receive_denied", |b| {
        b.iter(|| client.can_receive(black_box("toCloud/sensor-17")))
    });
    group.bench_function("subscribe_classify", |b| {
        b.iter(|| client.subscribe(black_box("toCloud/+")))
    });
    group.bench_function("subscribe_classify_admin_sys", |b| {
        b.iter(|| admin.subscribe(black_box("$SYS/#")))
    });
    group.bench_function("for_client", |b| b.iter(|| acl.for_client(black_box(&who))));
    group.finish();
}

fn large(c: &mut Criterion) {
    let text = per_user_rules();
    let acl = Acl::parse(&text, "per-user.acl").unwrap();
    assert_eq!(acl.len(), RULES);
    let who = ordinary();
    let client = acl.for_client(&who);
    assert!(client.can_publish("users/user500/data"));
    assert!(client.can_publish("toCloud/user500"));
    assert!(!client.can_publish("users/user501/data"));
    assert!(client.can_receive("shared/500/x"));
    assert_eq!(client.subscribe("users/user500/#"), SubscribeCheck::Allow);

    let mut group = c.benchmark_group("acl/per_user_1k");
    group.bench_function("can_publish_own_topic", |b| {
        b.iter(|| client.can_publish(black_box("users/user500/data")))
    });
    group.bench_function("can_publish_denied", |b| {
        b.iter(|| client.can_publish(black_box("users/user501/data")))
    });
    group.bench_function("can_receive_allowed", |b| {
        b.iter(|| client.can_receive(black_box("shared/500/x")))
    });
    group.bench_function("for_client", |b| b.iter(|| acl.for_client(black_box(&who))));
    group.bench_function("parse", |b| {
        b.iter(|| Acl::parse(black_box(&text), "per-user.acl").unwrap())
    });
    group.finish();

    let acl = Acl::parse(&all_apply_rules(), "all-apply.acl").unwrap();
    let client = acl.for_client(&who);
    assert!(client.can_publish("t/998/x"));
    assert!(!client.can_publish("u/1"));
    let mut group = c.benchmark_group("acl/all_apply_1k");
    group.bench_function("can_publish_last_rule", |b| {
        b.iter(|| client.can_publish(black_box("t/998/x")))
    });
    group.bench_function("can_publish_denied", |b| {
        b.iter(|| client.can_publish(black_box("u/1")))
    });
    group.bench_function("for_client", |b| b.iter(|| acl.for_client(black_box(&who))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = seed, large
}
criterion_main!(benches);
