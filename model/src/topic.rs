//! Topic names and topic filters: validation (MQTT 3.1.1 section 4.7) and matching.
//!
//! A topic *name* is what a PUBLISH carries; a topic *filter* is what a SUBSCRIBE carries and may
//! contain the wildcards `+` (one level) and `#` (the rest, last level only). Levels are separated
//! by `/`; empty levels are legal and significant (`a//b` has three levels, the middle one empty).
//! Topics beginning with `$` are not matched by filters beginning with a wildcard.
//!
//! This module is pure (no I/O) and is used by the router's trie, the retained store and, later, the
//! ACL, so every place agrees on what matches what.

use std::fmt;

/// Limits a topic must respect besides the protocol's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Longest topic name or filter in bytes.
    pub max_length: usize,
    /// Most levels in a topic name or filter.
    pub max_levels: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_length: 65_535,
            max_levels: 128,
        }
    }
}

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero-length topic names and filters are not allowed [MQTT-4.7.3-1].
    #[error("empty topic")]
    Empty,
    /// U+0000 is not allowed in any MQTT string [MQTT-1.5.3-2].
    #[error("topic contains U+0000")]
    NullCharacter,
    /// `+` or `#` in a topic name [MQTT-3.3.2-2].
    #[error("wildcard in a topic name")]
    WildcardInName,
    /// `+` or `#` sharing a level with other characters, or `#` not last [MQTT-4.7.1-2/3].
    #[error("misplaced wildcard in a topic filter")]
    BadWildcard,
    /// Longer than the configured maximum.
    #[error("topic longer than {0} bytes")]
    TooLong(usize),
    /// More levels than the configured maximum.
    #[error("topic has more than {0} levels")]
    TooManyLevels(usize),
    /// `$share/<group>/<filter>` with an empty or wildcard group, or no filter.
    #[error("malformed shared subscription")]
    BadShare,
}

fn check_common(topic: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > limits.max_length {
        return Err(TopicError::TooLong(limits.max_length));
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    // Levels = separators + 1; counting bytes avoids splitting.
    let levels = topic.as_bytes().iter().filter(|&&b| b == b'/').count() + 1;
    if levels > limits.max_levels {
        return Err(TopicError::TooManyLevels(limits.max_levels));
    }
    Ok(())
}

/// Validates a topic name as carried by PUBLISH or a will.
pub fn validate_name(topic: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(topic, limits)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a (non-shared) topic filter as carried by SUBSCRIBE.
pub fn validate_filter(filter: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(filter, limits)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if !last => return Err(TopicError::BadWildcard),
            "#" | "+" => {}
            other if other.contains(['+', '#']) => return Err(TopicError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A parsed SUBSCRIBE/UNSUBSCRIBE filter: plain, or `$share/<group>/<filter>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription<'a> {
    /// The share group, for `$share/<group>/...`.
    pub group: Option<&'a str>,
    /// The filter that topics are matched against.
    pub filter: &'a str,
}

const SHARE_PREFIX: &str = "$share/";

/// Parses and validates a filter, recognising shared subscriptions.
pub fn parse_subscription<'a>(
    raw: &'a str,
    limits: &TopicLimits,
) -> Result<Subscription<'a>, TopicError> {
    if let Some(rest) = raw.strip_prefix(SHARE_PREFIX) {
        let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::BadShare);
        }
        validate_filter(filter, limits)?;
        // The whole string must respect the limits too.
        check_common(raw, limits)?;
        Ok(Subscription {
            group: Some(group),
            filter,
        })
    } else {
        validate_filter(raw, limits)?;
        Ok(Subscription {
            group: None,
            filter: raw,
        })
    }
}

/// Whether `filter` (valid) matches topic name `topic` (valid), with the `$` rule.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A display wrapper that shows at most 128 bytes of a client-supplied topic in logs, and the
/// length of a longer one. `Debug` is the same, quoted, so that no formatting of it can put a
/// 64 KiB topic into a log line.
#[derive(Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl Shown<'_> {
    const MAX: usize = 128;

    fn prefix(&self) -> &str {
        let mut end = Self::MAX.min(self.0.len());
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        &self.0[..end]
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= Self::MAX {
            return f.write_str(self.0);
        }
        write!(f, "{}… ({} bytes)", self.prefix(), self.0.len())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= Self::MAX {
            return write!(f, "{:?}", self.0);
        }
        write!(f, "{:?}… ({} bytes)", self.prefix(), self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: TopicLimits = TopicLimits {
        max_length: 65_535,
        max_levels: 128,
    };

    #[test]
    fn shown_topics_are_bounded_in_display_and_debug() {
        let long = "é".repeat(40_000);
        for text in [format!("{}", Shown(&long)), format!("{:?}", Shown(&long))] {
            assert!(text.len() < 200, "{} bytes", text.len());
            assert!(text.ends_with("(80000 bytes)"), "{text}");
            assert!(!text.contains("Shown"), "{text}");
        }
        assert_eq!(format!("{}", Shown("a/b")), "a/b");
        assert_eq!(format!("{:?}", Shown("a/b")), "\"a/b\"");
    }

    #[test]
    fn names() {
        for ok in ["a", "/", "a/b", "a//b", "/a", "a/", "$SYS/x", " ", "ü/ß"] {
            assert_eq!(validate_name(ok, &L), Ok(()), "{ok}");
        }
        assert_eq!(validate_name("", &L), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+", &L), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#", &L), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a+b", &L), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a\0b", &L), Err(TopicError::NullCharacter));
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a//+/#",
            "+/tennis/#",
            "$SYS/#",
        ] {
            assert_eq!(validate_filter(ok, &L), Ok(()), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a+", "+a/b", "#/", "a/b#"] {
            assert_eq!(
                validate_filter(bad, &L),
                Err(TopicError::BadWildcard),
                "{bad}"
            );
        }
        assert_eq!(validate_filter("", &L), Err(TopicError::Empty));
    }

    #[test]
    fn limits() {
        let l = TopicLimits {
            max_length: 5,
            max_levels: 2,
        };
        assert_eq!(validate_name("abcdef", &l), Err(TopicError::TooLong(5)));
        assert_eq!(
            validate_name("a/b/c", &l),
            Err(TopicError::TooManyLevels(2))
        );
        assert_eq!(validate_filter("a/b", &l), Ok(()));
    }

    #[test]
    fn shared() {
        let s = parse_subscription("$share/g1/a/+", &L).unwrap();
        assert_eq!(s.group, Some("g1"));
        assert_eq!(s.filter, "a/+");
        let s = parse_subscription("$share/g/#", &L).unwrap();
        assert_eq!(s.filter, "#");
        for bad in [
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/+/a",
        ] {
            assert!(parse_subscription(bad, &L).is_err(), "{bad}");
        }
        assert_eq!(parse_subscription("$shared/a", &L).unwrap().group, None);
    }

    #[test]
    fn matching() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn shown_truncates_on_char_boundary() {
        let long = "é".repeat(100);
        let s = Shown(&long).to_string();
        let (prefix, rest) = s.split_once('…').unwrap();
        assert_eq!(prefix.len(), 128);
        assert_eq!(rest, " (200 bytes)");
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-c$]{1,2}"]
    }

    proptest! {
        /// A filter built from a topic by replacing levels with `+` (and a tail with `#`) matches it,
        /// unless the `$` rule forbids it.
        #[test]
        fn generalised_filter_matches(levels in prop::collection::vec(level(), 1..6),
                                      mask in prop::collection::vec(any::<bool>(), 6),
                                      cut in 0usize..7) {
            let topic = levels.join("/");
            prop_assume!(validate_name(&topic, &L).is_ok());
            let mut f: Vec<String> = levels.iter().enumerate()
                .map(|(i, l)| if mask[i] { "+".to_string() } else { l.clone() }).collect();
            if cut < f.len() { f.truncate(cut); f.push("#".into()); }
            let filter = f.join("/");
            prop_assert!(validate_filter(&filter, &L).is_ok());
            let dollar_blocked = topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'));
            prop_assert_eq!(matches(&filter, &topic), !dollar_blocked);
        }

        /// Validation never panics on arbitrary strings.
        #[test]
        fn validation_total(s in ".{0,40}") {
            let _ = validate_name(&s, &L);
            let _ = validate_filter(&s, &L);
            let _ = parse_subscription(&s, &L);
        }
    }
}
