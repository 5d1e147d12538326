//! Where sessions are kept, by client id. In memory for now; a durable store implements the same
//! trait later (it would also persist each session's subscriptions and queued messages).

use ahash::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
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
/// Sessions in memory. A table of sessions hashed by their client id rather than a map from
/// client id to session: the session already holds its id, and a map entry would add a key
/// (16 bytes) per client to what every connected or offline client costs.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashTable<Arc<Session>>>,
    hasher: RandomState,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.map.lock().len())
            .finish()
    }
}

impl MemoryStore {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }
}

impl SessionStore for MemoryStore {
    fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        let hash = self.hash(client_id);
        self.map
            .lock()
            .find(hash, |s| &**s.client_id() == client_id)
            .cloned()
    }

    fn insert_new(&self, session: Arc<Session>) -> Result<(), Arc<Session>> {
        let hash = self.hash(session.client_id());
        let mut map = self.map.lock();
        let id = session.client_id().clone();
        match map.entry(
            hash,
            |s| s.client_id() == &id,
            |s| self.hasher.hash_one(&**s.client_id()),
        ) {
            Entry::Occupied(existing) => Err(existing.get().clone()),
            Entry::Vacant(slot) => {
                slot.insert(session);
                Ok(())
            }
        }
    }

    fn remove(&self, client_id: &str, session_id: u64) -> bool {
        let hash = self.hash(client_id);
        let mut map = self.map.lock();
        match map.find_entry(hash, |s| &**s.client_id() == client_id) {
            Ok(entry) if entry.get().id() == session_id => {
                entry.remove();
                true
            }
            _ => false,
        }
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.map.lock().iter().cloned().collect()
    }

    fn for_each(&self, f: &mut dyn FnMut(&Arc<Session>)) {
        for s in self.map.lock().iter() {
            f(s);
        }
    }
}
