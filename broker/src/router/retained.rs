//! Retained messages: the latest retained message per topic, in a trie so that a new
//! subscription with wildcards finds its matches without scanning every retained topic.

use ahash::HashMap;
use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::message::Message;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    msg: Option<Arc<Message>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.msg.is_none()
    }

    fn slot(&mut self, levels: &[&str]) -> &mut Option<Arc<Message>> {
        match levels.split_first() {
            None => &mut self.msg,
            Some((level, rest)) => self.children.entry((*level).into()).or_default().slot(rest),
        }
    }

    fn take(&mut self, levels: &[&str]) -> Option<Arc<Message>> {
        match levels.split_first() {
            None => self.msg.take(),
            Some((level, rest)) => {
                let child = self.children.get_mut(*level)?;
                let taken = child.take(rest);
                if child.is_empty() {
                    self.children.remove(*level);
                }
                taken
            }
        }
    }

    fn all(&self, out: &mut Vec<Arc<Message>>) {
        out.extend(self.msg.iter().cloned());
        for child in self.children.values() {
            child.all(out);
        }
    }

    /// Messages whose topics match the filter levels; `root` applies the `$` rule.
    fn matching(&self, levels: &[&str], root: bool, out: &mut Vec<Arc<Message>>) {
        let visible = |name: &str| !(root && name.starts_with('$'));
        match levels.split_first() {
            None => out.extend(self.msg.iter().cloned()),
            Some((&"#", _)) => {
                // `a/#` matches `a` itself (the root has no message).
                out.extend(self.msg.iter().cloned());
                for (name, child) in &self.children {
                    if visible(name) {
                        child.all(out);
                    }
                }
            }
            Some((&"+", rest)) => {
                for (name, child) in &self.children {
                    if visible(name) {
                        child.matching(rest, false, out);
                    }
                }
            }
            Some((level, rest)) => {
                if let Some(child) = self.children.get(*level) {
                    child.matching(rest, false, out);
                }
            }
        }
    }
}

/// What storing a retained message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// Stored (new topic or replaced).
    Stored,
    /// An empty payload removed the topic's retained message (or there was none).
    Deleted,
    /// Not stored: `maxRetainedMessages` reached and the topic had no retained message yet.
    Full,
}

/// The retained store, sharded by the first topic level like the subscription trie.
#[derive(Debug)]
pub struct RetainedStore {
    shards: Box<[RwLock<Node>]>,
    hasher: ahash::RandomState,
    count: AtomicUsize,
    max: usize,
}

/// A change of the retained trie, for whoever mirrors it.
#[derive(Debug)]
pub enum Change<'a> {
    /// The topic's retained message is now this one.
    Stored(&'a Arc<Message>),
    /// The topic has no retained message any more.
    Deleted(&'a str),
}

impl RetainedStore {
    /// An empty store holding at most `max` messages (0 = unlimited).
    pub fn new(shards: usize, max: usize) -> RetainedStore {
        RetainedStore {
            shards: (0..shards.max(1)).map(|_| RwLock::default()).collect(),
            hasher: ahash::RandomState::new(),
            count: AtomicUsize::new(0),
            max,
        }
    }

    fn shard(&self, first_level: &str) -> &RwLock<Node> {
        let i = self.hasher.hash_one(first_level) as usize % self.shards.len();
        &self.shards[i]
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `msg` as the retained message of its topic, or deletes it if the payload is empty.
    pub fn set(&self, msg: &Arc<Message>) -> Retained {
        self.set_inner(msg, true, false, &mut |_| {})
    }

    /// Like `set`, and calls `on_change` with what changed, under the lock that orders the
    /// changes of that topic (the durable store mirrors them in the same order).
    pub fn set_with(&self, msg: &Arc<Message>, mut on_change: impl FnMut(Change<'_>)) -> Retained {
        self.set_inner(msg, true, false, &mut on_change)
    }

    /// Like `set`, but never refused for the limit (for the broker's own `$SYS` topics).
    pub fn set_unbounded(&self, msg: &Arc<Message>) -> Retained {
        self.set_inner(msg, false, false, &mut |_| {})
    }

    /// Stores `msg` unless its topic holds a message at least as recent (by `stamp`); an empty
    /// payload is ignored. For the retained messages cluster nodes exchange when a link comes up.
    pub fn set_if_newer(&self, msg: &Arc<Message>) -> Retained {
        self.set_if_newer_with(msg, |_| {})
    }

    /// `set_if_newer` with the `on_change` of `set_with`.
    pub fn set_if_newer_with(
        &self,
        msg: &Arc<Message>,
        mut on_change: impl FnMut(Change<'_>),
    ) -> Retained {
        if msg.payload.is_empty() {
            return Retained::Deleted;
        }
        self.set_inner(msg, true, true, &mut on_change)
    }

    fn set_inner(
        &self,
        msg: &Arc<Message>,
        bounded: bool,
        only_newer: bool,
        on_change: &mut dyn FnMut(Change<'_>),
    ) -> Retained {
        let levels: smallvec::SmallVec<[&str; 16]> = msg.topic.split('/').collect();
        let mut shard = self.shard(levels[0]).write();
        if only_newer {
            if let Some(existing) = shard.slot(&levels) {
                if existing.stamp >= msg.stamp {
                    return Retained::Stored;
                }
            }
        }
        if msg.payload.is_empty() {
            if shard.take(&levels).is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
                on_change(Change::Deleted(&msg.topic));
            }
            return Retained::Deleted;
        }
        let slot = shard.slot(&levels);
        // Only messages under the limit are counted (the broker's own are a fixed few).
        if slot.is_none() && bounded {
            if self.max > 0 && self.count.load(Ordering::Relaxed) >= self.max {
                // Undo the path `slot` may have created.
                shard.take(&levels);
                return Retained::Full;
            }
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        *slot = Some(msg.clone());
        on_change(Change::Stored(msg));
        Retained::Stored
    }

    /// Appends the retained messages matching a (valid, non-shared) filter to `out`.
    pub fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>) {
        let levels: smallvec::SmallVec<[&str; 16]> = filter.split('/').collect();
        match levels[0] {
            "+" | "#" => {
                for shard in self.shards.iter() {
                    shard.read().matching(&levels, true, out);
                }
            }
            first => self.shard(first).read().matching(&levels, true, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Message::new(
            topic.into(),
            Bytes::copy_from_slice(payload.as_bytes()),
            QoS::AtMostOnce,
            true,
        )
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, &mut out);
        let mut t: Vec<String> = out.iter().map(|m| m.topic.clone()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_delete() {
        let s = RetainedStore::new(4, 0);
        assert_eq!(s.set(&msg("a/b", "1")), Retained::Stored);
        assert_eq!(s.set(&msg("a/b", "2")), Retained::Stored);
        assert_eq!(s.len(), 1);
        let mut out = Vec::new();
        s.matching("a/b", &mut out);
        assert_eq!(&out[0].payload[..], b"2");
        assert_eq!(s.set(&msg("a/b", "")), Retained::Deleted);
        assert!(s.is_empty());
        assert_eq!(s.set(&msg("a/b", "")), Retained::Deleted);
        assert!(s.is_empty());
        assert!(topics(&s, "#").is_empty());
    }

    #[test]
    fn wildcard_matching_and_dollar_rule() {
        let s = RetainedStore::new(4, 0);
        for t in ["a", "a/b", "a/b/c", "a//c", "x/b", "$SYS/up", "/lead"] {
            s.set(&msg(t, "p"));
        }
        assert_eq!(topics(&s, "a/#"), ["a", "a//c", "a/b", "a/b/c"]);
        assert_eq!(topics(&s, "+/b"), ["a/b", "x/b"]);
        assert_eq!(topics(&s, "a/+/c"), ["a//c", "a/b/c"]);
        assert_eq!(
            topics(&s, "#"),
            ["/lead", "a", "a//c", "a/b", "a/b/c", "x/b"]
        );
        assert_eq!(topics(&s, "+/+"), ["/lead", "a/b", "x/b"]);
        assert_eq!(topics(&s, "$SYS/#"), ["$SYS/up"]);
        assert_eq!(topics(&s, "+"), ["a"]);
    }

    #[test]
    fn limit_refuses_new_topics_but_allows_updates() {
        let s = RetainedStore::new(2, 1);
        assert_eq!(s.set(&msg("a", "1")), Retained::Stored);
        assert_eq!(s.set(&msg("b/c", "1")), Retained::Full);
        assert_eq!(s.set(&msg("a", "2")), Retained::Stored);
        assert_eq!(topics(&s, "#"), ["a"]);
        assert_eq!(s.len(), 1);
    }
}
