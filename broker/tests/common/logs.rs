//! Captures the broker's log lines in memory, so a test can observe what the broker decided
//! about a connection (e.g. the client address it took from a PROXY header or from
//! `X-Forwarded-For`: the `client connected` line shows it as `peer=`).
//!
//! Declared by the tests that use it with `#[path = "common/logs.rs"] mod logs;`. One global
//! subscriber per test binary; tests in the binary run concurrently, so a test looks only for
//! lines naming its own client id.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Mutex, Once};
use std::time::Duration;

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

struct Capture;

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (info level, no colours) once per test binary.
pub fn install() {
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
}

/// Every captured line containing all of `parts`.
pub fn lines_with(parts: &[&str]) -> Vec<String> {
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Waits (at most 5 s) for a line containing all of `parts`, and returns it.
pub async fn wait_for(parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = lines_with(parts).pop() {
            return l;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("no log line with {parts:?} within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `peer=` address on the `client connected` line of `client_id`.
pub async fn connected_peer(client_id: &str) -> String {
    let id = format!("client_id={client_id} ");
    let line = wait_for(&["client connected", &id]).await;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("peer="))
        .unwrap_or_else(|| panic!("no peer= in {line:?}"))
        .to_owned()
}
