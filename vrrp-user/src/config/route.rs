//! An instance's routes (keepalived's `virtual_routes`), written as `ip route` writes them:
//! `"10.50.0.0/16 via 10.8.0.254 dev eth1"`, `"blackhole 10.60.0.0/16"`,
//! `"default via 192.0.2.1 table 100"`.

use std::{fmt, net::IpAddr};

/// What a route does with what it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Through a gateway or straight out of an interface.
    #[default]
    Unicast,
    /// Dropped silently.
    Blackhole,
    /// Dropped with ICMP "host unreachable".
    Unreachable,
    /// Dropped with ICMP "administratively prohibited".
    Prohibit,
}

/// The scope of a route's destination (`ip route ... scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteScope {
    Global,
    Link,
    Host,
}

/// One route, added while its instance is master.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub kind: RouteKind,
    pub to: IpAddr,
    pub prefix: u8,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// The preferred source address (`src`), often a VIP.
    pub src: Option<IpAddr>,
    pub metric: Option<u32>,
    /// The routing table (main when not set).
    pub table: Option<u32>,
    pub scope: Option<RouteScope>,
    /// The gateway is on the link even if no prefix of the interface covers it.
    pub onlink: bool,
}

/// The main routing table's number.
pub const MAIN_TABLE: u32 = 254;

impl Route {
    /// Whether `self` and `other` are the same route to the kernel (a route is known by its
    /// destination, table and metric).
    pub fn same_slot(&self, other: &Route) -> bool {
        (self.to, self.prefix, self.table(), self.metric.unwrap_or(0))
            == (
                other.to,
                other.prefix,
                other.table(),
                other.metric.unwrap_or(0),
            )
    }

    /// The table the route goes in.
    pub fn table(&self) -> u32 {
        self.table.unwrap_or(MAIN_TABLE)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => f.write_str("blackhole ")?,
            RouteKind::Unreachable => f.write_str("unreachable ")?,
            RouteKind::Prohibit => f.write_str("prohibit ")?,
        }
        write!(f, "{}/{}", self.to, self.prefix)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if let Some(table) = self.table {
            write!(f, " table {table}")?;
        }
        match self.scope {
            None => {}
            Some(RouteScope::Global) => f.write_str(" scope global")?,
            Some(RouteScope::Link) => f.write_str(" scope link")?,
            Some(RouteScope::Host) => f.write_str(" scope host")?,
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// What a route string may hold, for the messages.
pub const EXPECTED: &str = "expected a route as `ip route` writes it: [blackhole|unreachable|prohibit] \
     DESTINATION[/PREFIX] (or default) [via ADDRESS] [dev INTERFACE] [src ADDRESS] [metric N] \
     [table N|main] [scope global|link|host] [onlink]";

/// Reads one route; the message says what was expected and what was found.
pub fn parse(text: &str) -> Result<Route, String> {
    let mut words = text.split_whitespace().peekable();
    let kind = match words.peek().copied() {
        Some("blackhole") => RouteKind::Blackhole,
        Some("unreachable") => RouteKind::Unreachable,
        Some("prohibit") => RouteKind::Prohibit,
        Some("unicast") => RouteKind::Unicast,
        _ => RouteKind::Unicast,
    };
    if matches!(
        words.peek().copied(),
        Some("blackhole" | "unreachable" | "prohibit" | "unicast")
    ) {
        words.next();
    }
    if words.peek() == Some(&"to") {
        words.next();
    }
    let Some(dest) = words.next() else {
        return Err(format!("{EXPECTED}; got {text:?} (no destination)"));
    };
    let mut route = Route {
        kind,
        to: IpAddr::from([0, 0, 0, 0]),
        prefix: 0,
        via: None,
        dev: None,
        src: None,
        metric: None,
        table: None,
        scope: None,
        onlink: false,
    };
    let mut default_route = false;
    if dest == "default" {
        default_route = true;
    } else {
        (route.to, route.prefix) = destination(dest).ok_or_else(|| {
            format!(
                "{EXPECTED}; got {text:?} ({dest:?} is not an address with an optional /prefix)"
            )
        })?;
    }
    let mut seen = Vec::new();
    while let Some(word) = words.next() {
        if seen.contains(&word) {
            return Err(format!("{EXPECTED}; got {text:?} ({word:?} twice)"));
        }
        seen.push(word);
        if word == "onlink" {
            route.onlink = true;
            continue;
        }
        let Some(value) = words.next() else {
            return Err(format!(
                "{EXPECTED}; got {text:?} ({word:?} without a value)"
            ));
        };
        let bad = || format!("{EXPECTED}; got {text:?} ({word} {value:?})");
        match word {
            "via" | "gw" => route.via = Some(value.parse().map_err(|_| bad())?),
            "src" => route.src = Some(value.parse().map_err(|_| bad())?),
            "dev" if super::validate::is_interface_name(value) => {
                route.dev = Some(value.to_owned());
            }
            "metric" | "priority" | "preference" => {
                route.metric = Some(value.parse().map_err(|_| bad())?);
            }
            "table" => {
                route.table = Some(match value {
                    "main" => MAIN_TABLE,
                    "default" => 253,
                    "local" => 255,
                    n => n.parse().ok().filter(|t| *t > 0).ok_or_else(bad)?,
                });
            }
            "scope" => {
                route.scope = Some(match value {
                    "global" | "universe" => RouteScope::Global,
                    "link" => RouteScope::Link,
                    "host" => RouteScope::Host,
                    _ => return Err(bad()),
                });
            }
            _ => return Err(bad()),
        }
    }
    // The family is the destination's, or a default route's gateway's or source's.
    let ipv6 = if default_route {
        let v6 = route.via.or(route.src).is_some_and(|a| a.is_ipv6());
        if v6 {
            route.to = IpAddr::from([0u16; 8]);
        }
        v6
    } else {
        route.to.is_ipv6()
    };
    for (word, addr) in [("via", route.via), ("src", route.src)] {
        if addr.is_some_and(|a| a.is_ipv6() != ipv6) {
            return Err(format!(
                "{EXPECTED}; got {text:?} ({word} is not of the destination's family)"
            ));
        }
    }
    if route.kind == RouteKind::Unicast && route.via.is_none() && route.dev.is_none() {
        return Err(format!(
            "{EXPECTED}; got {text:?} (a route that is not blackhole, unreachable or prohibit needs via or dev)"
        ));
    }
    if route.kind != RouteKind::Unicast && (route.via.is_some() || route.dev.is_some()) {
        return Err(format!(
            "{EXPECTED}; got {text:?} (a blackhole, unreachable or prohibit route has no via or dev)"
        ));
    }
    if route.onlink && route.via.is_none() {
        return Err(format!("{EXPECTED}; got {text:?} (onlink needs via)"));
    }
    Ok(route)
}

/// An address with an optional prefix; the host bits must be clear, as the kernel wants.
fn destination(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return None;
    }
    let host_bits_clear = match addr {
        IpAddr::V4(a) => u32::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) == 0,
        IpAddr::V6(a) => u128::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) == 0,
    };
    host_bits_clear.then_some((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_as_ip_route_writes_them_and_print_back() {
        for (text, printed) in [
            (
                "10.50.0.0/16 via 10.8.0.254 dev eth1",
                "10.50.0.0/16 via 10.8.0.254 dev eth1",
            ),
            ("blackhole 10.60.0.0/16", "blackhole 10.60.0.0/16"),
            (
                "default gw 192.0.2.1 table 100 metric 5",
                "0.0.0.0/0 via 192.0.2.1 metric 5 table 100",
            ),
            (
                "to 192.0.2.128/25 dev eth0 src 192.0.2.100 scope link",
                "192.0.2.128/25 dev eth0 src 192.0.2.100 scope link",
            ),
            (
                "2001:db8:5::/48 via 2001:db8::1 onlink dev eth0",
                "2001:db8:5::/48 via 2001:db8::1 dev eth0 onlink",
            ),
            ("default via 2001:db8::1", "::/0 via 2001:db8::1"),
            (
                "unreachable 10.7.0.0/16 table main",
                "unreachable 10.7.0.0/16 table 254",
            ),
            ("prohibit 10.7.0.1", "prohibit 10.7.0.1/32"),
        ] {
            let route = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(route.to_string(), printed, "{text}");
            assert_eq!(parse(printed), Ok(route), "{printed} reads back the same");
        }
    }

    #[test]
    fn a_bad_route_says_what_is_wrong_with_it() {
        for (text, why) in [
            ("", "no destination"),
            ("10.50.0.1/16 via 10.0.0.1", "is not an address"),
            ("10.50.0.0/33 via 10.0.0.1", "is not an address"),
            ("10.50.0.0/16", "needs via or dev"),
            ("blackhole 10.50.0.0/16 dev eth0", "has no via or dev"),
            (
                "10.50.0.0/16 via 2001:db8::1",
                "via is not of the destination's family",
            ),
            ("10.50.0.0/16 dev eth0 src 2001:db8::1", "src is not of"),
            ("10.50.0.0/16 via 10.0.0.1 mtu 1400", "(mtu \"1400\")"),
            ("10.50.0.0/16 via 10.0.0.1 via 10.0.0.2", "\"via\" twice"),
            ("10.50.0.0/16 via", "without a value"),
            ("10.50.0.0/16 dev eth0 table 0", "(table \"0\")"),
            ("10.50.0.0/16 dev eth0 onlink", "onlink needs via"),
            ("10.50.0.0/16 dev a/b", "(dev \"a/b\")"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.starts_with("expected a route"), "{err}");
        }
    }

    #[test]
    fn a_route_is_known_by_destination_table_and_metric() {
        let a = parse("10.50.0.0/16 via 10.0.0.1").unwrap();
        let b = parse("10.50.0.0/16 via 10.0.0.2 table main").unwrap();
        let c = parse("10.50.0.0/16 via 10.0.0.1 table 7").unwrap();
        let d = parse("10.50.0.0/16 via 10.0.0.1 metric 3").unwrap();
        assert!(a.same_slot(&b));
        assert!(!a.same_slot(&c));
        assert!(!a.same_slot(&d));
    }
}
