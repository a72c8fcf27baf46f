//! Header rules of a proxy hop (RFC 9110 §7.6) on the HTTP/2 path, where heads are
//! `http::HeaderMap`s; the HTTP/1.x path applies the same rules to raw heads (`h1::head`).
//! Hop-by-hop headers are removed, the client's address is appended to `x-forwarded-for`,
//! `x-forwarded-proto` says how it came in, and a W3C `traceparent` is passed on unchanged
//! when valid or started when absent or invalid, so that traces begin at the edge.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

use crate::h1::head::is_valid_traceparent;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Removes hop-by-hop headers, those named in `Connection` included; `te: trailers` is kept
/// (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers_only = headers
        .get(TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TRAILER,
        TRANSFER_ENCODING,
        TE,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if trailers_only {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Adds the forwarding headers and makes sure a valid `traceparent` goes upstream.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.is_empty() => format!("{previous}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    let valid = headers
        .get(TRACEPARENT)
        .is_some_and(|v| is_valid_traceparent(v.as_bytes()));
    if !valid {
        let trace = format!(
            "00-{:032x}-{:016x}-01",
            fastrand::u128(1..),
            fastrand::u64(1..)
        );
        headers.insert(TRACEPARENT, HeaderValue::from_str(&trace).expect("ascii"));
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
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none() && headers.get(KEEP_ALIVE).is_none());
        assert!(headers.get(CONNECTION).is_none());
        assert_eq!(
            headers.get(TE).unwrap(),
            "trailers",
            "gRPC's te: trailers stays"
        );
        assert_eq!(headers.get("x-kept").unwrap(), "1");
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

        let mut fresh = HeaderMap::new();
        fresh.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        add_forwarded(&mut fresh, "127.0.0.1".parse().unwrap());
        assert!(is_valid_traceparent(
            fresh.get(TRACEPARENT).unwrap().as_bytes()
        ));
    }
}
