//! Codec micro-benchmarks: decoding inbound QoS 1 PUBLISH packets back-to-back from one read
//! buffer, and encoding the per-subscriber PUBLISH header of a 1,000-subscriber fan-out.
//!
//! Run one group with `cargo bench -p hmq-codec --bench codec -- decode`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmq_codec::{self as codec, Packet, QoS};

/// Packets per decode iteration (one read buffer holding this many PUBLISH frames).
const PACKETS: usize = 1_000;
/// Subscribers of one message in the fan-out encode benchmark.
const SUBSCRIBERS: usize = 1_000;
const TOPIC: &str = "devices/4242/telemetry";
const MAX_PACKET: usize = 1 << 20;

/// `PACKETS` QoS 1 PUBLISH frames with distinct packet ids, concatenated.
fn publish_stream(payload_len: usize) -> BytesMut {
    let payload = vec![0xA5u8; payload_len];
    let mut buf = BytesMut::with_capacity(
        PACKETS * codec::publish_size(TOPIC, QoS::AtLeastOnce, payload_len),
    );
    for i in 0..PACKETS {
        let pkid = (i % 65_535) as u16 + 1;
        codec::encode_publish_header(
            &mut buf,
            TOPIC,
            QoS::AtLeastOnce,
            pkid,
            false,
            false,
            payload_len,
        );
        buf.extend_from_slice(&payload);
    }
    buf
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode_publish_qos1");
    group.throughput(Throughput::Elements(PACKETS as u64));
    for (name, len) in [("16B", 16usize), ("4KiB", 4096)] {
        let stream = publish_stream(len);
        group.bench_function(name, |b| {
            // The buffer copy (what a socket read would have filled) is not timed.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut buf = stream.clone();
                    let start = Instant::now();
                    let mut n = 0usize;
                    while let Some(p) = codec::decode(&mut buf, MAX_PACKET).unwrap() {
                        if let Packet::Publish(p) = black_box(p) {
                            n += p.payload.len();
                        }
                    }
                    total += start.elapsed();
                    assert_eq!(n, PACKETS * len);
                }
                total
            });
        });
    }
    group.finish();
}

fn encode_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/encode_publish_fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    // One write buffer per subscriber, as each connection has its own write queue.
    let mut bufs: Vec<BytesMut> = (0..SUBSCRIBERS)
        .map(|_| BytesMut::with_capacity(8192))
        .collect();

    // Small payload: header plus a copy of the payload (what the write queue does below its
    // zero-copy threshold), with the size check the connection makes against its budget.
    let small = Bytes::from(vec![0x5Au8; 16]);
    group.bench_function("16B_header_and_copy", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for (i, buf) in bufs.iter_mut().enumerate() {
                buf.clear();
                total += codec::publish_size(TOPIC, QoS::AtLeastOnce, small.len());
                codec::encode_publish_header(
                    buf,
                    black_box(TOPIC),
                    QoS::AtLeastOnce,
                    i as u16 + 1,
                    false,
                    false,
                    small.len(),
                );
                buf.extend_from_slice(&small);
            }
            black_box(total)
        });
    });

    // Large payload: only the header is written; the payload is shared (a reference count bump).
    let large = Bytes::from(vec![0x5Au8; 4096]);
    group.bench_function("4KiB_header_and_shared_payload", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for (i, buf) in bufs.iter_mut().enumerate() {
                buf.clear();
                codec::encode_publish_header(
                    buf,
                    black_box(TOPIC),
                    QoS::AtLeastOnce,
                    i as u16 + 1,
                    false,
                    false,
                    large.len(),
                );
                let shared = black_box(large.clone());
                total += buf.len() + shared.len();
            }
            black_box(total)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = decode, encode_fanout
}
criterion_main!(benches);
