//! One parsed ACL rule, and how it applies to one client: does its TYPE/VALUE select the client,
//! and what are its topic filters once `%c`/`%u` are substituted for that client.

use std::net::IpAddr;
use std::sync::Arc;

use super::Identity;
use super::filter::Filter;
use crate::topic::{self, TopicLimits};

/// A parsed rule: `allow|deny TYPE VALUE ACCESS TOPICS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) allow: bool,
    pub(crate) subject: Subject,
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) topics: Vec<TopicTemplate>,
}

/// TYPE and VALUE: which clients a rule is about. `None` is the VALUE `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    ClientId(Option<Box<str>>),
    /// `username *` selects only clients that sent a user name.
    Username(Option<Box<str>>),
    Ip(Option<IpNet>),
}

impl Subject {
    pub(crate) fn selects(&self, who: &Identity<'_>) -> bool {
        match self {
            Subject::ClientId(None) => true,
            Subject::ClientId(Some(id)) => **id == *who.client_id,
            Subject::Username(None) => who.username.is_some(),
            Subject::Username(Some(name)) => who.username == Some(&**name),
            Subject::Ip(None) => true,
            Subject::Ip(Some(net)) => net.contains(who.ip),
        }
    }
}

/// An address or a CIDR network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, which a dual-stack
/// listener reports for IPv4 clients) are stored and compared as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`; the address must have no bits set past the prefix.
    pub(crate) fn parse(s: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| "not an IPv4 or IPv6 address".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("prefix length must be a number from 0 to {max}")),
            },
        };
        let net = IpNet { addr, prefix }.canonical();
        if net.masked(net.addr) != net.addr {
            let fixed = IpNet {
                addr: net.masked(net.addr),
                prefix: net.prefix,
            };
            return Err(format!(
                "address has bits set past the /{prefix} prefix (did you mean {}?)",
                fixed.render(addr.is_ipv6())
            ));
        }
        Ok(net)
    }

    /// IPv4-mapped IPv6 networks within `::ffff:0:0/96` become IPv4 networks.
    fn canonical(self) -> IpNet {
        match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => IpNet {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    fn render(&self, as_mapped_v6: bool) -> String {
        match self.addr {
            IpAddr::V4(v4) if as_mapped_v6 => {
                format!("{}/{}", v4.to_ipv6_mapped(), u32::from(self.prefix) + 96)
            }
            addr => format!("{addr}/{}", self.prefix),
        }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

/// One of a rule's topic filters, before it meets a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopicTemplate {
    /// No placeholder: split once, shared by every client the rule applies to.
    Fixed(Arc<Filter>),
    /// Contains `%c` and/or `%u`: substituted per client by [`TopicTemplate::for_client`].
    Pattern(Box<str>),
}

impl TopicTemplate {
    /// A filter that [`topic::validate_filter`] accepted (with any placeholders taken literally).
    pub(crate) fn new(filter: &str) -> TopicTemplate {
        if filter.contains("%c") || filter.contains("%u") {
            TopicTemplate::Pattern(filter.into())
        } else {
            TopicTemplate::Fixed(Arc::new(Filter::new(filter)))
        }
    }

    /// The filter for this client, or `None` if a placeholder cannot be filled safely: the
    /// client has no user name (for `%u`), or the value is empty or contains `/`, `+`, `#` or
    /// U+0000 (it would change the filter's levels or wildcards), or the result is not a valid
    /// filter (too long).
    pub(crate) fn for_client(&self, who: &Identity<'_>) -> Option<Arc<Filter>> {
        let pattern = match self {
            TopicTemplate::Fixed(filter) => return Some(Arc::clone(filter)),
            TopicTemplate::Pattern(pattern) => pattern,
        };
        let mut out = String::with_capacity(pattern.len() + 16);
        let mut rest = &**pattern;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let value = match after.as_bytes().first() {
                Some(b'c') => Some(who.client_id),
                Some(b'u') => Some(who.username?),
                _ => None,
            };
            match value {
                Some(v) => {
                    if !substitutable(v) {
                        return None;
                    }
                    out.push_str(v);
                    rest = &after[1..];
                }
                // Any other `%` is literal text.
                None => {
                    out.push('%');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        topic::validate_filter(&out, &TopicLimits::default()).ok()?;
        Some(Arc::new(Filter::new(&out)))
    }
}

/// A client id or user name that can stand in for `%c`/`%u` without changing the filter's shape.
fn substitutable(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn who<'a>(client_id: &'a str, username: Option<&'a str>) -> Identity<'a> {
        Identity {
            client_id,
            username,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    #[test]
    fn substitution() {
        let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("toCloud/%c", "c1", None, Some("toCloud/c1")),
            ("toCloud/%u", "c1", None, None),
            ("toCloud/%u", "c1", Some("joy"), Some("toCloud/joy")),
            ("toCloud/%u", "c1", Some(""), None),
            ("dev-%c/%u/x", "7", Some("bo"), Some("dev-7/bo/x")),
            ("a/%c", "+", None, None),
            ("a/%c", "#", None, None),
            ("a/%c", "x/y", None, None),
            ("a/%c", "x+", None, None),
            ("a/%c", "", None, None),
            ("a/%c", "a\0", None, None),
            // Substituted text is never re-scanned for placeholders.
            ("a/%c", "%u", Some("bo"), Some("a/%u")),
            ("100%/%c", "c", None, Some("100%/c")),
            ("%c%", "c", None, Some("c%")),
            ("%c/#", "$x", None, Some("$x/#")),
        ];
        for &(pattern, id, user, want) in cases {
            let got = TopicTemplate::new(pattern).for_client(&who(id, user));
            assert_eq!(
                got.as_deref().map(Filter::as_str),
                want,
                "{pattern} {id:?} {user:?}"
            );
        }
        let long = "x".repeat(65_535);
        assert!(
            TopicTemplate::new("a/%c")
                .for_client(&who(&long, None))
                .is_none()
        );
    }

    #[test]
    fn ip_networks() {
        let v4 = |s: &str| IpAddr::V4(s.parse::<Ipv4Addr>().unwrap());
        let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        let cases = [
            ("127.0.0.1", v4("127.0.0.1"), true),
            ("127.0.0.1", v4("127.0.0.2"), false),
            ("127.0.0.1", v6("::ffff:127.0.0.1"), true),
            ("127.0.0.1", v6("::1"), false),
            ("10.0.0.0/8", v4("10.200.3.4"), true),
            ("10.0.0.0/8", v4("11.0.0.1"), false),
            ("0.0.0.0/0", v4("8.8.8.8"), true),
            ("0.0.0.0/0", v6("2001:db8::1"), false),
            ("::1", v6("::1"), true),
            ("::1", v4("127.0.0.1"), false),
            ("2001:db8::/32", v6("2001:db8:1::5"), true),
            ("2001:db8::/32", v6("2001:db9::5"), false),
            ("::/0", v6("fe80::1"), true),
            ("::ffff:10.0.0.0/104", v4("10.9.9.9"), true),
            ("::ffff:127.0.0.1", v4("127.0.0.1"), true),
        ];
        for (net, ip, want) in cases {
            assert_eq!(IpNet::parse(net).unwrap().contains(ip), want, "{net} {ip}");
        }
        for bad in [
            "localhost",
            "127.0.0.1/33",
            "::1/129",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "fe80::1%eth0",
            "",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
        assert!(
            IpNet::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8?")
        );
        assert!(
            IpNet::parse("::ffff:10.0.0.1/104")
                .unwrap_err()
                .contains("did you mean ::ffff:10.0.0.0/104?")
        );
    }
}
