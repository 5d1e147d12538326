//! CONNECT handling, client ids, keepalive, takeover and wills, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn connect_and_ping() {
    let b = TestBroker::start().await;
    let (mut c, present) = Client::connect(b.addr, &Opts::id("a")).await;
    assert!(!present);
    c.send(&[0xC0, 0]).await;
    assert_eq!(c.recv().await, Pkt::PingResp);
    c.disconnect().await;
    b.stop().await;
}
