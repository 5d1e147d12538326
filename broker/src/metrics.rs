//! The broker's Prometheus metrics, on a registry owned by the broker (never the global one), so
//! several brokers in one process (tests) do not share counters. Every name starts with `hmq_`.
//!
//! Label values are fixed sets (listener kind, QoS, reason): no per-client labels. Every known
//! label value is created at start, so a series exists (at 0) before its first event and
//! dashboards need no `or vector(0)`. Hot-path counters are resolved to their labelled child once,
//! here, so counting a message is one atomic add. Gauges that describe state (sessions,
//! subscriptions, queues) are not maintained per event: [`Metrics::render`] computes them from the
//! broker when scraped.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Listener label values.
pub const LISTENERS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

/// `connects_refused_total` reasons.
pub const REFUSED_REASONS: [&str; 9] = [
    "protocol_version",
    "identifier_rejected",
    "server_unavailable",
    "bad_credentials",
    "not_authorized",
    "connect_timeout",
    "bad_connect",
    "max_connections",
    "transport_handshake",
];

/// `disconnects_total` reasons.
pub const DISCONNECT_REASONS: [&str; 10] = [
    "client_disconnect",
    "peer_closed",
    "network_error",
    "keepalive_timeout",
    "connect_timeout",
    "protocol_error",
    "limit_exceeded",
    "refused",
    "takeover",
    "shutdown",
];

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
    /// Queued for an offline session that expired.
    pub expired: IntCounter,
    /// For a persistent session while the durable store refused new changes (disk full).
    pub disk_full: IntCounter,
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

/// Gauges computed when the metrics are scraped.
#[derive(Debug, Clone)]
pub struct State {
    /// Sessions by state (`online`, `offline`).
    pub sessions: IntGaugeVec,
    /// Subscriptions.
    pub subscriptions: IntGauge,
    /// Retained messages.
    pub retained: IntGauge,
    /// Messages queued for sessions (not yet sent).
    pub queued: IntGauge,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: IntGauge,
}

/// Cluster metrics (all at 0 on a single node).
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Peers by link state (`linked`: this node's link to them is up; `known`: all peers).
    pub peers: IntGaugeVec,
    /// Routes (filter, peer) this node knows from its peers.
    pub routes: IntGauge,
    /// Messages waiting for a peer (unsent or not yet acknowledged).
    pub queued: IntGauge,
    /// Messages peers acknowledged (one per copy; a resend is not counted twice).
    pub forwarded: IntCounter,
    /// Messages received from peers and delivered here.
    pub received: IntCounter,
    /// Messages received twice from a peer (a resend after a link blip) and ignored.
    pub duplicates: IntCounter,
    /// Messages for a peer dropped: its queue was full.
    pub dropped_queue_full: IntCounter,
    /// Messages for a peer dropped: the peer was gone for good.
    pub dropped_peer_gone: IntCounter,
    /// Inter-node connections refused, by reason.
    pub links_refused: IntCounterVec,
    /// Persistent sessions that arrived from a peer (one per sender).
    pub sessions_moved_in: IntCounter,
    /// Persistent sessions handed over to a peer and confirmed by it.
    pub sessions_moved_out: IntCounter,
}

/// Changes to the durable state by what they did to the pending set.
#[derive(Debug, Clone)]
pub struct PersistChanges {
    /// A new pending write or delete.
    pub added: IntCounter,
    /// Replaced a pending change of the same key.
    pub replaced: IntCounter,
    /// Cancelled a pending write before it reached the disk (written and deleted in one
    /// commit interval).
    pub netted: IntCounter,
}

/// Keys written to the store by the commits.
#[derive(Debug, Clone)]
pub struct PersistWritten {
    /// Keys written.
    pub puts: IntCounter,
    /// Keys deleted.
    pub deletes: IntCounter,
}

/// The durable store (all at 0 without `persistence.dir`).
#[derive(Debug, Clone)]
pub struct PersistMetrics {
    /// Changes by effect.
    pub changes: PersistChanges,
    /// What the commits wrote.
    pub written: PersistWritten,
    /// Bytes of keys and values the commits handed to the store.
    pub bytes_written: IntCounter,
    /// Commits.
    pub commits: IntCounter,
    /// Commits that failed (retried).
    pub commit_errors: IntCounter,
    /// Time per commit, fsync included.
    pub commit_seconds: Histogram,
    /// Disk space of the store.
    pub disk_bytes: IntGauge,
}

/// `cluster_links_refused_total` reasons.
pub const LINK_REFUSED_REASONS: [&str; 4] = ["auth", "version", "handshake", "tls"];

/// All broker metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry to scrape.
    pub registry: Registry,
    /// Open client connections by listener (`tcp`, `tls`, `ws`, `wss`).
    pub connections_current: IntGaugeVec,
    /// Idle plain-TCP connections parked without a task (part of `connections_current`).
    pub connections_parked: IntGauge,
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
    /// Messages (from clients) routed to at least one subscriber.
    pub routed: IntCounter,
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
    /// Time from reading a PUBLISH to queueing it for a subscriber's socket, sampled.
    pub delivery_latency: Histogram,
    /// Scrape-time gauges.
    pub state: State,
    /// The cluster.
    pub cluster: ClusterMetrics,
    /// The durable store.
    pub persist: PersistMetrics,
}

/// Registers `metric` on `registry`. The definitions are constants of this file, so a failure
/// (a duplicate or malformed name) is a programming error caught by the tests, not an input error.
fn register<T: Collector + Clone + 'static>(registry: &Registry, name: &str, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

impl Metrics {
    /// Creates and registers every metric on a new registry.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("hmq".into()), None).unwrap_or_else(|_| Registry::new());
        let r = &registry;
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(r, name, c)
        };
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            for v in values {
                c.with_label_values(&[v]);
            }
            register(r, name, c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(r, name, g)
        };
        let gauge_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            for v in values {
                g.with_label_values(&[v]);
            }
            register(r, name, g)
        };

        let received_vec = counter_vec(
            "messages_received_total",
            "PUBLISH packets received from clients, by QoS.",
            "qos",
            &["0", "1", "2"],
        );
        let sent_vec = counter_vec(
            "messages_sent_total",
            "PUBLISH packets sent to clients, by QoS.",
            "qos",
            &["0", "1", "2"],
        );
        let dropped_vec = counter_vec(
            "publish_dropped_total",
            "Messages not delivered to a subscriber (or to anyone), by reason.",
            "reason",
            &[
                "queue_full",
                "no_subscriber",
                "offline_qos0",
                "sys_topic",
                "acl",
                "expired",
                "disk_full",
            ],
        );
        let acl_vec = counter_vec(
            "acl_denied_total",
            "Actions the ACL refused, by action (publish, subscribe, receive).",
            "action",
            &["publish", "subscribe", "receive"],
        );
        let cluster_dropped = counter_vec(
            "cluster_dropped_total",
            "Messages for a peer not sent, by reason (queue_full, peer_gone).",
            "reason",
            &["queue_full", "peer_gone"],
        );
        let sessions_moved = counter_vec(
            "cluster_sessions_moved_total",
            "Persistent sessions moved between nodes, by direction (in: arrived here; out: \
             handed to a peer and confirmed).",
            "direction",
            &["in", "out"],
        );
        let persist_changes = counter_vec(
            "persist_changes_total",
            "Changes to the durable state, by effect on the pending set (added, replaced, \
             netted: written and deleted within one commit, never reaching the disk).",
            "effect",
            &["added", "replaced", "netted"],
        );
        let persist_written = counter_vec(
            "persist_written_total",
            "Keys the durable store's commits wrote, by operation (put, delete).",
            "op",
            &["put", "delete"],
        );
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "persist_commit_seconds",
                "Time per commit of the durable store, fsync included.",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0,
            ]),
        )
        .unwrap_or_else(|e| panic!("metric persist_commit_seconds: {e}"));
        let commit_seconds = register(r, "persist_commit_seconds", commit_seconds);
        let by_qos = |v: &IntCounterVec| ["0", "1", "2"].map(|q| v.with_label_values(&[q]));
        let file_reloads = IntCounterVec::new(
            Opts::new(
                "file_reloads_total",
                "Reloads of the ACL and password files, by file and result.",
            ),
            &["file", "result"],
        )
        .unwrap_or_else(|e| panic!("metric file_reloads_total: {e}"));
        for file in ["acl", "passwords"] {
            for result in ["ok", "error"] {
                file_reloads.with_label_values(&[file, result]);
            }
        }
        let file_reloads = register(r, "file_reloads_total", file_reloads);
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "Time from reading a PUBLISH to queueing it for a subscriber's socket (1 in 16 \
                 deliveries sampled).",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .unwrap_or_else(|e| panic!("metric delivery_latency_seconds: {e}"));
        let delivery_latency = register(r, "delivery_latency_seconds", delivery_latency);
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1; the version is a label."),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("metric build_info: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register(r, "build_info", build_info);
        // CPU, memory and file descriptors of the broker process (Linux).
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("process metrics: {e}"));

        Metrics {
            connections_current: gauge_vec(
                "connections_current",
                "Open client connections by listener.",
                "listener",
                &LISTENERS,
            ),
            connections_parked: gauge(
                "connections_parked",
                "Idle TCP connections parked without a task (included in connections_current).",
            ),
            connections_total: counter_vec(
                "connections_total",
                "Accepted client connections by listener.",
                "listener",
                &LISTENERS,
            ),
            connects_refused: counter_vec(
                "connects_refused_total",
                "Connections refused before or at CONNECT, by reason.",
                "reason",
                &REFUSED_REASONS,
            ),
            disconnects: counter_vec(
                "disconnects_total",
                "Closed client connections by reason.",
                "reason",
                &DISCONNECT_REASONS,
            ),
            received: by_qos(&received_vec),
            sent: by_qos(&sent_vec),
            bytes_in: counter("bytes_received_total", "Bytes read from client sockets."),
            bytes_out: counter("bytes_sent_total", "Bytes written to client sockets."),
            routed: counter(
                "publish_routed_total",
                "Messages from clients routed to at least one subscriber.",
            ),
            dropped: Dropped {
                queue_full: dropped_vec.with_label_values(&["queue_full"]),
                no_subscriber: dropped_vec.with_label_values(&["no_subscriber"]),
                offline_qos0: dropped_vec.with_label_values(&["offline_qos0"]),
                sys_topic: dropped_vec.with_label_values(&["sys_topic"]),
                acl: dropped_vec.with_label_values(&["acl"]),
                expired: dropped_vec.with_label_values(&["expired"]),
                disk_full: dropped_vec.with_label_values(&["disk_full"]),
            },
            retained_refused: counter(
                "retained_refused_total",
                "Retained messages not stored because maxRetainedMessages was reached.",
            ),
            tls_handshake_failures: counter(
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            ),
            acl_denied: AclDenied {
                publish: acl_vec.with_label_values(&["publish"]),
                subscribe: acl_vec.with_label_values(&["subscribe"]),
                receive: acl_vec.with_label_values(&["receive"]),
            },
            file_reloads,
            delivery_latency,
            cluster: ClusterMetrics {
                peers: gauge_vec(
                    "cluster_peers",
                    "Cluster peers: known, and linked (this node's link to them is up).",
                    "state",
                    &["known", "linked"],
                ),
                routes: gauge(
                    "cluster_routes",
                    "Routes (filter, peer) announced by the peers.",
                ),
                queued: gauge(
                    "cluster_queued_messages",
                    "Messages waiting for a peer: unsent or not yet acknowledged.",
                ),
                forwarded: counter(
                    "cluster_forwarded_total",
                    "Messages forwarded to peers and acknowledged by them (one per copy).",
                ),
                received: counter("cluster_received_total", "Messages received from peers."),
                duplicates: counter(
                    "cluster_duplicates_total",
                    "Messages a peer resent after a link blip that were already here (ignored).",
                ),
                dropped_queue_full: cluster_dropped.with_label_values(&["queue_full"]),
                dropped_peer_gone: cluster_dropped.with_label_values(&["peer_gone"]),
                links_refused: counter_vec(
                    "cluster_links_refused_total",
                    "Inter-node connections refused, by reason.",
                    "reason",
                    &LINK_REFUSED_REASONS,
                ),
                sessions_moved_in: sessions_moved.with_label_values(&["in"]),
                sessions_moved_out: sessions_moved.with_label_values(&["out"]),
            },
            persist: PersistMetrics {
                changes: PersistChanges {
                    added: persist_changes.with_label_values(&["added"]),
                    replaced: persist_changes.with_label_values(&["replaced"]),
                    netted: persist_changes.with_label_values(&["netted"]),
                },
                written: PersistWritten {
                    puts: persist_written.with_label_values(&["put"]),
                    deletes: persist_written.with_label_values(&["delete"]),
                },
                bytes_written: counter(
                    "persist_bytes_written_total",
                    "Bytes of keys and values the durable store's commits wrote.",
                ),
                commits: counter("persist_commits_total", "Commits of the durable store."),
                commit_errors: counter(
                    "persist_commit_errors_total",
                    "Commits of the durable store that failed (and were retried).",
                ),
                commit_seconds,
                disk_bytes: gauge(
                    "persist_disk_bytes",
                    "Disk space used by the durable store.",
                ),
            },
            state: State {
                sessions: gauge_vec(
                    "sessions",
                    "Sessions by state: online (connected) and offline (persistent, kept).",
                    "state",
                    &["online", "offline"],
                ),
                subscriptions: gauge("subscriptions", "Subscriptions."),
                retained: gauge("retained_messages", "Retained messages."),
                queued: gauge(
                    "queued_messages",
                    "Messages queued for sessions, not yet sent.",
                ),
                inflight: gauge(
                    "inflight_messages",
                    "QoS 1 and 2 messages sent to clients and not yet acknowledged.",
                ),
            },
            registry,
        }
    }

    /// The metrics in Prometheus text format (the scrape-time gauges are set by the caller
    /// first: `Broker::render_metrics`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start_with_the_hmq_prefix() {
        let m = Metrics::new();
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("hmq_"), "{line}");
        }
        for needle in [
            "hmq_connections_current{listener=\"wss\"} 0",
            "hmq_connects_refused_total{reason=\"bad_credentials\"} 0",
            "hmq_disconnects_total{reason=\"shutdown\"} 0",
            "hmq_publish_dropped_total{reason=\"expired\"} 0",
            "hmq_sessions{state=\"offline\"} 0",
            "hmq_build_info{version=",
            "hmq_delivery_latency_seconds_bucket",
            "hmq_file_reloads_total{file=\"passwords\",result=\"error\"} 0",
            "hmq_process_resident_memory_bytes",
            "hmq_process_cpu_seconds_total",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
    }
}
