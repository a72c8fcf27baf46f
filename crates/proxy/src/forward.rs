//! The HTTP/2 path (h2c with prior knowledge, gRPC), on hyper; HTTP/1.x clients take the
//! leaner path in [`crate::h1`]. Both follow the same plan (see docs/request-lifecycle.md and
//! [`crate::failover`]): route (`:authority` → service) → concurrency limit → attempts, each
//! on an endpoint the balancer picks, within a per-try timeout → on a connect error, or a
//! 5xx/timeout of an idempotent request, retry on another endpoint if the budget allows →
//! the response, or a refusal that says why in `x-wharf-error`.
//!
//! A request body is replayable (so retryable) when it is empty or at most [`MAX_REPLAY`]
//! bytes with a known length; streamed bodies (gRPC streams, uploads) get exactly one attempt.
//! gRPC goes upstream over HTTP/2; everything else over HTTP/1.1, which every backend speaks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use wharf_model::error_chain;

use crate::discovery::{Directory, Lookup, Service};
use crate::failover::{
    Attempts, MAX_REPLAY, Next, Refusal, Timeouts, is_idempotent, is_retryable_status, service_name,
};
use crate::headers::{add_forwarded, strip_hop_by_hop};
use crate::metrics::Metrics;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// What the request paths share.
pub struct Shared {
    pub directory: Arc<Directory>,
    /// For gRPC, which needs HTTP/2 end to end; other requests use each endpoint's own
    /// HTTP/1.1 connections.
    pub http2: Client<HttpConnector, Body>,
    pub timeouts: Timeouts,
    pub metrics: Metrics,
}

/// Serves an HTTP/2 connection whose first bytes (the preface) were already read into
/// `read`, until it closes or the proxy stops (then gracefully: requests in flight finish).
pub async fn serve_h2(
    stream: TcpStream,
    read: BytesMut,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(shared, request, peer).await) }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(Replay { read, stream }), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A stream whose first bytes were already read: they are read again first.
struct Replay {
    read: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn incoming(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// The service an HTTP/2 request is for, from its `:authority` (or a `Host` field).
fn route_name<B>(request: &Request<B>) -> Option<String> {
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(HOST)?.to_str().ok()?,
    };
    service_name(host).map(|name| name.into_owned())
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    shared.metrics.requests.inc();
    let service = match route_name(&request) {
        None => Err(Refusal::NoHost),
        Some(name) => shared.directory.get(&name).await.map_err(|e| match e {
            Lookup::Unknown => Refusal::UnknownService(name),
            Lookup::RegistryUnavailable => Refusal::RegistryUnavailable,
        }),
    };
    let service = match service {
        Ok(service) => service,
        Err(refusal) => {
            shared.metrics.error("-", refusal.reason());
            return crate::answers::http2_response(&refusal);
        }
    };
    let started = std::time::Instant::now();
    let response = match forward(&shared, &service, request, client).await {
        Ok(response) => response,
        Err(refusal) => {
            service.metrics.error(refusal.reason());
            crate::answers::http2_response(&refusal)
        }
    };
    service
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    service.metrics.response(response.status());
    response
}

/// A request body that can be sent again, or a stream that can be sent once.
enum RequestBody {
    Replayable(Bytes),
    Stream(Option<Incoming>),
}

async fn forward(
    shared: &Shared,
    service: &Service,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Result<Response<Body>, Refusal> {
    let permit = service
        .limiter
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::Overloaded(service.name.clone()))?;
    let hash_key = service.ring_key(
        |name| request.headers().get(name).map(HeaderValue::as_bytes),
        client.ip(),
    );
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
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
    let idempotent = is_idempotent(parts.method.as_str().as_bytes());
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
            Err(e) => return Err(Refusal::BadRequestBody(e.to_string())),
        }
    } else {
        RequestBody::Stream(Some(body))
    };
    let grpc = is_grpc(&parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));

    let mut attempts = Attempts::new(service, shared.timeouts, hash_key);
    loop {
        let (index, endpoint) = attempts.pick()?;
        let replayable = matches!(body, RequestBody::Replayable(_));
        let request_body = match &mut body {
            RequestBody::Replayable(bytes) => full(bytes.clone()),
            RequestBody::Stream(stream) => match stream.take() {
                Some(stream) => incoming(stream),
                None => return Err(Refusal::Upstream("the body was already sent".into())),
            },
        };
        let mut upstream = Request::new(request_body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.headers_mut() = parts.headers.clone();
        let in_flight = endpoint.start();
        let result = tokio::time::timeout(
            attempts.time_limit(),
            send(&shared.http2, &endpoint, upstream, &path, grpc),
        )
        .await;
        attempts.observe(&endpoint, in_flight.finish());
        let retryable_request = idempotent && replayable;
        let (refusal, retryable) = match result {
            Ok(Ok(response)) => {
                let status = response.status();
                if is_retryable_status(status)
                    && attempts.failed(index, &endpoint, retryable_request) == Next::Retry
                {
                    continue;
                }
                if !is_retryable_status(status) {
                    attempts.answered(&endpoint, status);
                }
                return Ok(hold(finish(response), permit));
            }
            Ok(Err(e)) => (
                Refusal::Upstream(format!(
                    "{} ({}): {}",
                    endpoint.id, endpoint.addr, e.message
                )),
                // A connect failure sent nothing, so any request may go elsewhere.
                replayable && (e.connect || idempotent),
            ),
            Err(_) => (Refusal::Timeout(service.name.clone()), retryable_request),
        };
        match attempts.failed(index, &endpoint, retryable) {
            Next::Retry => {}
            Next::Stop => return Err(refusal),
            Next::BudgetExhausted => {
                return Err(Refusal::RetryBudgetExhausted(service.name.clone()));
            }
        }
    }
}

/// One attempt: gRPC over the shared HTTP/2 client, everything else over the endpoint's own
/// HTTP/1.1 connections (origin-form request line, the client's `Host` kept).
async fn send(
    http2: &Client<HttpConnector, Body>,
    endpoint: &crate::endpoint::Endpoint,
    mut request: Request<Body>,
    path: &http::uri::PathAndQuery,
    grpc: bool,
) -> Result<Response<Incoming>, crate::upstream::SendError> {
    let mut parts = http::uri::Parts::default();
    if grpc {
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(endpoint.authority.clone());
    }
    parts.path_and_query = Some(path.clone());
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    if grpc {
        *request.version_mut() = Version::HTTP_2;
        return http2
            .request(request)
            .await
            .map_err(|e| crate::upstream::SendError {
                connect: e.is_connect(),
                message: error_chain(&e),
            });
    }
    *request.version_mut() = Version::HTTP_11;
    endpoint.connections.send(endpoint.addr, request).await
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
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, incoming(body))
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_requests_route_by_authority() {
        let h2 = Request::builder()
            .uri("http://api.service.wharf:8080/x")
            .body(())
            .unwrap();
        assert_eq!(route_name(&h2).as_deref(), Some("api"));
        let host_only = Request::builder()
            .uri("/x")
            .header(HOST, "Hello")
            .body(())
            .unwrap();
        assert_eq!(route_name(&host_only).as_deref(), Some("hello"));
    }
}
