//! The documentation stays true to the code: every `hmq.config` key and every command-line flag
//! has a row in docs/configuration.md, and every relative link (file and `#anchor`) in the
//! Markdown files users and contributors read resolves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first cell of every table row of `text`, e.g. "`cluster.host`" or "`-w`, `--worker`".
fn first_cells(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|rest| rest.split('|').next())
        .map(|cell| cell.trim().to_owned())
        .collect()
}

/// The names in backticks within `cell`.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Every key of hmq.config as a dotted path (`cluster.host`), from the defaults serialised the
/// way `--print-config` prints them, which writes every key.
fn config_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    walk(&key, v, out);
                } else {
                    out.insert(key);
                }
            }
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&hmq::config::Config::default().to_json_pretty()).unwrap();
    let mut out = BTreeSet::new();
    walk("", &json, &mut out);
    out
}

#[test]
fn every_config_key_has_a_row_in_docs_configuration() {
    let doc = read(&repo().join("docs/configuration.md"));
    let rows: BTreeSet<String> = first_cells(&doc)
        .iter()
        .flat_map(|c| {
            backticked(c)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let keys = config_keys();
    assert!(keys.len() > 40, "found only {} keys", keys.len());
    let missing: Vec<&String> = keys.iter().filter(|k| !rows.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "config keys without a row in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_flag_has_a_row_in_docs_configuration() {
    let doc = read(&repo().join("docs/configuration.md"));
    let rows: BTreeSet<String> = first_cells(&doc)
        .iter()
        .flat_map(|c| {
            backticked(c)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // Flags are the words starting with '-' at the start of the usage text's option lines.
    let mut flags = BTreeSet::new();
    for line in hmq::cli::usage().lines() {
        let spec = line.trim_start();
        if !spec.starts_with('-') {
            continue;
        }
        let spec = spec.split("  ").next().unwrap_or(spec);
        for word in spec.split([',', ' ']) {
            if word.starts_with('-') {
                flags.insert(word.to_owned());
            }
        }
    }
    assert!(
        flags.contains("--clusterport") && flags.contains("-D"),
        "{flags:?}"
    );
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| {
            // `--host` is documented as "`--host` (`-host`)": either spelling counts.
            !rows.contains(*f) && !rows.contains(f.trim_start_matches('-'))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "flags without a row in docs/configuration.md: {missing:?}"
    );
}

/// The Markdown files whose links are checked.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files: Vec<PathBuf> = [
        "README.md",
        "ARCHITECTURE.md",
        "bench/README.md",
        "broker/benches/README.md",
        "charts/hmq-operator/README.md",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// GitHub's anchor for a heading: lower case, spaces to '-', punctuation other than '-' and
/// '_' removed; a repeated heading gets "-1", "-2", ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for line in without_code_blocks(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while !seen.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        out.insert(candidate);
    }
    out
}

/// The lines of `text` outside fenced code blocks.
fn without_code_blocks(text: &str) -> Vec<&str> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            out.push(line);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of `line`, outside inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let plain: String = line
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 0 { part } else { "" })
        .collect();
    let mut rest = plain.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    out
}

#[test]
fn links_in_the_docs_resolve() {
    let files = markdown_files();
    assert!(files.len() >= 10, "{files:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    let root = repo();
    for file in &files {
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let text = read(file);
        let dir = file.parent().unwrap();
        for line in without_code_blocks(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    dir.join(path)
                };
                if !resolved.exists() {
                    broken.push(format!("{shown}: {target}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let ok = resolved.extension().is_some_and(|e| e == "md")
                        && anchors(&read(&resolved)).contains(anchor);
                    if !ok {
                        broken.push(format!("{shown}: {target}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_link_checker_catches_what_it_should() {
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and `[b](not.md)` and [c](#y)"),
        ["docs/a.md#x", "#y"]
    );
    let a = anchors("# Configuration (hmq.config)\n## `hmq passwd <file> <user>`\n## A\n## A\n");
    for want in [
        "configuration-hmqconfig",
        "hmq-passwd-file-user",
        "a",
        "a-1",
    ] {
        assert!(a.contains(want), "{want} not in {a:?}");
    }
    assert!(anchors("```\n# not a heading\n```\n").is_empty());
}
