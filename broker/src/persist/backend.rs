//! The embedded store under the durable state, behind a small trait: atomic batches of writes
//! and deletes, committed with or without an fsync; a full scan for recovery; the disk space
//! used.
//!
//! # Why fjall
//!
//! Chosen by measuring fjall 3.1, redb 4.6 and rocksdb 0.25 (RocksDB 11.8), and a plain
//! append-only log as the floor, on this workload with `bench/store/run` (a Cargo project of
//! its own, so that rocksdb's C++ build never weighs on the workspace). ARCHITECTURE.md ("The
//! durable store") has the tables; in short, on the 2-core machine hmq is built on:
//!
//! * **Commits with fsync** (what `sync: "always"` does with 1 to 16 waiting publishers per
//!   commit): fjall 10,600 / 51,000 messages/s, rocksdb 5,800 / 50,900, redb 1,300 / 17,800.
//!   With 256 per commit rocksdb leads (123,000 against fjall's 78,000).
//! * **Queues filled and drained** (offline subscribers, 1,000 per commit): fjall and rocksdb
//!   about 110,000 messages/s each way; redb 17,000 to 30,000, writing 5 KiB per 16-byte
//!   message (its copy-on-write B-tree rewrites pages at every commit).
//! * **Churn** (written, deleted two commits later): redb 111,000/s, rocksdb 90,000, fjall
//!   55,000. hmq's own netting (see `journal`) takes most of this traffic off the store: a
//!   message acknowledged within a commit interval is never written.
//! * **Recovery** of 100,000 sessions and 1,000,000 messages: fjall 1.9 s, redb 1.6 s, rocksdb
//!   2.2 s; after SIGKILL all three lost no acknowledged commit and tore none.
//! * **Damaged files**: fjall refused a damaged table or reported its checksum error, and
//!   recovered a damaged journal from its tables; redb panicked on a damaged page unless told
//!   to check integrity on open; rocksdb's default WAL recovery dropped 178,000 records
//!   without an error.
//! * **Build**: fjall 94 s and 1.4 MiB, redb 74 s, rocksdb 40 minutes of C++ on 2 cores, a
//!   clang toolchain and 10 MB more binary.
//!
//! fjall is pure Rust, the fastest where hmq waits for the disk (small group commits), as
//! fast as rocksdb for queues, honest about damage, and cheap to build. Its disk use follows
//! its journal (up to about 170 MiB for 1,000,000 queued messages before a flush), which the
//! operator's volume size allows for.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// A store error, with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("{dir}: {what}")]
pub struct StoreError {
    /// The store's directory.
    pub dir: PathBuf,
    /// What failed and why.
    pub what: String,
}

/// One encoded change: a key and its new value (`None`: deleted).
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// What a scan calls for each record; an error stops the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'a;

/// The operations hmq's durable state needs from a store.
pub trait Backend: Send {
    /// Applies `ops` atomically (a `None` value deletes the key); with `sync`, returns once they
    /// are on stable storage.
    fn apply(&mut self, ops: &[Op], sync: bool) -> Result<(), StoreError>;
    /// Makes everything applied so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Visits every key and value in key order; stops at the first error `f` returns.
    fn scan(&mut self, f: &mut Visit<'_>) -> Result<u64, StoreError>;
    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> u64;
}

/// The fjall store: one database in `dir`, one keyspace.
pub struct Fjall {
    dir: PathBuf,
    db: Database,
    ks: Keyspace,
}

impl std::fmt::Debug for Fjall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fjall").field("dir", &self.dir).finish()
    }
}

/// Block cache: the broker reads the store only at start (everything lives in memory while
/// it runs), so a small cache is enough.
const CACHE_BYTES: u64 = 8 << 20;

impl Fjall {
    /// Opens (or creates) the store in `dir`. Another process holding it is an error.
    pub fn open(dir: &Path) -> Result<Fjall, StoreError> {
        let err = |what: String| StoreError {
            dir: dir.to_path_buf(),
            what,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        // fjall panics on some malformed files instead of returning an error; a panic here
        // must become a refusal that names the directory, never an abort of the broker.
        let opened = std::panic::catch_unwind(|| {
            Database::builder(dir)
                .cache_size(CACHE_BYTES)
                // hmq commits (and fsyncs, per policy) itself; fjall must not write to the
                // operating system behind its back at every batch either.
                .manual_journal_persist(true)
                .worker_threads(1)
                .open()
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(err(format!("cannot open the store: {e}"))),
            Err(_) => return Err(err("cannot open the store: its files are damaged".into())),
        };
        let ks = db
            .keyspace("hmq", KeyspaceCreateOptions::default)
            .map_err(|e| err(format!("cannot open the store's keyspace: {e}")))?;
        Ok(Fjall {
            dir: dir.to_path_buf(),
            db,
            ks,
        })
    }

    fn err(&self, what: String) -> StoreError {
        StoreError {
            dir: self.dir.clone(),
            what,
        }
    }
}

impl Backend for Fjall {
    fn apply(&mut self, ops: &[Op], sync: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return if sync { self.sync() } else { Ok(()) };
        }
        let mut batch = self.db.batch().durability(Some(if sync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        }));
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(&self.ks, k.as_slice(), v.as_slice()),
                None => batch.remove(&self.ks, k.as_slice()),
            }
        }
        batch
            .commit()
            .map_err(|e| self.err(format!("write failed: {e}")))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| self.err(format!("fsync failed: {e}")))
    }

    fn scan(&mut self, f: &mut Visit<'_>) -> Result<u64, StoreError> {
        let mut n = 0;
        let ks = self.ks.clone();
        let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for item in ks.iter() {
                let (k, v) = item
                    .into_inner()
                    .map_err(|e| format!("cannot read the store (damaged file?): {e}"))?;
                f(&k, &v).map_err(|e| format!("record {}: {e}", shown_key(&k)))?;
                n += 1;
            }
            Ok::<(), String>(())
        }));
        match scanned {
            Ok(Ok(())) => Ok(n),
            Ok(Err(what)) => Err(self.err(what)),
            Err(_) => Err(self.err("cannot read the store: its files are damaged".into())),
        }
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// A key for an error message: its family letter and the rest in hex, at most 40 bytes.
pub fn shown_key(k: &[u8]) -> String {
    let (family, rest) = match k.split_first() {
        Some((f, r)) if f.is_ascii_uppercase() => ((*f as char).to_string(), r),
        _ => (String::new(), k),
    };
    let hex: String = rest.iter().take(40).map(|b| format!("{b:02x}")).collect();
    format!("{family}{hex}{}", if rest.len() > 40 { "…" } else { "" })
}
