//! The cluster's route tables.
//!
//! [`LocalRoutes`] counts this node's subscribers per filter: N local subscribers to a filter
//! are one route for the other nodes, announced when the count goes from 0 to 1 and withdrawn
//! when it goes back to 0. [`RemoteRoutes`] holds what every peer announced, in a trie of
//! filter levels whose nodes name the peers subscribed there, so that a publish finds the
//! peers to forward to in one walk, whatever the number of routes.
//!
//! Shared subscriptions are routes too (`$share/<group>/<filter>`): the trie records the group
//! with the peer, so that the publishing node can pick one node per group across the cluster.

use ahash::{HashMap, HashMapExt, HashSet};
use smallvec::SmallVec;

/// A peer's index in the cluster's peer list.
pub type PeerId = u32;

/// This node's subscriber count per filter (the full filter, `$share/g/` included).
#[derive(Debug, Default)]
pub struct LocalRoutes {
    counts: HashMap<Box<str>, usize>,
}

impl LocalRoutes {
    /// One more local subscriber to `filter`; true if it is the first (announce the route).
    pub fn add(&mut self, filter: &str) -> bool {
        match self.counts.get_mut(filter) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                self.counts.insert(filter.into(), 1);
                true
            }
        }
    }

    /// One local subscriber fewer; true if it was the last (withdraw the route).
    pub fn remove(&mut self, filter: &str) -> bool {
        match self.counts.get_mut(filter) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(filter);
                true
            }
            None => false,
        }
    }

    /// Every filter with a local subscriber.
    pub fn filters(&self) -> Vec<String> {
        self.counts.keys().map(|f| f.to_string()).collect()
    }

    /// Number of distinct filters.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Peers with a plain subscription ending here.
    plain: SmallVec<[PeerId; 4]>,
    /// Peers with a shared subscription ending here, by group.
    shared: Vec<(Box<str>, SmallVec<[PeerId; 4]>)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plain.is_empty() && self.shared.is_empty()
    }

    fn insert(&mut self, levels: &[&str], group: Option<&str>, peer: PeerId) {
        match levels.split_first() {
            Some((first, rest)) => self
                .children
                .entry((*first).into())
                .or_default()
                .insert(rest, group, peer),
            None => {
                let list = match group {
                    None => &mut self.plain,
                    Some(g) => match self.shared.iter().position(|(name, _)| &**name == g) {
                        Some(i) => &mut self.shared[i].1,
                        None => {
                            self.shared.push((g.into(), SmallVec::new()));
                            let last = self.shared.len() - 1;
                            &mut self.shared[last].1
                        }
                    },
                };
                if !list.contains(&peer) {
                    list.push(peer);
                }
            }
        }
    }

    fn remove(&mut self, levels: &[&str], group: Option<&str>, peer: PeerId) {
        match levels.split_first() {
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(*first) {
                    child.remove(rest, group, peer);
                    if child.is_empty() {
                        self.children.remove(*first);
                    }
                }
            }
            None => match group {
                None => self.plain.retain(|p| *p != peer),
                Some(g) => {
                    for (_, peers) in self.shared.iter_mut().filter(|(name, _)| &**name == g) {
                        peers.retain(|p| *p != peer);
                    }
                    self.shared.retain(|(_, peers)| !peers.is_empty());
                }
            },
        }
    }

    fn collect<'a>(&'a self, levels: &[&str], first: bool, out: &mut Matches<'a>) {
        // `#` matches the parent level too ("a/#" matches "a"), but a leading wildcard never
        // matches a `$` topic.
        let dollar = first && levels.first().is_some_and(|l| l.starts_with('$'));
        if !dollar {
            if let Some(hash) = self.children.get("#") {
                out.add(hash);
            }
        }
        match levels.split_first() {
            None => out.add(self),
            Some((level, rest)) => {
                if let Some(child) = self.children.get(*level) {
                    child.collect(rest, false, out);
                }
                if !dollar {
                    if let Some(plus) = self.children.get("+") {
                        plus.collect(rest, false, out);
                    }
                }
            }
        }
    }
}

/// The peers a topic is routed to.
#[derive(Debug, Default)]
pub struct Matches<'a> {
    /// Peers with a matching plain subscription (each once).
    pub plain: SmallVec<[PeerId; 8]>,
    /// Matching shared groups, with the peers that have members.
    pub shared: SmallVec<[(&'a str, PeerId); 8]>,
}

impl<'a> Matches<'a> {
    fn add(&mut self, node: &'a Node) {
        for p in &node.plain {
            if !self.plain.contains(p) {
                self.plain.push(*p);
            }
        }
        for (group, peers) in &node.shared {
            for p in peers {
                if !self.shared.contains(&(&**group, *p)) {
                    self.shared.push((group, *p));
                }
            }
        }
    }

    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }
}

/// Every peer's routes. See the module documentation.
#[derive(Debug, Default)]
pub struct RemoteRoutes {
    root: Node,
    by_peer: HashMap<PeerId, HashSet<Box<str>>>,
}

/// (group, filter) of a route: `$share/<group>/<filter>` or a plain filter.
fn parts(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((group, rest)) => (Some(group), rest),
        None => (None, filter),
    }
}

impl RemoteRoutes {
    /// An empty table.
    pub fn new() -> RemoteRoutes {
        RemoteRoutes {
            root: Node::default(),
            by_peer: HashMap::new(),
        }
    }

    /// Adds `peer`'s route for `filter`.
    pub fn add(&mut self, peer: PeerId, filter: &str) {
        if !self.by_peer.entry(peer).or_default().insert(filter.into()) {
            return;
        }
        let (group, f) = parts(filter);
        let levels: SmallVec<[&str; 16]> = f.split('/').collect();
        self.root.insert(&levels, group, peer);
    }

    /// Removes `peer`'s route for `filter`.
    pub fn remove(&mut self, peer: PeerId, filter: &str) {
        let known = self
            .by_peer
            .get_mut(&peer)
            .is_some_and(|set| set.remove(filter));
        if !known {
            return;
        }
        let (group, f) = parts(filter);
        let levels: SmallVec<[&str; 16]> = f.split('/').collect();
        self.root.remove(&levels, group, peer);
    }

    /// Replaces all of `peer`'s routes.
    pub fn replace(&mut self, peer: PeerId, filters: impl IntoIterator<Item = String>) {
        self.remove_peer(peer);
        for f in filters {
            self.add(peer, &f);
        }
    }

    /// Removes all of `peer`'s routes.
    pub fn remove_peer(&mut self, peer: PeerId) {
        let Some(set) = self.by_peer.remove(&peer) else {
            return;
        };
        for filter in set {
            let (group, f) = parts(&filter);
            let levels: SmallVec<[&str; 16]> = f.split('/').collect();
            self.root.remove(&levels, group, peer);
        }
    }

    /// Number of routes (filter, peer).
    pub fn len(&self) -> usize {
        self.by_peer.values().map(|s| s.len()).sum()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.by_peer.values().all(|s| s.is_empty())
    }

    /// The peers `topic` is routed to.
    pub fn matches<'a>(&'a self, topic: &str) -> Matches<'a> {
        let mut out = Matches::default();
        if self.by_peer.is_empty() {
            return out;
        }
        let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
        self.root.collect(&levels, true, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;

    #[test]
    fn local_counts_announce_first_and_last() {
        let mut l = LocalRoutes::default();
        assert!(l.add("a/+"));
        assert!(!l.add("a/+"));
        assert!(!l.remove("a/+"));
        assert!(l.remove("a/+"));
        assert!(!l.remove("a/+"));
        assert!(l.is_empty());
    }

    #[test]
    fn remote_plain_and_shared() {
        let mut r = RemoteRoutes::new();
        r.add(1, "a/+");
        r.add(2, "a/#");
        r.add(2, "$share/g/a/b");
        r.add(3, "$share/g/a/+");
        r.add(3, "#");
        let m = r.matches("a/b");
        let mut plain = m.plain.to_vec();
        plain.sort();
        assert_eq!(plain, [1, 2, 3]);
        let mut shared = m.shared.to_vec();
        shared.sort();
        assert_eq!(shared, [("g", 2), ("g", 3)]);
        drop(m);
        assert!(r.matches("$SYS/x").is_empty());
        r.remove(3, "#");
        r.remove_peer(2);
        assert_eq!(r.matches("a/b").plain.to_vec(), [1]);
        r.replace(1, vec!["x".to_string()]);
        assert!(r.matches("a/b").plain.is_empty());
        assert_eq!(r.len(), 2);
    }

    proptest! {
        /// The trie agrees with the reference matcher.
        #[test]
        fn remote_matches_reference(
            routes in prop::collection::vec((0u32..3, "[ab+]{1}(/[ab+]){0,2}(/#)?"), 1..12),
            topics in prop::collection::vec("\\$?[ab](/[ab]){0,3}", 1..8),
        ) {
            let mut r = RemoteRoutes::new();
            for (peer, f) in &routes {
                r.add(*peer, f);
            }
            for t in &topics {
                let mut want: Vec<u32> = routes.iter()
                    .filter(|(_, f)| matches(f, t)).map(|(p, _)| *p).collect();
                want.sort();
                want.dedup();
                let mut got = r.matches(t).plain.to_vec();
                got.sort();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }
}
