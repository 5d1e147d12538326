//! Tests of the whole ACL: the seed's example, parse errors, evaluation, and the wildcard guarantee
//! as a property test against a reference evaluator written straight from the documented rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::topic;

/// The seed's first copy of the example, verbatim (its trailing space on the `joy` line included).
const SEED_FIRST: &str = concat!(
    "## type clientid , username, ipaddr\n",
    "##pub 1 ,  sub 2,  pubsub 3\n",
    "## %c is clientid , %u is username\n",
    "allow      ip          127.0.0.1   2     $SYS/#\n",
    "allow      clientid    0001        3     #\n",
    "allow      username    admin       3     #\n",
    "allow      username    joy         3     /test,hello/world \n",
    "allow      clientid    *           1     toCloud/%c\n",
    "allow      username    *           1     toCloud/%u\n",
    "deny       clientid    *           3     #\n",
);

/// The seed's second copy, with a comment line before each rule.
const SEED_SECOND: &str = "\
#allow local sub $SYS topic
allow      ip          127.0.0.1   2    $SYS/#
#allow client who's id with 0001 or username with admin pub sub all topic
allow      clientid    0001        3        #
allow      username    admin       3        #
#allow client with the username joy can pub sub topic '/test' and 'hello/world'
allow      username    joy         3     /test,hello/world
#allow all client pub the topic toCloud/{clientid/username}
allow      clientid    *         1         toCloud/%c
allow      username    *         1         toCloud/%u
#deny all client pub sub all topic
deny       clientid    *         3           #
";

const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn who<'a>(client_id: &'a str, username: Option<&'a str>, ip: IpAddr) -> Identity<'a> {
    Identity {
        client_id,
        username,
        ip,
    }
}

fn acl(text: &str) -> Acl {
    match Acl::parse(text, "test.acl") {
        Ok(acl) => acl,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn seed_examples_parse_to_the_same_rules() {
    let first = acl(SEED_FIRST);
    let second = acl(SEED_SECOND);
    assert_eq!(first.len(), 7);
    assert_eq!(first, second);
    // Both together, with the blank line between them: a blank line does not end the file.
    assert_eq!(acl(&format!("{SEED_FIRST}\n\n{SEED_SECOND}\n")).len(), 14);
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Pub,
    Sub,
}
use Action::{Pub, Sub};

#[test]
fn seed_semantics() {
    let acl = acl(SEED_SECOND);
    let c0001 = who("0001", None, REMOTE);
    let admin = who("x1", Some("admin"), REMOTE);
    let joy = who("j1", Some("joy"), REMOTE);
    let plain = who("c1", None, REMOTE);
    let bob = who("c2", Some("bob"), REMOTE);
    let local = who("mon", None, LOCAL);
    let local_v6_mapped = who(
        "mon",
        None,
        IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
    );
    let cases = [
        // Client 0001 and user admin: everything but `$` topics.
        (c0001, Pub, "a/b", true),
        (c0001, Sub, "a/b", true),
        (c0001, Pub, "toCloud/c1", true),
        (c0001, Sub, "$SYS/broker/uptime", false),
        (admin, Pub, "x", true),
        (admin, Sub, "/test", true),
        (admin, Pub, "$SYS/x", false),
        // joy: exactly /test and hello/world, both ways; plus her own toCloud topics.
        (joy, Pub, "/test", true),
        (joy, Sub, "/test", true),
        (joy, Pub, "hello/world", true),
        (joy, Sub, "hello/world", true),
        (joy, Pub, "test", false),
        (joy, Pub, "hello/world/x", false),
        (joy, Sub, "hello", false),
        (joy, Pub, "toCloud/joy", true),
        (joy, Pub, "toCloud/j1", true),
        (joy, Sub, "toCloud/joy", false),
        // An ordinary client: publish to its own toCloud topic only, never subscribe.
        (plain, Pub, "toCloud/c1", true),
        (plain, Pub, "toCloud/c2", false),
        (plain, Pub, "toCloud/c1/x", false),
        (plain, Pub, "toCloud", false),
        (plain, Sub, "toCloud/c1", false),
        (plain, Pub, "a/b", false),
        (plain, Pub, "/test", false),
        (plain, Pub, "$SYS/x", false),
        // A user: its client id and its user name.
        (bob, Pub, "toCloud/c2", true),
        (bob, Pub, "toCloud/bob", true),
        (bob, Pub, "toCloud/c1", false),
        // Local clients may subscribe to $SYS, not publish there, and nothing else.
        (local, Sub, "$SYS/broker/uptime", true),
        (local, Sub, "$SYS", true),
        (local, Pub, "$SYS/broker/uptime", false),
        (local, Sub, "a", false),
        (local, Pub, "toCloud/mon", true),
        (local_v6_mapped, Sub, "$SYS/x", true),
    ];
    for (id, action, topic, want) in cases {
        let client = acl.for_client(&id);
        let got = match action {
            Pub => client.can_publish(topic),
            Sub => client.can_receive(topic),
        };
        assert_eq!(got, want, "{id:?} {action:?} {topic}");
    }
}

#[test]
fn seed_subscriptions() {
    use SubscribeCheck::{Allow, Deny, PerMessage};
    let acl = acl(SEED_FIRST);
    let c0001 = who("0001", None, REMOTE);
    let admin = who("x1", Some("admin"), REMOTE);
    let joy = who("j1", Some("joy"), REMOTE);
    let plain = who("c1", None, REMOTE);
    let local = who("mon", None, LOCAL);
    let local_admin = who("x1", Some("admin"), LOCAL);
    let cases = [
        (admin, "#", Allow),
        (admin, "+/+", Allow),
        (admin, "$SYS/#", Deny),
        (c0001, "#", Allow),
        (plain, "#", Deny),
        (plain, "toCloud/+", Deny),
        (plain, "toCloud/c1", Deny),
        (joy, "/test", Allow),
        (joy, "hello/world", Allow),
        (joy, "hello/+", PerMessage),
        (joy, "#", PerMessage),
        (joy, "/+", PerMessage),
        (joy, "hello", Deny),
        (joy, "hello/world/#", PerMessage),
        (local, "$SYS/#", Allow),
        (local, "$SYS/broker/+", Allow),
        (local, "#", Deny),
        (local, "+/broker", Deny),
        (local_admin, "#", Allow),
        (local_admin, "$SYS/#", Allow),
    ];
    for (id, filter, want) in cases {
        assert_eq!(
            acl.for_client(&id).subscribe(filter),
            want,
            "{id:?} {filter}"
        );
    }
}

#[test]
fn parse_errors_name_the_line() {
    use AclErrorKind as K;
    type Check = fn(&AclErrorKind) -> bool;
    let cases: &[(&str, usize, Check)] = &[
        (
            "allow clientid * 4 a",
            1,
            |k| matches!(k, K::UnknownAccess(a) if a == "4"),
        ),
        ("# c\n\nallow clientid *", 3, |k| {
            matches!(k, K::MissingFields(3))
        }),
        ("allow", 1, |k| matches!(k, K::MissingFields(1))),
        (
            "allow clientid * 3 a b",
            1,
            |k| matches!(k, K::ExtraField(f) if f == "b"),
        ),
        (
            "allow clientid * 3 a, b",
            1,
            |k| matches!(k, K::ExtraField(f) if f == "b"),
        ),
        (
            "deny clientid * 3 # everything",
            1,
            |k| matches!(k, K::ExtraField(f) if f == "everything"),
        ),
        (
            "allow ip 1.2.3.4 1 a\npermit clientid * 3 a",
            2,
            |k| matches!(k, K::UnknownPermission(p) if p == "permit"),
        ),
        (
            "allow client * 3 a",
            1,
            |k| matches!(k, K::UnknownType(t) if t == "client"),
        ),
        (
            "\n\nallow ip localhost 2 a",
            3,
            |k| matches!(k, K::BadAddress { value, .. } if value == "localhost"),
        ),
        ("allow ipaddr 10.0.0.1/8 2 a", 1, |k| {
            matches!(k, K::BadAddress { .. })
        }),
        ("allow ip 10.0.0.0/33 2 a", 1, |k| {
            matches!(k, K::BadAddress { .. })
        }),
        ("allow clientid * 3 a,,b", 1, |k| {
            matches!(k, K::EmptyTopic(_))
        }),
        ("allow clientid * 3 a,", 1, |k| {
            matches!(k, K::EmptyTopic(_))
        }),
        ("allow clientid * 3 a/#/b", 1, |k| {
            use topic::TopicError::BadWildcard;
            matches!(k, K::BadTopic { topic, error: BadWildcard } if topic == "a/#/b")
        }),
        (
            "allow clientid * 3 #comment",
            1,
            |k| matches!(k, K::BadTopic { topic, .. } if topic == "#comment"),
        ),
        ("allow clientid * 3 a/b#comment", 1, |k| {
            matches!(k, K::BadTopic { .. })
        }),
        (
            "allow clientid * 3 ok,toCloud/%c+",
            1,
            |k| matches!(k, K::BadTopic { topic, .. } if topic == "toCloud/%c+"),
        ),
        ("allow clientid * 3 $share/g/a", 1, |k| {
            matches!(k, K::SharedTopic(_))
        }),
        ("allow clientid * 0 a", 1, |k| {
            matches!(k, K::UnknownAccess(_))
        }),
        ("allow clientid * pub a", 1, |k| {
            matches!(k, K::UnknownAccess(_))
        }),
        // The first mistake wins, even with a later one.
        (
            "allow clientid * 3 a\n\ndeny x * 3 a\nallow clientid * 9 a",
            3,
            |k| matches!(k, K::UnknownType(_)),
        ),
        // A `#` inside the five fields is data, not the start of a comment.
        (
            "allow clientid 0001 #3 a",
            1,
            |k| matches!(k, K::UnknownAccess(a) if a == "#3"),
        ),
    ];
    for (text, line, check) in cases {
        match Acl::parse(text, "acl.conf") {
            Ok(acl) => panic!("{text:?} parsed: {acl:?}"),
            Err(e) => {
                assert_eq!(e.line, *line, "{text:?}: {e}");
                assert_eq!(e.origin, "acl.conf");
                assert!(check(&e.kind), "{text:?}: {e}");
            }
        }
    }
}

#[test]
fn error_messages() {
    let text = "allow clientid * 3 a\n\n\n\n\n# six\nallow clientid * 4 a\n";
    assert_eq!(
        Acl::parse(text, "acl.conf").unwrap_err().to_string(),
        "acl.conf:7: unknown access \"4\" (expected 1 = publish, 2 = subscribe, 3 = both)"
    );
    let e = Acl::parse("deny clientid * 3 # everything", "/etc/hmq/acl.conf").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/etc/hmq/acl.conf:1: unexpected \"everything\" after the topics"),
        "{e}"
    );
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let text = "\u{feff}# header\n\
                \n\
                \t  # indented comment\n\
                allow clientid a 1 x # trailing comment\n\
                \n\
                allow\tclientid\tb\t1\tx\t#tab\r\n\
                   \n\
                ALLOW ClientID c 1 x #\n\
                ; hmq's other comment markers\n\
                // like this\n\
                * and this\n\
                deny clientid * 3 # # the topic is '#', this is a comment\n\
                allow clientid * 3 y\n";
    let acl = acl(text);
    assert_eq!(acl.len(), 5);
    for id in ["a", "b", "c"] {
        assert!(
            acl.for_client(&who(id, None, REMOTE)).can_publish("x"),
            "{id}"
        );
    }
    let other = acl.for_client(&who("d", None, REMOTE));
    assert!(!other.can_publish("x"));
    // The `deny ... #` rule came first and covers `y` too.
    assert!(!other.can_publish("y"));
    assert!(acl.for_client(&who("d", None, REMOTE)).subscribe("#") == SubscribeCheck::Deny);

    let empty = self::acl("# nothing\n\n");
    assert!(empty.is_empty());
    let client = empty.for_client(&who("a", None, REMOTE));
    assert!(!client.can_publish("a"));
    assert_eq!(client.subscribe("#"), SubscribeCheck::Deny);
}

#[test]
fn a_rule_never_decides_an_action_it_does_not_cover() {
    // hmq stopped at the first rule whose topic matched, whatever its access.
    let acl = acl("allow clientid * 2 a/b\ndeny clientid * 1 c\nallow clientid * 3 #");
    let c = acl.for_client(&who("c1", None, REMOTE));
    assert!(c.can_publish("a/b"));
    assert!(c.can_receive("a/b"));
    assert!(!c.can_publish("c"));
    assert!(c.can_receive("c"));
    assert_eq!(c.subscribe("c"), SubscribeCheck::Allow);
    let only_sub = self::acl("allow clientid * 2 a/b");
    let c = only_sub.for_client(&who("c1", None, REMOTE));
    assert!(!c.can_publish("a/b"));
    assert!(c.can_receive("a/b"));
}

#[test]
fn rule_topics_are_filters_not_prefixes() {
    let acl = acl("allow clientid * 3 a/b,s/+,t/#");
    let c = acl.for_client(&who("c1", None, REMOTE));
    let cases = [
        ("a/b", true),
        ("a/b/c", false),
        ("a/bc", false),
        ("a", false),
        ("s/x", true),
        ("s/x/y", false),
        ("s", false),
        ("t", true),
        ("t/x/y", true),
        ("tt", false),
    ];
    for (t, want) in cases {
        assert_eq!(c.can_publish(t), want, "{t}");
        assert_eq!(c.can_receive(t), want, "{t}");
    }
}

#[test]
fn dollar_topics_need_rules_by_name() {
    let acl = acl("allow clientid * 3 #,+/x\nallow clientid ops 2 $SYS/#");
    let c = acl.for_client(&who("c1", None, REMOTE));
    assert!(!c.can_receive("$SYS/x"));
    assert!(!c.can_publish("$SYS/x"));
    assert!(!c.can_publish("$x"));
    assert_eq!(c.subscribe("$SYS/#"), SubscribeCheck::Deny);
    assert_eq!(c.subscribe("#"), SubscribeCheck::Allow);
    let ops = acl.for_client(&who("ops", None, REMOTE));
    assert_eq!(ops.subscribe("$SYS/#"), SubscribeCheck::Allow);
    assert!(!ops.can_publish("$SYS/x"));
}

#[test]
fn placeholders_never_widen_a_rule() {
    let acl = acl("allow clientid * 3 toCloud/%c,users/%u/#");
    let cases: &[(&str, Option<&str>, &str, bool)] = &[
        ("c1", None, "toCloud/c1", true),
        ("+", None, "toCloud/c1", false),
        ("+", None, "toCloud/+", false),
        ("#", None, "toCloud/c1", false),
        ("a/b", None, "toCloud/a/b", false),
        ("c1", Some("u"), "users/u/x", true),
        ("c1", Some("+"), "users/x/y", false),
        ("c1", Some("#"), "users/x", false),
        ("c1", None, "users/x", false),
        ("c1", Some(""), "users//x", false),
    ];
    for &(id, user, topic, want) in cases {
        let client = acl.for_client(&who(id, user, REMOTE));
        assert_eq!(client.can_publish(topic), want, "{id:?} {user:?} {topic}");
        assert_eq!(client.can_receive(topic), want, "{id:?} {user:?} {topic}");
    }
    let plus = acl.for_client(&who("+", None, REMOTE));
    assert_eq!(plus.subscribe("toCloud/+"), SubscribeCheck::Deny);
    assert_eq!(plus.subscribe("toCloud/#"), SubscribeCheck::Deny);
}

#[test]
fn straddling_subscriptions() {
    use SubscribeCheck::{Allow, Deny, PerMessage};
    let acl = acl("allow clientid * 3 toCloud/%c\n\
                   allow username admin 3 #\n\
                   deny clientid * 3 private/#\n\
                   allow clientid * 2 private/open,public/#\n\
                   deny clientid * 2 public/secret\n");
    let c1 = acl.for_client(&who("c1", None, REMOTE));
    let admin = acl.for_client(&who("x", Some("admin"), REMOTE));
    let cases = [
        (&c1, "toCloud/+", PerMessage),
        (&c1, "toCloud/#", PerMessage),
        (&c1, "+/c1", PerMessage),
        (&c1, "toCloud/c1", Allow),
        (&c1, "toCloud/c2", Deny),
        (&c1, "#", PerMessage),
        // `+` meets `private/#` and `public/#` at their parents, `private` and `public`.
        (&c1, "+", PerMessage),
        (&c1, "x/+", Deny),
        (&c1, "private/#", Deny),
        (&c1, "private/open", Deny),
        (&c1, "public/#", Allow),
        (&c1, "public/secret", Allow),
        (&admin, "#", Allow),
        (&admin, "toCloud/+", Allow),
        (&admin, "private/#", Allow),
    ];
    for (client, filter, want) in cases {
        assert_eq!(client.subscribe(filter), want, "{filter}");
    }
    assert!(c1.can_receive("toCloud/c1"));
    assert!(!c1.can_receive("toCloud/c2"));

    // Partial rules before a covering one.
    let acl = self::acl(
        "deny clientid * 2 a/x\nallow clientid * 2 a/#\n\
                         allow clientid * 2 b/x\nallow clientid * 2 b/#\n\
                         allow clientid * 2 c/x\ndeny clientid * 2 c/#\n\
                         deny clientid * 2 d/x\ndeny clientid * 2 d/#\n\
                         deny clientid * 2 e/+\nallow clientid * 2 e/+/+\n",
    );
    let c = acl.for_client(&who("c1", None, REMOTE));
    let cases = [
        ("a/+", PerMessage),
        ("a/y", Allow),
        ("b/+", Allow),
        ("c/+", PerMessage),
        ("d/+", Deny),
        ("e/#", PerMessage),
        ("e/+", Deny),
        ("e/+/+", Allow),
        ("e/+/+/+", Deny),
    ];
    for (filter, want) in cases {
        assert_eq!(c.subscribe(filter), want, "{filter}");
    }
}

#[test]
fn ip_rules() {
    let acl = acl("allow ip 10.0.0.0/8 1 ten\nallow ipaddr ::1 1 six\n\
                   allow ip fd00::/8 1 ula\nallow ip * 1 any");
    let cases = [
        (REMOTE, "ten", true),
        (LOCAL, "ten", false),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), "six", true),
        (LOCAL, "six", false),
        (IpAddr::V6("fd12::1".parse().unwrap()), "ula", true),
        (IpAddr::V6("fe80::1".parse().unwrap()), "ula", false),
        (IpAddr::V6("fe80::1".parse().unwrap()), "any", true),
    ];
    for (ip, topic, want) in cases {
        let client = acl.for_client(&who("c", None, ip));
        assert_eq!(client.can_publish(topic), want, "{ip} {topic}");
    }
}

#[test]
fn allow_all_allows_everything() {
    let clients = [
        Acl::allow_all().for_client(&who("c", None, REMOTE)),
        ClientAcl::allow_all(),
    ];
    for c in clients {
        for t in ["a", "$SYS/x", "/", "a/b/c"] {
            assert!(c.can_publish(t) && c.can_receive(t), "{t}");
        }
        for f in ["#", "$SYS/#", "+/+", "a"] {
            assert_eq!(c.subscribe(f), SubscribeCheck::Allow, "{f}");
        }
    }
    assert_eq!(Acl::allow_all().len(), 1);
}

#[test]
fn invalid_subscribe_filter_is_denied() {
    let c = ClientAcl::allow_all();
    for f in ["", "a/#/b", "a+", "a\0"] {
        assert_eq!(c.subscribe(f), SubscribeCheck::Deny, "{f:?}");
    }
}

#[test]
fn client_acl_is_send_sync_debug() {
    fn check<T: Send + Sync + std::fmt::Debug + Clone>() {}
    check::<ClientAcl>();
    check::<Acl>();
    let c = acl(SEED_FIRST).for_client(&who("c1", None, REMOTE));
    let shown = format!("{c:?}");
    assert!(shown.contains("\"toCloud/c1\""), "{shown}");
}

// --- The property test: reference evaluation and the wildcard guarantee ---

/// A generated rule, kept structured for the reference evaluator.
#[derive(Debug, Clone)]
struct GenRule {
    allow: bool,
    kind: &'static str,
    value: &'static str,
    access: u8,
    topics: Vec<String>,
}

impl GenRule {
    fn line(&self) -> String {
        let permission = if self.allow { "allow" } else { "deny" };
        format!(
            "{permission} {} {} {} {}",
            self.kind,
            self.value,
            self.access,
            self.topics.join(",")
        )
    }
}

/// Topic levels: rule filters and subscriptions are built from these, and placeholders fill in
/// identities drawn from them too.
const LEVELS: [&str; 5] = ["a", "$s", "", "c1", "u1"];

fn filter_from(
    levels: impl Strategy<Value = &'static str>,
    with_hash: bool,
) -> impl Strategy<Value = String> {
    (prop::collection::vec(levels, 0..4), any::<bool>()).prop_filter_map(
        "a filter needs a level",
        move |(mut levels, hash)| {
            if hash && with_hash {
                levels.push("#");
            }
            let s = levels.join("/");
            (!s.is_empty()).then_some(s)
        },
    )
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    let subject = prop_oneof![
        4 => Just(("clientid", "*")),
        1 => Just(("clientid", "c1")),
        1 => Just(("clientid", "+")),
        1 => Just(("username", "*")),
        1 => Just(("username", "u1")),
        1 => Just(("ip", "*")),
        1 => Just(("ipaddr", "127.0.0.1")),
        1 => Just(("ip", "10.0.0.0/8")),
    ];
    let level = prop_oneof![
        Just("a"),
        Just("$s"),
        Just(""),
        Just("+"),
        Just("c1"),
        Just("%c"),
        Just("%u"),
        Just("x%c"),
    ];
    (
        any::<bool>(),
        subject,
        1u8..=3,
        prop::collection::vec(filter_from(level, true), 1..3),
    )
        .prop_map(|(allow, (kind, value), access, topics)| GenRule {
            allow,
            kind,
            value,
            access,
            topics,
        })
}

fn identity_strategy() -> impl Strategy<Value = Identity<'static>> {
    (
        prop::sample::select(vec!["c1", "a", "+", "#", "a/b", "$s", "u1", "z"]),
        prop::sample::select(vec![None, Some("u1"), Some("a"), Some("#"), Some("")]),
        prop::sample::select(vec![
            LOCAL,
            REMOTE,
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ]),
    )
        .prop_map(|(client_id, username, ip)| Identity {
            client_id,
            username,
            ip,
        })
}

/// Every topic of up to four levels over `LEVELS` plus `z` (a level no filter names) and `xc1`
/// (a substituted `x%c`).
fn universe() -> Vec<String> {
    let levels: Vec<&str> = LEVELS.iter().copied().chain(["z", "xc1"]).collect();
    let mut all: Vec<String> = levels.iter().map(|s| s.to_string()).collect();
    let mut last = all.clone();
    for _ in 1..4 {
        last = last
            .iter()
            .flat_map(|t| levels.iter().map(move |l| format!("{t}/{l}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all.retain(|t| !t.is_empty());
    all
}

/// The rules as documented, evaluated naively: first selecting rule that covers the action and
/// has a filter (placeholders filled in as text) matching the topic; otherwise deny.
fn reference(rules: &[GenRule], who: &Identity<'_>, publish: bool, t: &str) -> bool {
    let safe = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#', '\0']);
    for rule in rules {
        let selected = match (rule.kind, rule.value) {
            ("clientid", "*") | ("ip", "*") => true,
            ("clientid", v) => who.client_id == v,
            ("username", "*") => who.username.is_some(),
            ("username", v) => who.username == Some(v),
            ("ipaddr", "127.0.0.1") => who.ip.to_canonical() == LOCAL,
            ("ip", "10.0.0.0/8") => {
                matches!(who.ip.to_canonical(), IpAddr::V4(v4) if v4.octets()[0] == 10)
            }
            other => panic!("unknown generated subject {other:?}"),
        };
        let covers_action = if publish {
            rule.access != 2
        } else {
            rule.access != 1
        };
        if !selected || !covers_action {
            continue;
        }
        for pattern in &rule.topics {
            let mut filter = pattern.clone();
            if filter.contains("%c") {
                if !safe(who.client_id) {
                    continue;
                }
                filter = filter.replace("%c", who.client_id);
            }
            if filter.contains("%u") {
                match who.username {
                    Some(u) if safe(u) => filter = filter.replace("%u", u),
                    _ => continue,
                }
            }
            if topic::matches(&filter, t) {
                return rule.allow;
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// `for_client` + `can_publish`/`can_receive` agree with the reference evaluator on every
    /// topic, and `subscribe` never claims more than the topics bear out: `Allow` means every
    /// topic the filter matches may be received, `Deny` means none may.
    #[test]
    fn evaluation_and_wildcard_guarantee(
        rules in prop::collection::vec(rule_strategy(), 0..6),
        id in identity_strategy(),
        filters in prop::collection::vec(
            filter_from(prop::sample::select(vec!["a", "$s", "", "+", "c1", "u1", "xc1"]), true),
            1..6,
        ),
    ) {
        let text: String = rules.iter().map(|r| r.line() + "\n").collect();
        let acl = Acl::parse(&text, "gen.acl").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(acl.len(), rules.len());
        let client = acl.for_client(&id);
        let topics = universe();
        for t in &topics {
            prop_assert_eq!(client.can_publish(t), reference(&rules, &id, true, t),
                            "publish {} by {:?} under\n{}", t, id, text);
            prop_assert_eq!(client.can_receive(t), reference(&rules, &id, false, t),
                            "receive {} by {:?} under\n{}", t, id, text);
        }
        for filter in &filters {
            let check = client.subscribe(filter);
            let matching = topics.iter().filter(|t| topic::matches(filter, t));
            match check {
                SubscribeCheck::Allow => {
                    for t in matching {
                        prop_assert!(client.can_receive(t),
                                     "{} allowed, {} denied: {:?}\n{}", filter, t, id, text);
                    }
                }
                SubscribeCheck::Deny => {
                    for t in matching {
                        prop_assert!(!client.can_receive(t),
                                     "{} denied, {} allowed: {:?}\n{}", filter, t, id, text);
                    }
                }
                SubscribeCheck::PerMessage => {}
            }
        }
    }
}
