//! The dashboard at `/ui/`: one HTML page, its script and its style sheet, built into the
//! binary (no CDN, nothing fetched from elsewhere: it works offline and on a closed network).
//! The page reads the same API as everyone else (`/v1/wharf/stats`, blocking, and
//! `/v1/health/service/<name>`), with the ACL token the user gives it; the assets themselves
//! hold nothing secret and are served to anyone, as Consul's UI is.
//!
//! Hand-written JavaScript without a build step: the page is small, and a bundler would put a
//! Node toolchain between a fresh clone and `cargo build`.

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// What the page may load: only itself (no inline script, no other origin).
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// The assets by path: (path, body, content type).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/ui/", INDEX, "text/html; charset=utf-8"),
    ("/ui/index.html", INDEX, "text/html; charset=utf-8"),
    ("/ui/app.js", SCRIPT, "text/javascript; charset=utf-8"),
    ("/ui/app.css", STYLE, "text/css; charset=utf-8"),
];

pub(super) fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let router = router
        // Consul sends `/` to its UI too.
        .route("/", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }));
    ASSETS
        .iter()
        .fold(router, |router, &(path, body, content_type)| {
            router.route(
                path,
                get(move |h: HeaderMap| async move { asset(&h, body, content_type) }),
            )
        })
}

/// An asset with a validator: a browser asks again each time (`no-cache`) and gets a 304
/// while the binary is the same.
fn asset(request: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    let tag = etag(body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// A strong validator from the content (FNV-1a: stable across builds of the same assets).
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_the_binary_serves() {
        for asset in ["/ui/app.js", "/ui/app.css"] {
            assert!(INDEX.contains(asset), "index.html loads {asset}");
        }
        // No other origin anywhere in the assets (the page must work offline).
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }

    #[test]
    fn an_unchanged_asset_is_not_sent_again() {
        let tag = etag(SCRIPT);
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
        let response = asset(&request, SCRIPT, "text/javascript");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = asset(&HeaderMap::new(), SCRIPT, "text/javascript");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ETAG], tag.as_str());
    }
}
