//! The Grafana dashboard shipped with the Helm chart (`charts/hmq-operator/dashboards/
//! hmq-broker.json`) queries only what the broker exports: every `hmq_*` name in every panel
//! query and template variable is compared with a live `/metrics` scrape of a broker (a
//! histogram's `_bucket`, `_sum` and `_count` series count as its family), and every label value
//! a query selects on exists. The file is checked to be an importable dashboard: panels with
//! targets, the `DS_PROMETHEUS` data source input and variable, `job` and `instance` variables,
//! and every metric selector filtered by them. Conversely, every family the broker exports is
//! on the dashboard unless it is listed in `NOT_ON_DASHBOARD`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Exported families deliberately left off the dashboard.
const NOT_ON_DASHBOARD: [&str; 3] = [
    "hmq_process_start_time_seconds",
    "hmq_process_virtual_memory_bytes",
    "hmq_process_threads",
];

fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/hmq-operator/dashboards/hmq-broker.json")
}

fn load_dashboard() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, including panels nested in collapsed rows.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(nested);
        }
    }
    out
}

/// Every `expr` of every panel target, with the panel title.
fn panel_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t.get("expr").and_then(Value::as_str) {
                out.push((title.clone(), e.to_owned()));
            }
        }
    }
    out
}

/// The queries of the template variables.
fn variable_queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        match v.get("query") {
            Some(Value::String(q)) if v["type"] == "query" => out.push(q.clone()),
            Some(Value::Object(o)) => {
                if let Some(q) = o.get("query").and_then(Value::as_str) {
                    out.push(q.to_owned());
                }
            }
            _ => {}
        }
        if let Some(q) = v.get("definition").and_then(Value::as_str) {
            out.push(q.to_owned());
        }
    }
    out
}

/// A metric name in a query, and the selector that follows it (`{...}` content, if any).
#[derive(Debug)]
struct Use {
    name: String,
    selector: Option<String>,
}

/// Finds every identifier `hmq_[a-z0-9_]+` in a PromQL expression (not inside a string).
fn metric_uses(expr: &str) -> Vec<Use> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !in_string && word_start && expr[i..].starts_with("hmq_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let name = expr[i..end].to_owned();
            let selector = expr[end..].strip_prefix('{').map(|rest| {
                let close = rest
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed selector in {expr}"));
                rest[..close].to_owned()
            });
            out.push(Use { name, selector });
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// Label matchers of a selector: (label, operator, value).
fn matchers(selector: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = selector.trim();
    while !rest.is_empty() {
        let op_at = rest
            .find(['=', '!'])
            .unwrap_or_else(|| panic!("no operator in {{{selector}}}"));
        let label = rest[..op_at].trim().to_owned();
        let after = &rest[op_at..];
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|o| after.starts_with(o))
            .unwrap();
        let after = after[op.len()..].trim_start();
        let after = after
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted value in {{{selector}}}"));
        let close = after.find('"').unwrap();
        out.push((label, op.to_owned(), after[..close].to_owned()));
        rest = after[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

fn assert_balanced(expr: &str) {
    let mut stack = Vec::new();
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '(' | '{' | '[' => stack.push(c),
            ')' => assert_eq!(stack.pop(), Some('('), "unbalanced ) in {expr}"),
            '}' => assert_eq!(stack.pop(), Some('{'), "unbalanced }} in {expr}"),
            ']' => assert_eq!(stack.pop(), Some('['), "unbalanced ] in {expr}"),
            _ => {}
        }
    }
    assert!(stack.is_empty() && !in_string, "unbalanced {expr}");
}

#[test]
fn the_dashboard_is_a_grafana_dashboard() {
    let d = load_dashboard();
    assert!(d.is_object());
    assert_eq!(d["uid"], "hmq-broker");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    // The data source: an import input and a variable of the same name.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus")
    );
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(vars["DS_PROMETHEUS"]["type"], "datasource");
    assert_eq!(vars["DS_PROMETHEUS"]["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("no ${name} variable"));
        assert_eq!(v["type"], "query");
        let q = v["definition"].as_str().unwrap();
        assert!(
            q.starts_with("label_values(hmq_build_info") && q.ends_with(&format!(", {name})")),
            "${name}: {q}"
        );
    }

    let panels = all_panels(&d);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().expect("panel title");
        assert!(!title.is_empty());
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id twice: {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        let grid = &p["gridPos"];
        for k in ["x", "y", "w", "h"] {
            assert!(grid[k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "{title}: empty expr");
            assert_balanced(expr);
            let uses = metric_uses(expr);
            assert!(!uses.is_empty(), "{title}: no hmq_ metric in {expr}");
            // Every selector is filtered by the two variables.
            for u in uses {
                let sel = u.selector.unwrap_or_default();
                assert!(
                    sel.contains("job=~\"$job\"") && sel.contains("instance=~\"$instance\""),
                    "{title}: {} not filtered by $job and $instance in {expr}",
                    u.name
                );
            }
        }
    }

    // The panels the issue asks for are there (by the metrics they show).
    let exprs: String = panel_exprs(&d).into_iter().map(|(_, e)| e + "\n").collect();
    for needle in [
        "hmq_connections_current",
        "hmq_connects_refused_total",
        "hmq_disconnects_total",
        "rate(hmq_messages_received_total",
        "rate(hmq_messages_sent_total",
        "hmq_bytes_received_total",
        "hmq_bytes_sent_total",
        "hmq_publish_routed_total",
        "hmq_publish_dropped_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.9,",
        "histogram_quantile(0.99,",
        "hmq_sessions",
        "hmq_queued_messages",
        "hmq_inflight_messages",
        "hmq_acl_denied_total",
        "hmq_tls_handshake_failures_total",
        "hmq_process_resident_memory_bytes",
        "rate(hmq_process_cpu_seconds_total",
        "hmq_build_info",
    ] {
        assert!(exprs.contains(needle), "no panel query with {needle}");
    }
}

/// A scrape: sample names with their label sets, and each family's type.
struct Scrape {
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    types: BTreeMap<String, String>,
}

/// `GET /metrics` over a plain TCP connection (`Connection: close`, read until closed).
async fn scrape(addr: SocketAddr) -> Scrape {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("scrape within WAIT")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut samples: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), t.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap();
                let labels = l
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n, labels)
            }
            None => (series, BTreeMap::new()),
        };
        samples.entry(name.to_owned()).or_default().push(labels);
    }
    Scrape { samples, types }
}

impl Scrape {
    /// Whether `name` is exported: a sample name, or a histogram series of an exported family.
    fn exports(&self, name: &str) -> bool {
        self.samples.contains_key(name) || self.types.get(name).is_some_and(|t| t == "histogram")
    }

    /// The family of an exported sample name.
    fn family(&self, name: &str) -> String {
        if self.types.contains_key(name) {
            return name.to_owned();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.types.contains_key(base) {
                    return base.to_owned();
                }
            }
        }
        panic!("{name} has no family")
    }
}

#[tokio::test]
async fn every_dashboard_query_uses_metrics_the_broker_exports() {
    let d = load_dashboard();
    let b = TestBroker::start_with(|c| c.http_port = Some(hmq::config::Port(0))).await;
    let s = scrape(b.http_addr.expect("HTTP listener")).await;

    let mut used_families = BTreeSet::new();
    let mut checked = 0;
    let queries = panel_exprs(&d).into_iter().chain(
        variable_queries(&d)
            .into_iter()
            .map(|q| ("variable".into(), q)),
    );
    for (title, expr) in queries {
        for u in metric_uses(&expr) {
            assert!(
                s.exports(&u.name),
                "panel {title:?}: {} is not exported by the broker (query: {expr})",
                u.name
            );
            used_families.insert(s.family(&u.name));
            checked += 1;
            // Label values the query selects on exist (job and instance come from Prometheus).
            for (label, op, value) in matchers(u.selector.as_deref().unwrap_or_default()) {
                if label == "job" || label == "instance" {
                    continue;
                }
                let sets = &s.samples[&u.name];
                assert!(
                    sets.iter().any(|l| l.contains_key(&label)),
                    "panel {title:?}: {} has no label {label}",
                    u.name
                );
                let values: Vec<&str> = match op.as_str() {
                    "=" | "!=" => vec![value.as_str()],
                    _ if value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|') =>
                    {
                        value.split('|').collect()
                    }
                    _ => vec![],
                };
                for v in values {
                    assert!(
                        sets.iter()
                            .any(|l| l.get(&label).map(String::as_str) == Some(v)),
                        "panel {title:?}: {}{{{label}=\"{v}\"}} does not exist",
                        u.name
                    );
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} metric references found");

    // Completeness: what the broker exports is on the dashboard.
    for family in s.types.keys() {
        if NOT_ON_DASHBOARD.contains(&family.as_str()) {
            continue;
        }
        assert!(
            used_families.contains(family),
            "{family} is exported but on no panel: add a panel or list it in NOT_ON_DASHBOARD"
        );
    }
    for name in NOT_ON_DASHBOARD {
        assert!(
            s.types.contains_key(name),
            "NOT_ON_DASHBOARD lists {name}, which the broker does not export"
        );
    }
    b.stop().await;
}

#[test]
fn metric_names_are_found_in_queries() {
    let uses = metric_uses(
        "histogram_quantile(0.9, sum by (le) (rate(hmq_delivery_latency_seconds_bucket{job=~\"$job\"}[5m]))) / hmq_x",
    );
    let names: Vec<&str> = uses.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["hmq_delivery_latency_seconds_bucket", "hmq_x"]);
    assert_eq!(uses[0].selector.as_deref(), Some("job=~\"$job\""));
    assert_eq!(uses[1].selector, None);
    // Not inside strings, not inside other identifiers.
    assert!(metric_uses("foo{a=\"hmq_nope\"} + xhmq_nope").is_empty());
    assert_eq!(
        matchers("job=~\"$job\", state=\"online\",reason!~\"a|b\""),
        [
            ("job".into(), "=~".into(), "$job".into()),
            ("state".into(), "=".into(), "online".into()),
            ("reason".into(), "!~".into(), "a|b".into()),
        ]
    );
}
