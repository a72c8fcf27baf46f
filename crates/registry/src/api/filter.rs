//! `?filter=` on the listing endpoints, as Consul answers it: the answer's elements (a list's
//! items, or a map's values such as `/v1/agent/services`'s) kept when the expression holds
//! for them, in the answer's own shape and field names ([`wharf_model::filter`]). A filter
//! that does not parse is a 400 naming the column, before anything is read. The filter runs
//! on the finished answer, so blocking queries, `X-Consul-Index` and ACL filtering are the
//! unfiltered endpoint's.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use wharf_model::filter::Filter;

use super::ApiError;
use super::params::Params;

/// The answers this keeps at most in memory to filter (a larger one is answered unfiltered
/// would be wrong: it is refused).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Middleware for a listing endpoint: filters its JSON answer by `?filter=` (taken out of
/// the query the endpoint sees: elsewhere a filter is refused rather than ignored).
pub(super) async fn filtered(mut request: Request, next: Next) -> Response {
    let params = Params::parse(request.uri().query());
    let Some(text) = params.get("filter").filter(|t| !t.trim().is_empty()) else {
        return next.run(request).await;
    };
    let filter = match Filter::parse(text) {
        Ok(filter) => filter,
        Err(e) => {
            return ApiError::bad_request(format!(
                "Failed to create boolean expression evaluator: {e}"
            ))
            .into_response();
        }
    };
    let pretty = params.has("pretty");
    let rest: Vec<&str> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !(pair.starts_with("filter=") || *pair == "filter"))
        .collect();
    let path = request.uri().path();
    let without = match rest.join("&") {
        query if query.is_empty() => path.to_owned(),
        query => format!("{path}?{query}"),
    };
    if let Ok(uri) = without.parse() {
        *request.uri_mut() = uri;
    }
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER).await else {
        return ApiError::internal("the answer was too large to filter".to_owned()).into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let kept = match value {
        Value::Array(items) => {
            Value::Array(items.into_iter().filter(|i| filter.matches(i)).collect())
        }
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| filter.matches(v)).collect())
        }
        other => other,
    };
    let body = if pretty {
        serde_json::to_vec_pretty(&kept)
    } else {
        serde_json::to_vec(&kept)
    }
    .expect("JSON serialises");
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
