//! What a DNS question asks for, parsed from its labels (consul-compat.md §5):
//!
//! - `NAME.service[.DC[.dc]].DOMAIN` — healthy instances of NAME;
//! - `TAG.NAME.service...` — those carrying TAG (labels before NAME joined by `.`);
//! - `_NAME._TAG[.service]...` — RFC 2782 form; `_tcp` means no tag filter (any other value,
//!   `_udp` included, is a tag, as in Consul); `.service` may be left out;
//! - `HEX.addr...` — the IP address encoded in hex (SRV targets use it);
//! - `NODE.node...` — the node's address;
//! - `NAME.connect...` — the healthy Connect proxies (sidecars) of NAME, as Consul answers it.

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Service {
        name: String,
        tag: Option<String>,
    },
    /// The Connect proxies of a service.
    Connect(String),
    Node(String),
    Addr(std::net::IpAddr),
}

/// Parses the labels before the domain, lower-cased. `None`: the name does not exist.
pub fn parse(labels: &[String], datacenter: &str) -> Option<Lookup> {
    let mut labels = labels;
    // An optional datacenter right before the domain: `dc1` or `dc1.dc`.
    if labels.len() >= 2
        && labels[labels.len() - 1] == "dc"
        && labels[labels.len() - 2] == datacenter
    {
        labels = &labels[..labels.len() - 2];
    } else if labels.last().is_some_and(|l| l == datacenter) && labels.len() >= 2 {
        labels = &labels[..labels.len() - 1];
    }
    let (kind, rest) = labels.split_last()?;
    match kind.as_str() {
        "service" => service(rest),
        "node" if rest.len() == 1 => Some(Lookup::Node(rest[0].clone())),
        "connect" if rest.len() == 1 => Some(Lookup::Connect(rest[0].clone())),
        "addr" if rest.len() == 1 => addr(&rest[0]).map(Lookup::Addr),
        // RFC 2782 without `.service`: `_web._tcp.wharf`.
        _ if labels.len() == 2 && labels[0].starts_with('_') && labels[1].starts_with('_') => {
            service(labels)
        }
        _ => None,
    }
}

fn service(rest: &[String]) -> Option<Lookup> {
    match rest {
        [] => None,
        [name] if !name.starts_with('_') => Some(Lookup::Service {
            name: name.clone(),
            tag: None,
        }),
        [name, proto] if name.starts_with('_') && proto.starts_with('_') => {
            let name = name[1..].to_owned();
            let proto = &proto[1..];
            if name.is_empty() {
                return None;
            }
            let tag = (proto != "tcp").then(|| proto.to_owned());
            Some(Lookup::Service { name, tag })
        }
        [_] => None, // `_name.service` without a protocol label
        [tags @ .., name] => Some(Lookup::Service {
            name: name.clone(),
            tag: Some(tags.join(".")),
        }),
    }
}

/// `7f000001` → 127.0.0.1; 32 hex digits → an IPv6 address.
fn addr(hex: &str) -> Option<std::net::IpAddr> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    match bytes?.as_slice() {
        [a, b, c, d] => Some(std::net::Ipv4Addr::new(*a, *b, *c, *d).into()),
        bytes if bytes.len() == 16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(octets).into())
        }
        _ => None,
    }
}

/// The `.addr` label of an address: its bytes in lower-case hex.
pub fn addr_label(ip: std::net::IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Lookup> {
        let labels: Vec<String> = name.split('.').map(str::to_owned).collect();
        parse(&labels, "dc1")
    }

    fn service(name: &str, tag: Option<&str>) -> Option<Lookup> {
        Some(Lookup::Service {
            name: name.into(),
            tag: tag.map(Into::into),
        })
    }

    #[test]
    fn service_forms() {
        assert_eq!(lookup("web.service"), service("web", None));
        assert_eq!(lookup("v1.web.service"), service("web", Some("v1")));
        assert_eq!(lookup("a.b.web.service"), service("web", Some("a.b")));
        assert_eq!(lookup("_web._tcp.service"), service("web", None));
        assert_eq!(lookup("_web._udp.service"), service("web", Some("udp")));
        assert_eq!(lookup("_web._v2.service"), service("web", Some("v2")));
        assert_eq!(lookup("_web._tcp"), service("web", None));
        assert_eq!(lookup("web.service.dc1"), service("web", None));
        assert_eq!(lookup("web.service.dc1.dc"), service("web", None));
    }

    #[test]
    fn node_and_addr_forms() {
        assert_eq!(lookup("host.node"), Some(Lookup::Node("host".into())));
        assert_eq!(lookup("web.connect"), Some(Lookup::Connect("web".into())));
        assert_eq!(lookup("v1.web.connect"), None, "no tags on connect names");
        assert_eq!(
            lookup("7f000001.addr"),
            Some(Lookup::Addr("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            lookup("7f000001.addr.dc1"),
            Some(Lookup::Addr("127.0.0.1".parse().unwrap()))
        );
        let v6 = "00000000000000000000000000000001.addr";
        assert_eq!(lookup(v6), Some(Lookup::Addr("::1".parse().unwrap())));
        assert_eq!(addr_label("127.0.0.1".parse().unwrap()), "7f000001");
    }

    #[test]
    fn everything_else_does_not_exist() {
        for name in [
            "service",
            "web",
            "web.other",
            "zz.addr",
            "7f0000.addr",
            "a.b.node",
            "_web.service",
        ] {
            assert_eq!(lookup(name), None, "{name}");
        }
    }
}
