//! RocksDB through the rust-rocksdb crate (LSM, C++). Default options plus
//! `create_if_missing`. A commit is one `WriteBatch` written with
//! `WriteOptions::set_sync(sync)` (sync=true fdatasyncs the WAL before
//! returning). `sync()` is `flush_wal(true)`. Manual compaction is
//! `compact_range(None, None)` (which also flushes the memtable).

use super::{Batch, OpenMode, Res, Store};
use rocksdb::{DB, DBRecoveryMode, IteratorMode, Options, WriteBatch, WriteOptions};
use std::path::Path;

pub struct RocksStore {
    db: DB,
    synced: WriteOptions,
    unsynced: WriteOptions,
}

fn e(ctx: &str, err: impl std::fmt::Display) -> String {
    format!("rocksdb {ctx}: {err}")
}

impl RocksStore {
    pub fn open(dir: &Path, mode: OpenMode) -> Res<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        if mode == OpenMode::Strict {
            opts.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
        }
        let db = DB::open(&opts, dir).map_err(|x| e("open", x))?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let mut unsynced = WriteOptions::default();
        unsynced.set_sync(false);
        Ok(RocksStore {
            db,
            synced,
            unsynced,
        })
    }
}

impl Store for RocksStore {
    fn commit(&mut self, b: &Batch, sync: bool) -> Res<()> {
        let mut wb = WriteBatch::default();
        for (k, v) in &b.ops {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        self.db
            .write_opt(wb, if sync { &self.synced } else { &self.unsynced })
            .map_err(|x| e("write", x))
    }

    fn sync(&mut self) -> Res<()> {
        self.db.flush_wal(true).map_err(|x| e("flush_wal", x))
    }

    fn scan(&mut self, f: &mut dyn FnMut(&[u8], &[u8])) -> Res<u64> {
        let mut n = 0;
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(|x| e("iterator", x))?;
            f(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn compact(&mut self) -> Res<bool> {
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        Ok(true)
    }

    fn close(self: Box<Self>) -> Res<()> {
        // Dropping the DB waits for background jobs; the WAL holds whatever
        // the memtable has (RocksDB does not flush memtables on close when
        // the WAL is enabled).
        drop(self);
        Ok(())
    }
}
