//! Where sessions are kept, by client id. In memory for now; a durable store implements the same
//! trait later (it would also persist each session's subscriptions and queued messages).

use ahash::HashMap;
use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;

use super::Session;

/// Sessions by client id. Touched on connect, disconnect and maintenance, never per message.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The session for `client_id`, if any.
    fn get(&self, client_id: &str) -> Option<Arc<Session>>;
    /// Adds `session` unless one exists for its client id; on conflict returns the existing one.
    fn insert_new(&self, session: Arc<Session>) -> Result<(), Arc<Session>>;
    /// Removes the entry for `client_id` if it is still the session with id `session_id`.
    fn remove(&self, client_id: &str, session_id: u64) -> bool;
    /// Number of sessions, online and offline.
    fn len(&self) -> usize;
    /// Whether there are no sessions.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// All sessions, for maintenance sweeps.
    fn all(&self) -> Vec<Arc<Session>>;
    /// Calls `f` for every session, without collecting them (for metrics scrapes).
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Session>));
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl SessionStore for MemoryStore {
    fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(client_id).cloned()
    }

    fn insert_new(&self, session: Arc<Session>) -> Result<(), Arc<Session>> {
        let mut map = self.map.lock();
        if let Some(existing) = map.get(session.client_id()) {
            return Err(existing.clone());
        }
        map.insert(session.client_id().clone(), session);
        Ok(())
    }

    fn remove(&self, client_id: &str, session_id: u64) -> bool {
        let mut map = self.map.lock();
        if map.get(client_id).is_some_and(|s| s.id() == session_id) {
            map.remove(client_id);
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.map.lock().values().cloned().collect()
    }

    fn for_each(&self, f: &mut dyn FnMut(&Arc<Session>)) {
        for s in self.map.lock().values() {
            f(s);
        }
    }
}
