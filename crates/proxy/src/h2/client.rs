//! The mesh's own HTTP/2: [`crate::wire::connection`]'s connection on a transport, driven
//! by a task of its own, and handles for the tasks whose streams go on it. What a sidecar's
//! outbound side sends to other sidecars on ([`super::mesh`], [`handshake`]), and what its
//! inbound side serves them with ([`super::server`], [`accept`]): measured the same way,
//! the server-side sidecar took 41,030 instructions a request on the `h2` crate's server
//! and takes 30,282 on this one.
//!
//! Why not the `h2` crate: measured with
//! `bench/mesh_instructions.sh`, the client-side sidecar took 38,789 instructions a request
//! on it and takes 26,547 on this one (2026-12-04); most of the difference is HPACK
//! ([`crate::wire::hpack`] says how), the rest the bookkeeping of a general implementation
//! (a store of streams behind indirections, prioritisation queues, a header map checked by
//! name again before it is encoded).
//!
//! A connection's state is one mutex, taken by the driver as it reads and writes and by a
//! stream's task as it opens its stream, reads its answer or queues its body; all of them
//! run on one proxy thread, so it is never contended.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::connection::Connection;
use crate::wire::frame::Reason;

pub(crate) use crate::wire::connection::{Config, StreamError};

/// A connection's state, and the driver's waker (for bytes a stream's task queued).
struct State {
    connection: Connection,
    driver: Option<Waker>,
}

type Shared = Arc<Mutex<State>>;

/// Runs `f` on the connection, then wakes the tasks it concerned (the driver too, when
/// there are bytes to send).
fn with<T>(shared: &Shared, f: impl FnOnce(&mut Connection) -> T) -> T {
    let mut state = lock(shared);
    let value = f(&mut state.connection);
    if !state.connection.out.is_empty()
        && let Some(driver) = state.driver.take()
    {
        driver.wake();
    }
    state.connection.wake_tasks();
    value
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding it leaves a connection in an unknown state: its streams fail
    // with it rather than the thread.
    shared.lock().unwrap_or_else(|poisoned| {
        let mut state = poisoned.into_inner();
        state.connection.fail("a panic on the connection".into());
        state
    })
}

/// Opens HTTP/2 on `io` (a TLS stream that chose `h2`): the handle for new streams, and
/// the connection's driver, to be spawned; it ends when the connection does.
pub(crate) fn handshake<T>(io: T, config: Config) -> (Client, impl Future<Output = ()> + Send)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (shared, driver) = drive(io, Connection::new(config));
    (Client { shared }, driver)
}

/// `connection`'s state shared, and the driver that reads and writes it on `io`.
fn drive<T>(io: T, connection: Connection) -> (Shared, Driver<T>) {
    let shared = Arc::new(Mutex::new(State {
        connection,
        driver: None,
    }));
    let driver = Driver {
        shared: shared.clone(),
        transport: Transport {
            io,
            read: vec![0; 16 << 10].into_boxed_slice(),
            written: 0,
            flushing: false,
        },
    };
    (shared, driver)
}

/// Serves HTTP/2 on `io` (a TLS stream that chose `h2`): the handle that takes the peer's
/// streams, and the connection's driver, to be polled beside the answers; it ends when the
/// connection does.
pub(crate) fn accept<T>(io: T, config: Config) -> (Acceptor, impl Future<Output = ()> + Send)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (shared, driver) = drive(io, Connection::server(config));
    (Acceptor { shared }, driver)
}

/// Takes the streams a client opens.
pub(crate) struct Acceptor {
    shared: Shared,
}

impl Acceptor {
    /// The next request and the handle to answer it with; `None` once the connection takes
    /// no more.
    pub(crate) fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Request<StreamBody>, Respond)>> {
        let accepted = with(&self.shared, |connection| {
            let id = ready!(connection.poll_accept(cx));
            Poll::Ready(id.and_then(|id| Some((id, connection.take_request(id)?))))
        });
        let Some((id, request)) = ready!(accepted) else {
            return Poll::Ready(None);
        };
        let stream = Arc::new(StreamRef {
            shared: self.shared.clone(),
            id,
        });
        let body = StreamBody {
            stream: stream.clone(),
        };
        Poll::Ready(Some((request.map(|()| body), Respond { stream })))
    }
}

/// Where a request's answer goes.
pub(crate) struct Respond {
    stream: Arc<StreamRef>,
}

impl Respond {
    /// Sends the answer's head, which ends the stream if `end_stream`; the stream to send
    /// its body on.
    pub(crate) fn send_response(
        self,
        head: &Response<()>,
        end_stream: bool,
    ) -> Result<SendStream, StreamError> {
        let id = self.stream.id;
        with(&self.stream.shared, |connection| {
            connection.send_response(id, head.status(), head.headers(), end_stream)
        })?;
        Ok(SendStream {
            stream: self.stream,
        })
    }

    /// Ready once the client reset the stream.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let id = self.stream.id;
        with(&self.stream.shared, |connection| {
            connection.poll_reset(id, cx)
        })
    }
}

/// A handle for new streams on a connection.
#[derive(Clone)]
pub(crate) struct Client {
    shared: Shared,
}

impl Client {
    /// Ready when the peer's limit leaves room for one more stream; an error when the
    /// connection takes none (the request was not sent: safe to send on another).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        with(&self.shared, |connection| connection.poll_ready(cx))
    }

    /// Sends `head`, which ends the request if `end_stream`: its answer to come, and the
    /// stream to send the body on.
    pub(crate) fn send_request(
        &self,
        head: &Request<()>,
        end_stream: bool,
    ) -> Result<(ResponseFuture, SendStream), StreamError> {
        let id = with(&self.shared, |connection| connection.open(head, end_stream))?;
        let stream = Arc::new(StreamRef {
            shared: self.shared.clone(),
            id,
        });
        Ok((
            ResponseFuture {
                stream: Some(stream.clone()),
            },
            SendStream { stream },
        ))
    }
}

/// A stream, released when its last handle goes: reset if unfinished, but a body whose end
/// is queued still goes out as the peer's window allows.
struct StreamRef {
    shared: Shared,
    id: u32,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let id = self.id;
        with(&self.shared, |connection| connection.release(id));
    }
}

/// The answer to a request, once its head comes.
pub(crate) struct ResponseFuture {
    stream: Option<Arc<StreamRef>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<StreamBody>, StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stream = self.stream.as_ref().expect("polled after it was ready");
        let id = stream.id;
        let (status, fields) = ready!(with(&stream.shared, |connection| connection
            .poll_response(id, cx)))?;
        let stream = self.stream.take().expect("polled after it was ready");
        let mut response = Response::new(StreamBody { stream });
        *response.status_mut() = status;
        *response.headers_mut() = fields;
        *response.version_mut() = http::Version::HTTP_2;
        Poll::Ready(Ok(response))
    }
}

/// A stream's incoming body (a client's answer, a server's request): data as it comes
/// (given back to the peer's windows as it is read), then trailers.
pub(crate) struct StreamBody {
    stream: Arc<StreamRef>,
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let id = self.stream.id;
        with(&self.stream.shared, |connection| {
            match ready!(connection.poll_data(id, cx)) {
                Some(Ok(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
            Poll::Ready(match ready!(connection.poll_trailers(id, cx)) {
                Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        let id = self.stream.id;
        lock(&self.stream.shared).connection.is_end(id)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Where a request's body goes.
pub(crate) struct SendStream {
    stream: Arc<StreamRef>,
}

impl SendStream {
    fn with<T>(&self, f: impl FnOnce(&mut Connection, u32) -> T) -> T {
        let id = self.stream.id;
        with(&self.stream.shared, |connection| f(connection, id))
    }

    /// Ready when more of the body may be queued.
    pub(crate) fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.with(|connection, id| connection.poll_capacity(id, cx))
    }

    /// Queues `data`, the body's end if `end_stream`.
    pub(crate) fn send_data(&mut self, data: Bytes, end_stream: bool) -> Result<(), StreamError> {
        self.with(|connection, id| connection.send_data(id, data, end_stream))
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        self.with(|connection, id| connection.send_trailers(id, trailers))
    }

    pub(crate) fn send_reset(&mut self, reason: Reason) {
        self.with(|connection, id| connection.reset(id, reason));
    }

    /// Ready once the stream was reset, by either end.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.with(|connection, id| connection.poll_reset(id, cx))
    }
}

/// Reads and writes the connection's bytes until it ends.
struct Driver<T> {
    shared: Shared,
    transport: Transport<T>,
}

struct Transport<T> {
    io: T,
    read: Box<[u8]>,
    /// How much of the connection's `out` is written.
    written: usize,
    flushing: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Driver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Driver { shared, transport } = self.get_mut();
        let mut state = lock(shared);
        if !state
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.driver = Some(cx.waker().clone());
        }
        let done = transport.turn(&mut state.connection, cx);
        state.connection.wake_tasks();
        drop(state);
        if done { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport<T> {
    /// Reads what has come, writes what is queued; true when the connection is over.
    fn turn(&mut self, connection: &mut Connection, cx: &mut Context<'_>) -> bool {
        while connection.failed().is_none() {
            let mut buf = ReadBuf::new(&mut self.read);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    connection.fail("the peer closed the connection".into())
                }
                Poll::Ready(Ok(())) => {
                    connection.received.extend_from_slice(buf.filled());
                    connection.read_frames();
                }
                Poll::Ready(Err(e)) => connection.fail(format!("reading: {e}")),
                Poll::Pending => break,
            }
        }
        // Written even after a failure: our GOAWAY may be in `out`.
        loop {
            if self.written < connection.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &connection.out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        connection.fail("the transport takes no more bytes".into());
                        return true;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.flushing = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        connection.fail(format!("writing: {e}"));
                        return true;
                    }
                    Poll::Pending => return false,
                }
            }
            connection.out.clear();
            self.written = 0;
            if self.flushing {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushing = false,
                    Poll::Ready(Err(e)) => {
                        connection.fail(format!("writing: {e}"));
                        return true;
                    }
                    Poll::Pending => return false,
                }
            }
            break;
        }
        connection.failed().is_some() || (connection.is_closing() && connection.is_idle())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Request, Response};
    use http_body_util::BodyExt;

    use super::*;

    /// An `h2` server with small windows and a limit of two streams, echoing each request's
    /// body and ending with trailers that count it.
    async fn echo_server(io: tokio::io::DuplexStream) {
        let mut connection = h2::server::Builder::new()
            .initial_window_size(1000)
            .initial_connection_window_size(3000)
            .max_concurrent_streams(2)
            .handshake::<_, Bytes>(io)
            .await
            .unwrap();
        while let Some(accepted) = connection.accept().await {
            let (request, mut respond) = accepted.unwrap();
            tokio::spawn(async move {
                let mut body = request.into_body();
                let mut all = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    all.extend_from_slice(&chunk);
                }
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from(all.clone()), false).unwrap();
                let mut trailers = HeaderMap::new();
                trailers.insert("x-length", HeaderValue::from(all.len()));
                send.send_trailers(trailers).unwrap();
            });
        }
    }

    #[tokio::test]
    async fn bodies_cross_an_h2_server_both_ways_through_small_windows() {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(echo_server(theirs));
        let config = Config {
            stream_window: 1000,
            connection_window: 3000,
            max_header_list: 16 << 10,
            send_buffer: 1500,
            max_concurrent_streams: 0,
        };
        let (client, driver) = handshake(ours, config);
        let driver = tokio::spawn(driver);
        // Five at once against a limit of two; 50 kB each way, 50 windows' worth.
        let calls = (0..5u8).map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let body: Vec<u8> = (0..50_000u32).map(|i| (i as u8) ^ n).collect();
                std::future::poll_fn(|cx| client.poll_ready(cx))
                    .await
                    .unwrap();
                let head = Request::post("https://echo/").body(()).unwrap();
                let (response, mut stream) = client.send_request(&head, false).unwrap();
                for chunk in body.chunks(700) {
                    std::future::poll_fn(|cx| stream.poll_capacity(cx))
                        .await
                        .unwrap();
                    stream
                        .send_data(Bytes::copy_from_slice(chunk), false)
                        .unwrap();
                }
                stream.send_data(Bytes::new(), true).unwrap();
                let response = response.await.unwrap();
                assert_eq!(response.status(), 200);
                let collected = response.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().expect("trailers");
                assert_eq!(collected.to_bytes(), body, "call {n}");
                assert_eq!(trailers["x-length"], "50000");
            })
        });
        let calls: Vec<_> = calls.collect();
        // A window never given back would stall them: a deadline, not a hang.
        let all = async {
            for call in calls {
                call.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), all)
            .await
            .expect("every call done");
        drop(client);
        assert!(
            !driver.is_finished(),
            "the connection stays for more streams"
        );
    }
}
