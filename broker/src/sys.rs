//! What the broker publishes itself under `$SYS`: the online/offline notification of every
//! client (hmq's `$SYS/broker/connection/clients/<clientID>`) and periodic statistics in
//! Mosquitto's naming (`$SYS/broker/clients/connected`, `$SYS/broker/messages/received`, ...).
//!
//! These go through the router like any message, so the ACL's delivery checks apply to them:
//! a client sees `$SYS` only if the rules let it subscribe there.

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::broker::Broker;
use crate::codec::QoS;
use crate::message::Message;
use crate::topic::validate_name;

/// Topic prefix of the presence notifications.
pub const PRESENCE_PREFIX: &str = "$SYS/broker/connection/clients/";

/// The notification payload, exactly hmq's documented format:
/// `{"clientID":"client001","online":true,"timestamp":"2018-10-25T09:32:32Z"}` (RFC 3339, UTC,
/// seconds). The client id is JSON-escaped; nothing else about the client (no password, no will)
/// is included.
pub fn presence_payload(client_id: &str, online: bool, at: SystemTime) -> String {
    let id = serde_json::Value::String(client_id.to_owned());
    format!(
        "{{\"clientID\":{id},\"online\":{online},\"timestamp\":\"{}\"}}",
        humantime::format_rfc3339_seconds(at)
    )
}

/// Publishes `client_id`'s online or offline notification (QoS 0, not retained). A client id
/// that cannot be part of a topic name (it contains `+` or `#`) gets none.
pub fn publish_presence(broker: &Broker, client_id: &str, online: bool) {
    let topic = format!("{PRESENCE_PREFIX}{client_id}");
    if validate_name(&topic, &broker.settings.topics).is_err() {
        debug!(
            client_id,
            "no presence notification: the client id cannot be in a topic"
        );
        return;
    }
    let payload = presence_payload(client_id, online, SystemTime::now());
    broker.publish_notification(&Message::new(
        topic,
        Bytes::from(payload),
        QoS::AtMostOnce,
        false,
    ));
}

/// The statistics published every `sysInterval`, as (topic, value).
pub fn statistics(broker: &Broker, started: Instant) -> Vec<(&'static str, String)> {
    let m = &broker.metrics;
    let (online, offline) = broker.sessions.counts();
    let sum = |c: &[prometheus::IntCounter; 3]| c.iter().map(|c| c.get()).sum::<u64>();
    let dropped = &m.dropped;
    let dropped_total = dropped.queue_full.get()
        + dropped.no_subscriber.get()
        + dropped.offline_qos0.get()
        + dropped.sys_topic.get()
        + dropped.acl.get();
    vec![
        (
            "$SYS/broker/version",
            format!("hmq {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", started.elapsed().as_secs()),
        ),
        ("$SYS/broker/clients/connected", online.to_string()),
        ("$SYS/broker/clients/disconnected", offline.to_string()),
        ("$SYS/broker/clients/total", (online + offline).to_string()),
        (
            "$SYS/broker/messages/received",
            sum(&m.received).to_string(),
        ),
        ("$SYS/broker/messages/sent", sum(&m.sent).to_string()),
        (
            "$SYS/broker/publish/messages/dropped",
            dropped_total.to_string(),
        ),
        ("$SYS/broker/bytes/received", m.bytes_in.get().to_string()),
        ("$SYS/broker/bytes/sent", m.bytes_out.get().to_string()),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.len().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained.len().to_string(),
        ),
    ]
}

/// Publishes the statistics (retained, QoS 0) every `interval` until shutdown.
pub async fn publish_statistics(
    broker: Arc<Broker>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (topic, value) in statistics(&broker, started) {
            broker.publish_internal(&Message::new(
                topic.to_owned(),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_hmqs_format_and_escapes_the_id() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_540_459_952);
        assert_eq!(
            presence_payload("client001", true, at),
            r#"{"clientID":"client001","online":true,"timestamp":"2018-10-25T09:32:32Z"}"#
        );
        let odd = presence_payload("a\"b\\c", false, at);
        let v: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(v["clientID"], "a\"b\\c");
        assert_eq!(v["online"], false);
    }
}
