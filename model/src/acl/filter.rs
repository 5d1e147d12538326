//! A rule's topic filter split into levels once, and the three questions the ACL asks of it:
//! does it match this topic (the hot path, per message), does it *cover* a subscription filter
//! (every topic the subscription can match), and does it *intersect* one (some topic matches both).
//!
//! Matching has exactly the semantics of [`crate::topic::matches`], including the `$` rule (a
//! filter whose first level is a wildcard does not match topics starting with `$`); a property test
//! checks that the two agree. The relations are exact over sequences of one or more levels, checked
//! against brute force over a finite universe. One such sequence is not a topic name: the empty
//! string (a single empty level). Counting it can only make `intersects` say yes (`/#` and `+` meet
//! only there) or `covers` say no (`/+/#` misses only it of `/#`): both the safe direction for the
//! ACL.

use std::fmt;

/// One level of a filter.
#[derive(Clone, PartialEq, Eq)]
enum Level {
    /// A literal level (possibly empty).
    Lit(Box<str>),
    /// `+`: exactly one level, any text.
    Plus,
    /// `#`: the parent level and any number of levels below it; always the last level.
    Hash,
}

impl Level {
    fn is_wild(&self) -> bool {
        !matches!(self, Level::Lit(_))
    }
}

/// A valid topic filter, pre-split into levels.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    text: Box<str>,
    /// Never empty: a filter has at least one level.
    levels: Box<[Level]>,
    /// Whether a leading wildcard also matches `$` topics. False for every filter written in an
    /// ACL file (MQTT's `$` rule); true only for [`Filter::everything`].
    wild_dollar: bool,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl Filter {
    /// Splits a filter that [`crate::topic::validate_filter`] accepted.
    pub(crate) fn new(text: &str) -> Filter {
        let levels = text
            .split('/')
            .map(|level| match level {
                "+" => Level::Plus,
                "#" => Level::Hash,
                other => Level::Lit(other.into()),
            })
            .collect();
        Filter {
            text: text.into(),
            levels,
            wild_dollar: false,
        }
    }

    /// Every topic, `$` topics included: what "no ACL" allows. Not writable in an ACL file.
    pub(crate) fn everything() -> Filter {
        Filter {
            text: "<everything>".into(),
            levels: Box::new([Level::Hash]),
            wild_dollar: true,
        }
    }

    /// The filter as written (after `%c`/`%u` substitution).
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    fn first(&self) -> &Level {
        // `levels` is never empty (see `new`/`everything`); `Hash` is a safe stand-in regardless.
        self.levels.first().unwrap_or(&Level::Hash)
    }

    /// The filter's leading wildcard keeps it away from `$` topics.
    fn excludes_dollar(&self) -> bool {
        self.first().is_wild() && !self.wild_dollar
    }

    /// Some topic starting with `$` may match (ignoring the other levels).
    fn may_match_dollar(&self) -> bool {
        match self.first() {
            Level::Lit(s) => s.starts_with('$'),
            _ => self.wild_dollar,
        }
    }

    /// Some topic not starting with `$` may match (ignoring the other levels).
    fn may_match_plain(&self) -> bool {
        match self.first() {
            Level::Lit(s) => !s.starts_with('$'),
            _ => true,
        }
    }

    /// Whether this filter matches the topic name `topic`. No allocation: one pass over the
    /// topic's levels against the pre-split filter.
    pub(crate) fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && self.excludes_dollar() {
            return false;
        }
        let mut t = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return true,
                Level::Plus => {
                    if t.next().is_none() {
                        return false;
                    }
                }
                Level::Lit(s) => {
                    if t.next() != Some(&**s) {
                        return false;
                    }
                }
            }
        }
        t.next().is_none()
    }

    /// Whether every topic that `sub` matches is matched by `self`.
    pub(crate) fn covers(&self, sub: &Filter) -> bool {
        // `$` topics of `sub` (if any) must get past our `$` rule; plain topics only need levels.
        if sub.may_match_dollar() && self.excludes_dollar() {
            return false;
        }
        levels_cover(&self.levels, &sub.levels)
    }

    /// Whether some topic is matched by both `self` and `other`.
    pub(crate) fn intersects(&self, other: &Filter) -> bool {
        // A filter that excludes `$` topics meets only the other's plain topics. When both first
        // levels are wildcards the common topic can pick a plain first level, so only a literal
        // `$...` first level rules the intersection out.
        if self.excludes_dollar() && !other.may_match_plain() {
            return false;
        }
        if other.excludes_dollar() && !self.may_match_plain() {
            return false;
        }
        levels_intersect(&self.levels, &other.levels)
    }
}

/// Every level sequence matched by `b` is matched by `a` (no `$` rule).
fn levels_cover(a: &[Level], b: &[Level]) -> bool {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            // `#` in `a` takes whatever `b` has left, including nothing (the parent level).
            (Some(Level::Hash), _) => return true,
            (None, None) => return true,
            // `b` stops (its topics end here) where `a` needs more levels, or `b` goes on
            // (more levels, or `#`, which also matches longer topics) where `a` stops.
            (Some(_), None) | (None, Some(_)) => return false,
            // A leading `#` matches every topic of one level or more, as does a leading `+/#`.
            (Some(Level::Plus), Some(Level::Hash)) if i == 0 => {
                return matches!(a.get(1), Some(Level::Hash));
            }
            // `b`'s `#` matches the parent topic (ending here), which `a` (needing a level) misses.
            (Some(_), Some(Level::Hash)) => return false,
            (Some(Level::Plus), Some(_)) => {}
            (Some(Level::Lit(x)), Some(Level::Lit(y))) if x == y => {}
            (Some(Level::Lit(_)), Some(_)) => return false,
        }
        i += 1;
    }
}

/// Some level sequence is matched by both `a` and `b` (no `$` rule).
fn levels_intersect(a: &[Level], b: &[Level]) -> bool {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            // `#` matches the other's remainder, or the topic ending here if the other ends.
            (Some(Level::Hash), _) | (_, Some(Level::Hash)) => return true,
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some(Level::Lit(x)), Some(Level::Lit(y))) if x != y => return false,
            (Some(_), Some(_)) => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{self, TopicLimits};
    use proptest::prelude::*;

    fn f(s: &str) -> Filter {
        assert_eq!(
            topic::validate_filter(s, &TopicLimits::default()),
            Ok(()),
            "{s}"
        );
        Filter::new(s)
    }

    #[test]
    fn covers_table() {
        let cases = [
            ("#", "#", true),
            ("#", "a/#", true),
            ("#", "+/b", true),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/+", true),
            ("$SYS/#", "#", false),
            ("+", "$SYS", false),
            ("a/#", "a", true),
            ("a/#", "a/+/c", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b", true),
            ("a/b", "a/+", false),
            ("a/b", "a/b/c", false),
            ("a/b", "a/b", true),
            ("a/#", "a/b/#", true),
            ("a/b/#", "a/#", false),
            ("+/+", "a/b", true),
            ("+/+", "a/#", false),
            ("+/#", "#", true),
            ("+/#", "$SYS/#", false),
            ("+/+/#", "#", false),
            ("a/+/#", "a/#", false),
            // Only the empty string, not a topic name, is in `/#` and not `/+/#`: a safe "no".
            ("/+/#", "/#", false),
            ("toCloud/c1", "toCloud/+", false),
            ("a//b", "a/+/b", false),
            ("a/+/b", "a//b", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(f(a).covers(&f(b)), want, "{a} covers {b}");
        }
    }

    #[test]
    fn intersects_table() {
        let cases = [
            ("#", "$SYS/#", false),
            ("+/#", "$SYS/x", false),
            ("$SYS/#", "+/+", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/+", true),
            ("a/b", "a/b/c", false),
            ("a/#", "a", true),
            ("a/b/#", "a", false),
            ("a/+", "a", false),
            ("+/b", "a/+", true),
            ("a/c", "a/b", false),
            ("toCloud/c1", "toCloud/+", true),
            ("toCloud/c1", "toCloud/c2", false),
            ("#", "+", true),
            // Only the empty string, not a topic name, is in both: a safe "yes".
            ("/#", "+", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(f(a).intersects(&f(b)), want, "{a} meets {b}");
            assert_eq!(f(b).intersects(&f(a)), want, "{b} meets {a}");
        }
    }

    #[test]
    fn everything_matches_dollar_topics() {
        let all = Filter::everything();
        for t in ["a", "$SYS/x", "/", "a/b/c"] {
            assert!(all.matches(t), "{t}");
        }
        assert!(all.covers(&f("$SYS/#")));
        assert!(all.covers(&f("#")));
        assert!(all.intersects(&f("$SYS/x")));
        assert!(!f("#").covers(&all));
        assert!(f("$SYS/#").intersects(&all));
    }

    /// Topic levels for the brute-force universe: enough distinct values (including a fresh one,
    /// `z`, that no filter names) that every witness and counterexample has a representative.
    const LEVELS: [&str; 4] = ["a", "$s", "", "z"];

    /// Every sequence of one to four levels, the empty string (one empty level) included.
    fn universe() -> Vec<String> {
        let mut all: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
        let mut last = all.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|t| LEVELS.iter().map(move |l| format!("{t}/{l}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// Valid filters of up to three levels (plus `#`) over the universe's alphabet.
    pub(crate) fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("$s"), Just(""), Just("+")];
        (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
            "a filter needs a level",
            |(levels, hash)| {
                let mut levels: Vec<&str> = levels;
                if hash {
                    levels.push("#");
                }
                let s = levels.join("/");
                (!s.is_empty()).then_some(s)
            },
        )
    }

    proptest! {
        /// Matching agrees with `topic::matches`, and covers/intersects agree exactly with brute
        /// force over the universe of level sequences.
        #[test]
        fn relations_match_brute_force(a in filter_strategy(), b in filter_strategy(),
                                       a_all in prop::bool::weighted(0.1)) {
            let fa = if a_all { Filter::everything() } else { f(&a) };
            let fb = f(&b);
            let topics = universe();
            for t in &topics {
                if !a_all {
                    prop_assert_eq!(fa.matches(t), topic::matches(&a, t), "{} vs {}", a, t);
                }
                prop_assert_eq!(fb.matches(t), topic::matches(&b, t), "{} vs {}", b, t);
            }
            let covers = topics.iter().all(|t| !fb.matches(t) || fa.matches(t));
            let meets = topics.iter().any(|t| fb.matches(t) && fa.matches(t));
            prop_assert_eq!(fa.covers(&fb), covers, "{:?} covers {:?}", fa, fb);
            prop_assert_eq!(fa.intersects(&fb), meets, "{:?} meets {:?}", fa, fb);
            prop_assert_eq!(fb.intersects(&fa), meets, "{:?} meets {:?}", fb, fa);
        }
    }
}
