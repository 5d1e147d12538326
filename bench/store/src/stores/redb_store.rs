//! redb 4 (copy-on-write B-tree, pure Rust, single file). A commit is one
//! write transaction; a synced commit uses `Durability::Immediate` (redb's
//! 1-phase commit: write pages + the commit slot, one fsync), an unsynced one
//! `Durability::None` (kept in memory/OS buffers; redb cannot free pages of
//! non-durable commits until the next durable one). `sync()` is an empty
//! `Immediate` transaction. Manual compaction is `Database::compact()`,
//! repeated until it reports nothing left to do.

use super::{Batch, OpenMode, Res, Store};
use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};
use std::path::Path;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hmq");

pub struct RedbStore {
    db: Database,
}

fn e(ctx: &str, err: impl std::fmt::Display) -> String {
    format!("redb {ctx}: {err}")
}

impl RedbStore {
    pub fn open(dir: &Path, mode: OpenMode) -> Res<Self> {
        let mut b = Database::builder();
        if mode == OpenMode::Strict {
            b.set_check_integrity_on_open(true);
        }
        let db = b.create(dir.join("hmq.redb")).map_err(|x| e("open", x))?;
        Ok(RedbStore { db })
    }

    fn txn(&mut self, b: Option<&Batch>, durability: Durability) -> Res<()> {
        let mut tx = self.db.begin_write().map_err(|x| e("begin_write", x))?;
        tx.set_durability(durability)
            .map_err(|x| e("set_durability", x))?;
        if let Some(b) = b {
            let mut t = tx.open_table(TABLE).map_err(|x| e("open_table", x))?;
            for (k, v) in &b.ops {
                match v {
                    Some(v) => {
                        t.insert(k.as_slice(), v.as_slice())
                            .map_err(|x| e("insert", x))?;
                    }
                    None => {
                        t.remove(k.as_slice()).map_err(|x| e("remove", x))?;
                    }
                }
            }
        }
        tx.commit().map_err(|x| e("commit", x))
    }
}

impl Store for RedbStore {
    fn commit(&mut self, b: &Batch, sync: bool) -> Res<()> {
        self.txn(
            Some(b),
            if sync {
                Durability::Immediate
            } else {
                Durability::None
            },
        )
    }

    fn sync(&mut self) -> Res<()> {
        self.txn(None, Durability::Immediate)
    }

    fn scan(&mut self, f: &mut dyn FnMut(&[u8], &[u8])) -> Res<u64> {
        use redb::ReadableTable;
        let tx = self.db.begin_read().map_err(|x| e("begin_read", x))?;
        let t = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(x) => return Err(e("open_table", x)),
        };
        let mut n = 0;
        for item in t.iter().map_err(|x| e("iter", x))? {
            let (k, v) = item.map_err(|x| e("iter", x))?;
            f(k.value(), v.value());
            n += 1;
        }
        Ok(n)
    }

    fn compact(&mut self) -> Res<bool> {
        // Bounded: each round moves pages towards the start of the file.
        for _ in 0..1000 {
            if !self.db.compact().map_err(|x| e("compact", x))? {
                break;
            }
        }
        Ok(true)
    }

    fn close(self: Box<Self>) -> Res<()> {
        self.db.close().map_err(|x| e("close", x))
    }
}
