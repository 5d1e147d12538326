//! Durable state: what a restart must keep, on local disk.
//!
//! While the broker runs, its state lives in memory as it does without persistence (sessions,
//! inboxes, in-flight windows, the retained trie, cluster outboxes); this module *mirrors* the
//! changes into an embedded store ([`backend`]) so that a restarted broker finds them again
//! ([`recover`]). Each change is a write or a delete of one key ([`record`]); changes gather in
//! sharded pending sets ([`journal`]) where a key created and deleted before the next commit
//! cancels out, and one thread commits what is left:
//!
//! * `sync: "interval"`: a group commit with fsync every `syncIntervalMs`;
//! * `sync: "none"`: the same without fsync (the operating system writes it out);
//! * `sync: "always"`: a commit with fsync as soon as the previous one is done, and every
//!   acknowledgement that depends on a change (PUBACK, PUBREC, PUBCOMP, SUBACK) waits for the
//!   commit that holds it ([`Durable::ticket`], [`Durable::is_durable`]). Many waiting
//!   publishers share one fsync.
//!
//! Ordering: a change is appended under the lock that orders it in memory (a session's inbox
//! lock for queue entries, a message's shard for its reference count, the retained trie's
//! shard), so the store sees changes of one key in the order memory saw them. Commits are
//! taken in epochs: the epoch number is advanced before the shards are emptied, so an
//! acknowledgement that reads the epoch after its changes were appended waits long enough.
//!
//! Memory stays a choice: without `persistence.dir` none of this exists (`Broker::durable` is
//! `None`) and the message path checks one `Option`.

pub mod backend;
pub mod journal;
pub mod record;
pub mod recover;
pub mod restore;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

use crate::config::{PersistenceConfig, SyncPolicy};
use crate::message::Message;
use crate::metrics::PersistMetrics;
use crate::session::Session;
use backend::{Backend, StoreError};
use journal::{Effect, Pending, Value};
use record::Key;

/// Number of pending-change shards: enough that publishers on different cores rarely meet.
const SHARDS: usize = 16;

/// How often the disk space is measured against `maxDiskBytes`.
const DISK_CHECK: Duration = Duration::from_secs(1);

/// After this long without a successful commit the store counts as failed: new durable
/// changes are refused (as when the disk is full) so that pending changes cannot grow
/// without bound.
const FAILED_AFTER: Duration = Duration::from_secs(5);

/// Why the durable state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The store failed.
    #[error("persistence.dir {0}")]
    Store(#[from] StoreError),
    /// A record could not be read.
    #[error("persistence.dir {dir}: {what}")]
    Corrupt {
        /// The store's directory.
        dir: PathBuf,
        /// Which record and why.
        what: String,
    },
}

/// The durable id and persisted-reference count a [`Message`] carries once it is stored.
///
/// Cloning a message (for a retained copy) starts a new, unstored one; equality ignores it.
#[derive(Debug, Default)]
pub struct DurableRef {
    /// Its `M` key (0: not stored yet).
    pid: AtomicU64,
    /// Queue entries on disk (or pending) that refer to it.
    refs: AtomicU32,
}

impl Clone for DurableRef {
    fn clone(&self) -> Self {
        DurableRef::default()
    }
}

impl PartialEq for DurableRef {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DurableRef {}

impl DurableRef {
    /// A stored message's reference as recovery found it.
    pub(crate) fn recovered(pid: u64, refs: u32) -> DurableRef {
        DurableRef {
            pid: AtomicU64::new(pid),
            refs: AtomicU32::new(refs),
        }
    }

    /// Its `M` key, 0 if not stored.
    pub fn pid(&self) -> u64 {
        self.pid.load(Ordering::Acquire)
    }
}

/// The durable state of one broker. See the module documentation.
pub struct Durable {
    dir: PathBuf,
    policy: SyncPolicy,
    interval: Duration,
    max_disk: u64,
    shards: Box<[Mutex<Pending>]>,
    /// The epoch changes are appended to now.
    epoch: AtomicU64,
    /// The last epoch on disk (per policy).
    durable: AtomicU64,
    /// Something is pending (the committer's doorbell).
    dirty: Mutex<bool>,
    doorbell: Condvar,
    /// Sessions holding acknowledgements until an epoch is durable.
    waiters: Mutex<Vec<(u64, std::sync::Weak<Session>)>>,
    /// Woken after every commit, for tasks waiting in `until_durable`.
    committed: tokio::sync::Notify,
    /// New durable changes are refused: the disk is full, or commits keep failing.
    refusing: AtomicBool,
    stopping: AtomicBool,
    next_pid: AtomicU64,
    disk_bytes: AtomicU64,
    metrics: PersistMetrics,
    backend: Mutex<Option<Box<dyn Backend>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Encoded changes of a commit that failed, written (under newer changes) by the next one.
    retry: Mutex<Vec<backend::Op>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .field("durable", &self.durable.load(Ordering::Relaxed))
            .finish()
    }
}

impl Durable {
    /// Opens the store in `config.dir` and reads everything in it. The committer starts with
    /// [`Durable::start`], after recovery has been applied to the broker.
    pub fn open(
        config: &PersistenceConfig,
        dir: &Path,
        metrics: PersistMetrics,
    ) -> Result<(Arc<Durable>, recover::Recovered), PersistError> {
        let started = Instant::now();
        let mut backend: Box<dyn Backend> = Box::new(backend::Fjall::open(dir)?);
        let recovered = recover::read(backend.as_mut(), dir)?;
        let durable = Arc::new(Durable {
            dir: dir.to_path_buf(),
            policy: config.sync,
            interval: Duration::from_millis(config.sync_interval_ms.max(1)),
            max_disk: config.max_disk_bytes,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Pending::default()))
                .collect(),
            epoch: AtomicU64::new(1),
            durable: AtomicU64::new(0),
            dirty: Mutex::new(false),
            doorbell: Condvar::new(),
            waiters: Mutex::new(Vec::new()),
            committed: tokio::sync::Notify::new(),
            refusing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            next_pid: AtomicU64::new(recovered.max_pid + 1),
            disk_bytes: AtomicU64::new(backend.disk_bytes()),
            metrics,
            backend: Mutex::new(None),
            committer: Mutex::new(None),
            retry: Mutex::new(Vec::new()),
        });
        // The format record, durably, before anything else is written, marked "not stopped
        // cleanly" until `close` says otherwise.
        let meta = record::encode(&record::Meta {
            format: record::FORMAT,
            clean: false,
        });
        backend.apply(&[(Key::Meta.encode(), Some(meta))], true)?;
        durable
            .metrics
            .disk_bytes
            .set(durable.disk_bytes.load(Ordering::Relaxed) as i64);
        *durable.backend.lock() = Some(backend);
        if recovered.unclean {
            warn!(
                dir = %dir.display(),
                "the durable store was not closed cleanly (crash or kill): messages queued for \
                 sessions that were connected go out with DUP"
            );
        }
        info!(
            dir = %dir.display(),
            sessions = recovered.sessions.len(),
            queued = recovered.queued,
            retained = recovered.retained.len(),
            ms = started.elapsed().as_millis() as u64,
            "durable state loaded"
        );
        Ok((durable, recovered))
    }

    /// Starts the committer thread.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("hmq-persist".into())
            .spawn(move || me.run_committer());
        match handle {
            Ok(h) => *self.committer.lock() = Some(h),
            Err(e) => error!(error = %e, "cannot start the persistence thread"),
        }
    }

    /// The sync policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Whether acknowledgements wait for the store (`sync: "always"`).
    pub fn acks_wait(&self) -> bool {
        self.policy == SyncPolicy::Always
    }

    /// Whether new durable changes are refused (disk full or the store failing).
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    fn shard_of(&self, n: u64) -> &Mutex<Pending> {
        // Fibonacci hashing spreads consecutive ids over the shards.
        let i = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS;
        &self.shards[i]
    }

    fn shard_for(&self, key: &Key) -> &Mutex<Pending> {
        match key {
            Key::Session(sid) | Key::Queue(sid, _) | Key::Awaiting(sid, _) => self.shard_of(*sid),
            Key::Message(pid) => self.shard_of(*pid),
            Key::Retained(t) => self.shard_of(ahash_str(t)),
            Key::Outbox(_, seq) => self.shard_of(*seq),
            Key::Meta => &self.shards[0],
        }
    }

    fn count(&self, effect: Effect) {
        match effect {
            Effect::Added => self.metrics.changes.added.inc(),
            Effect::Replaced => self.metrics.changes.replaced.inc(),
            Effect::Netted => self.metrics.changes.netted.inc(),
        }
    }

    /// Tells the committer something is pending. Only `always` commits on demand; the
    /// other policies commit on their interval whatever arrives.
    fn ring(&self) {
        if self.policy != SyncPolicy::Always {
            return;
        }
        let mut dirty = self.dirty.lock();
        if !*dirty {
            *dirty = true;
            self.doorbell.notify_one();
        }
    }

    /// Writes `key`; `fresh` if the key cannot exist on disk yet.
    pub fn put(&self, key: Key, value: Value, fresh: bool) {
        let effect = self.shard_for(&key).lock().put(key, value, fresh);
        self.count(effect);
        self.ring();
    }

    /// Deletes `key`.
    pub fn delete(&self, key: Key) {
        let effect = self.shard_for(&key).lock().delete(key);
        self.count(effect);
        self.ring();
    }

    /// A queue entry refers to `msg`: stores the message on its first reference.
    pub fn add_ref(&self, msg: &Arc<Message>) -> u64 {
        let r = &msg.durable;
        let mut pid = r.pid.load(Ordering::Acquire);
        if pid == 0 {
            let new = self.next_pid.fetch_add(1, Ordering::Relaxed);
            pid = match r
                .pid
                .compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => new,
                Err(existing) => existing,
            };
        }
        // The count changes under the message's shard lock, so that "first reference: write"
        // and "last reference gone: delete" reach the pending set in the order they happened.
        let mut shard = self.shard_of(pid).lock();
        if r.refs.fetch_add(1, Ordering::AcqRel) == 0 {
            let effect = shard.put(Key::Message(pid), Value::Message(msg.clone()), true);
            drop(shard);
            self.count(effect);
            self.ring();
        }
        pid
    }

    /// A queue entry that referred to `msg` is gone: deletes the message with its last one.
    pub fn drop_ref(&self, msg: &Message) {
        let r = &msg.durable;
        let pid = r.pid.load(Ordering::Acquire);
        if pid == 0 {
            return;
        }
        let mut shard = self.shard_of(pid).lock();
        let before = r.refs.load(Ordering::Acquire);
        if before == 0 {
            return;
        }
        if r.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let effect = shard.delete(Key::Message(pid));
            drop(shard);
            self.count(effect);
            self.ring();
        }
    }

    /// The epoch the changes appended so far belong to (at most): an acknowledgement that
    /// depends on them may go out once [`Durable::is_durable`] says so.
    pub fn ticket(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether every change of epoch `ticket` and before is on disk.
    pub fn is_durable(&self, ticket: u64) -> bool {
        self.durable.load(Ordering::Acquire) >= ticket
    }

    /// Wakes `session` (its `notify` signal) once `ticket` is durable.
    pub fn wake_when_durable(&self, ticket: u64, session: &Arc<Session>) {
        if self.is_durable(ticket) {
            session.notify().notify();
            return;
        }
        self.waiters.lock().push((ticket, Arc::downgrade(session)));
        // The commit may have finished between the check and the push.
        if self.is_durable(ticket) {
            self.wake_waiters();
        }
        // The ticket may be the epoch a commit already under way opened (read after that
        // commit took the change): only the next commit makes it durable, so there must be one
        // even if nothing else changes (it writes nothing and does not sync).
        self.ring();
    }

    /// Waits (at most `limit`) until `ticket` is durable; whether it is.
    pub async fn until_durable(&self, ticket: u64, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        // See `wake_when_durable`.
        self.ring();
        loop {
            let committed = self.committed.notified();
            let mut committed = std::pin::pin!(committed);
            committed.as_mut().enable();
            if self.is_durable(ticket) {
                return true;
            }
            if tokio::time::timeout_at(deadline, committed).await.is_err() {
                return self.is_durable(ticket);
            }
        }
    }

    fn wake_waiters(&self) {
        self.committed.notify_waiters();
        let durable = self.durable.load(Ordering::Acquire);
        let ready: Vec<std::sync::Weak<Session>> = {
            let mut w = self.waiters.lock();
            let (ready, rest): (Vec<_>, Vec<_>) = w.drain(..).partition(|(t, _)| *t <= durable);
            *w = rest;
            ready.into_iter().map(|(_, s)| s).collect()
        };
        for s in ready.iter().filter_map(std::sync::Weak::upgrade) {
            s.notify().notify();
        }
    }

    /// Commits everything pending and syncs (whatever the policy), then stops the committer.
    /// Called once at shutdown, after the connections are gone.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        {
            let mut dirty = self.dirty.lock();
            *dirty = true;
            self.doorbell.notify_one();
        }
        if let Some(h) = self.committer.lock().take() {
            let _ = h.join();
        }
        // Whatever came after the committer's last round (nothing, normally).
        let meta = record::encode(&record::Meta {
            format: record::FORMAT,
            clean: true,
        });
        self.shards[0]
            .lock()
            .put(Key::Meta, Value::Meta(meta), false);
        if let Err(e) = self.commit_once(true) {
            error!(error = %e, "final commit of the durable state failed");
        }
        // Closing the store releases its lock: the next process can open it.
        drop(self.backend.lock().take());
        info!(dir = %self.dir.display(), "durable state flushed");
    }

    fn run_committer(&self) {
        let mut last_ok = Instant::now();
        let mut last_disk_check = Instant::now();
        loop {
            // Wait for the doorbell (always) or the interval (interval, none).
            {
                let mut dirty = self.dirty.lock();
                match self.policy {
                    SyncPolicy::Always => {
                        while !*dirty {
                            self.doorbell.wait_for(&mut dirty, DISK_CHECK);
                            if !*dirty {
                                break;
                            }
                        }
                    }
                    SyncPolicy::Interval | SyncPolicy::None => {
                        // Only `close` rings here: it wants the final commit now.
                        let until = Instant::now() + self.interval;
                        while !self.stopping.load(Ordering::Acquire) {
                            if self.doorbell.wait_until(&mut dirty, until).timed_out() {
                                break;
                            }
                        }
                    }
                }
                *dirty = false;
            }
            let stopping = self.stopping.load(Ordering::Acquire);
            match self.commit_once(stopping) {
                Ok(()) => {
                    last_ok = Instant::now();
                    if self.is_refusing() && !self.over_disk_limit() {
                        self.refusing.store(false, Ordering::Relaxed);
                        info!("durable store accepts changes again");
                    }
                }
                Err(e) => {
                    self.metrics.commit_errors.inc();
                    error!(error = %e, "commit of the durable state failed; retrying");
                    if last_ok.elapsed() >= FAILED_AFTER && !self.is_refusing() {
                        self.refusing.store(true, Ordering::Relaxed);
                        error!(
                            "durable store failing for {} s: new messages for persistent \
                             sessions are refused",
                            FAILED_AFTER.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if last_disk_check.elapsed() >= DISK_CHECK {
                last_disk_check = Instant::now();
                self.check_disk();
            }
            if stopping {
                return;
            }
        }
    }

    fn over_disk_limit(&self) -> bool {
        self.max_disk > 0 && self.disk_bytes.load(Ordering::Relaxed) >= self.max_disk
    }

    fn check_disk(&self) {
        let bytes = match self.backend.lock().as_ref() {
            Some(b) => b.disk_bytes(),
            None => return,
        };
        self.disk_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.disk_bytes.set(bytes as i64);
        let over = self.over_disk_limit();
        if over && !self.is_refusing() {
            self.refusing.store(true, Ordering::Relaxed);
            warn!(
                bytes,
                max = self.max_disk,
                "persistence.maxDiskBytes reached: new messages for persistent sessions are \
                 refused until space is freed"
            );
        } else if !over && self.is_refusing() && self.max_disk > 0 {
            // Commits succeed (the failure case clears itself in run_committer).
            self.refusing.store(false, Ordering::Relaxed);
            info!(
                bytes,
                max = self.max_disk,
                "durable store below persistence.maxDiskBytes again"
            );
        }
    }

    /// One commit: advance the epoch, take every shard's changes, write them, sync per policy
    /// (or when `force_sync`), publish the epoch as durable and wake the waiters.
    fn commit_once(&self, force_sync: bool) -> Result<(), StoreError> {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        let retry = std::mem::take(&mut *self.retry.lock());
        let mut ops: Vec<backend::Op> = Vec::new();
        for shard in self.shards.iter() {
            let taken = shard.lock().take();
            ops.extend(
                taken
                    .into_iter()
                    .map(|(k, v)| (k.encode(), v.map(|v| v.encode()))),
            );
        }
        if !retry.is_empty() {
            // A key appears once per batch: what changed since the failed commit wins.
            let newer: std::collections::HashSet<&[u8]> =
                ops.iter().map(|(k, _)| k.as_slice()).collect();
            let older: Vec<_> = retry
                .into_iter()
                .filter(|(k, _)| !newer.contains(k.as_slice()))
                .collect();
            ops.extend(older);
        }
        let sync = force_sync || self.policy != SyncPolicy::None;
        let started = Instant::now();
        let mut guard = self.backend.lock();
        let Some(backend) = guard.as_mut() else {
            return Ok(());
        };
        if ops.is_empty() && !force_sync {
            drop(guard);
            self.durable.store(epoch, Ordering::Release);
            self.wake_waiters();
            return Ok(());
        }
        let puts = ops.iter().filter(|(_, v)| v.is_some()).count();
        let bytes: usize = ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        if let Err(e) = backend.apply(&ops, sync) {
            drop(guard);
            self.restore(ops);
            return Err(e);
        }
        drop(guard);
        let m = &self.metrics;
        m.commits.inc();
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
        m.written.puts.inc_by(puts as u64);
        m.written.deletes.inc_by((ops.len() - puts) as u64);
        m.bytes_written.inc_by(bytes as u64);
        self.durable.store(epoch, Ordering::Release);
        self.wake_waiters();
        Ok(())
    }

    /// Keeps the changes of a failed commit for the next one (under any newer change of the
    /// same key).
    fn restore(&self, ops: Vec<backend::Op>) {
        *self.retry.lock() = ops;
    }
}

fn ahash_str(s: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    h.write(s.as_bytes());
    h.finish()
}
