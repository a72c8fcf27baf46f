//! Checks on every request before it reaches an endpoint, and reasons for the refusals axum
//! makes on its own.
//!
//! hyper refuses a head that does not fit its read buffer with a bodiless 431. The limits
//! here are well inside that buffer (`server.rs`), so that a long request line or large
//! header fields get a status that names what was too long (414 or 431) and a body that
//! says by how much; only a head past the buffer itself gets hyper's bare answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::ApiError;
use crate::Agent;
use crate::metrics::RequestLabels;

/// Longest request target (path and query) accepted; longer ones get 414.
pub const MAX_URI: usize = 8 * 1024;
/// Most bytes of header fields accepted (names, values and their separators); more get 431.
pub const MAX_HEAD_FIELDS: usize = 32 * 1024;

/// Refuses over-long request lines and header sections, and paths with a bad escape.
pub async fn request_line_and_fields(
    State(agent): State<Arc<Agent>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(refusal) = check(&request) {
        let labels = RequestLabels {
            endpoint: "refused".to_owned(),
            code: refusal.status.as_u16(),
        };
        agent.metrics.requests.get_or_create(&labels).inc();
        let mut response = refusal.into_response();
        // The client may still be sending the rest: a refusal of the head ends the connection.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
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
    let end = (at + 3).min(path.len());
    // The path is ASCII (http::Uri guarantees it), so any byte offset is a char boundary.
    Some(&path[at..end])
}

/// Gives axum's bodiless 405 a reason, as Consul's `method GET not allowed`; `Allow` is kept.
pub async fn method_not_allowed(request: Request, next: Next) -> Response {
    let method: Method = request.method().clone();
    let response = next.run(request).await;
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
    }
}
