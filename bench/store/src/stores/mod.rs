//! The candidates behind one small interface, shaped like what hmq's storage
//! layer needs: atomic batches of puts/deletes committed with or without an
//! fsync, a separate "make everything so far durable" call, a full ordered
//! scan (recovery), and an optional manual compaction.
//!
//! How the broker's durability policies map onto each store:
//!
//! | policy   | fjall | redb | rocksdb | log |
//! |----------|-------|------|---------|-----|
//! | always   | batch `.durability(Some(SyncData))` | write txn, `Durability::Immediate` | `WriteBatch`, `WriteOptions::set_sync(true)` | `write_all` + `sync_data` |
//! | interval | the broker batches in memory and commits one synced batch per interval; or (scenario 2's "interval-10ms" variant) unsynced commits + `persist(SyncData)` every 10 ms | same, or `Durability::None` commits + an empty `Immediate` commit every 10 ms | same, or `sync=false` + `flush_wal(true)` every 10 ms | same, or plain writes + `sync_data` every 10 ms |
//! | none     | batch without durability (journal written to OS buffers) | `Durability::None` | `sync=false` | `write_all` only |
//!
//! All stores run with their default configuration: the point is to measure
//! what hmq would get without a tuning campaign. One keyspace/table holds all
//! four key families (`m`, `q`, `s`, `r`), distinguished by their first byte.

use std::path::Path;

#[cfg(feature = "fjall")]
mod fjall_store;
mod log_store;
#[cfg(feature = "redb")]
mod redb_store;
#[cfg(feature = "rocksdb")]
mod rocksdb_store;

pub type Res<T> = Result<T, String>;

/// One atomic commit's worth of operations.
#[derive(Default, Debug)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Key + value bytes handed to the store (the logical write volume, the
    /// denominator of write amplification).
    pub logical_bytes: u64,
}

impl Batch {
    pub fn put(&mut self, k: &[u8], v: &[u8]) {
        self.logical_bytes += (k.len() + v.len()) as u64;
        self.ops.push((k.to_vec(), Some(v.to_vec())));
    }
    pub fn del(&mut self, k: &[u8]) {
        self.logical_bytes += k.len() as u64;
        self.ops.push((k.to_vec(), None));
    }
    pub fn clear(&mut self) {
        self.ops.clear();
        self.logical_bytes = 0;
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// How a store is opened: `Default` is the store's default configuration;
/// `Strict` turns on the store's extra checking where it has one (redb:
/// `set_check_integrity_on_open`; rocksdb: WAL recovery mode
/// `AbsoluteConsistency`), used only by the corruption scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    Default,
    Strict,
}

pub trait Store {
    /// Apply a batch atomically; with `sync` the call returns only once the
    /// batch is on stable storage.
    fn commit(&mut self, b: &Batch, sync: bool) -> Res<()>;
    /// Make every commit so far durable (group commit of unsynced commits).
    fn sync(&mut self) -> Res<()>;
    /// Visit every live key-value pair in key order; returns the count.
    fn scan(&mut self, f: &mut dyn FnMut(&[u8], &[u8])) -> Res<u64>;
    /// Run the store's manual compaction, if it has one (Ok(false) if not).
    fn compact(&mut self) -> Res<bool>;
    /// Clean close (flushes what the store flushes on close).
    fn close(self: Box<Self>) -> Res<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fjall,
    Redb,
    Rocksdb,
    Log,
}

pub const ALL: [Kind; 4] = [Kind::Fjall, Kind::Redb, Kind::Rocksdb, Kind::Log];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fjall => "fjall",
            Kind::Redb => "redb",
            Kind::Rocksdb => "rocksdb",
            Kind::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.name() == s)
    }

    /// Was this candidate compiled into this binary (cargo feature)?
    pub fn compiled(self) -> bool {
        match self {
            Kind::Fjall => cfg!(feature = "fjall"),
            Kind::Redb => cfg!(feature = "redb"),
            Kind::Rocksdb => cfg!(feature = "rocksdb"),
            Kind::Log => true,
        }
    }

    /// Does `OpenMode::Strict` differ from the default for this store?
    pub fn has_strict_mode(self) -> bool {
        matches!(self, Kind::Redb | Kind::Rocksdb)
    }

    /// Is this file one of the store's data files (as opposed to a lock file
    /// or a human-readable info log)?
    pub fn is_data_file(self, p: &Path) -> bool {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match self {
            Kind::Rocksdb => !(n == "LOCK" || n.starts_with("LOG") || n.starts_with("OPTIONS")),
            Kind::Fjall => n != "lock" && n != ".lock",
            _ => true,
        }
    }

    /// Is this file a sorted table (an LSM's SST/segment), as opposed to its
    /// write-ahead log / journal or metadata?
    pub fn is_table_file(self, p: &Path) -> bool {
        let s = p.to_string_lossy();
        match self {
            Kind::Rocksdb => s.ends_with(".sst"),
            Kind::Fjall => s.contains("/tables/"),
            _ => false,
        }
    }
}

pub fn open(kind: Kind, dir: &Path, mode: OpenMode) -> Res<Box<dyn Store>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    match kind {
        #[cfg(feature = "fjall")]
        Kind::Fjall => Ok(Box::new(fjall_store::FjallStore::open(dir)?)),
        #[cfg(feature = "redb")]
        Kind::Redb => Ok(Box::new(redb_store::RedbStore::open(dir, mode)?)),
        #[cfg(feature = "rocksdb")]
        Kind::Rocksdb => Ok(Box::new(rocksdb_store::RocksStore::open(dir, mode)?)),
        Kind::Log => Ok(Box::new(log_store::LogStore::open(dir)?)),
        #[allow(unreachable_patterns)]
        other => {
            let _ = mode;
            Err(format!(
                "{} was not compiled into this binary (cargo feature)",
                other.name()
            ))
        }
    }
}
