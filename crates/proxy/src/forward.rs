//! The life of a request through the gateway (see docs/request-lifecycle.md):
//!
//! route (Host → service) → concurrency limit → overall deadline → attempts: balancer picks
//! an endpoint (ejected ones are skipped) → per-try timeout → pooled client → on a connect
//! error, or a 5xx/timeout/reset of an idempotent request, retry on another endpoint if the
//! retry budget allows → response, or a response the proxy made itself that says why in
//! `x-wharf-error`.
//!
//! Retries sit above the balancer so that a retry reaches another instance. A request body is
//! replayable (so retryable) when it is empty or at most [`MAX_REPLAY`] bytes with a known
//! length; streamed bodies (gRPC streams, uploads) get exactly one attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::retry::budget::Budget;

use wharf_model::error_chain;

use crate::balance::hash;
use crate::discovery::{Directory, Lookup, Service};
use crate::headers::{add_forwarded, strip_hop_by_hop};
use crate::metrics::Metrics;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Largest request body kept in memory so that the request can be retried.
pub const MAX_REPLAY: u64 = 64 * 1024;
/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: usize = 3;

/// Request deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the request's arrival to the response headers, retries included.
    pub overall: Duration,
    /// One attempt.
    pub per_try: Duration,
}

/// What the request path shares.
pub struct Shared {
    pub directory: Arc<Directory>,
    /// For protocol upgrades (WebSocket); other HTTP/1.1 traffic uses each endpoint's own
    /// connections.
    pub http1: Client<HttpConnector, Body>,
    /// For gRPC, which needs HTTP/2 end to end.
    pub http2: Client<HttpConnector, Body>,
    pub timeouts: Timeouts,
    pub metrics: Metrics,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn incoming(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// A response the proxy makes itself: the status, `x-wharf-error: <reason>` and a one-line
/// explanation.
pub fn synthetic(
    status: StatusCode,
    reason: &'static str,
    detail: impl std::fmt::Display,
) -> Response<Body> {
    let mut response = Response::new(full(format!("{detail}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("x-wharf-error", HeaderValue::from_static(reason));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The service a request is for: `Host: NAME`, `NAME.service.wharf` or `NAME.service.consul`,
/// any port; HTTP/2 requests carry it in the `:authority`.
pub fn route_name<B>(request: &Request<B>) -> Option<String> {
    let host = request.uri().host().map(str::to_owned).or_else(|| {
        request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    })?;
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = host
        .strip_suffix(".service.wharf")
        .or_else(|| host.strip_suffix(".service.consul"))
        .unwrap_or(host);
    (!name.is_empty()).then(|| name.to_owned())
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    shared.metrics.requests.inc();
    let Some(name) = route_name(&request) else {
        shared.metrics.error("-", "no-host");
        return synthetic(
            StatusCode::BAD_REQUEST,
            "no-host",
            "the request names no service: set Host to NAME or NAME.service.wharf",
        );
    };
    let service = match shared.directory.get(&name).await {
        Ok(service) => service,
        Err(Lookup::Unknown) => {
            shared.metrics.error("-", "unknown-service");
            return synthetic(
                StatusCode::NOT_FOUND,
                "unknown-service",
                format_args!("no service named {name:?}"),
            );
        }
        Err(Lookup::RegistryUnavailable) => {
            shared.metrics.error("-", "registry-unavailable");
            return synthetic(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry-unavailable",
                "the proxy has not reached the registry yet",
            );
        }
    };
    let started = Instant::now();
    let response = forward(&shared, &service, request, client).await;
    service
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    service.metrics.response(response.status());
    if let Some(reason) = response
        .headers()
        .get("x-wharf-error")
        .and_then(|r| r.to_str().ok())
    {
        service.metrics.error(static_reason(reason));
    }
    response
}

fn static_reason(reason: &str) -> &'static str {
    match reason {
        "no-healthy-instance" => "no-healthy-instance",
        "overloaded" => "overloaded",
        "timeout" => "timeout",
        "retry-budget-exhausted" => "retry-budget-exhausted",
        "bad-request-body" => "bad-request-body",
        _ => "upstream-error",
    }
}

/// A request body that can be sent again, or a stream that can be sent once.
enum RequestBody {
    Replayable(Bytes),
    Stream(Option<Incoming>),
}

/// How the last attempt ended.
enum Failure {
    Response(Response<Incoming>),
    Upstream(String),
    Timeout,
}

async fn forward(
    shared: &Shared,
    service: &Service,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let Ok(permit) = service.limiter.clone().try_acquire_owned() else {
        return synthetic(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format_args!("{} has too many requests in flight", service.name),
        );
    };
    if is_upgrade(&request) {
        return forward_upgrade(shared, service, request, client).await;
    }
    let hash_key = ring_key(service, &request, client);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    add_forwarded(&mut parts.headers, client.ip());
    if !parts.headers.contains_key(HOST) {
        // HTTP/2 clients name the host in :authority; HTTP/1.1 upstreams need the header.
        if let Some(authority) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, authority);
        }
    }
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let known_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = if body.is_end_stream() {
        RequestBody::Replayable(Bytes::new())
    } else if known_length.is_some_and(|len| len <= MAX_REPLAY) {
        match Limited::new(body, MAX_REPLAY as usize).collect().await {
            Ok(collected) => RequestBody::Replayable(collected.to_bytes()),
            Err(e) => {
                return synthetic(
                    StatusCode::BAD_REQUEST,
                    "bad-request-body",
                    format_args!("could not read the request body: {e}"),
                );
            }
        }
    } else {
        RequestBody::Stream(Some(body))
    };
    // gRPC needs HTTP/2 end to end; everything else goes upstream over HTTP/1.1, which every
    // backend speaks, whatever the client used.
    let grpc = is_grpc(&parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));

    service.budget.deposit();
    let deadline = Instant::now() + shared.timeouts.overall;
    let mut tried: Vec<usize> = Vec::new();
    let mut last = Failure::Upstream("no attempt".into());
    let mut budget_exhausted = false;
    for attempt in 0..MAX_ATTEMPTS {
        let set = service.endpoints.load_full();
        if set.is_empty() {
            return synthetic(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-healthy-instance",
                format_args!("{} has no healthy instance", service.name),
            );
        }
        if tried.len() >= set.endpoints.len() {
            tried.clear(); // every endpoint tried: a retry may go to one again
        }
        let Some(index) = service.balancer.load().pick(&set, &tried, hash_key) else {
            break;
        };
        let endpoint = set.endpoints[index].clone();
        let replayable = matches!(body, RequestBody::Replayable(_));
        let request_body = match &mut body {
            RequestBody::Replayable(bytes) => full(bytes.clone()),
            RequestBody::Stream(stream) => match stream.take() {
                Some(stream) => incoming(stream),
                None => break,
            },
        };
        let uri = upstream_uri(&endpoint, &path);
        let mut upstream = Request::new(request_body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = if grpc {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *upstream.headers_mut() = parts.headers.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let in_flight = endpoint.start();
        let result = tokio::time::timeout(
            shared.timeouts.per_try.min(remaining),
            send(&shared.http2, &endpoint, upstream, grpc),
        )
        .await;
        let elapsed = in_flight.elapsed();
        drop(in_flight);
        endpoint
            .latency
            .get_or_init(|| service.metrics.endpoint_latency(&endpoint.id))
            .observe(elapsed.as_secs_f64());

        let now = Instant::now();
        let retryable = match result {
            Ok(Ok(response)) if is_retryable_status(response.status()) => {
                fail(service, &endpoint, now);
                last = Failure::Response(response);
                idempotent && replayable
            }
            Ok(Ok(response)) => {
                if response.status().is_server_error() {
                    fail(service, &endpoint, now);
                } else {
                    endpoint.outlier.success();
                }
                return hold(finish(response), permit);
            }
            Ok(Err(e)) => {
                fail(service, &endpoint, now);
                let connect = e.connect;
                last = Failure::Upstream(format!(
                    "{} ({}): {}",
                    endpoint.id, endpoint.addr, e.message
                ));
                // A connect failure sent nothing, so any request may go elsewhere.
                replayable && (connect || idempotent)
            }
            Err(_) => {
                fail(service, &endpoint, now);
                last = Failure::Timeout;
                idempotent && replayable
            }
        };
        if !retryable || attempt + 1 == MAX_ATTEMPTS || Instant::now() >= deadline {
            break;
        }
        if !service.budget.withdraw() {
            budget_exhausted = true;
            break;
        }
        service.metrics.retries.inc();
        tried.push(index);
    }
    match last {
        Failure::Response(response) => hold(finish(response), permit),
        _ if budget_exhausted => synthetic(
            StatusCode::SERVICE_UNAVAILABLE,
            "retry-budget-exhausted",
            format_args!(
                "{}: the attempt failed and the retry budget is spent",
                service.name
            ),
        ),
        Failure::Timeout => synthetic(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format_args!("{} did not answer in time", service.name),
        ),
        Failure::Upstream(error) => synthetic(StatusCode::BAD_GATEWAY, "upstream-error", error),
    }
}

/// One attempt: gRPC over the shared HTTP/2 client, everything else over the endpoint's own
/// HTTP/1.1 connections (origin-form request line, the client's `Host` kept).
async fn send(
    http2: &Client<HttpConnector, Body>,
    endpoint: &crate::endpoint::Endpoint,
    mut request: Request<Body>,
    grpc: bool,
) -> Result<Response<Incoming>, crate::upstream::SendError> {
    if grpc {
        return http2
            .request(request)
            .await
            .map_err(|e| crate::upstream::SendError {
                connect: e.is_connect(),
                message: error_chain(&e),
            });
    }
    if let Some(path) = request.uri().path_and_query().cloned() {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    endpoint.connections.send(endpoint.addr, request).await
}

/// `http://<endpoint><path>`, from parts made once.
fn upstream_uri(endpoint: &crate::endpoint::Endpoint, path: &http::uri::PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// 5xx answers that say "try elsewhere": bad gateway, unavailable, gateway timeout.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn fail(service: &Service, endpoint: &crate::endpoint::Endpoint, now: Instant) {
    if endpoint.outlier.failure(now) {
        tracing::info!(service = %service.name, endpoint = %endpoint.id, "ejecting endpoint after consecutive failures");
        service.metrics.ejection(&endpoint.id);
    }
}

/// Keeps the service's concurrency slot until the response body has been sent (or the
/// client has gone), not just until the head: a slow download still counts as in flight.
fn hold(response: Response<Body>, permit: tokio::sync::OwnedSemaphorePermit) -> Response<Body> {
    response.map(|body| {
        body.map_frame(move |frame| {
            let _slot = &permit;
            frame
        })
        .boxed()
    })
}

fn finish(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, incoming(body))
}

fn ring_key<B>(service: &Service, request: &Request<B>, client: SocketAddr) -> Option<u64> {
    let header = service.hash_header.load();
    match header.as_ref() {
        Some(name) => request
            .headers()
            .get(name)
            .map(|v| hash(&v.as_bytes()))
            .or(Some(hash(&client.ip()))),
        None => Some(hash(&client.ip())),
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(http::header::UPGRADE)
        && request
            .headers()
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// A protocol switch (WebSocket): one attempt, then bytes copied both ways.
async fn forward_upgrade(
    shared: &Shared,
    service: &Service,
    mut request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let downstream = hyper::upgrade::on(&mut request);
    let hash_key = ring_key(service, &request, client);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    add_forwarded(&mut parts.headers, client.ip());
    let set = service.endpoints.load_full();
    let Some(index) = service.balancer.load().pick(&set, &[], hash_key) else {
        return synthetic(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-healthy-instance",
            format_args!("{} has no healthy instance", service.name),
        );
    };
    let endpoint = set.endpoints[index].clone();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut upstream = Request::new(incoming(body));
    *upstream.method_mut() = parts.method.clone();
    *upstream.uri_mut() = upstream_uri(&endpoint, &path);
    *upstream.headers_mut() = parts.headers;
    let mut response =
        match tokio::time::timeout(shared.timeouts.per_try, shared.http1.request(upstream)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return synthetic(
                    StatusCode::BAD_GATEWAY,
                    "upstream-error",
                    format_args!("{}: {}", endpoint.id, error_chain(&e)),
                );
            }
            Err(_) => {
                return synthetic(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format_args!("{} did not answer in time", endpoint.id),
                );
            }
        };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return finish(response);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream_upgrade) else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
    });
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, incoming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str) -> Option<String> {
        route_name(
            &Request::builder()
                .uri("/")
                .header(HOST, host)
                .body(())
                .unwrap(),
        )
    }

    #[test]
    fn routes_by_host_in_every_form() {
        assert_eq!(name("hello").as_deref(), Some("hello"));
        assert_eq!(name("Hello:8080").as_deref(), Some("hello"));
        assert_eq!(name("hello.service.wharf").as_deref(), Some("hello"));
        assert_eq!(name("hello.service.consul:80").as_deref(), Some("hello"));
        assert_eq!(name("hello.service.wharf.").as_deref(), Some("hello"));
        let h2 = Request::builder()
            .uri("http://api.service.wharf:8080/x")
            .body(())
            .unwrap();
        assert_eq!(route_name(&h2).as_deref(), Some("api"));
        assert_eq!(name(""), None);
    }
}
