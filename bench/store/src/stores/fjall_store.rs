//! fjall 3 (LSM, pure Rust). One `Database`, one keyspace. A commit is one
//! `OwnedWriteBatch` (atomic across keys); a synced commit sets the batch's
//! durability to `PersistMode::SyncData`, which fdatasyncs the journal before
//! `commit()` returns. `sync()` is `Database::persist(SyncData)`. Manual
//! compaction is `Keyspace::rotate_memtable_and_wait` + `major_compact`
//! (the latter public but hidden from the docs).

use super::{Batch, Res, Store};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

pub struct FjallStore {
    db: Database,
    ks: Keyspace,
}

fn e(ctx: &str, err: impl std::fmt::Display) -> String {
    format!("fjall {ctx}: {err}")
}

impl FjallStore {
    pub fn open(dir: &Path) -> Res<Self> {
        let db = Database::builder(dir).open().map_err(|x| e("open", x))?;
        let ks = db
            .keyspace("hmq", KeyspaceCreateOptions::default)
            .map_err(|x| e("keyspace", x))?;
        Ok(FjallStore { db, ks })
    }
}

impl Store for FjallStore {
    fn commit(&mut self, b: &Batch, sync: bool) -> Res<()> {
        let mut wb = self
            .db
            .batch()
            .durability(sync.then_some(PersistMode::SyncData));
        for (k, v) in &b.ops {
            match v {
                Some(v) => wb.insert(&self.ks, k.as_slice(), v.as_slice()),
                None => wb.remove(&self.ks, k.as_slice()),
            }
        }
        wb.commit().map_err(|x| e("commit", x))
    }

    fn sync(&mut self) -> Res<()> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|x| e("persist", x))
    }

    fn scan(&mut self, f: &mut dyn FnMut(&[u8], &[u8])) -> Res<u64> {
        let mut n = 0;
        for g in self.ks.iter() {
            let (k, v) = g.into_inner().map_err(|x| e("iter", x))?;
            f(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn compact(&mut self) -> Res<bool> {
        // Flush the memtable first (as rocksdb's compact_range does), so the
        // compaction sees everything written, then a major compaction.
        self.ks
            .rotate_memtable_and_wait()
            .map_err(|x| e("rotate_memtable_and_wait", x))?;
        self.ks.major_compact().map_err(|x| e("major_compact", x))?;
        Ok(true)
    }

    fn close(self: Box<Self>) -> Res<()> {
        // fjall persists the journal (SyncAll) when the last handle drops.
        let FjallStore { db, ks } = *self;
        drop(ks);
        drop(db);
        Ok(())
    }
}
