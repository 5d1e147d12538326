//! Who owns which session: CONNECT-time open (new, resumed or taken over), disconnect-time
//! release, and expiry of offline sessions.
//!
//! Ownership rules (MQTT 3.1.1 sections 3.1.2.4 and 3.1.4):
//! * A CONNECT for a client id that is connected elsewhere kicks the old connection and waits
//!   until it has let go (its will published, its state parked), then takes over.
//! * Clean session = 1 discards any previous session; the new one is discarded at disconnect.
//! * Clean session = 0 resumes the previous session (CONNACK session-present = 1) or creates one.
//!
//! The registry never touches the router: what it discards is handed back as [`Discarded`] so the
//! caller can remove those subscriptions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use super::store::SessionStore;
use super::{KickReason, Owner, Session, SessionCore};
use crate::codec::QoS;

/// A session that no longer exists, with the state the router and the durable store must
/// forget (its subscriptions, in-flight messages, QoS 2 ids awaiting PUBREL).
#[derive(Debug)]
pub struct Discarded {
    /// The session object (subscriptions in the router point at it).
    pub session: Arc<Session>,
    /// Its state.
    pub core: SessionCore,
}

impl Discarded {
    /// Its subscriptions.
    pub fn subscriptions(&self) -> &BTreeMap<String, QoS> {
        &self.core.subscriptions
    }
}

/// The outcome of a successful open.
#[derive(Debug)]
pub struct Opened {
    /// The session now owned by the caller.
    pub session: Arc<Session>,
    /// Its state, moved to the caller until release.
    pub core: SessionCore,
    /// CONNACK session-present.
    pub present: bool,
    /// A previous session discarded on the way (clean session).
    pub discarded: Option<Discarded>,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `maxSessions` reached.
    #[error("session limit reached")]
    TooManySessions,
    /// The previous connection did not let go in time.
    #[error("previous connection did not release the session in time")]
    TakeoverTimeout,
}

/// What `open` does with an existing session, decided under its lock.
enum Step {
    WaitFor(Owner),
    Retry,
    Discard(Option<Box<SessionCore>>),
    Resume(Box<SessionCore>),
}

/// Sessions by client id, with the ownership protocol above.
#[derive(Debug)]
pub struct Registry {
    store: Box<dyn SessionStore>,
    /// Woken at every release, for connections waiting to take a session over (one for the
    /// registry rather than one per connection: an idle connection's memory counts).
    released: Notify,
    next_id: AtomicU64,
    max_sessions: usize,
}

impl Registry {
    /// A registry over `store`; `max_sessions` 0 means unlimited.
    pub fn new(store: Box<dyn SessionStore>, max_sessions: usize) -> Registry {
        Registry {
            store,
            released: Notify::new(),
            next_id: AtomicU64::new(1),
            max_sessions,
        }
    }

    /// Number of sessions, online and offline.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The owners (connections) of every online session.
    pub fn online_owners(&self) -> Vec<Owner> {
        let mut out = Vec::new();
        self.store.for_each(&mut |s| {
            if let Some(o) = &s.control.lock().owner {
                out.push(o.clone());
            }
        });
        out
    }

    /// Calls `f` for every session, without collecting them.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Session>)) {
        self.store.for_each(&mut f);
    }

    /// Every session, online and offline (for maintenance such as an ACL reload).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.store.all()
    }

    /// The session for `client_id`, if any.
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.store.get(client_id)
    }

    /// The store the sessions are kept in.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// Adds an offline persistent session read back from the durable store, with its state
    /// parked in it, `offline_since` ago. Session ids handed out later are above its id.
    pub fn restore(&self, session: Arc<Session>, core: SessionCore, offline_since: Instant) {
        self.next_id.fetch_max(session.id() + 1, Ordering::Relaxed);
        {
            let mut c = session.control.lock();
            c.core = Some(Box::new(core));
            c.owner = None;
            c.persistent = true;
            c.discarded = false;
            c.offline_since = Some(offline_since);
        }
        session.online.store(false, Ordering::Relaxed);
        // A store being read back holds one session per client id.
        let _ = self.store.insert_new(session);
    }

    /// A session id not handed out before (for a session that moved here).
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the persistent session of `client_id` out of the registry to move it to another
    /// node: a connected one is closed as by a takeover first (waiting at most `wait` for it to
    /// let go). Its subscriptions stay in the router: the caller decides what becomes of them.
    pub async fn detach(&self, client_id: &str, wait: Duration) -> Option<Discarded> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let s = self.store.get(client_id)?;
            let owner = {
                let mut c = s.control.lock();
                if c.discarded || !c.persistent {
                    return None;
                }
                match c.owner.clone() {
                    Some(o) => o,
                    None => {
                        c.discarded = true;
                        let core = c.core.take();
                        drop(c);
                        self.store.remove(s.client_id(), s.id());
                        return Some(Discarded {
                            session: s,
                            core: core.map(|c| *c).unwrap_or_default(),
                        });
                    }
                }
            };
            owner.kick(KickReason::Takeover);
            tokio::time::timeout_at(deadline, self.wait_released(&owner))
                .await
                .ok()?;
        }
    }

    /// Starts handing out session ids at `next` or above (after recovery).
    pub fn reserve_ids(&self, next: u64) {
        self.next_id.fetch_max(next, Ordering::Relaxed);
    }

    /// Opens the session for `client_id` on behalf of the connection `owner`, taking it over from
    /// a connected owner if needed (waiting at most `wait` for it to let go).
    pub async fn open(
        &self,
        client_id: Arc<str>,
        clean: bool,
        owner: Owner,
        wait: Duration,
    ) -> Result<Opened, OpenError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut discarded = None;
        loop {
            if let Some(existing) = self.store.get(&client_id) {
                // Decide under the lock; wait (if needed) after releasing it.
                let step = {
                    let mut c = existing.control.lock();
                    if let Some(old) = c.owner.clone() {
                        Step::WaitFor(old)
                    } else if c.discarded {
                        Step::Retry // being removed by someone else right now
                    } else if clean || !c.persistent {
                        c.discarded = true;
                        Step::Discard(c.core.take())
                    } else {
                        c.owner = Some(owner.clone());
                        c.offline_since = None;
                        existing.online.store(true, Ordering::Relaxed);
                        Step::Resume(c.core.take().unwrap_or_default())
                    }
                };
                match step {
                    Step::WaitFor(old) => {
                        old.kick(KickReason::Takeover);
                        tokio::time::timeout_at(deadline, self.wait_released(&old))
                            .await
                            .map_err(|_| OpenError::TakeoverTimeout)?;
                        continue;
                    }
                    Step::Retry => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Step::Discard(core) => {
                        self.store.remove(&client_id, existing.id());
                        discarded = Some(Discarded {
                            session: existing,
                            core: core.map(|c| *c).unwrap_or_default(),
                        });
                    }
                    Step::Resume(core) => {
                        return Ok(Opened {
                            session: existing,
                            core: *core,
                            present: true,
                            discarded,
                        });
                    }
                }
            }
            if self.max_sessions > 0 && self.store.len() >= self.max_sessions {
                return Err(OpenError::TooManySessions);
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let session = Arc::new(Session::new(id, client_id.clone(), !clean));
            {
                let mut c = session.control.lock();
                c.owner = Some(owner.clone());
                c.core = None;
            }
            session.online.store(true, Ordering::Relaxed);
            match self.store.insert_new(session.clone()) {
                Ok(()) => {
                    return Ok(Opened {
                        session,
                        core: SessionCore::default(),
                        present: false,
                        discarded,
                    });
                }
                Err(_) => continue, // another CONNECT for the same id got there first
            }
        }
    }

    /// Gives the session back at the end of a connection: parks the state of a persistent
    /// session, discards a clean one. Always signals `owner.released`.
    pub fn release(
        &self,
        session: &Arc<Session>,
        core: SessionCore,
        owner: &Owner,
    ) -> Option<Discarded> {
        let mut c = session.control.lock();
        let mine = c
            .owner
            .as_ref()
            .is_some_and(|o| o.conn_id() == owner.conn_id());
        let mut result = None;
        if mine {
            c.owner = None;
            session.online.store(false, Ordering::Relaxed);
            session.wake_waiting();
            if c.discarded {
                // Nothing to keep.
            } else if c.persistent {
                c.core = Some(Box::new(core));
                c.offline_since = Some(Instant::now());
            } else {
                c.discarded = true;
                drop(c);
                self.store.remove(session.client_id(), session.id());
                result = Some(Discarded {
                    session: session.clone(),
                    core,
                });
            }
        }
        owner.set_released();
        self.released.notify_waiters();
        result
    }

    /// Waits until `owner` has released its session.
    async fn wait_released(&self, owner: &Owner) {
        loop {
            let notified = self.released.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a release in between is not missed.
            notified.as_mut().enable();
            if owner.is_released() {
                return;
            }
            notified.await;
        }
    }

    /// Lets go of `client_id` because it connected to another cluster node: a connected
    /// session is closed as by a takeover and discarded when its connection ends (its
    /// subscriptions are then returned by `release`); an offline one is discarded now and
    /// returned.
    pub fn evict(&self, client_id: &str) -> Option<Discarded> {
        let s = self.store.get(client_id)?;
        let mut c = s.control.lock();
        if c.discarded {
            return None;
        }
        if let Some(owner) = c.owner.clone() {
            c.persistent = false;
            drop(c);
            owner.kick(KickReason::Takeover);
            return None;
        }
        c.discarded = true;
        let core = c.core.take();
        drop(c);
        self.store.remove(s.client_id(), s.id());
        Some(Discarded {
            session: s,
            core: core.map(|c| *c).unwrap_or_default(),
        })
    }

    /// Discards offline persistent sessions that have been offline for `after` or longer.
    pub fn expire(&self, now: Instant, after: Duration) -> Vec<Discarded> {
        let mut out = Vec::new();
        for s in self.store.all() {
            let mut c = s.control.lock();
            let expired = c.owner.is_none()
                && !c.discarded
                && c.offline_since
                    .is_some_and(|t| now.duration_since(t) >= after);
            if expired {
                c.discarded = true;
                let core = c.core.take();
                drop(c);
                self.store.remove(s.client_id(), s.id());
                out.push(Discarded {
                    session: s,
                    core: core.map(|c| *c).unwrap_or_default(),
                });
            }
        }
        out
    }

    /// Counts (online, offline) sessions.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.store.all();
        let online = all.iter().filter(|s| s.is_online()).count();
        (online, all.len() - online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::MemoryStore;

    fn reg() -> Registry {
        Registry::new(Box::new(MemoryStore::default()), 0)
    }

    const W: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn new_resume_and_clean() {
        let r = reg();
        let o1 = Owner::new(1);
        let a = r.open("c".into(), false, o1.clone(), W).await.unwrap();
        assert!(!a.present);
        let mut core = a.core;
        core.subscriptions.insert("t".into(), QoS::AtLeastOnce);
        assert!(r.release(&a.session, core, &o1).is_none());
        assert!(o1.is_released());
        assert!(!a.session.is_online());

        let o2 = Owner::new(2);
        let b = r.open("c".into(), false, o2.clone(), W).await.unwrap();
        assert!(b.present);
        assert_eq!(b.session.id(), a.session.id());
        assert_eq!(b.core.subscriptions.len(), 1);
        r.release(&b.session, b.core, &o2);

        // Clean session discards the stored one and is itself discarded at release.
        let o3 = Owner::new(3);
        let c = r.open("c".into(), true, o3.clone(), W).await.unwrap();
        assert!(!c.present);
        let d = c.discarded.expect("old session discarded");
        assert_eq!(d.subscriptions().len(), 1);
        let gone = r
            .release(&c.session, c.core, &o3)
            .expect("clean session discarded");
        assert_eq!(gone.session.id(), c.session.id());
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn takeover_kicks_and_waits_for_release() {
        let r = Arc::new(reg());
        let o1 = Owner::new(1);
        let a = r.open("c".into(), false, o1.clone(), W).await.unwrap();
        let (session, core) = (a.session.clone(), a.core);
        let r2 = r.clone();
        let o1b = o1.clone();
        let old = tokio::spawn(async move {
            o1b.kicked().wait().await;
            assert_eq!(o1b.kick_reason(), Some(KickReason::Takeover));
            r2.release(&session, core, &o1b);
        });
        let b = r.open("c".into(), false, Owner::new(2), W).await.unwrap();
        assert!(b.present);
        old.await.unwrap();
        assert!(b.session.is_online());
    }

    #[tokio::test]
    async fn takeover_times_out_if_old_owner_hangs() {
        let r = reg();
        let _a = r.open("c".into(), false, Owner::new(1), W).await.unwrap();
        let e = r
            .open("c".into(), false, Owner::new(2), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e, OpenError::TakeoverTimeout);
    }

    #[tokio::test]
    async fn session_limit_and_expiry() {
        let r = Registry::new(Box::new(MemoryStore::default()), 1);
        let o = Owner::new(1);
        let a = r.open("a".into(), false, o.clone(), W).await.unwrap();
        assert_eq!(
            r.open("b".into(), false, Owner::new(2), W)
                .await
                .unwrap_err(),
            OpenError::TooManySessions
        );
        r.release(&a.session, a.core, &o);
        assert_eq!(r.counts(), (0, 1));
        assert!(r.expire(Instant::now(), Duration::from_secs(60)).is_empty());
        let gone = r.expire(
            Instant::now() + Duration::from_secs(61),
            Duration::from_secs(60),
        );
        assert_eq!(gone.len(), 1);
        assert!(r.is_empty());
    }
}
