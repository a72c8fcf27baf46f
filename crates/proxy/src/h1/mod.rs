//! The HTTP/1.x path, which nearly all traffic takes: one task per client connection reads a
//! request, forwards it over a kept connection to the chosen endpoint, and relays the response
//! back, with nothing between the two sockets but the connection's own buffers.
//!
//! Why by hand rather than hyper's server and client: those split each request over the
//! connection's task, a dispatch channel and the upstream connection's task, and parse heads
//! into header maps that a proxy only copies out again. Measured with `bench/proxy.sh`, that
//! path reached 0.68x nginx's throughput; a proxy that moves a request from one socket to the
//! other in one task, parsing heads in place (as nginx, HAProxy and Pingora do) is what the
//! targets need. The parser is `httparse`, hyper's own.
//!
//! HTTP/2 connections (h2c with prior knowledge, gRPC) are recognised by their preface and
//! handed to hyper ([`crate::h2`]), which this module does not try to replace.
//!
//! The life of a request is [`crate::plan`]'s; this transport does the steps that touch bytes.
//!
//! - [`head`] — parsing and writing heads; [`body`] — framing and relaying bodies;
//! - [`pool`] — kept connections per endpoint; [`client`] — the same upstream side for
//!   requests held as header maps (HTTP/2's, at a sidecar's inbound side); [`spare`] — buffers only for busy connections;
//! - this file — the connection loop, one request's exchange, and one attempt
//!   ([`plan::Transport`] for HTTP/1).

pub mod body;
pub(crate) mod client;
pub mod head;
mod mesh;
pub mod pool;
pub mod spare;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::access;
use crate::plan::{
    self, AttemptError, Failure, MAX_REPLAY, Refusal, RequestTraits, Shared, Transport,
};
use crate::service::{Endpoint, Service};
use body::{Framing, READ_SIZE, RelayError, relay};
use head::{Delivery, Head, HeadError, RequestFacts, ResponseFacts};
use pool::Conn;

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one client connection until it closes, errs, idles out or the proxy stops,
/// sending its requests to `upstream`: the instances (the gateway), or their sidecars (a
/// sidecar's outbound side). A head must arrive within `header_timeout` of its first byte;
/// a kept-alive connection may wait `keepalive` for its next request.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    (header_timeout, keepalive): (Duration, Duration),
    upstream: &crate::h2::Upstream,
    mut shutdown: watch::Receiver<bool>,
) {
    let mesh = match upstream {
        crate::h2::Upstream::Origin => None,
        crate::h2::Upstream::Mesh(tls) => Some(tls),
    };
    let mut client = Client {
        mesh,
        shared,
        peer,
        stream,
        buf: BytesMut::new(),
        out: Vec::new(),
        request: Vec::new(),
        head: Head::default(),
        response_head: Head::default(),
        header_timeout,
        client_ip: peer.ip().to_string().into_bytes(),
        taken: Taken::Nothing,
        bytes_in: 0,
    };
    let idle = tokio::time::sleep(header_timeout);
    let attempt = tokio::time::sleep(header_timeout);
    tokio::pin!(idle, attempt);
    let mut first = true;
    loop {
        idle.as_mut().reset(Instant::now() + keepalive);
        match client.read_head(idle.as_mut(), &mut shutdown, first).await {
            Ok(Arrival::Request) => {}
            Ok(Arrival::Http2) => {
                let Client {
                    stream,
                    buf,
                    shared,
                    peer,
                    ..
                } = client;
                // Boxed: only HTTP/2 connections carry hyper's (large) connection state.
                Box::pin(crate::h2::serve_h2(
                    stream,
                    buf,
                    peer,
                    shared,
                    upstream.clone(),
                    shutdown,
                ))
                .await;
                return;
            }
            Ok(Arrival::Closed) => return,
            Err(error) => {
                client.refuse_head(error).await;
                return;
            }
        }
        first = false;
        match client.exchange(idle.as_mut(), attempt.as_mut()).await {
            Step::Next if !*shutdown.borrow() => {}
            _ => return,
        }
    }
}

/// What arrived on a connection waiting for a request.
enum Arrival {
    Request,
    Http2,
    Closed,
}

/// Why no request head could be read.
enum ReadError {
    Head(HeadError),
    /// Part of a head came, and then nothing for too long (slowloris).
    Timeout,
}

/// After an exchange: serve the next request, or close.
enum Step {
    Next,
    Close,
}

/// One client connection and its reusable buffers.
struct Client<'u> {
    /// Where a sidecar's outbound side sends (`None`: the gateway, to the instances).
    mesh: Option<&'u crate::h2::mesh::MeshTls>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    stream: TcpStream,
    /// Bytes read from the client, starting with the current request.
    buf: BytesMut,
    /// Bytes on their way to the client.
    out: Vec<u8>,
    /// The request as sent upstream: head, and the body when it is small enough to replay.
    request: Vec<u8>,
    head: Head,
    response_head: Head,
    header_timeout: Duration,
    /// The client's address as text, for `x-forwarded-for`.
    client_ip: Vec<u8>,
    /// How much of the current request has been taken off `buf`.
    taken: Taken,
    /// The current request's bytes as the client sent them (head and body), once read.
    bytes_in: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    Nothing,
    /// Head and body: `buf` starts with whatever the client sent next.
    All,
    /// The head; the body streams (and may be left half-read by a failure).
    Head,
}

/// How a request's body travels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestBody {
    /// In `Client::request` with the head: the request can be sent again.
    Replayable,
    /// Relayed from the client during the one attempt.
    Streamed(Framing),
}

impl Client<'_> {
    async fn read_head(
        &mut self,
        mut idle: Pin<&mut Sleep>,
        shutdown: &mut watch::Receiver<bool>,
        first: bool,
    ) -> Result<Arrival, ReadError> {
        loop {
            if !self.buf.is_empty() {
                if first
                    && H2_PREFACE.starts_with(&self.buf[..self.buf.len().min(H2_PREFACE.len())])
                {
                    if self.buf.len() >= H2_PREFACE.len() {
                        return Ok(Arrival::Http2);
                    }
                } else {
                    match head::parse_request(&self.buf, &mut self.head) {
                        Ok(true) => return Ok(Arrival::Request),
                        Ok(false) => {}
                        Err(e) => return Err(ReadError::Head(e)),
                    }
                }
            }
            let waiting = self.buf.is_empty();
            if waiting {
                // Idle: the buffers go back to the thread until the client sends again.
                self.lend_buffers_back();
                tokio::select! {
                    biased;
                    ready = self.stream.readable() => if ready.is_err() {
                        return Ok(Arrival::Closed);
                    },
                    _ = idle.as_mut() => return Ok(Arrival::Closed),
                    _ = shutdown.changed() => return Ok(Arrival::Closed),
                }
                // Something came: the head's own time starts.
                idle.as_mut().reset(Instant::now() + self.header_timeout);
                self.borrow_buffers();
            }
            self.buf.reserve(READ_SIZE);
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Ok(Arrival::Closed),
                    Ok(_) => {}
                },
                _ = idle.as_mut() => {
                    return if waiting { Ok(Arrival::Closed) } else { Err(ReadError::Timeout) };
                }
            }
        }
    }

    fn lend_buffers_back(&mut self) {
        if self.buf.capacity() > 0 {
            spare::return_buffers(spare::Buffers {
                read: std::mem::take(&mut self.buf),
                out: std::mem::take(&mut self.out),
                request: std::mem::take(&mut self.request),
            });
        }
    }

    fn borrow_buffers(&mut self) {
        if self.buf.capacity() == 0 {
            let buffers = spare::buffers();
            (self.buf, self.out, self.request) = (buffers.read, buffers.out, buffers.request);
        }
    }

    /// Answers a head that could not be read, and the connection closes.
    async fn refuse_head(&mut self, error: ReadError) {
        let refusal = match error {
            ReadError::Timeout => Refusal::HeadTimeout,
            ReadError::Head(e @ (HeadError::TooLarge | HeadError::TooManyFields)) => {
                Refusal::HeadTooLarge(e.to_string())
            }
            ReadError::Head(e) => Refusal::MalformedRequest(e.to_string()),
        };
        self.refuse_and_close(&refusal).await;
    }

    /// Answers `refusal` and closes, lingering so that the answer is read.
    async fn refuse_and_close(&mut self, refusal: &Refusal) {
        self.out.clear();
        crate::answers::write_h1(&mut self.out, refusal, true);
        let _ = self.stream.write_all(&self.out).await;
        let _ = self.stream.shutdown().await;
        self.linger().await;
    }

    /// Before closing on a client that may still be sending: read and drop what comes, for a
    /// moment (nginx's lingering close). Closing a socket with unread bytes sends a reset,
    /// which can destroy the answer before the client has read it.
    async fn linger(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        const MAX_DRAIN: usize = 1 << 20;
        let mut drained = 0;
        let mut scratch = vec![0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while drained < MAX_DRAIN {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    /// One request: route, forward, answer. The head is parsed, at the start of `buf`.
    async fn exchange(&mut self, idle: Pin<&mut Sleep>, attempt: Pin<&mut Sleep>) -> Step {
        self.shared.metrics.requests.inc();
        self.taken = Taken::Nothing;
        let facts = match head::request_facts(&self.buf, &self.head) {
            Ok(facts) => facts,
            Err(e) => {
                self.refuse_head(ReadError::Head(e)).await;
                return Step::Close;
            }
        };
        if facts.is_connect {
            self.refuse_and_close(&Refusal::ConnectNotSupported).await;
            return Step::Close;
        }
        let host = facts
            .host
            .and_then(|host| std::str::from_utf8(host.get(&self.buf)).ok());
        let service = match plan::route(&self.shared, host).await {
            Ok(service) => service,
            Err(refusal) => {
                self.shared.metrics.error("-", refusal.reason());
                if let Some(line) = self.begin_line(&facts, host.unwrap_or("")) {
                    self.shared.observers.refused(line, &refusal);
                }
                return self.refuse(&facts, &refusal).await;
            }
        };
        let started = std::time::Instant::now();
        let mut line = self.begin_line(&facts, &service.name);
        let route = service.routes.on().then(|| {
            let (method, path) = (self.head.method.get(&self.buf), facts.path.get(&self.buf));
            service.routes.row(method, path, false)
        });
        let timing = (started, route.as_deref());
        let forwarded = match self.mesh {
            Some(tls) => {
                self.forward_to_sidecar(tls, &service, &facts, idle, attempt, timing, &mut line)
                    .await
            }
            None => {
                self.forward(&service, &facts, idle, attempt, timing, &mut line)
                    .await
            }
        };
        match forwarded {
            Ok(step) => step,
            Err(Failure::Refused(refusal)) => {
                plan::refused(&service, started, &refusal);
                if let Some(route) = &route {
                    let now = crate::clock::now_secs();
                    route.record(now, wharf_stats::Outcome::Failure, started.elapsed());
                }
                if let Some(line) = line {
                    self.shared.observers.refused(line, &refusal);
                }
                self.refuse(&facts, &refusal).await
            }
            Err(Failure::ClientGone) => {
                plan::client_gone(&service);
                Step::Close
            }
        }
    }

    /// The request's access-log and tap line, begun if anyone is looking (before the head
    /// leaves `buf`). Inline, so that the usual case (no one) is a test, not a call.
    #[inline]
    fn begin_line(&self, facts: &RequestFacts, authority: &str) -> Option<access::Pending> {
        if !self.shared.observers.wanted() {
            return None;
        }
        self.line_of(facts, authority)
    }

    #[inline(never)]
    fn line_of(&self, facts: &RequestFacts, authority: &str) -> Option<access::Pending> {
        let observers = &self.shared.observers;
        let method = String::from_utf8_lossy(self.head.method.get(&self.buf));
        let path = String::from_utf8_lossy(facts.path.get(&self.buf));
        let protocol = if self.head.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        observers.begin(self.peer, protocol, &method, authority, &path)
    }

    /// Answers with a refusal. The connection stays open if the request's body can be
    /// skipped, that is, if there is none.
    async fn refuse(&mut self, facts: &RequestFacts, refusal: &Refusal) -> Step {
        let close = !facts.keep_alive
            || facts.upgrade
            || match self.taken {
                Taken::Nothing => facts.body != Framing::Empty,
                Taken::All => false,
                Taken::Head => true,
            };
        if !close && self.taken == Taken::Nothing {
            self.buf.advance(self.head.len);
        }
        self.out.clear();
        crate::answers::write_h1(&mut self.out, refusal, close);
        let written = self.stream.write_all(&self.out).await;
        if written.is_ok() && !close {
            return Step::Next;
        }
        let _ = self.stream.shutdown().await;
        self.linger().await;
        Step::Close
    }

    /// Steps 2 to 5 of the plan: admitted, prepared, forwarded, the answer relayed.
    async fn forward(
        &mut self,
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
        let body = self.prepare_request(facts, idle.as_mut()).await?;
        let traits = RequestTraits {
            idempotent: facts.idempotent,
            replayable: body == RequestBody::Replayable,
        };
        let timeouts = self.shared.timeouts;
        let mut attempt = Attempt {
            client: self,
            body,
            facts,
        };
        let (endpoint, (conn, response)) = plan::forward(
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
            let status =
                http::StatusCode::from_u16(response.status).unwrap_or(http::StatusCode::OK);
            let outcome = plan::outcome_of(status);
            route.record(crate::clock::now_secs(), outcome, started.elapsed());
        }
        if let Some(line) = line.take() {
            self.shared
                .observers
                .answered(line, response.status, &endpoint);
        }
        Ok(self
            .respond(service, &endpoint, conn, response, facts)
            .await)
    }

    /// The request's key on the service's hash ring, if it balances by one.
    fn hash_key(&self, service: &Service) -> Option<u64> {
        let (head, buf) = (&self.head, &self.buf);
        service.ring_key(
            |name| {
                head.fields
                    .iter()
                    .find(|f| {
                        f.name
                            .get(buf)
                            .eq_ignore_ascii_case(name.as_str().as_bytes())
                    })
                    .map(|f| f.value.get(buf))
            },
            self.peer.ip(),
        )
    }

    /// Writes the upstream request into `request` and takes the request off `buf`
    /// ([`Client::take_body`]).
    async fn prepare_request(
        &mut self,
        facts: &RequestFacts,
        idle: Pin<&mut Sleep>,
    ) -> Result<RequestBody, Refusal> {
        self.request.clear();
        head::write_request(
            &mut self.request,
            &self.buf,
            &self.head,
            facts,
            &self.client_ip,
        );
        self.take_body(facts, idle).await
    }

    /// Takes the request off `buf`: its body appended to `request` when it is small enough
    /// to replay (read in full first), else left to stream.
    async fn take_body(
        &mut self,
        facts: &RequestFacts,
        mut idle: Pin<&mut Sleep>,
    ) -> Result<RequestBody, Refusal> {
        let head_len = self.head.len;
        let length = match facts.body {
            Framing::Empty => 0,
            Framing::Length(n) if n <= MAX_REPLAY => n as usize,
            framing => {
                if facts.expect_continue {
                    self.continue_100().await?;
                }
                self.buf.advance(head_len);
                self.taken = Taken::Head;
                self.bytes_in = head_len as u64; // and the body, as it is relayed
                return Ok(RequestBody::Streamed(framing));
            }
        };
        if self.buf.len() < head_len + length {
            if facts.expect_continue {
                self.continue_100().await?;
            }
            idle.as_mut().reset(Instant::now() + self.header_timeout);
            while self.buf.len() < head_len + length {
                self.buf.reserve(head_len + length - self.buf.len());
                tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.buf) => match read {
                        Ok(0) => return Err(Refusal::BadRequestBody("the client closed the connection".into())),
                        Err(e) => return Err(Refusal::BadRequestBody(e.to_string())),
                        Ok(_) => {}
                    },
                    _ = idle.as_mut() => {
                        return Err(Refusal::BadRequestBody("the body did not arrive in time".into()));
                    }
                }
            }
        }
        self.request
            .extend_from_slice(&self.buf[head_len..head_len + length]);
        self.buf.advance(head_len + length);
        self.bytes_in = (head_len + length) as u64;
        self.taken = Taken::All;
        Ok(RequestBody::Replayable)
    }

    /// The proxy reads the body itself, so it answers `Expect: 100-continue` itself.
    async fn continue_100(&mut self) -> Result<(), Refusal> {
        self.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|e| Refusal::BadRequestBody(e.to_string()))
    }

    /// One attempt ([`Attempt`]): a connection to the endpoint, the request sent, the
    /// response head read.
    /// A kept connection that turns out to have been closed by the endpoint while idle is
    /// replaced by a new one, once, when the request can safely go again.
    async fn attempt(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
        body: RequestBody,
        facts: &RequestFacts,
    ) -> Result<(Conn, ResponseFacts), AttemptError> {
        let replayable = facts.idempotent && body == RequestBody::Replayable;
        let mut conn = match pool::take(endpoint.addr, !replayable) {
            Some(conn) => conn,
            None => connect(service, endpoint).await?,
        };
        loop {
            match self.send(&mut conn, body, facts).await {
                Ok(response) => return Ok((conn, response)),
                Err(Sent::Stale { wrote })
                    if conn.reused
                        && (!wrote || (facts.idempotent && body == RequestBody::Replayable)) =>
                {
                    conn = connect(service, endpoint).await?;
                }
                Err(Sent::Stale { wrote: false }) => {
                    return Err(AttemptError::Connect("the connection closed".into()));
                }
                Err(Sent::Stale { wrote: true }) => {
                    return Err(AttemptError::Upstream(
                        "the connection closed before a response".into(),
                    ));
                }
                Err(Sent::Failed(error)) => return Err(error),
            }
        }
    }

    async fn send(
        &mut self,
        conn: &mut Conn,
        body: RequestBody,
        facts: &RequestFacts,
    ) -> Result<ResponseFacts, Sent> {
        if conn.stream.write_all(&self.request).await.is_err() {
            return Err(Sent::Stale { wrote: false });
        }
        if let RequestBody::Streamed(framing) = body {
            let mut nothing = Vec::new();
            match relay(
                framing,
                false,
                body::IDLE_TIMEOUT,
                &mut self.stream,
                &mut self.buf,
                &mut conn.stream,
                &mut nothing,
            )
            .await
            {
                Ok(moved) => self.bytes_in += moved,
                Err(RelayError::Write(e)) => {
                    return Err(Sent::Failed(AttemptError::Upstream(format!(
                        "sending the body: {e}"
                    ))));
                }
                Err(_) => return Err(Sent::Failed(AttemptError::ClientGone)),
            }
        }
        loop {
            if !conn.buf.is_empty() {
                match head::parse_response(&conn.buf, &mut self.response_head) {
                    Ok(true)
                        if (100..200).contains(&self.response_head.status)
                            && self.response_head.status != 101 =>
                    {
                        // An interim answer (103 Early Hints…), passed on to HTTP/1.1 clients
                        // (RFC 9110 §15.2) but for 100, which the proxy sends itself; the
                        // final answer follows.
                        if self.head.minor >= 1 && self.response_head.status != 100 {
                            self.out.clear();
                            let interim = Delivery {
                                body: Framing::Empty,
                                dechunk: false,
                                close: false,
                            };
                            head::write_response(
                                &mut self.out,
                                &conn.buf,
                                &self.response_head,
                                interim,
                                self.head.minor,
                            );
                            if self.stream.write_all(&self.out).await.is_err() {
                                return Err(Sent::Failed(AttemptError::ClientGone));
                            }
                        }
                        conn.buf.advance(self.response_head.len);
                        continue;
                    }
                    Ok(true) if self.response_head.status == 101 && !facts.upgrade => {
                        return Err(Sent::Failed(AttemptError::Upstream(
                            "bad response: 101 Switching Protocols to a request for no upgrade"
                                .into(),
                        )));
                    }
                    Ok(true) => {
                        return head::response_facts(&conn.buf, &self.response_head, facts)
                            .map_err(|e| {
                                Sent::Failed(AttemptError::Upstream(format!("bad response: {e}")))
                            });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(Sent::Failed(AttemptError::Upstream(format!(
                            "bad response: {e}"
                        ))));
                    }
                }
            }
            conn.buf.reserve(READ_SIZE);
            match conn.stream.read_buf(&mut conn.buf).await {
                Ok(0) | Err(_) if conn.buf.is_empty() => return Err(Sent::Stale { wrote: true }),
                Ok(0) => {
                    return Err(Sent::Failed(AttemptError::Upstream(
                        "the connection closed in the response head".into(),
                    )));
                }
                Err(e) => return Err(Sent::Failed(AttemptError::Upstream(e.to_string()))),
                Ok(_) => {}
            }
        }
    }

    /// Relays the response whose head is parsed in `conn`; the connection goes back to the
    /// endpoint's pool if the exchange ended cleanly.
    async fn respond(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
        mut conn: Conn,
        response: ResponseFacts,
        facts: &RequestFacts,
    ) -> Step {
        let switching = response.status == 101 && facts.upgrade;
        let dechunk = response.body == Framing::Chunked && self.head.minor == 0;
        let close = !facts.keep_alive || response.body == Framing::UntilClose || dechunk;
        let delivery = Delivery {
            body: response.body,
            dechunk,
            close,
        };
        self.out.clear();
        head::write_response(
            &mut self.out,
            &conn.buf,
            &self.response_head,
            delivery,
            self.head.minor,
        );
        let head_out = self.response_head.len as u64;
        conn.buf.advance(self.response_head.len);
        if switching {
            self.tunnel(conn).await;
            return Step::Close;
        }
        match relay(
            response.body,
            dechunk,
            body::IDLE_TIMEOUT,
            &mut conn.stream,
            &mut conn.buf,
            &mut self.stream,
            &mut self.out,
        )
        .await
        {
            Ok(moved) => {
                // Both ways at once, on one reading of the clock.
                let now = crate::clock::now_secs();
                service.bytes_in.add(now, self.bytes_in);
                service.bytes_out.add(now, head_out + moved);
                if response.reusable && !facts.upgrade && conn.buf.is_empty() {
                    pool::put(endpoint.addr, conn);
                }
                if close {
                    let _ = self.stream.shutdown().await;
                    Step::Close
                } else {
                    Step::Next
                }
            }
            // The client has part of a response: all it can be told is that it ends here.
            Err(_) => Step::Close,
        }
    }

    /// After `101 Switching Protocols`: the response head and whatever either side sent
    /// early, then bytes both ways until one side closes.
    async fn tunnel(&mut self, mut conn: Conn) {
        self.out.extend_from_slice(&conn.buf);
        if self.stream.write_all(&self.out).await.is_err() {
            return;
        }
        if !self.buf.is_empty() && conn.stream.write_all(&self.buf).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut self.stream, &mut conn.stream).await;
    }
}

/// One request's attempts on HTTP/1: the client connection, whose buffers hold the request.
struct Attempt<'c, 'u> {
    client: &'c mut Client<'u>,
    body: RequestBody,
    facts: &'c RequestFacts,
}

impl Transport for Attempt<'_, '_> {
    type Answer = (Conn, ResponseFacts);

    fn status((_, response): &(Conn, ResponseFacts)) -> StatusCode {
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    async fn send(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<(Conn, ResponseFacts), AttemptError> {
        self.client
            .attempt(service, endpoint, self.body, self.facts)
            .await
    }
}

/// A new connection to the endpoint, counted.
async fn connect(service: &Service, endpoint: &Endpoint) -> Result<Conn, AttemptError> {
    let conn = pool::connect(endpoint.addr)
        .await
        .map_err(|e| AttemptError::Connect(e.to_string()))?;
    service.metrics.upstream_connections.inc();
    Ok(conn)
}

/// How sending on one connection failed.
enum Sent {
    /// The connection was closed under the request: `wrote` says whether the request may
    /// have reached the endpoint.
    Stale {
        wrote: bool,
    },
    Failed(AttemptError),
}
