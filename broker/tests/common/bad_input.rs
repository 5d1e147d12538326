//! Support for the bad-input tests (`malformed.rs`, `limits.rs`): a bystander pair that must
//! never notice a misbehaving client, and a runner for lists of bad inputs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use crate::common::*;

/// A healthy subscriber/publisher pair living in the same broker as the bad clients.
pub struct Bystander {
    sub: Client,
    publ: Client,
    n: u32,
}

impl Bystander {
    pub async fn new(addr: SocketAddr) -> Bystander {
        let mut sub = Client::new(addr, "bystander-sub").await;
        assert_eq!(sub.subscribe(&[("by/t", 1)]).await, [1]);
        let publ = Client::new(addr, "bystander-pub").await;
        let mut by = Bystander { sub, publ, n: 0 };
        by.check().await;
        by
    }

    /// Publish → receive → acknowledge, and nothing else arrives.
    pub async fn check(&mut self) {
        self.n += 1;
        let payload = format!("alive {}", self.n);
        self.publ
            .publish("by/t", payload.as_bytes(), 1, false)
            .await;
        let m = self.sub.recv_publish().await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            ("by/t", payload.as_bytes(), 1),
            "bystander received something else"
        );
        self.sub.ack(&m).await;
        self.sub.send(&[0xC0, 0]).await;
        assert_eq!(self.sub.recv().await, Pkt::PingResp);
    }
}

/// A PINGREQ/PINGRESP round trip: everything sent before it has been handled.
pub async fn sync(c: &mut Client) {
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
}

/// One bad input.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

pub fn case(name: &'static str, bytes: Vec<u8>) -> Case {
    Case { name, bytes }
}

pub fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs each case on a fresh connection (after a valid CONNECT if `connect_first`): the broker
/// must answer exactly `expect` and close the connection, and the counter `metric` must move by
/// one. The bystander is checked after every case. All failing cases are reported together.
pub async fn run_cases(
    b: &TestBroker,
    by: &mut Bystander,
    connect_first: bool,
    cases: Vec<Case>,
    expect: Vec<Pkt>,
    metric: (&str, &str),
) {
    let mut failures = Vec::new();
    for (i, Case { name, bytes }) in cases.into_iter().enumerate() {
        let before = b.metric(metric.0, metric.1);
        let addr = b.addr;
        let want = expect.clone();
        let shown = format!("{bytes:02x?}");
        let outcome = tokio::spawn(async move {
            let mut c = if connect_first {
                Client::new(addr, &format!("bad-{i}")).await
            } else {
                Client::raw(addr).await
            };
            c.send(&bytes).await;
            let got = c.expect_closed().await;
            assert_eq!(got, want, "packets before the close");
        })
        .await;
        match outcome {
            Err(e) => failures.push(format!("{name} {shown}: {}", panic_text(e))),
            Ok(()) => {
                let moved = b.metric(metric.0, metric.1) - before;
                if moved != 1.0 {
                    failures.push(format!(
                        "{name}: {}{{{}}} moved by {moved}, expected 1",
                        metric.0, metric.1
                    ));
                }
            }
        }
        by.check().await;
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

pub const PROTOCOL_ERROR: (&str, &str) = ("hmq_disconnects_total", "reason=\"protocol_error\"");
pub const LIMIT_EXCEEDED: (&str, &str) = ("hmq_disconnects_total", "reason=\"limit_exceeded\"");
/// Any disconnect reason: the connection's end was counted (a panicking task would not be).
pub const ANY_DISCONNECT: (&str, &str) = ("hmq_disconnects_total", "");
pub const BAD_CONNECT: (&str, &str) = ("hmq_connects_refused_total", "reason=\"bad_connect\"");
