//! 6. build cost: what adding the store to hmq costs in build time and binary
//! size. For each candidate, a generated minimal binary that depends only on
//! that crate (open a store, write a key, read it back) is built from clean
//! with `cargo build --release` in its own target directory, using hmq's
//! release profile (codegen-units = 1, thin LTO) plus `strip = true`. Builds
//! run one at a time, with the versions pinned by bench/store/Cargo.lock.

use crate::stores::Kind;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn dep_and_main(kind: Kind, versions: &Value) -> (String, &'static str) {
    let v = |n: &str| versions[n].as_str().unwrap_or("*").to_string();
    match kind {
        Kind::Fjall => (
            format!("fjall = \"={}\"", v("fjall")),
            r#"fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    let db = fjall::Database::builder(&dir).open().expect("open");
    let ks = db.keyspace("t", fjall::KeyspaceCreateOptions::default).expect("keyspace");
    ks.insert("k", "v").expect("insert");
    db.persist(fjall::PersistMode::SyncData).expect("persist");
    assert_eq!(ks.get("k").expect("get").as_deref(), Some(&b"v"[..]));
    println!("ok");
}
"#,
        ),
        Kind::Redb => (
            format!("redb = \"={}\"", v("redb")),
            r#"use redb::{ReadableDatabase, TableDefinition};
const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let db = redb::Database::create(format!("{dir}/t.redb")).expect("open");
    let tx = db.begin_write().expect("begin");
    tx.open_table(T).expect("table").insert(&b"k"[..], &b"v"[..]).expect("insert");
    tx.commit().expect("commit");
    let r = db.begin_read().expect("read");
    assert_eq!(r.open_table(T).expect("table").get(&b"k"[..]).expect("get").map(|g| g.value().to_vec()), Some(b"v".to_vec()));
    println!("ok");
}
"#,
        ),
        Kind::Rocksdb => (
            format!("rocksdb = \"={}\"", v("rocksdb")),
            r#"fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    let db = rocksdb::DB::open_default(&dir).expect("open");
    db.put(b"k", b"v").expect("put");
    db.flush_wal(true).expect("sync");
    assert_eq!(db.get(b"k").expect("get"), Some(b"v".to_vec()));
    println!("ok");
}
"#,
        ),
        Kind::Log => (
            String::new(),
            r#"use std::io::Write;
fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(format!("{dir}/t.log")).expect("open");
    f.write_all(b"kv").expect("write");
    f.sync_data().expect("sync");
    println!("ok");
}
"#,
        ),
    }
}

pub fn run(kind: Kind, out: &Path, lock: Option<&Path>, versions: &Value, log: &Path) -> Value {
    let proj = out.join("buildcost").join(kind.name());
    crate::util::remove_dir(&proj);
    let name = format!("buildcost-{}", kind.name());
    let (dep, main) = dep_and_main(kind, versions);
    let toml = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n[dependencies]\n{dep}\n\n\
         [profile.release]\ncodegen-units = 1\nlto = \"thin\"\nstrip = true\n"
    );
    if let Err(e) = std::fs::create_dir_all(proj.join("src"))
        .and_then(|_| std::fs::write(proj.join("Cargo.toml"), toml))
        .and_then(|_| std::fs::write(proj.join("src/main.rs"), main))
    {
        return json!({"error": format!("write project: {e}")});
    }
    // Same dependency versions as the benchmark itself: start from its lock
    // file (cargo drops the entries this project does not need).
    if let Some(l) = lock {
        let _ = std::fs::copy(l, proj.join("Cargo.lock"));
    }
    let target = proj.join("target");
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    let t0 = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--offline", "--target-dir"])
        .arg(&target)
        .current_dir(&proj)
        .env("CARGO_TERM_COLOR", "never");
    if let Ok(f) = logf {
        if let Ok(f2) = f.try_clone() {
            cmd.stdout(f).stderr(f2);
        }
    }
    let child = cmd.spawn();
    let status = match child {
        Ok(mut c) => crate::util::wait_limited(&mut c, Duration::from_secs(3600)).0,
        Err(e) => return json!({"error": format!("spawn cargo: {e}")}),
    };
    let secs = t0.elapsed().as_secs_f64();
    let bin = target.join("release").join(&name);
    let size = std::fs::metadata(&bin).map(|m| m.len()).ok();
    let ok = status.is_some_and(|s| s.success());
    let runs = Command::new(&bin)
        .arg(proj.join("data"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "ok")
        .unwrap_or(false);
    let target_bytes = crate::metrics::disk_usage(&target).0;
    crate::util::remove_dir(&target);
    crate::util::remove_dir(&proj.join("data"));
    json!({"ok": ok && size.is_some(), "build_secs": secs, "stripped_binary_bytes": size,
           "binary_runs": runs, "target_dir_bytes": target_bytes,
           "dependency": dep, "profile": "codegen-units=1, lto=thin, strip=true"})
}
