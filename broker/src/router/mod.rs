//! The router: which sessions get a published message, and the retained store.
//!
//! Subscriptions live in tries ([`trie`]) split into shards by the filter's first level, each
//! shard behind its own reader-writer lock; filters that start with a wildcard live in one more
//! trie of their own. Routing a PUBLISH takes a *read* lock on the shard of the topic's first level
//! (and on the wildcard trie when it has entries and the topic does not start with `$`), so
//! publishers on different cores never serialise on one lock, and a SUBSCRIBE only blocks the
//! publishers of its own shard for the length of one insert.
//!
//! Delivery happens while the read locks are held: it is a push onto the subscriber's bounded
//! inbox, which never waits for the subscriber's socket.

pub mod retained;
pub mod trie;

use parking_lot::RwLock;
use smallvec::SmallVec;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::codec::QoS;
use crate::session::Session;
use crate::topic::Subscription;
use trie::{Entry, Hits, Node};

/// Levels of a topic or filter; topics deeper than 16 levels spill to the heap.
type Levels<'a> = SmallVec<[&'a str; 16]>;

/// The subscription index. See the module documentation.
#[derive(Debug)]
pub struct Router {
    shards: Box<[RwLock<Node>]>,
    wild: RwLock<Node>,
    wild_count: AtomicUsize,
    hasher: ahash::RandomState,
    count: AtomicUsize,
}

impl Router {
    /// An empty router with `shards` literal shards.
    pub fn new(shards: usize) -> Router {
        Router {
            shards: (0..shards.max(1)).map(|_| RwLock::default()).collect(),
            wild: RwLock::default(),
            wild_count: AtomicUsize::new(0),
            hasher: ahash::RandomState::new(),
            count: AtomicUsize::new(0),
        }
    }

    /// Number of subscriptions (a shared group member counts once).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_for(&self, levels: &[&str]) -> (&RwLock<Node>, bool) {
        match levels[0] {
            "+" | "#" => (&self.wild, true),
            first => {
                let i = self.hasher.hash_one(first) as usize % self.shards.len();
                (&self.shards[i], false)
            }
        }
    }

    /// Adds or replaces `session`'s subscription. `check` asks for a per-message ACL check on
    /// delivery. Returns true if it is new.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        sub: &Subscription<'_>,
        qos: QoS,
        check: bool,
    ) -> bool {
        let levels: Levels<'_> = sub.filter.split('/').collect();
        let (shard, wild) = self.shard_for(&levels);
        let entry = Entry {
            session: session.clone(),
            qos,
            check,
        };
        let new = shard.write().insert(&levels, sub.group, entry);
        if new {
            self.count.fetch_add(1, Ordering::Relaxed);
            if wild {
                self.wild_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        new
    }

    /// Removes `session`'s subscription. Returns true if it existed.
    pub fn unsubscribe(&self, session_id: u64, sub: &Subscription<'_>) -> bool {
        let levels: Levels<'_> = sub.filter.split('/').collect();
        let (shard, wild) = self.shard_for(&levels);
        let removed = shard.write().remove(&levels, sub.group, session_id);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if wild {
                self.wild_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        removed
    }

    /// Sets the per-message check flag of every subscription to `f(session, filter)` (after an
    /// ACL reload). Takes each shard's write lock in turn.
    pub fn reclassify(&self, mut f: impl FnMut(&Arc<Session>, &str) -> bool) {
        let mut path = Vec::new();
        for shard in self.shards.iter().chain(std::iter::once(&self.wild)) {
            shard
                .write()
                .visit_mut(&mut path, &mut |filter, e| e.check = f(&e.session, filter));
        }
    }

    /// Calls `deliver(session, granted_qos, check)` once per session that should receive a
    /// message on `topic`: one call per subscribed session however many of its filters match
    /// (with the highest granted QoS among them), plus one call per matching shared group (to the
    /// member it picks). `check` says the subscription needs a per-message ACL check. Returns the
    /// number of calls.
    pub fn route(&self, topic: &str, deliver: impl FnMut(&Arc<Session>, QoS, bool)) -> usize {
        self.route_with(topic, true, |_| true, deliver)
    }

    /// Like [`Router::route`], for the cluster: `plain` says whether plain subscriptions get
    /// the message, and `group(name)` whether a matching shared group does (asked before the
    /// group picks a member).
    pub fn route_with(
        &self,
        topic: &str,
        plain: bool,
        mut group: impl FnMut(&str) -> bool,
        mut deliver: impl FnMut(&Arc<Session>, QoS, bool),
    ) -> usize {
        let levels: Levels<'_> = topic.split('/').collect();
        let (shard, _) = self.shard_for(&levels);
        let shard = shard.read();
        let wild = (!topic.starts_with('$') && self.wild_count.load(Ordering::Relaxed) > 0)
            .then(|| self.wild.read());
        let mut hits = Hits::new();
        shard.collect(&levels, true, &mut hits);
        if let Some(w) = &wild {
            w.collect(&levels, true, &mut hits);
        }

        let mut calls = 0;
        for subs in &hits {
            for g in &subs.shared {
                if !group(g.name()) {
                    continue;
                }
                if let Some(e) = g.pick() {
                    deliver(&e.session, e.qos, e.check);
                    calls += 1;
                }
            }
        }
        if !plain {
            return calls;
        }
        let nodes = hits.iter().filter(|s| !s.normal.is_empty()).count();
        if nodes <= 1 {
            // The common case: one matching filter node, each session in it at most once.
            for subs in &hits {
                for e in subs.normal.values() {
                    deliver(&e.session, e.qos, e.check);
                    calls += 1;
                }
            }
        } else {
            calls += deliver_merged(&hits, &mut deliver);
        }
        calls
    }
}

/// Small sets of overlapping subscribers are merged by a linear scan; beyond this many, by
/// sorting.
const SMALL_MERGE: usize = 32;

/// Delivers once per session across several matching filter nodes, at the highest granted QoS.
/// The copy needs an ACL check only if every matching subscription of the session does (one
/// classified as allowed proves the topic is allowed).
///
/// The usual shape is one large node (the topic's own subscribers) and a few small ones (say, a
/// monitoring client on `#`): the small nodes' entries are collected (a handful), and the large
/// node is streamed against them without allocating or sorting it.
fn deliver_merged(hits: &Hits<'_>, deliver: &mut impl FnMut(&Arc<Session>, QoS, bool)) -> usize {
    let Some(big) = hits
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| s.normal.len())
        .map(|(i, _)| i)
    else {
        return 0;
    };
    let small_total: usize = hits
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != big)
        .map(|(_, s)| s.normal.len())
        .sum();
    let mut calls = 0;
    if small_total <= SMALL_MERGE {
        let mut small: SmallVec<[(u64, &Entry, QoS, bool); SMALL_MERGE]> = SmallVec::new();
        for (i, subs) in hits.iter().enumerate() {
            if i == big {
                continue;
            }
            for (id, e) in &subs.normal {
                match small.iter_mut().find(|x| x.0 == *id) {
                    Some(x) => {
                        x.2 = x.2.max(e.qos);
                        x.3 &= e.check;
                    }
                    None => small.push((*id, e, e.qos, e.check)),
                }
            }
        }
        for (id, e) in &hits[big].normal {
            match small.iter_mut().find(|x| x.0 == *id) {
                Some(x) => {
                    x.2 = x.2.max(e.qos);
                    x.3 &= e.check;
                }
                None => {
                    deliver(&e.session, e.qos, e.check);
                    calls += 1;
                }
            }
        }
        for (_, e, qos, check) in small {
            deliver(&e.session, qos, check);
            calls += 1;
        }
        return calls;
    }
    // Many overlapping subscribers: sort them all by session.
    let mut all: Vec<(u64, &Entry)> = hits
        .iter()
        .flat_map(|s| s.normal.iter().map(|(id, e)| (*id, e)))
        .collect();
    all.sort_unstable_by_key(|(id, e)| (*id, std::cmp::Reverse(e.qos)));
    let mut i = 0;
    while i < all.len() {
        let id = all[i].0;
        let mut check = true;
        let mut j = i;
        while j < all.len() && all[j].0 == id {
            check &= all[j].1.check;
            j += 1;
        }
        deliver(&all[i].1.session, all[i].1.qos, check);
        calls += 1;
        i = j;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{TopicLimits, matches, parse_subscription};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn session(id: u64) -> Arc<Session> {
        Arc::new(Session::new(id, format!("c{id}").into(), false))
    }

    fn sub(raw: &str) -> Subscription<'_> {
        parse_subscription(raw, &TopicLimits::default()).unwrap()
    }

    fn routed(r: &Router, topic: &str) -> BTreeMap<u64, QoS> {
        let mut out = BTreeMap::new();
        r.route(topic, |s, q, _| {
            assert!(out.insert(s.id(), q).is_none(), "session {} twice", s.id());
        });
        out
    }

    #[test]
    fn many_overlapping_subscribers_are_merged_too() {
        // More than SMALL_MERGE sessions on both of two overlapping filters: the sorting path.
        let r = Router::new(8);
        let sessions: Vec<_> = (1..=100).map(session).collect();
        for (i, s) in sessions.iter().enumerate() {
            let low = if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::ExactlyOnce
            };
            r.subscribe(s, &sub("a/+"), low, true);
            r.subscribe(s, &sub("a/b"), QoS::AtLeastOnce, i % 3 == 0);
        }
        let mut got = BTreeMap::new();
        r.route("a/b", |s, q, check| {
            assert!(got.insert(s.id(), (q, check)).is_none());
        });
        assert_eq!(got.len(), 100);
        for (i, s) in sessions.iter().enumerate() {
            let want_qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            assert_eq!(got[&s.id()], (want_qos, i % 3 == 0), "session {i}");
        }
    }

    #[test]
    fn overlapping_filters_deliver_once_at_highest_qos() {
        let r = Router::new(8);
        let s = session(1);
        r.subscribe(&s, &sub("a/+"), QoS::AtMostOnce, false);
        r.subscribe(&s, &sub("a/b"), QoS::ExactlyOnce, false);
        r.subscribe(&s, &sub("#"), QoS::AtLeastOnce, false);
        assert_eq!(routed(&r, "a/b"), BTreeMap::from([(1, QoS::ExactlyOnce)]));
        assert_eq!(routed(&r, "a/c"), BTreeMap::from([(1, QoS::AtLeastOnce)]));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn check_flags_are_routed_merged_and_reclassified() {
        let r = Router::new(8);
        let (s1, s2) = (session(1), session(2));
        r.subscribe(&s1, &sub("a/+"), QoS::AtMostOnce, true);
        r.subscribe(&s1, &sub("a/b"), QoS::AtMostOnce, false);
        r.subscribe(&s2, &sub("$share/g/a/#"), QoS::AtMostOnce, true);
        let flags = |topic| {
            let mut out = BTreeMap::new();
            r.route(topic, |s, _, check| {
                out.insert(s.id(), check);
            });
            out
        };
        // a/b: s1 through two filters, one of them allowed outright: no check needed.
        assert_eq!(flags("a/b"), BTreeMap::from([(1, false), (2, true)]));
        assert_eq!(flags("a/c"), BTreeMap::from([(1, true), (2, true)]));
        let mut seen = Vec::new();
        r.reclassify(|s, filter| {
            seen.push((s.id(), filter.to_string()));
            filter == "a/b"
        });
        seen.sort();
        assert_eq!(
            seen,
            [
                (1, "a/+".to_string()),
                (1, "a/b".to_string()),
                (2, "a/#".to_string())
            ]
        );
        assert_eq!(flags("a/c"), BTreeMap::from([(1, false), (2, false)]));
    }

    #[test]
    fn resubscribe_replaces_qos_and_unsubscribe_prunes() {
        let r = Router::new(8);
        let s = session(1);
        assert!(r.subscribe(&s, &sub("a/b"), QoS::AtMostOnce, false));
        assert!(!r.subscribe(&s, &sub("a/b"), QoS::AtLeastOnce, false));
        assert_eq!(routed(&r, "a/b"), BTreeMap::from([(1, QoS::AtLeastOnce)]));
        assert!(r.unsubscribe(1, &sub("a/b")));
        assert!(!r.unsubscribe(1, &sub("a/b")));
        assert!(routed(&r, "a/b").is_empty());
        assert!(r.is_empty());
        assert!(r.shards.iter().all(|s| s.read().is_empty()));
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let r = Router::new(8);
        r.subscribe(&session(1), &sub("#"), QoS::AtMostOnce, false);
        r.subscribe(&session(2), &sub("+/up"), QoS::AtMostOnce, false);
        r.subscribe(&session(3), &sub("$SYS/#"), QoS::AtMostOnce, false);
        assert_eq!(
            routed(&r, "$SYS/up").keys().copied().collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(
            routed(&r, "x/up").keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn shared_groups_pick_one_member_each() {
        let r = Router::new(8);
        let members: Vec<_> = (1..=3).map(session).collect();
        for m in &members {
            m.set_online(true);
            r.subscribe(m, &sub("$share/g/t/+"), QoS::AtLeastOnce, false);
        }
        let other = session(9);
        other.set_online(true);
        r.subscribe(&other, &sub("$share/h/t/+"), QoS::AtMostOnce, false);
        let mut counts = BTreeMap::new();
        for _ in 0..30 {
            let got = routed(&r, "t/x");
            assert_eq!(got.len(), 2, "one per group: {got:?}");
            assert!(got.contains_key(&9));
            for id in got.keys() {
                *counts.entry(*id).or_insert(0) += 1;
            }
        }
        assert_eq!(counts, BTreeMap::from([(1, 10), (2, 10), (3, 10), (9, 30)]));
        // Offline members are skipped while someone is online.
        members[0].set_online(false);
        members[1].set_online(false);
        for _ in 0..5 {
            assert!(routed(&r, "t/x").contains_key(&3));
        }
        assert!(r.unsubscribe(3, &sub("$share/g/t/+")));
        assert!(!r.unsubscribe(3, &sub("$share/g/t/+")));
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof!["[ab]", Just("+".to_string()), Just(String::new())],
            1..4,
        )
        .prop_flat_map(|levels| {
            (Just(levels), any::<bool>()).prop_map(|(mut l, hash)| {
                if hash {
                    l.push("#".into());
                }
                l.join("/")
            })
        })
        .prop_filter("filters are not empty", |f| !f.is_empty())
    }

    proptest! {
        /// The trie agrees with the reference matcher for every topic and set of filters.
        #[test]
        fn trie_matches_reference(filters in prop::collection::vec(filter_strategy(), 1..12),
                                  topics in prop::collection::vec("\\$?[ab]{0,1}(/[ab]{0,1}){0,3}", 1..10)) {
            let r = Router::new(3);
            let sessions: Vec<_> = (0..filters.len() as u64).map(session).collect();
            for (s, f) in sessions.iter().zip(&filters) {
                r.subscribe(s, &sub(f), QoS::AtMostOnce, false);
            }
            for t in topics.iter().filter(|t| !t.is_empty()) {
                let want: Vec<u64> = filters.iter().enumerate()
                    .filter(|(_, f)| matches(f, t)).map(|(i, _)| i as u64).collect();
                let got: Vec<u64> = routed(&r, t).keys().copied().collect();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }
}
