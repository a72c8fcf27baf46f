//! HTTP/1.1 to an upstream for a request held as header maps (an `http::Request`, as HTTP/2
//! delivers it): what a sidecar's inbound side sends to its app on loopback. The head is
//! written straight from the map onto a kept connection ([`super::pool`]), the response head
//! is parsed in place ([`super::head`]) and only the fields that go on become a map, and the
//! body is handed over as a [`hyper::body::Body`] that reads from the connection and puts it
//! back in the pool when the body ends. A body that has already arrived with the head (most
//! answers) is handed over whole, so the HTTP/2 side sends head and body at once.
//!
//! Why not hyper's HTTP/1 client, which this replaced: each request crossed a dispatch
//! channel to a task per connection and back, the response head became a map holding the
//! hop-by-hop fields only to have them removed again, and a body not yet complete when the
//! head came made hyper's HTTP/2 server spawn a task to pipe it. Measured with
//! `bench/mesh_instructions.sh` (docs/benchmarks.md, "Mesh").

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::{Chunked, Framing, READ_SIZE};
use super::head::{self, Head, MAX_HEAD};
use super::pool::{self, Conn};
use crate::h2::{Body, BoxError};
use crate::hop::is_hop_by_hop;
use crate::plan::AttemptError;

/// Sends `request` to `addr` over HTTP/1.1, and returns the answer. Each of `set` replaces
/// any field of its name in the request (and with `None`, only removes it).
/// A kept connection that the upstream turns out to have closed while idle is replaced by a
/// new one, once, when the request has no body (so nothing of it was lost).
pub(crate) async fn send<B>(
    addr: SocketAddr,
    request: http::Request<B>,
    set: &[(HeaderName, Option<HeaderValue>)],
) -> Result<Response<Body>, AttemptError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    let streamed = !body.is_end_stream();
    let mut out = Vec::with_capacity(512);
    let chunked = write_head(&mut out, &parts, set, streamed);
    let is_head = parts.method == Method::HEAD;
    let mut body = Some(body);
    let mut conn = match pool::take(addr, streamed) {
        Some(conn) => conn,
        None => connect(addr).await?,
    };
    let mut response = Head::default();
    loop {
        let exchanged = if streamed {
            let body = body
                .take()
                .expect("sent once: a streamed request is not sent again");
            exchange_streamed(&mut conn, &out, body, chunked, &mut response).await
        } else {
            exchange(&mut conn, &out, &mut response).await
        };
        match exchanged {
            Ok(()) => break,
            Err(Failed::BeforeAnswer(_)) if conn.reused && !streamed => {
                conn = connect(addr).await?;
            }
            Err(Failed::BeforeAnswer(e)) if conn.reused => return Err(AttemptError::Connect(e)),
            Err(Failed::BeforeAnswer(e) | Failed::Answer(e)) => {
                return Err(AttemptError::Upstream(e));
            }
        }
    }
    answer(addr, conn, &response, is_head).map_err(AttemptError::Upstream)
}

async fn connect(addr: SocketAddr) -> Result<Conn, AttemptError> {
    pool::connect(addr)
        .await
        .map_err(|e| AttemptError::Connect(format!("connect {addr}: {e}")))
}

/// Writes the request head; says whether the body goes chunked. HTTP/2 has no
/// connection-specific fields (h2 refuses a request with any, RFC 9113 §8.2.2), so no
/// `Connection` field can name others to drop; the hop-by-hop names themselves (`te`) stay
/// behind.
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    set: &[(HeaderName, Option<HeaderValue>)],
    streamed: bool,
) -> bool {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST)
        && let Some(authority) = parts.uri.authority()
    {
        write_field(out, b"host", authority.as_str().as_bytes());
    }
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str().as_bytes()) && !set.iter().any(|(set, _)| set == name) {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in set {
        if let Some(value) = value {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let has_length = parts.headers.contains_key(CONTENT_LENGTH);
    let chunked = streamed && !has_length;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !streamed
        && !has_length
        && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
    {
        // A method that carries a body, with an empty one: said so, not left to guess.
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How an exchange failed: before any byte of an answer (the request may not have been
/// seen), or during it.
enum Failed {
    BeforeAnswer(String),
    Answer(String),
}

/// A request without a body: the head written, the answer's head read.
async fn exchange(conn: &mut Conn, out: &[u8], response: &mut Head) -> Result<(), Failed> {
    conn.stream
        .write_all(out)
        .await
        .map_err(|e| Failed::BeforeAnswer(e.to_string()))?;
    read_head(&mut conn.stream, &mut conn.buf, response).await
}

/// A request with a body: the head, then the body as it comes, while the answer's head is
/// read (an upstream may answer before it has read the whole body).
async fn exchange_streamed<B>(
    conn: &mut Conn,
    out: &[u8],
    body: B,
    chunked: bool,
    response: &mut Head,
) -> Result<(), Failed>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut reader, mut writer) = conn.stream.split();
    let sending = async {
        writer.write_all(out).await.map_err(|e| e.to_string())?;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the request body: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: HTTP/1.1 requests carry none here
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            writer.write_all(&data).await.map_err(|e| e.to_string())?;
            if chunked {
                writer.write_all(b"\r\n").await.map_err(|e| e.to_string())?;
            }
        }
        if chunked {
            writer
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    let reading = read_head(&mut reader, &mut conn.buf, response);
    let (sent, read) = tokio::join!(sending, reading);
    read?;
    // Answered, but the body did not all go: the connection is in no state to reuse.
    sent.map_err(Failed::Answer)
}

/// Reads a response head into `buf` (skipping interim 1xx answers, which HTTP/2's side
/// does not need), parsed into `response`.
async fn read_head<R>(reader: &mut R, buf: &mut BytesMut, response: &mut Head) -> Result<(), Failed>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            match head::parse_response(buf, response) {
                Ok(true) if (100..200).contains(&response.status) && response.status != 101 => {
                    buf.advance(response.len);
                    continue;
                }
                Ok(true) => return Ok(()),
                Ok(false) if buf.len() >= MAX_HEAD => {
                    return Err(Failed::Answer("the response head is too large".into()));
                }
                Ok(false) => {}
                Err(e) => return Err(Failed::Answer(format!("a malformed response: {e}"))),
            }
        }
        buf.reserve(READ_SIZE);
        match reader.read_buf(buf).await {
            Ok(0) if answered => return Err(Failed::Answer("closed mid-answer".into())),
            Ok(0) => return Err(Failed::BeforeAnswer("closed before answering".into())),
            Ok(_) => {}
            Err(e) if answered => return Err(Failed::Answer(e.to_string())),
            Err(e) => return Err(Failed::BeforeAnswer(e.to_string())),
        }
    }
}

/// The answer whose head is at the start of `conn.buf`, as header maps and a body.
fn answer(
    addr: SocketAddr,
    mut conn: Conn,
    response: &Head,
    is_head: bool,
) -> Result<Response<Body>, String> {
    let buf = &conn.buf;
    let facts = head::response_facts_for(buf, response, is_head)
        .map_err(|e| format!("a malformed response: {e}"))?;
    let status =
        StatusCode::from_u16(facts.status).map_err(|_| format!("status {}", facts.status))?;
    let connection = head::connection_fields(buf, response);
    let mut fields = HeaderMap::with_capacity(response.fields.len());
    for field in &response.fields {
        let name = field.name.get(buf);
        if is_hop_by_hop(name) || head::is_named_in(name, buf, &connection) {
            continue;
        }
        // httparse has checked both against HTTP/1's grammar; what a map still refuses
        // (an obsolete folded value) is left out rather than failing the answer.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(field.value.get(buf)),
        ) {
            fields.append(name, value);
        }
    }
    conn.buf.advance(response.len);
    let body = match facts.body {
        Framing::Empty => {
            finish(addr, conn, facts.reusable);
            crate::h2::full(Bytes::new())
        }
        Framing::Length(n) if conn.buf.len() as u64 >= n => {
            let data = Bytes::copy_from_slice(&conn.buf[..n as usize]);
            conn.buf.advance(n as usize);
            finish(addr, conn, facts.reusable);
            crate::h2::full(data)
        }
        framing => AppBody {
            conn: Some(conn),
            addr,
            reusable: facts.reusable,
            left: match framing {
                Framing::Length(n) => Left::Length(n),
                Framing::Chunked => Left::Chunked(Chunked::default()),
                _ => Left::UntilClose,
            },
        }
        .boxed(),
    };
    let mut answer = Response::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = fields;
    Ok(answer)
}

/// A connection whose exchange has ended: kept if it can carry another and nothing stray
/// came after the answer.
fn finish(addr: SocketAddr, conn: Conn, reusable: bool) {
    if reusable && conn.buf.is_empty() {
        pool::put(addr, conn);
    }
}

/// What is left of a body still on the connection.
enum Left {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// A response body read from the upstream's connection as the HTTP/2 side asks for it; the
/// connection goes back to the pool at its end (and closes if the body is dropped before).
struct AppBody {
    conn: Option<Conn>,
    addr: SocketAddr,
    reusable: bool,
    left: Left,
}

impl AppBody {
    fn end(&mut self) {
        if let Some(conn) = self.conn.take() {
            finish(
                self.addr,
                conn,
                self.reusable && !matches!(self.left, Left::UntilClose),
            );
        }
    }

    /// The body's next bytes among those read, if any are there.
    fn take_data(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let data = match &mut self.left {
            Left::Length(left) => {
                let take = (*left).min(conn.buf.len() as u64) as usize;
                *left -= take as u64;
                let data = conn.buf.split_to(take).freeze();
                if *left == 0 {
                    self.end();
                }
                data
            }
            Left::Chunked(chunked) => {
                let mut data = BytesMut::new();
                let buf = &conn.buf;
                let (used, done) =
                    chunked.scan(buf, |range| data.extend_from_slice(&buf[range]))?;
                conn.buf.advance(used);
                if done {
                    self.end();
                }
                data.freeze()
            }
            Left::UntilClose => conn.buf.split().freeze(),
        };
        Ok((!data.is_empty()).then_some(data))
    }
}

impl HttpBody for AppBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.take_data()? {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if matches!(this.left, Left::Length(0)) {
                this.end();
                return Poll::Ready(None);
            }
            if let Err(e) = ready!(conn.stream.poll_read_ready(cx)) {
                this.conn = None;
                return Poll::Ready(Some(Err(e.into())));
            }
            conn.buf.reserve(READ_SIZE);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed before the body ended".into()
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::net::{TcpListener, TcpStream};

    /// A body that comes in frames, as HTTP/2's does.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    /// An upstream that answers each connection's requests with `answers`, in turn, and
    /// hands back what it was sent (each request's head and body as read, up to its answer).
    async fn upstream(
        answers: Vec<&'static [u8]>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                seen.push(read_request(&mut stream).await);
                stream.write_all(answer).await.unwrap();
            }
            seen
        });
        (addr, served)
    }

    /// One request's bytes: its head, and a body framed by length or chunks.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf.clone()).unwrap().to_ascii_lowercase();
        if let Some(length) = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
        {
            let mut body = vec![0u8; length.trim().parse().unwrap()];
            stream.read_exact(&mut body).await.unwrap();
            buf.extend(body);
        } else if head.contains("transfer-encoding: chunked") {
            while !buf.ends_with(b"0\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                buf.push(byte[0]);
            }
        }
        String::from_utf8(buf).unwrap()
    }

    fn get(uri: &str) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .uri(uri)
            .header("x-kept", "1")
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_goes_as_http1_and_its_answer_comes_back_as_maps() {
        let (addr, served) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nX-Answer: yes\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n",
        ])
        .await;
        let mut request = get("https://api/items?x=1");
        request
            .headers_mut()
            .insert(XFCC, HeaderValue::from_static("forged"));
        let set = [(XFCC, Some(HeaderValue::from_static("By=a;URI=b")))];
        let first = send(addr, request, &set).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["x-answer"], "yes");
        assert!(
            first.headers().get("connection").is_none() && first.headers().get("x-hop").is_none(),
            "hop-by-hop fields, and those Connection names, stay behind: {:?}",
            first.headers()
        );
        assert_eq!(text(first).await, "hello");

        let second = send(addr, get("/chunks"), &[]).await.unwrap();
        assert_eq!(second.status(), StatusCode::CREATED);
        assert!(second.headers().get("transfer-encoding").is_none());
        assert_eq!(text(second).await, "abcde", "the body is de-chunked");

        let seen = served.await.unwrap();
        assert_eq!(seen.len(), 2, "both on one kept connection");
        let first = seen[0].to_ascii_lowercase();
        assert!(first.starts_with("get /items?x=1 http/1.1\r\n"), "{first}");
        assert!(
            first.contains("host: api\r\n"),
            "the authority as Host: {first}"
        );
        assert!(first.contains("x-kept: 1\r\n"), "{first}");
        assert!(!first.contains("te:"), "te is hop-by-hop: {first}");
        assert!(
            first.contains("x-forwarded-client-cert: by=a;uri=b\r\n"),
            "{first}"
        );
        assert!(
            !first.contains("forged"),
            "the caller's own is replaced: {first}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_streamed_body_goes_chunked_and_a_known_length_as_it_is() {
        let (addr, served) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let frames = || Frames(["ab", "", "cde"].map(Bytes::from).into());
        let streamed = http::Request::post("/up").body(frames()).unwrap();
        assert_eq!(text(send(addr, streamed, &[]).await.unwrap()).await, "ok");
        let sized = http::Request::put("/up")
            .header("content-length", "5")
            .body(frames())
            .unwrap();
        assert_eq!(text(send(addr, sized, &[]).await.unwrap()).await, "ok");
        let empty = http::Request::post("/up")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(addr, empty, &[]).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert!(answer.body().is_end_stream());

        let seen = served.await.unwrap();
        assert!(
            seen[0].contains("transfer-encoding: chunked\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{}",
            seen[0]
        );
        assert!(!seen[1].contains("transfer-encoding"), "{}", seen[1]);
        assert!(seen[1].ends_with("\r\n\r\nabcde"), "{}", seen[1]);
        assert!(seen[2].contains("content-length: 0\r\n"), "{}", seen[2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_still_on_its_way_streams_and_the_connection_comes_back_after() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                .await
                .unwrap();
            release_rx.await.unwrap();
            stream.write_all(b"world").await.unwrap();
            read_request(&mut stream).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!")
                .await
                .unwrap();
        });
        let answer = send(addr, get("/slow"), &[]).await.unwrap();
        assert!(
            !answer.body().is_end_stream(),
            "half the body came with the head"
        );
        release_tx.send(()).unwrap();
        assert_eq!(text(answer).await, "helloworld");
        let again = send(addr, get("/again"), &[]).await.unwrap();
        assert_eq!(
            text(again).await,
            "!",
            "the same connection, kept after the body"
        );
        served.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_connection_closed_while_idle_is_replaced_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            // The first connection answers once and then closes, unasked.
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
                .await
                .unwrap();
            drop(stream);
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
                .await
                .unwrap();
        });
        assert_eq!(text(send(addr, get("/"), &[]).await.unwrap()).await, "1");
        assert_eq!(text(send(addr, get("/"), &[]).await.unwrap()).await, "2");
        served.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_answers_are_upstream_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"NOT HTTP\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Le",
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let served = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                read_request(&mut stream).await;
                stream.write_all(answer).await.unwrap();
            });
            let sent = send(addr, get("/"), &[]).await;
            assert!(
                matches!(sent, Err(AttemptError::Upstream(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(answer),
                sent.map(|r| r.status())
            );
            served.await.unwrap();
        }
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(matches!(
            send(addr, get("/"), &[]).await,
            Err(AttemptError::Connect(_))
        ));
    }
}
