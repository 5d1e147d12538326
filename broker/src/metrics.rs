//! The broker's Prometheus metrics, on a registry owned by the broker (never the global one), so
//! several brokers in one process (tests) do not share counters.
//!
//! Label values are fixed sets (listener kind, QoS, reason): no per-client labels. Hot-path
//! counters are resolved to their labelled child once, here, so counting a message is one atomic
//! add.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Why a PUBLISH was not delivered to one of its subscribers (or to anyone).
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The subscriber's queue was full.
    pub queue_full: IntCounter,
    /// Nobody subscribed to the topic.
    pub no_subscriber: IntCounter,
    /// QoS 0 for an offline session (not queued by configuration).
    pub offline_qos0: IntCounter,
    /// A client tried to publish to a `$SYS` topic.
    pub sys_topic: IntCounter,
    /// The ACL denied the publisher.
    pub acl: IntCounter,
}

/// ACL denials by action.
#[derive(Debug, Clone)]
pub struct AclDenied {
    /// PUBLISH (and wills) refused.
    pub publish: IntCounter,
    /// SUBSCRIBE filters refused (SUBACK 0x80).
    pub subscribe: IntCounter,
    /// Messages not delivered through a subscription that straddles allowed and denied topics.
    pub receive: IntCounter,
}

/// All broker metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry to scrape.
    pub registry: Registry,
    /// Open client connections by listener (`tcp`, `tls`, `ws`, `wss`).
    pub connections_current: IntGaugeVec,
    /// Accepted client connections by listener.
    pub connections_total: IntCounterVec,
    /// Connections refused before or at CONNECT, by reason.
    pub connects_refused: IntCounterVec,
    /// Closed client connections by reason.
    pub disconnects: IntCounterVec,
    /// PUBLISH packets received from clients, by QoS.
    pub received: [IntCounter; 3],
    /// PUBLISH packets sent to clients, by QoS.
    pub sent: [IntCounter; 3],
    /// Bytes read from client sockets.
    pub bytes_in: IntCounter,
    /// Bytes written to client sockets.
    pub bytes_out: IntCounter,
    /// Undelivered messages by reason.
    pub dropped: Dropped,
    /// Retained messages not stored because `maxRetainedMessages` was reached.
    pub retained_refused: IntCounter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// ACL denials.
    pub acl_denied: AclDenied,
    /// Reloads of the ACL and password files by file (`acl`, `passwords`) and result (`ok`,
    /// `error`).
    pub file_reloads: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric on a new registry.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("hmq".into()), None).unwrap_or_else(|_| Registry::new());
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let connections_current = IntGaugeVec::new(
            Opts::new(
                "connections_current",
                "Open client connections by listener.",
            ),
            &["listener"],
        )
        .unwrap_or_else(|e| panic!("metric connections_current: {e}"));
        registry
            .register(Box::new(connections_current.clone()))
            .unwrap_or_else(|e| panic!("metric connections_current: {e}"));
        let received_vec = counter_vec(
            "messages_received_total",
            "PUBLISH packets received from clients, by QoS.",
            "qos",
        );
        let sent_vec = counter_vec(
            "messages_sent_total",
            "PUBLISH packets sent to clients, by QoS.",
            "qos",
        );
        let dropped_vec = counter_vec(
            "publish_dropped_total",
            "Messages not delivered to a subscriber (or to anyone), by reason.",
            "reason",
        );
        let by_qos = |v: &IntCounterVec| ["0", "1", "2"].map(|q| v.with_label_values(&[q]));
        Metrics {
            connections_total: counter_vec(
                "connections_total",
                "Accepted client connections by listener.",
                "listener",
            ),
            connects_refused: counter_vec(
                "connects_refused_total",
                "Connections refused before or at CONNECT, by reason.",
                "reason",
            ),
            disconnects: counter_vec(
                "disconnects_total",
                "Closed client connections by reason.",
                "reason",
            ),
            received: by_qos(&received_vec),
            sent: by_qos(&sent_vec),
            bytes_in: counter("bytes_received_total", "Bytes read from client sockets."),
            bytes_out: counter("bytes_sent_total", "Bytes written to client sockets."),
            dropped: Dropped {
                queue_full: dropped_vec.with_label_values(&["queue_full"]),
                no_subscriber: dropped_vec.with_label_values(&["no_subscriber"]),
                offline_qos0: dropped_vec.with_label_values(&["offline_qos0"]),
                sys_topic: dropped_vec.with_label_values(&["sys_topic"]),
                acl: dropped_vec.with_label_values(&["acl"]),
            },
            retained_refused: counter(
                "retained_refused_total",
                "Retained messages not stored because maxRetainedMessages was reached.",
            ),
            tls_handshake_failures: counter(
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            ),
            acl_denied: {
                let v = counter_vec(
                    "acl_denied_total",
                    "Actions the ACL refused, by action (publish, subscribe, receive).",
                    "action",
                );
                AclDenied {
                    publish: v.with_label_values(&["publish"]),
                    subscribe: v.with_label_values(&["subscribe"]),
                    receive: v.with_label_values(&["receive"]),
                }
            },
            file_reloads: {
                let v = IntCounterVec::new(
                    Opts::new(
                        "file_reloads_total",
                        "Reloads of the ACL and password files, by file and result.",
                    ),
                    &["file", "result"],
                )
                .unwrap_or_else(|e| panic!("metric file_reloads_total: {e}"));
                registry
                    .register(Box::new(v.clone()))
                    .unwrap_or_else(|e| panic!("metric file_reloads_total: {e}"));
                v
            },
            connections_current,
            registry,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
