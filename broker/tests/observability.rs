//! The HTTP operations endpoint, black-box over real sockets: after a scripted MQTT exchange
//! (connects, a SUBSCRIBE, QoS 0/1/2 publishes, a retained message, a publish nobody receives,
//! a CONNECT refused for its protocol level, a malformed packet, a persistent session left
//! offline with messages queued for it) `/metrics` is scraped over HTTP and every counter and
//! gauge the exchange touches is checked for its exact value; the text is checked to be valid
//! Prometheus exposition format without per-client labels. `/healthz`, `/readyz`, an unknown path
//! and a non-GET method get the statuses a Kubernetes probe and a scraper expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, `Connection: close`, read until the
// server closes.

/// An HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Header names in lower case.
    headers: BTreeMap<String, String>,
    body: String,
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    tokio::time::timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect to HTTP");
        let body_len = if method == "POST" {
            "Content-Length: 0\r\n"
        } else {
            ""
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hmq-test\r\n{body_len}\
             Connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read response");
        parse_response(&raw, method == "HEAD")
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no complete response within {WAIT:?}"))
}

fn parse_response(raw: &[u8], head: bool) -> Response {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
    let (head_part, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head_part.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "this client does not decode chunked bodies; the broker sends a Content-Length"
    );
    let len: usize = headers
        .get("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    if head {
        assert!(body.is_empty(), "HEAD response with a body");
    } else {
        assert_eq!(body.len(), len, "body length = Content-Length");
    }
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The Prometheus text exposition format (version 0.0.4), parsed strictly.

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: samples, and each family's `# TYPE`.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Parses `{k="v",...}` at the start of `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    assert_eq!(chars.next(), Some('{'));
    loop {
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        assert!(is_name(&key, false), "bad label name {key:?} in {line}");
        assert_eq!(chars.next(), Some('"'), "label value not quoted in {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        }
        assert!(
            labels.insert(key.clone(), value).is_none(),
            "label {key} twice in {line}"
        );
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("expected , or }} after a label, got {other:?} in {line}"),
        }
    }
    (labels, chars.collect())
}

fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {v:?} in {line}")),
    }
}

/// Parses a scrape, failing on anything that is not valid exposition format.
fn parse_exposition(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_default();
            assert!(is_name(name, true), "bad metric name in {line}");
            match kind {
                "HELP" => {
                    assert!(helps.insert(name.to_owned()), "second HELP for {name}");
                }
                "TYPE" => {
                    let t = parts.next().unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type in {line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "second TYPE for {name}"
                    );
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the exposition");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line}"));
        let name = &line[..name_end];
        assert!(is_name(name, true), "bad metric name in {line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), line[name_end..].to_owned())
        };
        let rest = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line}"));
        // `value` or `value timestamp`.
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap(), line);
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp in {line}"));
        }
        assert!(fields.next().is_none(), "trailing fields in {line}");
        // Every sample belongs to a family declared by a TYPE line before it.
        let family = family_of(name, &types)
            .unwrap_or_else(|| panic!("sample {name} without a TYPE line before it"));
        if types[&family] == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for name in types.keys() {
        assert!(helps.contains(name), "{name} has no HELP");
    }
    Scrape { samples, types }
}

/// The family a sample name belongs to (a histogram's `_bucket`, `_sum`, `_count` included).
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return Some(base.to_owned());
            }
        }
    }
    None
}

impl Scrape {
    /// The value of the one series `name` with exactly the labels `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "series {name}{want:?} in the scrape");
        found[0].value
    }

    /// Every series of `name` as (value of `label`, sample value).
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| {
                let v = s
                    .labels
                    .get(label)
                    .unwrap_or_else(|| panic!("{name} without label {label}"));
                (v.clone(), s.value)
            })
            .collect()
    }

    /// Asserts the series of `name` by `label` are exactly `nonzero` and zero elsewhere.
    fn assert_only(&self, name: &str, label: &str, nonzero: &[(&str, f64)]) {
        let all = self.by_label(name, label);
        assert!(!all.is_empty(), "no series of {name}");
        for (k, v) in &all {
            let want = nonzero
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0.0, |(_, v)| *v);
            assert_eq!(*v, want, "{name}{{{label}=\"{k}\"}}; all: {all:?}");
        }
        for (k, _) in nonzero {
            assert!(all.contains_key(*k), "{name}{{{label}=\"{k}\"}} missing");
        }
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let r = http(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&r.body)
}

/// Scrapes until `ready` holds (the broker counts a close after the socket is shut down, so a
/// client can see its connection closed a moment before the counter moves).
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(addr).await;
        if ready(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Byte accounting: every byte the clients write, and every byte the broker writes to them.

/// Size on the wire of a packet the broker sent.
fn wire_size(p: &Pkt) -> usize {
    match p {
        Pkt::ConnAck { .. }
        | Pkt::PubAck(_)
        | Pkt::PubRec(_)
        | Pkt::PubRel(_)
        | Pkt::PubComp(_)
        | Pkt::UnsubAck(_) => 4,
        Pkt::PingResp => 2,
        Pkt::SubAck { codes, .. } => 4 + codes.len(),
        Pkt::Publish(m) => {
            publish_bytes(&m.topic, &m.payload, m.qos, m.retain, m.dup, m.pkid).len()
        }
    }
}

/// Bytes counted by hand on both sides of every connection.
#[derive(Debug, Default)]
struct Meter {
    /// Client → broker.
    to_broker: usize,
    /// Broker → client.
    to_client: usize,
}

impl Meter {
    async fn connect(&mut self, addr: SocketAddr, opts: &Opts) -> Client {
        let (c, ack) = Client::connect_opts(addr, opts).await;
        assert!(matches!(ack, Pkt::ConnAck { code: 0, .. }), "{ack:?}");
        self.to_broker += connect_bytes(opts).len();
        self.to_client += wire_size(&ack);
        c
    }

    async fn subscribe(&mut self, c: &mut Client, filters: &[(&str, u8)]) {
        let codes = c.subscribe(filters).await;
        let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
        assert_eq!(codes, granted);
        self.to_broker += subscribe_bytes(1, filters).len();
        self.to_client += 4 + codes.len();
    }

    /// Publishes and completes the publisher's side of the QoS flow.
    async fn publish(
        &mut self,
        c: &mut Client,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
    ) {
        c.publish(topic, payload, qos, retain).await;
        self.to_broker += publish_bytes(topic, payload, qos, retain, false, 77).len();
        match qos {
            0 => {}
            // PUBACK.
            1 => self.to_client += 4,
            // PUBREC and PUBCOMP from the broker, PUBREL from the client.
            _ => {
                self.to_client += 8;
                self.to_broker += 4;
            }
        }
    }

    /// Receives `n` PUBLISH packets and completes their QoS flows as they come (PUBACK;
    /// PUBREC, then PUBCOMP when the PUBREL arrives, which may be after further PUBLISHes).
    async fn receive(&mut self, c: &mut Client, n: usize) -> Vec<Msg> {
        let mut got = Vec::new();
        let mut awaiting_rel = 0usize;
        while got.len() < n || awaiting_rel > 0 {
            let p = c.recv().await;
            self.to_client += wire_size(&p);
            match p {
                Pkt::Publish(m) => {
                    match m.qos {
                        0 => {}
                        1 => c.send(&ack_bytes(0x40, m.pkid)).await,
                        _ => {
                            c.send(&ack_bytes(0x50, m.pkid)).await;
                            awaiting_rel += 1;
                        }
                    }
                    self.to_broker += if m.qos == 0 { 0 } else { 4 };
                    got.push(m);
                }
                Pkt::PubRel(pkid) => {
                    c.send(&ack_bytes(0x70, pkid)).await;
                    self.to_broker += 4;
                    awaiting_rel -= 1;
                }
                other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
            }
        }
        got
    }

    /// PINGREQ/PINGRESP: everything the client sent before has been handled by the broker.
    async fn ping(&mut self, c: &mut Client) {
        c.send(&[0xC0, 0]).await;
        assert_eq!(c.recv().await, Pkt::PingResp);
        self.to_broker += 2;
        self.to_client += 2;
    }
}

// ---------------------------------------------------------------------------------------------

/// Client ids of the exchange: distinctive, so that finding one in a label is not a
/// coincidence with a fixed label value.
const SUBSCRIBER: &str = "obs-subscriber-5c1e";
const PUBLISHER: &str = "obs-publisher-9a4d";
const PARKED: &str = "obs-parked-e27b";
const REFUSED: &str = "obs-refused-31f0";
const BROKEN: &str = "obs-broken-c8d6";

/// Label names the broker uses; anything else (a `client_id` label) is a regression.
const LABEL_NAMES: [&str; 12] = [
    "listener",
    "qos",
    "reason",
    "state",
    "action",
    "file",
    "result",
    "version",
    "le",
    "effect",
    "op",
    "direction",
];

#[tokio::test]
async fn counters_and_gauges_after_a_scripted_exchange() {
    let b = TestBroker::start_with(|c| {
        c.http_port = Some(hmq::config::Port(0));
        // No periodic `$SYS` statistics: they are retained and would count in
        // hmq_retained_messages.
        c.sys_interval = 0;
    })
    .await;
    let http_addr = b.http_addr.expect("HTTP listener");
    let mut m = Meter::default();

    // Before anything: every series exists at 0, the build info is there.
    let s0 = scrape(http_addr).await;
    s0.assert_only("hmq_connections_total", "listener", &[]);
    s0.assert_only("hmq_messages_received_total", "qos", &[]);
    assert_eq!(
        s0.get("hmq_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // A persistent session subscribes and goes offline (DISCONNECT).
    let mut parked = m.connect(b.addr, &Opts::id(PARKED).persistent()).await;
    m.subscribe(&mut parked, &[("obs/queued", 1)]).await;
    parked.disconnect().await;
    m.to_broker += 2;

    // A subscriber to everything under obs/, at QoS 2.
    let mut sub = m.connect(b.addr, &Opts::id(SUBSCRIBER)).await;
    m.subscribe(&mut sub, &[("obs/#", 2)]).await;

    // The publisher: 10 × QoS 0, 4 × QoS 1, 4 × QoS 2, a retained QoS 1, 3 × QoS 1 that are
    // also queued for the offline session, and a QoS 0 publish nobody subscribed to.
    let mut publisher = m.connect(b.addr, &Opts::id(PUBLISHER)).await;
    let mut plan: Vec<(&str, u8, bool)> = Vec::new();
    plan.extend([("obs/m", 0, false); 10]);
    plan.extend([("obs/m", 1, false); 4]);
    plan.extend([("obs/m", 2, false); 4]);
    plan.push(("obs/retained", 1, true));
    plan.extend([("obs/queued", 1, false); 3]);
    for (i, (topic, qos, retain)) in plan.iter().enumerate() {
        let payload = format!("payload-{i}");
        m.publish(&mut publisher, topic, payload.as_bytes(), *qos, *retain)
            .await;
    }
    m.publish(&mut publisher, "nobody/listens", b"x", 0, false)
        .await;
    m.ping(&mut publisher).await;

    // The subscriber gets the 22 obs/ messages at the publisher's QoS (granted 2), in order,
    // and acknowledges them; the ping makes sure the acks were handled.
    let received = m.receive(&mut sub, plan.len()).await;
    for (i, ((topic, qos, _), got)) in plan.iter().zip(&received).enumerate() {
        assert_eq!(
            (got.topic.as_str(), got.qos, got.retain, &got.payload[..]),
            (*topic, *qos, false, format!("payload-{i}").as_bytes())
        );
    }
    m.ping(&mut sub).await;

    // A CONNECT at protocol level 5: CONNACK 1, closed.
    let opts = Opts {
        protocol: ("MQTT", 5),
        ..Opts::id(REFUSED)
    };
    let (mut refused, ack) = Client::connect_opts(b.addr, &opts).await;
    assert_eq!(
        ack,
        Pkt::ConnAck {
            session_present: false,
            code: 1
        }
    );
    refused.expect_closed().await;
    m.to_broker += connect_bytes(&opts).len();
    m.to_client += 4;

    // A connected client sends a malformed packet (PUBLISH with QoS 3): closed.
    let mut broken = m.connect(b.addr, &Opts::id(BROKEN)).await;
    let malformed = [0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01];
    broken.send(&malformed).await;
    broken.expect_closed().await;
    m.to_broker += malformed.len();

    let s = scrape_until(http_addr, "the two closes are counted", |s| {
        s.get("hmq_disconnects_total", &[("reason", "protocol_error")]) == 1.0
            && s.get("hmq_disconnects_total", &[("reason", "client_disconnect")]) == 1.0
            && s.get("hmq_connections_current", &[("listener", "tcp")]) == 2.0
    })
    .await;

    // Connections: five accepted on TCP (parked, sub, publisher, refused, broken), two open.
    s.assert_only("hmq_connections_total", "listener", &[("tcp", 5.0)]);
    s.assert_only("hmq_connections_current", "listener", &[("tcp", 2.0)]);
    s.assert_only(
        "hmq_connects_refused_total",
        "reason",
        &[("protocol_version", 1.0)],
    );
    s.assert_only(
        "hmq_disconnects_total",
        "reason",
        &[("client_disconnect", 1.0), ("protocol_error", 1.0)],
    );

    // Messages: received by the QoS the publisher used, sent by the QoS delivered.
    s.assert_only(
        "hmq_messages_received_total",
        "qos",
        &[("0", 11.0), ("1", 8.0), ("2", 4.0)],
    );
    s.assert_only(
        "hmq_messages_sent_total",
        "qos",
        &[("0", 10.0), ("1", 8.0), ("2", 4.0)],
    );
    assert_eq!(s.get("hmq_publish_routed_total", &[]), 22.0);
    s.assert_only(
        "hmq_publish_dropped_total",
        "reason",
        &[("no_subscriber", 1.0)],
    );
    assert_eq!(s.get("hmq_retained_refused_total", &[]), 0.0);

    // Bytes: both directions, to the byte.
    let bytes_in = s.get("hmq_bytes_received_total", &[]);
    let bytes_out = s.get("hmq_bytes_sent_total", &[]);
    assert!(bytes_in > 0.0 && bytes_out > 0.0);
    assert_eq!(
        bytes_in, m.to_broker as f64,
        "hmq_bytes_received_total = every byte the clients wrote"
    );
    assert_eq!(
        bytes_out, m.to_client as f64,
        "hmq_bytes_sent_total = every byte the clients received (the refusal CONNACK included)"
    );

    // State gauges: sub and publisher online, the parked session offline with the 3 QoS 1
    // messages queued for it, two subscriptions, one retained message, nothing in flight.
    s.assert_only(
        "hmq_sessions",
        "state",
        &[("online", 2.0), ("offline", 1.0)],
    );
    assert_eq!(s.get("hmq_subscriptions", &[]), 2.0);
    assert_eq!(s.get("hmq_retained_messages", &[]), 1.0);
    assert_eq!(s.get("hmq_queued_messages", &[]), 3.0);
    assert_eq!(s.get("hmq_inflight_messages", &[]), 0.0);

    // Nothing about ACLs, TLS or file reloads happened.
    s.assert_only("hmq_acl_denied_total", "action", &[]);
    assert_eq!(s.get("hmq_tls_handshake_failures_total", &[]), 0.0);
    assert!(
        s.samples
            .iter()
            .filter(|x| x.name == "hmq_file_reloads_total")
            .all(|x| x.value == 0.0)
    );

    // Latency: the subscriber's connection sent 22 deliveries, one in 16 is timed.
    assert_eq!(s.types["hmq_delivery_latency_seconds"], "histogram");
    let count = s.get("hmq_delivery_latency_seconds_count", &[]);
    assert!(count > 0.0, "a latency sample after 22 deliveries");
    assert!(count <= 22.0 / 16.0, "sampled 1 in 16: {count}");
    assert_eq!(
        s.get("hmq_delivery_latency_seconds_bucket", &[("le", "+Inf")]),
        count
    );
    let sum = s.get("hmq_delivery_latency_seconds_sum", &[]);
    assert!(
        sum > 0.0 && sum < 5.0,
        "in-broker latency is small: {sum} s"
    );
    let mut last = 0.0;
    for x in s
        .samples
        .iter()
        .filter(|x| x.name == "hmq_delivery_latency_seconds_bucket")
    {
        assert!(x.value >= last, "buckets are cumulative");
        last = x.value;
    }

    // Build info, process metrics.
    assert_eq!(s.types["hmq_build_info"], "gauge");
    assert_eq!(
        s.get("hmq_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(s.get("hmq_process_resident_memory_bytes", &[]) > 0.0);
    assert!(s.get("hmq_process_cpu_seconds_total", &[]) >= 0.0);
    assert!(s.get("hmq_process_open_fds", &[]) > 0.0);

    // Every sample is hmq_-prefixed; label names are the fixed set; no client id anywhere in a
    // label value.
    let ids = [SUBSCRIBER, PUBLISHER, PARKED, REFUSED, BROKEN];
    for x in &s.samples {
        assert!(x.name.starts_with("hmq_"), "{}", x.name);
        for (k, v) in &x.labels {
            assert!(LABEL_NAMES.contains(&k.as_str()), "label {k} on {}", x.name);
            for id in ids {
                assert!(
                    !v.contains(id),
                    "client id {id} in {}{:?}",
                    x.name,
                    x.labels
                );
            }
        }
    }
    // And no client id in the text at all (HELP lines included).
    let text = http(http_addr, "GET", "/metrics").await.body;
    for id in ids {
        assert!(!text.contains(id), "client id {id} in the scrape");
    }

    drop((sub, publisher));
    b.stop().await;
}

#[tokio::test]
async fn probes_and_http_errors() {
    let b = TestBroker::start_with(|c| c.http_port = Some(hmq::config::Port(0))).await;
    let addr = b.http_addr.expect("HTTP listener");

    let r = http(addr, "GET", "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = http(addr, "GET", "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    // HEAD is what some probes send.
    assert_eq!(http(addr, "HEAD", "/readyz").await.status, 200);
    assert_eq!(http(addr, "HEAD", "/metrics").await.status, 200);

    assert_eq!(http(addr, "GET", "/").await.status, 404);
    assert_eq!(http(addr, "GET", "/metricsx").await.status, 404);
    assert_eq!(http(addr, "GET", "/readyz/").await.status, 404);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = http(addr, "POST", path).await;
        assert_eq!(r.status, 405, "POST {path}");
    }
    // A query string does not change the route.
    assert_eq!(http(addr, "GET", "/metrics?x=1").await.status, 200);

    // The HTTP listener is not an MQTT listener: HTTP connections are not counted.
    let s = scrape(addr).await;
    s.assert_only("hmq_connections_total", "listener", &[]);
    b.stop().await;
}

#[tokio::test]
async fn several_brokers_in_one_process_do_not_share_counters() {
    let one = TestBroker::start_with(|c| c.http_port = Some(hmq::config::Port(0))).await;
    let two = TestBroker::start_with(|c| c.http_port = Some(hmq::config::Port(0))).await;
    let c = Client::new(one.addr, "only-on-one").await;
    let s1 = scrape(one.http_addr.unwrap()).await;
    let s2 = scrape(two.http_addr.unwrap()).await;
    assert_eq!(s1.get("hmq_connections_total", &[("listener", "tcp")]), 1.0);
    assert_eq!(s2.get("hmq_connections_total", &[("listener", "tcp")]), 0.0);
    drop(c);
    one.stop().await;
    two.stop().await;
}
