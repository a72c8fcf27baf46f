//! The HTTP/1.x path's attempts over the mesh: a sidecar's outbound side reads the app's
//! requests as the gateway does (this module's parent), and sends each as a stream on the
//! HTTP/2-over-mTLS connection to a sidecar of the destination ([`crate::h2::mesh`]). The
//! answer's head is written as HTTP/1.1 and its body relayed frame by frame.
//!
//! Why not hyper's HTTP/1 server, which served the outbound side before: around the
//! request's own work it cost the client-side sidecar about 8,000 instructions per request
//! (head parsing into a map, its dispatcher, its body channel, response encoding), measured
//! with `bench/mesh_instructions.sh`. Here the head is parsed in place as the gateway's is,
//! and becomes a header map once, for HTTP/2.

use std::io::Write as _;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use super::body::{self, Framing, RelayError, relay};
use super::head::{self, RequestFacts};
use super::{Client, RequestBody, Step};
use crate::access;
use crate::h2::Body;
use crate::h2::mesh::{self, MeshTls, Outgoing};
use crate::h2::streams::StreamWriter;
use crate::hop::{TRACEPARENT, add_forwarded, is_hop_by_hop, keeps_trailers};
use crate::plan::{self, AttemptError, Failure, Refusal, RequestTraits, Transport};
use crate::service::{Endpoint, Service};

/// Response bytes gathered before a write to the client.
const COALESCE: usize = 16 * 1024;

impl Client<'_> {
    /// Steps 2 to 5 of the plan for a request to the mesh: admitted, its head made a header
    /// map (the hop's rules applied), forwarded to a sidecar of `service`, the answer relayed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_to_sidecar(
        &mut self,
        tls: &MeshTls,
        service: &Service,
        facts: &RequestFacts,
        mut idle: Pin<&mut Sleep>,
        timer: Pin<&mut Sleep>,
        (started, route): (std::time::Instant, Option<&wharf_stats::Row>),
        line: &mut Option<access::Pending>,
    ) -> Result<Step, Failure> {
        let _released = plan::await_instance(service).await?;
        let _slot = plan::admit(service)?;
        let hash_key = self.hash_key(service);
        let head = self.mesh_head(service, facts)?;
        self.request.clear();
        let body = self.take_body(facts, idle.as_mut()).await?;
        let whole = match body {
            RequestBody::Replayable => Bytes::copy_from_slice(&self.request),
            RequestBody::Streamed(_) => Bytes::new(),
        };
        let traits = RequestTraits {
            idempotent: facts.idempotent,
            replayable: body == RequestBody::Replayable,
        };
        let timeouts = self.shared.timeouts;
        let mut attempt = MeshAttempt {
            client: self,
            tls,
            head,
            body,
            whole,
        };
        let (endpoint, response) = plan::forward(
            service,
            timeouts,
            hash_key,
            traits,
            &mut attempt,
            timer,
            started,
        )
        .await?;
        if let Some(route) = route {
            let outcome = plan::outcome_of(response.status());
            route.record(crate::clock::now_secs(), outcome, started.elapsed());
        }
        if let Some(line) = line.take() {
            let status = response.status().as_u16();
            self.shared.observers.answered(line, status, &endpoint);
        }
        Ok(self.respond_from_sidecar(service, response, facts).await)
    }

    /// The request as HTTP/2 sends it: `:authority` the service, the fields but the
    /// hop-by-hop ones (those `Connection` names too) and `Host`, then the hop's own
    /// (`x-forwarded-for`, `x-forwarded-proto`, `traceparent`, as [`add_forwarded`] adds
    /// them on every HTTP/2 hop).
    fn mesh_head(&self, service: &Service, facts: &RequestFacts) -> Result<Request<()>, Refusal> {
        let (buf, parsed) = (&self.buf[..], &self.head);
        let malformed = |what: &str| Refusal::MalformedRequest(what.to_owned());
        let method = Method::from_bytes(parsed.method.get(buf)).map_err(|_| malformed("method"))?;
        let path = facts.path.get(buf);
        let uri = Uri::builder()
            .scheme(http::uri::Scheme::HTTPS)
            .authority(service.name.as_str())
            .path_and_query(if path.is_empty() { &b"/"[..] } else { path })
            .build()
            .map_err(|_| malformed("request target"))?;
        // One copy of the head; each value is a slice of it.
        let copied = Bytes::copy_from_slice(&buf[..parsed.len]);
        let connection = head::connection_fields(buf, parsed);
        let mut headers = HeaderMap::with_capacity(parsed.fields.len() + 3);
        for field in &parsed.fields {
            let name = field.name.get(buf);
            let value = field.value.get(buf);
            let trailers = name.eq_ignore_ascii_case(b"te") && keeps_trailers(value);
            if !trailers
                && (is_hop_by_hop(name)
                    || name.eq_ignore_ascii_case(b"host")
                    || name.eq_ignore_ascii_case(b"expect")
                    || head::is_named_in(name, buf, &connection))
            {
                continue;
            }
            let name = HeaderName::from_bytes(name).map_err(|_| malformed("field name"))?;
            let value = copied.slice(field.value.range());
            let value =
                HeaderValue::from_maybe_shared(value).map_err(|_| malformed("field value"))?;
            headers.append(name, value);
        }
        if facts.body == Framing::Chunked {
            // HTTP/2 frames the body itself; a length is only sent when known.
            headers.remove(CONTENT_LENGTH);
        }
        add_forwarded(&mut headers, self.peer.ip());
        const TRACE: HeaderName = HeaderName::from_static(TRACEPARENT);
        if let Some(trace) = headers.get_mut(&TRACE) {
            // Unique to each request: never worth a place in HPACK's table.
            trace.set_sensitive(true);
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Writes the answer from a sidecar to the client as HTTP/1.1 (HTTP/1.0 clients get a
    /// body of unknown length delimited by the close), then its body.
    async fn respond_from_sidecar(
        &mut self,
        service: &Service,
        response: Response<Body>,
        facts: &RequestFacts,
    ) -> Step {
        let (parts, mut body) = response.into_parts();
        let bodiless = facts.is_head
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || parts.status.is_informational();
        let known_length = parts.headers.contains_key(CONTENT_LENGTH);
        let ended = body.is_end_stream();
        let unknown_length = !bodiless && !known_length && !ended;
        let chunked = unknown_length && self.head.minor >= 1;
        let close = !facts.keep_alive || (unknown_length && !chunked);
        self.out.clear();
        self.out.extend_from_slice(if self.head.minor == 0 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        self.out.extend_from_slice(parts.status.as_str().as_bytes());
        self.out.push(b' ');
        let reason = parts.status.canonical_reason().unwrap_or("");
        self.out.extend_from_slice(reason.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name.as_str().as_bytes()) {
                head::write_field(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if chunked {
            self.out
                .extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if !bodiless && !known_length {
            self.out.extend_from_slice(b"content-length: 0\r\n");
        }
        if close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let head_out = self.out.len() as u64;
        let mut moved = 0u64;
        if !bodiless && !ended {
            loop {
                // What has come is gathered; the client is written to before waiting.
                let polled =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)))
                        .await;
                let frame = match polled {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if self.flush_out().await.is_err() {
                            return Step::Close;
                        }
                        match tokio::time::timeout(body::IDLE_TIMEOUT, body.frame()).await {
                            Ok(frame) => frame,
                            Err(_) => return Step::Close,
                        }
                    }
                };
                let data = match frame {
                    None => break,
                    // The sidecar failed mid-body: all the client can be told is that it ends.
                    Some(Err(_)) => return Step::Close,
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => data,
                        _ => continue,
                    },
                };
                moved += data.len() as u64;
                if chunked {
                    // Into the buffer, no string made (a `Vec` never fails a write).
                    let _ = write!(self.out, "{:x}\r\n", data.len());
                }
                if self.out.len() + data.len() <= COALESCE {
                    self.out.extend_from_slice(&data);
                } else if self.flush_out().await.is_err()
                    || self.stream.write_all(&data).await.is_err()
                {
                    return Step::Close;
                }
                if chunked {
                    self.out.extend_from_slice(b"\r\n");
                }
            }
            if chunked {
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        if self.flush_out().await.is_err() {
            return Step::Close;
        }
        let now = crate::clock::now_secs();
        service.bytes_in.add(now, self.bytes_in);
        service.bytes_out.add(now, head_out + moved);
        if close {
            let _ = self.stream.shutdown().await;
            Step::Close
        } else {
            Step::Next
        }
    }

    async fn flush_out(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// One request's attempts over the mesh: the head as a map, the body whole or streamed
/// from the client connection during the one attempt.
struct MeshAttempt<'c, 'u> {
    client: &'c mut Client<'u>,
    tls: &'c MeshTls,
    head: Request<()>,
    body: RequestBody,
    whole: Bytes,
}

impl MeshAttempt<'_, '_> {
    fn head(&self) -> Request<()> {
        let mut head = Request::new(());
        *head.method_mut() = self.head.method().clone();
        *head.uri_mut() = self.head.uri().clone();
        *head.version_mut() = self.head.version();
        *head.headers_mut() = self.head.headers().clone();
        head
    }
}

impl Transport for MeshAttempt<'_, '_> {
    type Answer = Response<Body>;

    fn status(answer: &Response<Body>) -> StatusCode {
        answer.status()
    }

    async fn send(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<Response<Body>, AttemptError> {
        let head = self.head();
        let framing = match self.body {
            RequestBody::Replayable => {
                let body = Outgoing::Whole(self.whole.clone());
                return mesh::send(self.tls, &service.name, endpoint.addr, head, body).await;
            }
            RequestBody::Streamed(framing) => framing,
        };
        let (response, mut stream) =
            mesh::open(self.tls, &service.name, endpoint.addr, head, false).await?;
        let client = &mut *self.client;
        let mut data = Vec::new();
        let relayed = relay(
            framing,
            framing == Framing::Chunked,
            body::IDLE_TIMEOUT,
            &mut client.stream,
            &mut client.buf,
            &mut StreamWriter(&mut stream),
            &mut data,
        )
        .await;
        match relayed {
            Ok(moved) => client.bytes_in += moved,
            Err(RelayError::Write(e)) => {
                return Err(AttemptError::Upstream(format!("sending the body: {e}")));
            }
            Err(_) => return Err(AttemptError::ClientGone),
        }
        stream
            .send_data(Bytes::new(), true)
            .map_err(|e| AttemptError::Upstream(format!("ending the body: {e}")))?;
        mesh::answer(response, endpoint.addr).await
    }
}
