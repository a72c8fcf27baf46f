//! The HTTP/2 transport (h2c with prior knowledge, gRPC), on hyper; HTTP/1.x clients take the
//! leaner path in [`crate::h1`]. The life of a request is [`crate::plan`]'s; this module does
//! the steps that touch HTTP/2: the route from `:authority`, the hop rules applied to header
//! maps, the body collected for replay (at most [`MAX_REPLAY`] bytes with a known length;
//! streamed bodies, gRPC streams and uploads, get exactly one attempt), and one attempt's send
//! ([`connections`]): gRPC upstream over HTTP/2, everything else over HTTP/1.1, which every
//! backend speaks. A sidecar's outbound side sends over [`mesh`] instead: HTTP/2 over mTLS to
//! the destination's sidecars.

pub(crate) mod client;
pub(crate) mod connections;
pub mod mesh;
pub(crate) mod server;
pub(crate) mod streams;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::hop::{add_forwarded, is_idempotent, strip_hop_by_hop};
use crate::plan::{
    self, AttemptError, Failure, MAX_REPLAY, Refusal, RequestTraits, Shared, Transport,
};
use crate::service::{Endpoint, Service};
use wharf_stats::Outcome;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Serves an HTTP/2 connection whose first bytes (the preface) were already read into
/// `read`, until it closes or the proxy stops (then gracefully: requests in flight finish).
pub async fn serve_h2(
    stream: TcpStream,
    read: BytesMut,
    peer: SocketAddr,
    shared: Arc<Shared>,
    upstream: Upstream,
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = Arc::new(upstream);
    let service = service_fn(move |request: Request<Incoming>| {
        let (shared, upstream) = (shared.clone(), upstream.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(shared, request, peer, &upstream).await) }
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

/// A refusal as this transport sends it.
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<Body> {
    crate::answers::http2_response(refusal).map(full)
}

/// The host an HTTP/2 request names: its `:authority`, else a `Host` field.
fn host<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(HOST)?.to_str().ok(),
    }
}

/// Where requests go from here.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// To the instances themselves (the gateway): HTTP/1.1, or HTTP/2 for gRPC.
    Origin,
    /// To the instances' sidecars, HTTP/2 over mTLS (a sidecar's outbound side).
    Mesh(mesh::MeshTls),
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client: SocketAddr,
    upstream: &Upstream,
) -> Response<Body> {
    shared.metrics.requests.inc();
    let service = match plan::route(&shared, host(&request)).await {
        Ok(service) => service,
        Err(refusal) => {
            shared.metrics.error("-", refusal.reason());
            if let Some(line) = begin_line(&shared, &request, client, host(&request).unwrap_or(""))
            {
                shared.observers.refused(line, &refusal);
            }
            return refusal_response(&refusal);
        }
    };
    let started = Instant::now();
    let line = begin_line(&shared, &request, client, &service.name);
    let route = service.routes.on().then(|| {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let method = request.method().as_str().as_bytes();
        let grpc = is_grpc(request.headers());
        service.routes.row(method, path.as_bytes(), grpc)
    });
    // hyper drops this future when the client resets the stream or goes: counted then.
    let mut waiting = Waiting {
        service: &service,
        answered: false,
    };
    let response = match forward(
        &shared,
        &service,
        request,
        client,
        (started, &route),
        upstream,
    )
    .await
    {
        Ok((endpoint, response)) => {
            if let Some(line) = line {
                let status = response.status().as_u16();
                shared.observers.answered(line, status, &endpoint);
            }
            response
        }
        Err(Failure::Refused(refusal)) => {
            plan::refused(&service, started, &refusal);
            if let Some(route) = &route {
                let now = crate::clock::now_secs();
                route.record(now, Outcome::Failure, started.elapsed());
            }
            if let Some(line) = line {
                shared.observers.refused(line, &refusal);
            }
            refusal_response(&refusal)
        }
        Err(Failure::ClientGone) => {
            plan::client_gone(&service);
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
    };
    waiting.answered = true;
    response
}

/// The request's access-log and tap line, begun if anyone is looking.
pub(crate) fn begin_line<B>(
    shared: &Shared,
    request: &Request<B>,
    client: SocketAddr,
    authority: &str,
) -> Option<crate::access::Pending> {
    if !shared.observers.wanted() {
        return None;
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    shared.observers.begin(
        client,
        version_name(request.version()),
        request.method().as_str(),
        authority,
        path,
    )
}

/// How a request's HTTP version is written in the access log.
pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// A request still waiting for its answer; dropped unanswered, its client has gone.
struct Waiting<'s> {
    service: &'s Service,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            plan::client_gone(self.service);
        }
    }
}

/// A request body that can be sent again, or a stream that can be sent once.
enum RequestBody {
    Replayable(Bytes),
    Stream(Option<Incoming>),
}

/// One request's attempts on HTTP/2: what each attempt sends.
struct Attempt<'u> {
    upstream: &'u Upstream,
    parts: http::request::Parts,
    body: RequestBody,
    path: http::uri::PathAndQuery,
    grpc: bool,
    /// Set when the client's body stream failed under an attempt: the client has gone.
    client_failed: Arc<AtomicBool>,
    /// Where a streamed body's bytes are counted.
    service: Arc<Service>,
}

impl Transport for Attempt<'_> {
    type Answer = Response<Body>;

    fn status(answer: &Response<Body>) -> StatusCode {
        answer.status()
    }

    /// gRPC's status wins over HTTP's: a trailers-only answer carries it in the head (one
    /// in the trailers is read as the body ends, [`grpc_trailers`]).
    fn outcome(answer: &Response<Body>) -> Outcome {
        match grpc_status(answer.headers()) {
            Some(code) => grpc_outcome(code),
            None => plan::outcome_of(answer.status()),
        }
    }

    async fn send(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<Response<Body>, AttemptError> {
        if let Upstream::Mesh(tls) = self.upstream {
            return self.send_to_sidecar(tls, service, endpoint).await;
        }
        let body = self.body()?;
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.headers_mut() = self.parts.headers.clone();
        let mut uri = http::uri::Parts::default();
        if self.grpc {
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(endpoint.authority.clone());
        }
        uri.path_and_query = Some(self.path.clone());
        *request.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        let sent = if self.grpc {
            *request.version_mut() = Version::HTTP_2;
            connections::send_grpc(request).await
        } else {
            // Origin-form request line, the client's `Host` kept.
            *request.version_mut() = Version::HTTP_11;
            connections::send_http1(endpoint.addr, request).await
        };
        match sent {
            Err(_) if self.client_failed.load(Ordering::Relaxed) => Err(AttemptError::ClientGone),
            sent => sent.map(|response| response.map(incoming)),
        }
    }
}

impl Attempt<'_> {
    /// This attempt's body: the replayable bytes again, or the stream, once.
    fn body(&mut self) -> Result<Body, AttemptError> {
        match &mut self.body {
            RequestBody::Replayable(bytes) => Ok(full(bytes.clone())),
            RequestBody::Stream(stream) => match stream.take() {
                Some(stream) => Ok(watched(
                    stream,
                    self.client_failed.clone(),
                    self.service.clone(),
                )),
                None => Err(AttemptError::Upstream("the body was already sent".into())),
            },
        }
    }

    /// HTTP/2 over mTLS to the destination's sidecar, which names the service by
    /// `:authority` (so no `Host`).
    async fn send_to_sidecar(
        &mut self,
        tls: &mesh::MeshTls,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<Response<Body>, AttemptError> {
        let body = match &self.body {
            RequestBody::Replayable(bytes) => mesh::Outgoing::Whole(bytes.clone()),
            RequestBody::Stream(_) => mesh::Outgoing::Stream(self.body()?),
        };
        let mut head = Request::new(());
        *head.method_mut() = self.parts.method.clone();
        *head.headers_mut() = self.parts.headers.clone();
        head.headers_mut().remove(HOST);
        let authority = http::uri::Authority::try_from(service.name.as_str())
            .unwrap_or_else(|_| endpoint.authority.clone());
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTPS);
        uri.authority = Some(authority);
        uri.path_and_query = Some(self.path.clone());
        *head.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        *head.version_mut() = Version::HTTP_2;
        match mesh::send(tls, &service.name, endpoint.addr, head, body).await {
            Err(_) if self.client_failed.load(Ordering::Relaxed) => Err(AttemptError::ClientGone),
            sent => sent,
        }
    }
}

/// The client's body stream, relayed and counted; a failure to read it marks the client as
/// gone.
fn watched(body: Incoming, client_failed: Arc<AtomicBool>, service: Arc<Service>) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            let now = crate::clock::now_secs();
            service.bytes_in.add(now, data.len() as u64);
        }
        frame
    })
    .map_err(move |e| {
        client_failed.store(true, Ordering::Relaxed);
        Box::new(e) as BoxError
    })
    .boxed()
}

/// Steps 2 to 4 of the plan for one HTTP/2 request.
async fn forward(
    shared: &Shared,
    service: &Arc<Service>,
    request: Request<Incoming>,
    client: SocketAddr,
    (started, route): (Instant, &Option<Arc<wharf_stats::Row>>),
    upstream: &Upstream,
) -> Result<(Arc<Endpoint>, Response<Body>), Failure> {
    let _released = plan::await_instance(service).await?;
    let permit = plan::admit(service)?;
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
    let known_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if body.is_end_stream() {
        RequestBody::Replayable(Bytes::new())
    } else if known_length.is_some_and(|len| len <= MAX_REPLAY) {
        match Limited::new(body, MAX_REPLAY as usize).collect().await {
            Ok(collected) => RequestBody::Replayable(collected.to_bytes()),
            Err(e) => return Err(Refusal::BadRequestBody(e.to_string()).into()),
        }
    } else {
        RequestBody::Stream(Some(body))
    };
    let traits = RequestTraits {
        idempotent: is_idempotent(parts.method.as_str().as_bytes()),
        replayable: matches!(body, RequestBody::Replayable(_)),
    };
    if let RequestBody::Replayable(bytes) = &body {
        let now = crate::clock::now_secs();
        service.bytes_in.add(now, bytes.len() as u64);
    }
    let mut attempt = Attempt {
        upstream,
        grpc: is_grpc(&parts.headers),
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        parts,
        body,
        client_failed: Arc::default(),
        service: service.clone(),
    };
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let (endpoint, response) = plan::forward(
        service,
        shared.timeouts,
        hash_key,
        traits,
        &mut attempt,
        timer,
        started,
    )
    .await?;
    if let Some(route) = route {
        let outcome = match grpc_status(response.headers()) {
            Some(code) => grpc_outcome(code),
            None => plan::outcome_of(response.status()),
        };
        route.record(crate::clock::now_secs(), outcome, started.elapsed());
    }
    let watch_trailers = is_grpc(response.headers()) && grpc_status(response.headers()).is_none();
    let mut response = hold(finish(response), permit, service.clone());
    if watch_trailers {
        response = grpc_trailers(response, service.clone(), endpoint.clone(), route.clone());
    }
    Ok((endpoint, response))
}

/// The `grpc-status` of a head or trailers, if it has one.
fn grpc_status(fields: &http::HeaderMap) -> Option<&[u8]> {
    fields.get("grpc-status").map(HeaderValue::as_bytes)
}

/// gRPC's OK is `0`; every other status is a failure (as Linkerd counts them).
fn grpc_outcome(code: &[u8]) -> Outcome {
    if code == b"0" {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// A gRPC answer whose status comes in its trailers: counted as answered when its head came,
/// and as a failure once the trailers say so.
fn grpc_trailers(
    response: Response<Body>,
    service: Arc<Service>,
    endpoint: Arc<Endpoint>,
    route: Option<Arc<wharf_stats::Row>>,
) -> Response<Body> {
    response.map(|body| {
        body.map_frame(move |frame: Frame<Bytes>| {
            if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                && grpc_outcome(code) == Outcome::Failure
            {
                let now = crate::clock::now_secs();
                service.golden.fail_recorded(now);
                endpoint.golden.fail_recorded(now);
                if let Some(route) = &route {
                    route.fail_recorded(now);
                }
            }
            frame
        })
        .boxed()
    })
}

/// Keeps the service's concurrency slot until the response body has been sent (or the
/// client has gone), not just until the head: a slow download still counts as in flight.
/// And counts the body's bytes as they go.
fn hold(
    response: Response<Body>,
    permit: tokio::sync::OwnedSemaphorePermit,
    service: Arc<Service>,
) -> Response<Body> {
    response.map(|body| {
        body.map_frame(move |frame: Frame<Bytes>| {
            let _slot = &permit;
            if let Some(data) = frame.data_ref() {
                let now = crate::clock::now_secs();
                service.bytes_out.add(now, data.len() as u64);
            }
            frame
        })
        .boxed()
    })
}

fn finish(mut response: Response<Body>) -> Response<Body> {
    strip_hop_by_hop(response.headers_mut());
    response
}

pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::service_name;

    #[test]
    fn http2_requests_route_by_authority() {
        let route_name = |request: &Request<()>| {
            host(request)
                .and_then(service_name)
                .map(|name| name.into_owned())
        };
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
