//! Checks on every request before it reaches its endpoint's handler, and reasons for the
//! refusals axum makes on its own. They run in the one middleware every route has (the
//! request counter in `api/mod.rs`), so they add no layer of their own to the request path.
//!
//! hyper refuses a head that does not fit its read buffer with a bodiless 431. The limits
//! here are inside that buffer (`server.rs`), so that a long request line or large header
//! fields get a status that names what was too long (414 or 431) and a body that says by
//! how much; only a head past the buffer itself gets hyper's bare answer.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::ApiError;

/// Longest request target (path and query) accepted; longer ones get 414.
pub const MAX_URI: usize = 4 * 1024;
/// Most bytes of header fields accepted (names, values and their separators); more get 431.
/// With [`MAX_URI`] it stays inside the 8 KiB head buffer (`server.rs`), so that a head just
/// over either limit still reaches this check.
pub const MAX_HEAD_FIELDS: usize = 4 * 1024;

/// The refusal of a request whose target or header fields are over the limits, or whose
/// path has a bad escape; it ends the connection, as the client may still be sending.
pub(super) fn refusal(request: &Request) -> Option<Response> {
    let refusal = check(request).err()?;
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    Some(response)
}

fn check(request: &Request) -> Result<(), ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("Request URI too long: {target} bytes, at most {MAX_URI}"),
        ));
    }
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if fields > MAX_HEAD_FIELDS {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("Request header fields too large: {fields} bytes, at most {MAX_HEAD_FIELDS}"),
        ));
    }
    if let Some(bad) = bad_escape(request.uri().path()) {
        return Err(ApiError::bad_request(format!("invalid URL escape {bad:?}")));
    }
    Ok(())
}

/// The first `%` not followed by two hex digits, with what follows it (Go's message shows
/// up to three characters), as Go's URL parser refuses it.
fn bad_escape(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })?;
    // Up to three characters (a path may carry UTF-8 that hyper let through).
    let end = path[at..]
        .char_indices()
        .nth(3)
        .map_or(path.len(), |(i, _)| at + i);
    Some(&path[at..end])
}

/// Gives axum's bodiless 405 a reason, as Consul's `method GET not allowed`; `Allow` is kept.
pub(super) fn with_reason_if_405(method: &Method, response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut refusal =
        ApiError::new(parts.status, format!("method {method} not allowed")).into_response();
    if let Some(allow) = parts.headers.get(http::header::ALLOW) {
        refusal
            .headers_mut()
            .insert(http::header::ALLOW, allow.clone());
    }
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_two_hex_digits() {
        assert_eq!(bad_escape("/v1/catalog/service/web"), None);
        assert_eq!(bad_escape("/v1/agent/check/pass/service%3Aweb"), None);
        assert_eq!(bad_escape("/v1/catalog/service/%zzweb"), Some("%zz"));
        assert_eq!(bad_escape("/v1/catalog/service/web%"), Some("%"));
        assert_eq!(bad_escape("/v1/catalog/service/web%4"), Some("%4"));
        assert_eq!(bad_escape("/a%41%g1"), Some("%g1"));
        assert_eq!(bad_escape("/a%é€x"), Some("%é€"), "never cuts a character");
        assert_eq!(bad_escape("/a%4é"), Some("%4é"));
    }
}
