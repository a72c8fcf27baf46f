//! The rules of a proxy hop, whatever the protocol (RFC 9110 §7.6): which fields are
//! hop-by-hop, what the proxy adds (`x-forwarded-for`, `x-forwarded-proto`, a W3C
//! `traceparent`), which methods may be sent twice. Both transports follow them: HTTP/1.x
//! applies them to raw heads in place (`h1::head`), HTTP/2 to `http::HeaderMap`s with
//! [`strip_hop_by_hop`] and [`add_forwarded`] below.

use std::cell::RefCell;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE};

/// Fields that describe one hop's connection (RFC 9110 §7.6.1), plus the framing field each
/// hop rewrites; never passed on. Fields named in `Connection` are hop-by-hop as well.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub(crate) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub(crate) const TRACEPARENT: &str = "traceparent";
/// How clients reach the proxy, for `x-forwarded-proto` when no earlier hop set it.
pub(crate) const PROTO: &str = "http";

/// Whether a field never goes past this hop (apart from those named in `Connection`).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// `te: trailers` is the one `te` passed on (gRPC needs it).
pub(crate) fn keeps_trailers(te: &[u8]) -> bool {
    te.eq_ignore_ascii_case(b"trailers")
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

/// The comma-separated tokens of a field value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|token| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// `00-<32 hex, not all 0>-<16 hex, not all 0>-<2 hex>` (W3C Trace Context, version 00):
/// passed on unchanged when valid, replaced by a new trace otherwise, so traces start at the
/// edge.
pub(crate) fn is_valid_traceparent(value: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    value.len() == 55
        && &value[..3] == b"00-"
        && value[35] == b'-'
        && value[52] == b'-'
        && hex(&value[3..35])
        && nonzero(&value[3..35])
        && hex(&value[36..52])
        && nonzero(&value[36..52])
        && hex(&value[53..55])
}

/// Appends a new sampled trace's `traceparent` value (random ids, never zero), written
/// without `fmt` or a range-sampled `u128` (this runs for most requests).
pub(crate) fn write_new_traceparent(out: &mut Vec<u8>) {
    let nonzero = || loop {
        let n = fastrand::u64(..);
        if n != 0 {
            return n;
        }
    };
    let mut value = *b"00-________________________________-________________-01";
    write_hex(&mut value[3..19], fastrand::u64(..));
    write_hex(&mut value[19..35], nonzero()); // so the trace id is never all zeros
    write_hex(&mut value[36..52], nonzero());
    out.extend_from_slice(&value);
}

/// `n` as lowercase hex into `out` (its 16 bytes), most significant digit first.
fn write_hex(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Removes hop-by-hop headers from a header map, those named in `Connection` included;
/// `te: trailers` is kept.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Nearly every request and response has none: one pass over the names says so, where a
    // removal per rule would hash and look up each of them.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get(TE)
        .is_some_and(|te| keeps_trailers(te.as_bytes()));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

thread_local! {
    /// The last client address written as a field value, and the value. A proxy thread's
    /// clients are few (a sidecar's outbound side has one: its app, on loopback), and
    /// formatting an address costs more than the rest of this hop's rules together.
    static LAST_CLIENT: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `client` as a field value (a clone of the last one when it is the same address).
fn address_value(client: IpAddr) -> HeaderValue {
    LAST_CLIENT.with_borrow_mut(|last| match last {
        Some((address, value)) if *address == client => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&client.to_string()).expect("an address is ASCII");
            *last = Some((client, value.clone()));
            value
        }
    })
}

/// Adds the forwarding headers to a header map and makes sure a valid `traceparent` goes on.
///
/// A new `traceparent` is marked sensitive: HPACK then sends it as a literal never indexed
/// (RFC 7541 §6.2.3). A value unique to each request can never be found in the dynamic table
/// again, and indexing it would evict the fields that repeat on every request.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    // The names as `HeaderName`s (made at compile time): a lookup by `&str` parses the name
    // first, every time.
    const FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR);
    const FORWARDED_PROTO: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO);
    const TRACE: HeaderName = HeaderName::from_static(TRACEPARENT);
    let forwarded_for = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => {
            HeaderValue::from_str(&format!("{}, {client}", previous.trim())).ok()
        }
        _ => Some(address_value(client)),
    };
    if let Some(value) = forwarded_for {
        headers.insert(FORWARDED_FOR, value);
    }
    if !headers.contains_key(&FORWARDED_PROTO) {
        headers.insert(FORWARDED_PROTO, HeaderValue::from_static(PROTO));
    }
    let valid = headers
        .get(&TRACE)
        .is_some_and(|v| is_valid_traceparent(v.as_bytes()));
    if !valid {
        let mut trace = Vec::with_capacity(55);
        write_new_traceparent(&mut trace);
        let mut value = HeaderValue::from_bytes(&trace).expect("hex and dashes");
        value.set_sensitive(true);
        headers.insert(TRACE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none() && headers.get("keep-alive").is_none());
        assert!(headers.get(CONNECTION).is_none());
        assert_eq!(
            headers.get(TE).unwrap(),
            "trailers",
            "gRPC's te: trailers stays"
        );
        assert_eq!(headers.get("x-kept").unwrap(), "1");

        // Each rule on its own, with no `Connection` field to point at it.
        for hop in HOP_BY_HOP {
            let mut headers = HeaderMap::new();
            headers.insert(hop, HeaderValue::from_static("x"));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers);
            assert!(headers.get(hop).is_none(), "{hop}");
            assert_eq!(headers.len(), 1, "{hop}");
        }
    }

    #[test]
    fn hex_is_written_without_fmt() {
        let mut out = [0u8; 16];
        write_hex(&mut out, 0x0fa0_0000_0000_00b1);
        assert_eq!(&out, b"0fa00000000000b1");
        for _ in 0..1000 {
            let mut trace = Vec::new();
            write_new_traceparent(&mut trace);
            assert!(is_valid_traceparent(&trace), "{trace:?}");
        }
    }

    #[test]
    fn only_safe_methods_are_idempotent() {
        assert!(is_idempotent(b"GET") && is_idempotent(b"PUT") && is_idempotent(b"DELETE"));
        assert!(!is_idempotent(b"POST") && !is_idempotent(b"PATCH") && !is_idempotent(b"get"));
    }

    #[test]
    fn forwarded_for_appends_and_traceparent_is_kept_or_started() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(valid));
        add_forwarded(&mut headers, "127.0.0.1".parse().unwrap());
        assert_eq!(headers.get(X_FORWARDED_FOR).unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(headers.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(headers.get(TRACEPARENT).unwrap(), valid);

        // The same client again, and another: each gets its own address.
        for client in ["127.0.0.1", "127.0.0.1", "::1", "127.0.0.2"] {
            let mut headers = HeaderMap::new();
            add_forwarded(&mut headers, client.parse().unwrap());
            assert_eq!(headers.get(X_FORWARDED_FOR).unwrap(), client);
        }

        let mut fresh = HeaderMap::new();
        fresh.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        add_forwarded(&mut fresh, "127.0.0.1".parse().unwrap());
        let started = fresh.get(TRACEPARENT).unwrap();
        assert!(is_valid_traceparent(started.as_bytes()));
        assert!(
            started.is_sensitive(),
            "a new trace id is never HPACK-indexed"
        );
    }
}
