//! The cost of a Prometheus scrape: `Broker::render_metrics` (the scrape-time gauges computed
//! from the sessions, then the text encoding of every family, process metrics included) on an
//! empty broker and on one with 100,000 sessions, half of them offline with a message queued,
//! each with one subscription. The issue asks that scraping stays cheap with 100k connections:
//! the one pass over the sessions is what grows with them.
//!
//! Run with `cargo bench -p hmq --bench metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hmq::broker::Broker;
use hmq::codec::QoS;
use hmq::config::Config;
use hmq::message::Message;
use hmq::session::Owner;
use hmq::topic::{TopicLimits, parse_subscription};

/// Sessions in the large broker.
const SESSIONS: u64 = 100_000;

/// A broker with `n` sessions created without sockets, as a connection would: opened
/// (persistent), subscribed to `devices/<i>/cmd` at QoS 1; every other one released (offline),
/// then sent one QoS 1 message, which is queued for it.
fn broker_with_sessions(n: u64) -> Broker {
    let broker = Broker::new(&Config::default(), None, None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for i in 0..n {
            let client_id = format!("client-{i}");
            let owner = Owner::new(i);
            let mut opened = broker
                .sessions
                .open(
                    client_id.into(),
                    false,
                    owner.clone(),
                    Duration::from_secs(1),
                )
                .await
                .unwrap();
            let filter = format!("devices/{i}/cmd");
            let sub = parse_subscription(&filter, &TopicLimits::default()).unwrap();
            broker.subscribe(&opened.session, &sub, QoS::AtLeastOnce, false);
            opened.core.subscriptions.insert(filter, QoS::AtLeastOnce);
            if i % 2 == 1 {
                assert!(
                    broker
                        .sessions
                        .release(&opened.session, opened.core, &owner)
                        .is_none()
                );
            }
        }
    });
    for i in (1..n).step_by(2) {
        let msg = Message::new(
            format!("devices/{i}/cmd"),
            Bytes::from_static(b"on"),
            QoS::AtLeastOnce,
            false,
        );
        assert_eq!(broker.publish(&msg).delivered, 1);
    }
    broker
}

/// The value of `series` (a name, with its labels if it has any) in a rendered scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in the scrape"))
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics/render");

    let empty = Broker::new(&Config::default(), None, None);
    group.bench_function("empty_broker", |b| {
        b.iter(|| black_box(empty.render_metrics()))
    });

    let broker = broker_with_sessions(SESSIONS);
    let text = broker.render_metrics();
    // `online` is the number of open connections (none here, there are no sockets), so every
    // session counts as offline; the pass over the sessions is the same either way.
    assert_eq!(
        sample(&text, "hmq_sessions{state=\"offline\"}"),
        SESSIONS as f64
    );
    assert_eq!(sample(&text, "hmq_subscriptions"), SESSIONS as f64);
    assert_eq!(sample(&text, "hmq_queued_messages"), (SESSIONS / 2) as f64);
    eprintln!(
        "metrics/render/100k_sessions: the scrape is {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    group.bench_function("100k_sessions", |b| {
        b.iter(|| black_box(broker.render_metrics()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = render
}
criterion_main!(benches);
