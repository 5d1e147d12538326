//! Fills a durable store with offline persistent sessions and queued messages, written with the
//! broker's own record encoding, so that the start-up time of a broker on a large store can be
//! measured (`bench/recovery`) without first connecting 100,000 clients.
//!
//! `cargo run --release --example fill_store -- DIR SESSIONS MESSAGES [PAYLOAD_BYTES]`
//!
//! Each session `fill-<n>` subscribes to `fill/<n>/#` at QoS 1 and has MESSAGES / SESSIONS
//! messages queued on `fill/<n>/t`, each stored once. The store is marked as cleanly closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use hmq::persist::backend::{Backend, Fjall, Op};
use hmq::persist::record::{
    self, Key, MessageRecord, Meta, QueueRecord, QueueState, SessionRecord,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fill_store DIR SESSIONS MESSAGES [PAYLOAD_BYTES]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let sessions: u64 = args[2].parse().expect("SESSIONS");
    let messages: u64 = args[3].parse().expect("MESSAGES");
    let payload_len: usize = args
        .get(4)
        .map_or(16, |s| s.parse().expect("PAYLOAD_BYTES"));
    assert!(sessions > 0);
    let started = Instant::now();
    let mut store = Fjall::open(&dir).expect("open the store");
    let mut batch: Vec<Op> = Vec::with_capacity(20_000);
    let flush = |batch: &mut Vec<Op>, store: &mut Fjall| {
        store.apply(batch, false).expect("write");
        batch.clear();
    };
    batch.push((
        Key::Meta.encode(),
        Some(record::encode(&Meta {
            format: record::FORMAT,
            clean: true,
        })),
    ));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for n in 0..sessions {
        let sid = n + 1;
        let record = SessionRecord {
            client_id: format!("fill-{n}"),
            subscriptions: vec![(format!("fill/{n}/#"), 1)],
            username: None,
            ip: Some("127.0.0.1".into()),
            offline_since_ms: Some(now_ms),
            claim: 0,
        };
        batch.push((Key::Session(sid).encode(), Some(record::encode(&record))));
        if batch.len() >= 20_000 {
            flush(&mut batch, &mut store);
        }
    }
    let payload = Bytes::from(vec![b'x'; payload_len]);
    for m in 0..messages {
        let n = m % sessions;
        let sid = n + 1;
        let pid = m + 1;
        let msg = MessageRecord {
            topic: format!("fill/{n}/t"),
            payload: payload.clone(),
            qos: 1,
            retain: false,
            stamp: 0,
        };
        batch.push((Key::Message(pid).encode(), Some(record::encode(&msg))));
        let q = QueueRecord {
            message: pid,
            qos: 1,
            retain: false,
            state: QueueState::Queued,
        };
        batch.push((
            Key::Queue(sid, m / sessions + 1).encode(),
            Some(record::encode(&q)),
        ));
        if batch.len() >= 20_000 {
            flush(&mut batch, &mut store);
        }
    }
    flush(&mut batch, &mut store);
    store.sync().expect("sync");
    drop(store);
    println!(
        "filled {} with {sessions} sessions and {messages} messages of {payload_len} B in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}
