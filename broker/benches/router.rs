//! Router micro-benchmarks with 100,000 subscriptions: routing a topic through the sharded trie
//! (exact filters only, and a mix with wildcards), a 10,000-subscriber fan-out, subscribe and
//! unsubscribe, and for comparison the reference matcher `topic::matches` scanning every filter.
//!
//! Run one group with `cargo bench -p hmq --bench router -- exact`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmq::codec::QoS;
use hmq::router::Router;
use hmq::session::Session;
use hmq::topic::{TopicLimits, matches, parse_subscription};

/// Subscriptions in the large routers.
const SUBSCRIPTIONS: u64 = 100_000;
/// Wildcard filters in the mixed router (the rest are exact).
const WILDCARDS: u64 = 10_000;
/// Filters that are just `#` among the wildcards.
const HASHES: u64 = 10;
/// Subscribers of the one topic in the fan-out benchmark.
const FANOUT: u64 = 10_000;
/// The broker's shard count (`broker.rs`).
const SHARDS: usize = 64;

fn session(id: u64) -> Arc<Session> {
    Arc::new(Session::new(id, format!("client-{id}").into(), false))
}

fn subscribe(router: &Router, s: &Arc<Session>, filter: &str) {
    let sub = parse_subscription(filter, &TopicLimits::default()).unwrap();
    assert!(router.subscribe(s, &sub, QoS::AtLeastOnce, false));
}

/// Routes `topic`, counting deliveries; the callback does nothing else.
fn route_count(router: &Router, topic: &str) -> usize {
    let mut n = 0usize;
    router.route(topic, |s, qos, check| {
        black_box((s, qos, check));
        n += 1;
    });
    n
}

fn exact_filter(i: u64) -> String {
    format!("devices/{i}/telemetry")
}

/// The `w`-th wildcard filter of the mixed router: a few `#`, then alternately
/// `devices/+/alerts/<j>` (500 distinct, about 10 subscribers each) and `site/<k>/#` (1,000
/// distinct, about 5 subscribers each).
fn wildcard_filter(w: u64) -> String {
    if w < HASHES {
        "#".to_string()
    } else if w % 2 == 0 {
        format!("devices/+/alerts/{}", w % 1000)
    } else {
        format!("site/{}/#", w % 2000)
    }
}

/// 100,000 sessions, each subscribed to its own `devices/<i>/telemetry`.
fn exact_router() -> Router {
    let router = Router::new(SHARDS);
    for i in 0..SUBSCRIPTIONS {
        subscribe(&router, &session(i), &exact_filter(i));
    }
    router
}

/// 90,000 sessions on exact filters plus 10,000 sessions on one wildcard filter each.
fn mixed_router() -> Router {
    let router = Router::new(SHARDS);
    let exact = SUBSCRIPTIONS - WILDCARDS;
    for i in 0..exact {
        subscribe(&router, &session(i), &exact_filter(i));
    }
    for w in 0..WILDCARDS {
        subscribe(&router, &session(exact + w), &wildcard_filter(w));
    }
    router
}

fn exact(c: &mut Criterion) {
    let router = exact_router();
    assert_eq!(router.len(), SUBSCRIPTIONS as usize);
    let hit = "devices/54321/telemetry";
    let miss = "devices/54321/status";
    assert_eq!(route_count(&router, hit), 1);
    assert_eq!(route_count(&router, miss), 0);

    let mut group = c.benchmark_group("router/exact_100k");
    group.bench_function("route_one_match", |b| {
        b.iter(|| route_count(&router, black_box(hit)))
    });
    group.bench_function("route_no_match", |b| {
        b.iter(|| route_count(&router, black_box(miss)))
    });
    // Subscribe a new session and remove it again: one insert and one remove in a 100k trie.
    let extra = session(SUBSCRIPTIONS + 1);
    let filter = exact_filter(SUBSCRIPTIONS + 1);
    let sub = parse_subscription(&filter, &TopicLimits::default()).unwrap();
    group.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            router.subscribe(&extra, &sub, QoS::AtLeastOnce, false);
            router.unsubscribe(extra.id(), &sub)
        })
    });
    group.finish();

    // The reference matcher over every filter: what routing would cost without the trie.
    let filters: Vec<String> = (0..SUBSCRIPTIONS).map(exact_filter).collect();
    let mut group = c.benchmark_group("router/reference_matches");
    group.bench_function("one_call", |b| {
        b.iter(|| {
            matches(
                black_box("devices/+/alerts/#"),
                black_box("devices/7/alerts/x/y"),
            )
        })
    });
    // About 4 ms per call: fewer samples keep the group short.
    group.sample_size(10);
    group.bench_function("scan_100k_exact", |b| {
        b.iter(|| {
            filters
                .iter()
                .filter(|f| matches(f, black_box(hit)))
                .count()
        })
    });
    group.finish();
}

fn wildcard(c: &mut Criterion) {
    let router = mixed_router();
    assert_eq!(router.len(), SUBSCRIPTIONS as usize);
    // (name, topic): what each topic matches is printed once below.
    let topics = [
        ("exact_plus_hash", "devices/77/telemetry"),
        ("alerts_plus_hash", "devices/77/alerts/4"),
        ("site_plus_hash", "site/41/floor/3/temp"),
        ("dollar_sys", "$SYS/broker/load"),
    ];
    let mut group = c.benchmark_group("router/wildcard_100k");
    for (name, topic) in topics {
        let n = route_count(&router, topic);
        eprintln!("router/wildcard_100k/{name}: {topic:?} -> {n} deliveries");
        group.throughput(Throughput::Elements(n.max(1) as u64));
        group.bench_with_input(BenchmarkId::new("route", name), topic, |b, t| {
            b.iter(|| route_count(&router, black_box(t)))
        });
    }
    let extra = session(SUBSCRIPTIONS + 1);
    let sub = parse_subscription("devices/+/alerts/999999", &TopicLimits::default()).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("subscribe_unsubscribe_wildcard", |b| {
        b.iter(|| {
            router.subscribe(&extra, &sub, QoS::AtLeastOnce, false);
            router.unsubscribe(extra.id(), &sub)
        })
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let router = Router::new(SHARDS);
    for i in 0..FANOUT {
        subscribe(&router, &session(i), "news/all");
    }
    let mut group = c.benchmark_group("router/fanout_10k");
    group.throughput(Throughput::Elements(FANOUT));
    group.bench_function("one_filter", |b| {
        b.iter(|| route_count(&router, black_box("news/all")))
    });
    // One more subscriber on `#` (a monitoring client): two filter nodes match, so the router
    // merges overlapping subscriptions per session instead of streaming one node's entries.
    subscribe(&router, &session(FANOUT), "#");
    assert_eq!(route_count(&router, "news/all"), FANOUT as usize + 1);
    group.bench_function("plus_one_hash_subscriber", |b| {
        b.iter(|| route_count(&router, black_box("news/all")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = exact, wildcard, fanout
}
criterion_main!(benches);
