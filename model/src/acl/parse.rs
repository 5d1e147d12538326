//! The ACL text format: lines to [`Rule`]s, and [`AclError`], which names the file and line of
//! every mistake.
//!
//! Per line: a blank line, or one whose first non-blank character is `#`, is skipped (as are lines
//! starting with `;`, `//` or `*`, which hmq also treats as comments and which cannot start a
//! rule). Otherwise, after splitting on whitespace, the first five tokens are the fields
//! `allow|deny TYPE VALUE ACCESS TOPICS`; a sixth token is allowed only if it starts with `#` (a
//! trailing comment: it and the rest of the line are ignored). So a `#` *is* data in fields two to
//! five: `deny clientid * 3 #` denies every topic, and `deny clientid * 3 # everything` is an
//! error, not a comment.

use super::rule::{IpNet, Rule, Subject, TopicTemplate};
use crate::topic::{self, TopicError, TopicLimits};

/// An ACL that could not be parsed. Displays as `<origin>:<line>: <what is wrong>`, for example
/// `acl.conf:7: unknown access "4" (expected 1 = publish, 2 = subscribe, 3 = both)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {kind}")]
pub struct AclError {
    /// Where the text came from, usually the file name.
    pub origin: String,
    /// 1-based line of the first mistake.
    pub line: usize,
    /// What is wrong.
    pub kind: AclErrorKind,
}

/// What is wrong with an ACL line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclErrorKind {
    /// Fewer than the five fields.
    #[error(
        "expected 5 fields (allow|deny TYPE VALUE ACCESS TOPICS), found {0}; \
         a comment line starts with #"
    )]
    MissingFields(usize),
    /// A sixth token that is not a comment.
    #[error(
        "unexpected {0:?} after the topics (topics are separated by commas without spaces; \
         a trailing comment starts with #)"
    )]
    ExtraField(String),
    /// First field neither `allow` nor `deny`.
    #[error("unknown permission {0:?} (expected allow or deny)")]
    UnknownPermission(String),
    /// TYPE not one of the known types.
    #[error("unknown type {0:?} (expected clientid, username, ip or ipaddr)")]
    UnknownType(String),
    /// An `ip`/`ipaddr` VALUE that is neither `*` nor an address or network.
    #[error(
        "bad IP address {value:?}: {reason} \
         (expected *, an address, or a network such as 10.0.0.0/8)"
    )]
    BadAddress {
        /// The VALUE as written.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// ACCESS not 1, 2 or 3.
    #[error("unknown access {0:?} (expected 1 = publish, 2 = subscribe, 3 = both)")]
    UnknownAccess(String),
    /// An empty entry in the comma-separated TOPICS (`a,,b` or a trailing comma).
    #[error("empty topic filter in {0:?}")]
    EmptyTopic(String),
    /// A topic filter that MQTT would refuse.
    #[error("bad topic filter {topic:?}: {error}")]
    BadTopic {
        /// The filter as written.
        topic: String,
        /// Why it is not a valid filter.
        error: TopicError,
    },
    /// A `$share/<group>/<filter>` topic: the broker checks the filter inside, so write that.
    #[error(
        "shared subscription {0:?} in a rule: write the filter without $share/<group>/ \
         (the broker checks a shared subscription's inner filter)"
    )]
    SharedTopic(String),
}

/// What starts a comment line: `#`, and hmq's other markers.
const COMMENT_STARTS: [&str; 4] = ["#", ";", "//", "*"];

/// Parses the whole text; the first mistake, in line order, is the error.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Vec<Rule>, AclError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rules = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match parse_line(line) {
            Ok(Some(rule)) => rules.push(rule),
            Ok(None) => {}
            Err(kind) => {
                return Err(AclError {
                    origin: origin.to_string(),
                    line: number,
                    kind,
                });
            }
        }
    }
    Ok(rules)
}

/// One line: `None` for a blank or comment line.
fn parse_line(line: &str) -> Result<Option<Rule>, AclErrorKind> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || COMMENT_STARTS.iter().any(|c| trimmed.starts_with(c)) {
        return Ok(None);
    }
    let mut tokens = trimmed.split_whitespace();
    let mut fields = [""; 5];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = tokens.next().ok_or(AclErrorKind::MissingFields(i))?;
    }
    if let Some(extra) = tokens.next() {
        if !extra.starts_with('#') {
            return Err(AclErrorKind::ExtraField(extra.to_string()));
        }
    }
    let [permission, kind, value, access, topics] = fields;

    let allow = if permission.eq_ignore_ascii_case("allow") {
        true
    } else if permission.eq_ignore_ascii_case("deny") {
        false
    } else {
        return Err(AclErrorKind::UnknownPermission(permission.to_string()));
    };

    let literal = |v: &str| (v != "*").then(|| Box::<str>::from(v));
    let subject = match kind.to_ascii_lowercase().as_str() {
        "clientid" => Subject::ClientId(literal(value)),
        "username" => Subject::Username(literal(value)),
        "ip" | "ipaddr" if value == "*" => Subject::Ip(None),
        "ip" | "ipaddr" => Subject::Ip(Some(IpNet::parse(value).map_err(|reason| {
            AclErrorKind::BadAddress {
                value: value.to_string(),
                reason,
            }
        })?)),
        _ => return Err(AclErrorKind::UnknownType(kind.to_string())),
    };

    let (publish, subscribe) = match access {
        "1" => (true, false),
        "2" => (false, true),
        "3" => (true, true),
        _ => return Err(AclErrorKind::UnknownAccess(access.to_string())),
    };

    let limits = TopicLimits::default();
    let mut templates = Vec::new();
    for filter in topics.split(',') {
        if filter.is_empty() {
            return Err(AclErrorKind::EmptyTopic(topics.to_string()));
        }
        if topic::parse_subscription(filter, &limits).is_ok_and(|s| s.group.is_some()) {
            return Err(AclErrorKind::SharedTopic(filter.to_string()));
        }
        topic::validate_filter(filter, &limits).map_err(|error| AclErrorKind::BadTopic {
            topic: filter.to_string(),
            error,
        })?;
        templates.push(TopicTemplate::new(filter));
    }

    Ok(Some(Rule {
        allow,
        subject,
        publish,
        subscribe,
        topics: templates,
    }))
}
