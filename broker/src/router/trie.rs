//! The subscription trie: topic filters by level, each node holding the sessions subscribed
//! exactly there. Matching a topic walks one path per literal level plus the `+` branches, so the
//! cost depends on the topic's depth and the wildcards along it, not on the number of
//! subscriptions.

use ahash::HashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::codec::QoS;
use crate::session::Session;

/// The subscriber sets matched by one topic (usually a handful; no heap allocation below 8).
pub type Hits<'a> = SmallVec<[&'a Subscribers; 8]>;

/// A subscriber at one node: the session and the QoS it was granted.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The subscribed session.
    pub session: Arc<Session>,
    /// Granted QoS.
    pub qos: QoS,
    /// Whether each message delivered through this subscription must pass the subscriber's ACL
    /// (`can_receive`): set when the filter straddles allowed and denied topics.
    pub check: bool,
}

/// A `$share/<group>/...` group at one node: one member gets each message.
#[derive(Debug)]
pub struct SharedGroup {
    name: Box<str>,
    members: Vec<Entry>,
    cursor: AtomicUsize,
}

impl SharedGroup {
    /// Picks the member for the next message: round robin, preferring connected members; an
    /// offline (persistent) member is chosen only when no member is connected.
    pub fn pick(&self) -> Option<&Entry> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|e| e.session.is_online())
            .or_else(|| self.members.get(start % n))
    }

    /// Group name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Everyone subscribed at one node.
#[derive(Debug, Default)]
pub struct Subscribers {
    /// Plain subscriptions by session id.
    pub normal: HashMap<u64, Entry>,
    /// Shared subscription groups.
    pub shared: Vec<SharedGroup>,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.normal.is_empty() && self.shared.is_empty()
    }

    /// Adds or replaces; returns true if the session was not subscribed here before.
    fn add(&mut self, group: Option<&str>, entry: Entry) -> bool {
        let id = entry.session.id();
        match group {
            None => self.normal.insert(id, entry).is_none(),
            Some(g) => {
                let idx = match self.shared.iter().position(|s| &*s.name == g) {
                    Some(i) => i,
                    None => {
                        self.shared.push(SharedGroup {
                            name: g.into(),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        self.shared.len() - 1
                    }
                };
                let members = &mut self.shared[idx].members;
                match members.iter_mut().find(|e| e.session.id() == id) {
                    Some(e) => {
                        e.qos = entry.qos;
                        e.check = entry.check;
                        false
                    }
                    None => {
                        members.push(entry);
                        true
                    }
                }
            }
        }
    }

    fn remove(&mut self, group: Option<&str>, session_id: u64) -> bool {
        match group {
            None => self.normal.remove(&session_id).is_some(),
            Some(g) => {
                let Some(idx) = self.shared.iter().position(|s| &*s.name == g) else {
                    return false;
                };
                let members = &mut self.shared[idx].members;
                let before = members.len();
                members.retain(|e| e.session.id() != session_id);
                let removed = members.len() != before;
                if members.is_empty() {
                    self.shared.swap_remove(idx);
                }
                removed
            }
        }
    }
}

/// One level of the trie.
#[derive(Debug, Default)]
pub struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Subscribers whose filter ends here.
    exact: Option<Box<Subscribers>>,
    /// Subscribers whose filter ends here with `/#` (or is `#` at the root).
    multi: Option<Box<Subscribers>>,
}

impl Node {
    /// Whether nothing is subscribed at or below this node.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_none()
            && self.multi.is_none()
    }

    /// Subscribes `entry` to the filter given as levels. Returns true if new.
    pub fn insert(&mut self, levels: &[&str], group: Option<&str>, entry: Entry) -> bool {
        match levels.split_first() {
            None => self
                .exact
                .get_or_insert_with(Default::default)
                .add(group, entry),
            Some((&"#", _)) => self
                .multi
                .get_or_insert_with(Default::default)
                .add(group, entry),
            Some((&"+", rest)) => self
                .plus
                .get_or_insert_with(Default::default)
                .insert(rest, group, entry),
            Some((level, rest)) => self
                .children
                .entry((*level).into())
                .or_default()
                .insert(rest, group, entry),
        }
    }

    /// Removes the session's subscription to the filter, pruning empty nodes. Returns true if it
    /// existed.
    pub fn remove(&mut self, levels: &[&str], group: Option<&str>, session_id: u64) -> bool {
        fn from_slot(slot: &mut Option<Box<Subscribers>>, group: Option<&str>, id: u64) -> bool {
            let Some(subs) = slot else { return false };
            let removed = subs.remove(group, id);
            if subs.is_empty() {
                *slot = None;
            }
            removed
        }
        match levels.split_first() {
            None => from_slot(&mut self.exact, group, session_id),
            Some((&"#", _)) => from_slot(&mut self.multi, group, session_id),
            Some((&"+", rest)) => {
                let Some(plus) = self.plus.as_mut() else {
                    return false;
                };
                let removed = plus.remove(rest, group, session_id);
                if plus.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some((level, rest)) => {
                let Some(child) = self.children.get_mut(*level) else {
                    return false;
                };
                let removed = child.remove(rest, group, session_id);
                if child.is_empty() {
                    self.children.remove(*level);
                }
                removed
            }
        }
    }

    /// Calls `f(filter, entry)` for every subscription at or below this node; `path` holds the
    /// levels leading here (the caller passes an empty vector at the root).
    pub fn visit_mut(&mut self, path: &mut Vec<String>, f: &mut impl FnMut(&str, &mut Entry)) {
        fn each(subs: &mut Subscribers, filter: &str, f: &mut impl FnMut(&str, &mut Entry)) {
            for e in subs.normal.values_mut() {
                f(filter, e);
            }
            for g in &mut subs.shared {
                for e in &mut g.members {
                    f(filter, e);
                }
            }
        }
        if let Some(subs) = self.exact.as_deref_mut() {
            each(subs, &path.join("/"), f);
        }
        if let Some(subs) = self.multi.as_deref_mut() {
            path.push("#".into());
            each(subs, &path.join("/"), f);
            path.pop();
        }
        if let Some(plus) = self.plus.as_deref_mut() {
            path.push("+".into());
            plus.visit_mut(path, f);
            path.pop();
        }
        for (level, child) in &mut self.children {
            path.push(level.to_string());
            child.visit_mut(path, f);
            path.pop();
        }
    }

    /// Collects the subscriber sets whose filters match the topic given as levels. `root` is
    /// true at the top of the trie, where the `$` rule applies: a topic starting with `$` is not
    /// matched by a filter starting with `+` or `#` [MQTT-4.7.2-1].
    pub fn collect<'a>(&'a self, levels: &[&str], root: bool, out: &mut Hits<'a>) {
        let dollar = root && levels.first().is_some_and(|l| l.starts_with('$'));
        if !dollar {
            if let Some(m) = &self.multi {
                out.push(m);
            }
        }
        match levels.split_first() {
            None => {
                if let Some(e) = &self.exact {
                    out.push(e);
                }
            }
            Some((level, rest)) => {
                if let Some(child) = self.children.get(*level) {
                    child.collect(rest, false, out);
                }
                if !dollar {
                    if let Some(plus) = &self.plus {
                        plus.collect(rest, false, out);
                    }
                }
            }
        }
    }
}
