//! The access control list (`aclConf`, hmq's `acl.conf`): parsing, and per-client evaluation of
//! publish, subscribe and delivery. Pure (no I/O, no tokio), so the Kubernetes operator validates
//! ACL text with the code the broker reads it with.
//!
//! # Format
//!
//! One rule per line, fields separated by spaces or tabs:
//!
//! ```text
//! allow|deny  TYPE  VALUE  ACCESS  TOPICS   [# comment]
//! ```
//!
//! - `TYPE` is `clientid`, `username`, or `ip` (alias `ipaddr`, the seed's spelling). Keywords are
//!   case-insensitive; values are not.
//! - `VALUE` is a literal or `*`. `username *` selects only clients that sent a user name. For
//!   `ip`, the value is an IPv4 or IPv6 address or (an extension) a CIDR network such as
//!   `10.0.0.0/8` or `fd00::/8`; IPv4-mapped IPv6 client addresses compare as IPv4.
//! - `ACCESS`: **`1` = publish, `2` = subscribe, `3` = both, as the seed documents. hmq's code
//!   (since 2019) swaps 1 and 2; we follow the seed. An hmq file written against hmq's code
//!   therefore needs its 1s and 2s exchanged.**
//! - `TOPICS`: comma-separated MQTT topic filters, no spaces. `%c` is replaced by the client id and
//!   `%u` by the user name, as text, anywhere in a filter (`toCloud/%c`, `dev-%c/#`); any other `%`
//!   is literal. A rule's filter is an MQTT filter, not a prefix: `a/b` does not cover `a/b/c`.
//! - Comments: a line whose first non-blank character is `#` (or `;`, `//`, `*`, as in hmq), or
//!   anything after the five fields that starts with `#`. In the fields themselves `#` is data, so
//!   `deny clientid * 3 #` denies every topic, while `deny clientid * 3 # everything` is an error,
//!   not a comment. Blank lines may appear anywhere.
//!
//! A malformed line is an error naming the line ([`AclError`]); nothing is guessed.
//!
//! # Evaluation
//!
//! Rules are tried in file order. The first rule that selects the client (TYPE/VALUE), whose ACCESS
//! covers the action (publish, or subscribe/receive), and one of whose filters matches the topic
//! decides allow or deny. A rule that does not cover the action is skipped, never a decision. If no
//! rule decides, the answer is deny. `$` topics (`$SYS/...`) are treated like any other topic: a
//! rule filter starting with a wildcard does not match them (MQTT's `$` rule), so `$SYS/#` must be
//! granted by name.
//!
//! `%c`/`%u` are filled in per client by [`Acl::for_client`]. If the value is missing (no user
//! name), empty, or contains `/`, `+`, `#` or U+0000, the filter would change shape (a client named
//! `+` would turn `toCloud/%c` into `toCloud/+`), so that filter is left out for that client: an
//! allow grants nothing and a deny denies nothing. Leaving out a deny cannot widen access beyond
//! what some other client already has, since a placeholder deny only ever touched the client's own
//! topics.
//!
//! # Subscriptions and the wildcard guarantee
//!
//! **A client never receives a message on a topic the rules do not let it subscribe to, whatever
//! wildcards it subscribes with.** [`ClientAcl::subscribe`] classifies a filter against the
//! client's subscribe rules using two exact filter relations: rule *covers* filter (every topic the
//! filter matches, the rule matches) and rule *intersects* filter (some topic matches both), both
//! with the `$` rule. Walking the rules in order and skipping those that do not intersect:
//!
//! - a rule that covers the filter decides every topic not already decided by an earlier
//!   intersecting rule: the answer is its own decision if all those earlier rules agreed with it,
//!   otherwise [`SubscribeCheck::PerMessage`];
//! - without a covering rule, the remaining topics fall to the default deny: the answer is
//!   [`SubscribeCheck::Deny`] if no intersecting rule allowed, otherwise `PerMessage`.
//!
//! `Allow` therefore means every matching topic is allowed, `Deny` that every one is denied, and
//! `PerMessage` that the broker must call [`ClientAcl::can_receive`] for each message delivered
//! through the subscription (e.g. `toCloud/+` for a client allowed only `toCloud/%c`).
//!
//! # Cost
//!
//! [`Acl::for_client`] runs once per connection (and after a reload): it keeps only the rules that
//! select the client, fills in the placeholders and splits every filter into levels once; filters
//! without placeholders are shared between clients, not copied. [`ClientAcl::can_publish`] and
//! [`ClientAcl::can_receive`] then scan that client's few rules for the action, comparing levels,
//! and allocate nothing. There is deliberately no per-topic cache: a typical client has a handful
//! of rules, and a scan of them is cheaper than hashing the topic.

mod filter;
mod parse;
mod rule;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use filter::Filter;
use rule::{Rule, Subject, TopicTemplate};

use crate::topic::{self, TopicLimits};

pub use parse::{AclError, AclErrorKind};

/// A parsed ACL: its rules, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
}

/// Who a client is, for selecting rules and filling in `%c`/`%u`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The client id (as assigned by the broker if the client sent an empty one).
    pub client_id: &'a str,
    /// The user name from CONNECT (or a client certificate), if any.
    pub username: Option<&'a str>,
    /// The client's address.
    pub ip: IpAddr,
}

impl Acl {
    /// Parses ACL text. `origin` (usually the file name) prefixes error messages. Every line is
    /// checked; the first mistake is returned with its line number.
    pub fn parse(text: &str, origin: &str) -> Result<Acl, AclError> {
        Ok(Acl {
            rules: parse::parse(text, origin)?,
        })
    }

    /// An ACL that allows every client to publish and subscribe to every topic, `$` topics
    /// included: the behaviour with `acl` off.
    pub fn allow_all() -> Acl {
        Acl {
            rules: vec![Rule {
                allow: true,
                subject: Subject::ClientId(None),
                publish: true,
                subscribe: true,
                topics: vec![TopicTemplate::Fixed(Arc::new(Filter::everything()))],
            }],
        }
    }

    /// The rules that apply to this client, with `%c`/`%u` filled in, ready for per-message checks.
    pub fn for_client(&self, who: &Identity<'_>) -> ClientAcl {
        let mut publish = Vec::new();
        let mut subscribe = Vec::new();
        for rule in self.rules.iter().filter(|r| r.subject.selects(who)) {
            for template in &rule.topics {
                let Some(filter) = template.for_client(who) else {
                    continue;
                };
                let entry = Entry {
                    allow: rule.allow,
                    filter,
                };
                if rule.publish {
                    publish.push(entry.clone());
                }
                if rule.subscribe {
                    subscribe.push(entry);
                }
            }
        }
        ClientAcl {
            publish: publish.into(),
            subscribe: subscribe.into(),
        }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (which denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// One filter of one rule, for one client.
#[derive(Debug, Clone)]
struct Entry {
    allow: bool,
    filter: Arc<Filter>,
}

/// One client's applicable rules, in file order, split by action. Cheap to keep per connection:
/// filters without placeholders are shared with the [`Acl`] they came from.
#[derive(Debug, Clone)]
pub struct ClientAcl {
    publish: Box<[Entry]>,
    subscribe: Box<[Entry]>,
}

/// How a SUBSCRIBE filter fares against a client's ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCheck {
    /// Every topic the filter can match is allowed: no per-message check needed.
    Allow,
    /// No topic the filter can match is allowed: refuse the subscription (SUBACK 0x80).
    Deny,
    /// Some topics are allowed and some are not (or it cannot be shown otherwise): grant the
    /// subscription and call [`ClientAcl::can_receive`] for every message delivered through it.
    PerMessage,
}

/// The first entry whose filter matches decides; none → deny.
fn decide(entries: &[Entry], topic: &str) -> bool {
    entries
        .iter()
        .find(|e| e.filter.matches(topic))
        .is_some_and(|e| e.allow)
}

impl ClientAcl {
    /// Allows everything: for a broker running without an ACL.
    pub fn allow_all() -> ClientAcl {
        let everything = Entry {
            allow: true,
            filter: Arc::new(Filter::everything()),
        };
        ClientAcl {
            publish: Box::new([everything.clone()]),
            subscribe: Box::new([everything]),
        }
    }

    /// One shared allow-all instance, so that a broker without an ACL does not allocate one per
    /// client.
    pub fn shared_allow_all() -> Arc<ClientAcl> {
        static ALLOW_ALL: std::sync::LazyLock<Arc<ClientAcl>> =
            std::sync::LazyLock::new(|| Arc::new(ClientAcl::allow_all()));
        ALLOW_ALL.clone()
    }

    /// Whether the client may publish to `topic` (a valid topic name). No allocation.
    pub fn can_publish(&self, topic: &str) -> bool {
        decide(&self.publish, topic)
    }

    /// Whether the client may subscribe to the concrete topic `topic`, i.e. receive a message
    /// published to it. No allocation.
    pub fn can_receive(&self, topic: &str) -> bool {
        decide(&self.subscribe, topic)
    }

    /// Classifies a SUBSCRIBE filter (for `$share/<group>/<f>`, pass `f`). See the module docs for
    /// the algorithm; `Allow` and `Deny` are exact claims about every topic the filter can match.
    /// A filter that is not valid is denied.
    pub fn subscribe(&self, filter: &str) -> SubscribeCheck {
        let any_size = TopicLimits {
            max_length: usize::MAX,
            max_levels: usize::MAX,
        };
        if topic::validate_filter(filter, &any_size).is_err() {
            return SubscribeCheck::Deny;
        }
        let wanted = Filter::new(filter);
        // Decisions of earlier rules that match some, but not all, of the filter's topics.
        let (mut some_allowed, mut some_denied) = (false, false);
        for entry in self.subscribe.iter() {
            if !entry.filter.intersects(&wanted) {
                continue;
            }
            if entry.filter.covers(&wanted) {
                return match entry.allow {
                    true if !some_denied => SubscribeCheck::Allow,
                    false if !some_allowed => SubscribeCheck::Deny,
                    _ => SubscribeCheck::PerMessage,
                };
            }
            if entry.allow {
                some_allowed = true;
            } else {
                some_denied = true;
            }
        }
        // Topics no rule matches are denied.
        if some_allowed {
            SubscribeCheck::PerMessage
        } else {
            SubscribeCheck::Deny
        }
    }
}
