//! Who the client is, behind reverse proxies the operator trusts.
//!
//! Without `--trusted-proxies` the client is the socket's peer, and
//! forwarding headers are ignored (anyone can send them). With it, a request
//! whose peer is a trusted proxy is traced back through the proxy header
//! (`X-Forwarded-For` by default, or RFC 7239 `Forwarded`, never both: a
//! proxy that appends to one passes the other through from the client, so
//! reading both would let a client choose its address). The header's hops
//! are read from the right, skipping trusted proxies; the first untrusted
//! hop is the client. Hops left of it were written by the client and are
//! never believed. A hop that is not an address (`unknown`, an obfuscated
//! `_name`, garbage) stops the walk: the client is then the trusted proxy
//! that wrote it. When every hop is trusted, the left-most one is the
//! client.
//!
//! The address found is what login limits count, what the component sees as
//! the request's client address, and what every log line names. A trusted
//! proxy's own connections count against the total connection cap only,
//! not the per-address one (all its clients share its address).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use clap::ValueEnum;
use ipnet::IpNet;
use serde::Deserialize;

/// Which header trusted proxies write the client's address into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ProxyHeader {
    fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        }
    }
}

/// The trusted proxies and their header. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Proxies {
    nets: Arc<[IpNet]>,
    header: ProxyHeader,
}

/// Hops read from the right at most: a real chain has a handful; a longer
/// one of trusted addresses is not worth walking.
const MAX_HOPS: usize = 32;

impl Proxies {
    /// Parses `--trusted-proxies`: CIDR blocks (`10.0.0.0/8`, `fd00::/8`) or
    /// single addresses. A block with host bits set (`10.0.0.1/8`) is refused:
    /// it is a typo more often than not, and trust must not be guessed.
    pub fn parse<S: AsRef<str>>(entries: &[S], header: ProxyHeader) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let net = if entry.contains('/') {
                let net: IpNet = entry.parse().map_err(|_| {
                    format!("--trusted-proxies: {entry:?} is not an address or CIDR block")
                })?;
                if net.trunc() != net {
                    return Err(format!(
                        "--trusted-proxies: {entry} has bits set beyond its prefix (did you mean {}?)",
                        net.trunc()
                    ));
                }
                canonical_net(net)
            } else {
                let ip: IpAddr = entry.parse().map_err(|_| {
                    format!("--trusted-proxies: {entry:?} is not an address or CIDR block")
                })?;
                IpNet::from(ip.to_canonical())
            };
            nets.push(net);
        }
        Ok(Proxies {
            nets: nets.into(),
            header,
        })
    }

    /// Whether any proxy is trusted.
    pub fn any(&self) -> bool {
        !self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from socket peer `peer` with
    /// `headers` (see the module's notes).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Every line of the header, in order, as one list (RFC 9110 5.3),
        // read from the right.
        let mut hops = 0;
        for line in headers.get_all(self.header.name()).iter().rev() {
            for element in split_list(line.as_bytes()).rev() {
                hops += 1;
                if hops > MAX_HOPS {
                    return client;
                }
                let hop = match self.header {
                    ProxyHeader::XForwardedFor => parse_node(element),
                    ProxyHeader::Forwarded => forwarded_for(element).and_then(parse_node),
                };
                match hop {
                    Some(ip) if self.trusts(ip) => client = ip,
                    Some(ip) => return ip,
                    None => return client,
                }
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 blocks (`::ffff:10.0.0.0/104`) as the IPv4 blocks they
/// are, so they match the canonical addresses `client` compares.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// The comma-separated elements of a header line, outside quoted strings,
/// trimmed; empty elements are skipped (RFC 9110 5.6.1).
fn split_list(line: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in line.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            parts.push(&line[start..i]);
            start = i + 1;
        }
    }
    parts.push(&line[start..]);
    parts
        .into_iter()
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

/// The `for` parameter of one `Forwarded` element (`for=192.0.2.1;proto=https`),
/// unquoted; `None` without one.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"for") {
            return None;
        }
        match value {
            [b'"', inner @ .., b'"'] => Some(inner),
            _ => Some(value),
        }
    })
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`. Anything else (`unknown`,
/// `_hidden`, garbage) is `None`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        let ip: std::net::Ipv6Addr = inside.parse().ok()?;
        return Some(IpAddr::V6(ip).to_canonical());
    }
    // Without brackets only IPv4 carries a port.
    let (host, port) = node.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = host.parse().ok()?;
    valid_port(port).then_some(IpAddr::V4(ip))
}

fn valid_port(port: &str) -> bool {
    port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(trusted: &[&str]) -> Proxies {
        Proxies::parse(trusted, ProxyHeader::XForwardedFor).unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = Proxies::default();
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(none.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let p = xff(&["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = xff(&["10.0.0.0/8", "192.168.1.1"]);
        // The client wrote "1.1.1.1" itself; proxy 10.0.0.2 saw 203.0.113.9.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9, 192.168.1.1"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Lines of one header are one list, in order.
        let h = headers(
            "x-forwarded-for",
            &["1.1.1.1", "203.0.113.9", "192.168.1.1"],
        );
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // No header: the proxy itself (a health check, say).
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        // Every hop trusted: the left-most.
        let h = headers("x-forwarded-for", &["10.1.1.1, 10.2.2.2"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn garbage_stops_at_the_proxy_that_wrote_it() {
        let p = xff(&["10.0.0.0/8"]);
        for bad in [
            "unknown",
            "_hidden",
            "not an address",
            "1.2.3.4:99999",
            "[::1]x",
            "1.2.3.4:",
        ] {
            let h = headers(
                "x-forwarded-for",
                &[&format!("198.51.100.7, {bad}, 10.9.9.9")],
            );
            assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"), "{bad}");
        }
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let p = xff(&["127.0.0.1", "::ffff:10.0.0.0/104"]);
        let peer = ip("::ffff:127.0.0.1");
        for (hop, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            let h = headers("x-forwarded-for", &[hop]);
            assert_eq!(p.client(peer, &h), ip(want), "{hop}");
        }
        // The mapped block trusts its IPv4 addresses.
        let h = headers("x-forwarded-for", &["203.0.113.9, 10.1.2.3"]);
        assert_eq!(p.client(peer, &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_only_when_chosen() {
        let fwd = Proxies::parse(&["10.0.0.0/8"], ProxyHeader::Forwarded).unwrap();
        let mut h = headers(
            "forwarded",
            &[
                r#"for=1.1.1.1, For="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.5;by=10.0.0.2"#,
            ],
        );
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.3"));
        assert_eq!(fwd.client(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
        // The X-Forwarded-For reader ignores Forwarded, and the reverse.
        let xff = xff(&["10.0.0.0/8"]);
        assert_eq!(xff.client(ip("10.0.0.2"), &h), ip("198.51.100.3"));
        // An element without `for`, or `for=unknown`: the proxy that wrote it.
        for line in ["198.51.100.1, proto=https", "198.51.100.1, for=unknown"] {
            let h = headers(
                "forwarded",
                &[&line.replace("198.51.100.1", "for=198.51.100.1")],
            );
            assert_eq!(fwd.client(ip("10.0.0.2"), &h), ip("10.0.0.2"), "{line}");
        }
        // A quoted comma does not split an element.
        let h = headers("forwarded", &[r#"for="_a,b", for=198.51.100.4"#]);
        assert_eq!(fwd.client(ip("10.0.0.2"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn long_chains_of_trusted_hops_are_cut() {
        let p = xff(&["10.0.0.0/8"]);
        let chain = vec!["10.0.0.1"; 100].join(", ");
        let h = headers("x-forwarded-for", &[&format!("203.0.113.9, {chain}")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_setting_is_parsed_strictly() {
        assert!(xff(&["10.0.0.0/8", " 192.168.0.1 ", "fd00::/8", ""]).any());
        assert!(!xff(&[]).any());
        let err = Proxies::parse(&["10.0.0.1/8"], ProxyHeader::XForwardedFor).unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
        for bad in ["10.0.0.0/33", "nginx", "10.0.0", "10.0.0.0/"] {
            assert!(
                Proxies::parse(&[bad], ProxyHeader::XForwardedFor).is_err(),
                "{bad}"
            );
        }
    }
}
