//! An HTTP/2 server on Wharf's own connection ([`super::client::accept`]), every request
//! of a connection answered in the connection's own task: what a sidecar's inbound side serves mTLS connections with when
//! the caller chose `h2` by ALPN (other sidecars, always).
//!
//! Why not hyper's server there: it spawns a task per stream, moving the request's whole
//! future (the proxying included) into it, and wraps bodies and errors once more; measured
//! with `bench/mesh_instructions.sh`, the spawn alone cost the server-side sidecar about
//! 3,800 instructions per request. Here the streams of a connection are a
//! `FuturesUnordered` polled beside the connection: only those woken are polled, and a
//! stream costs two allocations (its place in the set, and its answer's future, boxed so
//! that the layers around it neither move it nor hold it twice). A connection's requests
//! then share one thread, which is what the sidecar's event loop does anyway.

use std::future::Future;
use std::task::Poll;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{Request, Response};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;
use super::client::{self, Config, Respond, StreamBody};
use super::streams::send_body;
use crate::hop::strip_hop_by_hop;

/// hyper's defaults for its HTTP/2 server, which this one replaced for the mesh.
const CONFIG: Config = Config {
    stream_window: 1 << 20,
    connection_window: 1 << 20,
    max_header_list: 16 << 10,
    send_buffer: 64 << 10,
    max_concurrent_streams: 200,
};

/// Serves one HTTP/2 connection (the preface not yet read) until the peer closes it or it
/// fails, answering each request with `answer`.
pub(crate) async fn serve<S, A, F>(io: S, answer: A) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(Request<StreamBody>) -> F,
    F: Future<Output = Response<Body>>,
{
    let (acceptor, driver) = client::accept(io, CONFIG);
    let mut driver = std::pin::pin!(driver);
    let mut streams = FuturesUnordered::new();
    let mut accepting = true;
    loop {
        // In this order: every stream that can go on first, then every request that came,
        // and only then the driver, which writes what they all queued in one go (and reads
        // what came meanwhile). Polled in `select!`'s random order instead, the driver came
        // between two answers about every other time, and the server-side sidecar wrote
        // 0.38 TLS records a request where HAProxy writes 0.03.
        tokio::select! {
            biased;
            Some(()) = streams.next(), if !streams.is_empty() => {}
            accepted = std::future::poll_fn(|cx| acceptor.poll_accept(cx)), if accepting => {
                match accepted {
                    Some((request, respond)) => {
                        // Boxed here, once: the answer's future is the largest part
                        // of a stream's, and each async layer around it would otherwise
                        // hold, and copy, its own copy of it.
                        let answering = Box::pin(answer(request));
                        streams.push(respond_to(answering, respond));
                    }
                    // No more streams: those taken finish, the driver ends the connection.
                    None => accepting = false,
                }
            }
            () = &mut driver => return Ok(()),
        }
    }
}

/// Sends `response` (once it is ready) on the stream, and its body; a caller that resets
/// the stream first drops the request (as it does a connection on HTTP/1).
async fn respond_to(response: impl Future<Output = Response<Body>>, mut respond: Respond) {
    // The answer first, then whether the caller reset the stream (`select!` would draw a
    // random order at every poll).
    let mut response = std::pin::pin!(response);
    let answered = std::future::poll_fn(|cx| match response.as_mut().poll(cx) {
        Poll::Ready(response) => Poll::Ready(Some(response)),
        Poll::Pending => respond.poll_reset(cx).map(|()| None),
    })
    .await;
    let Some(response) = answered else {
        return;
    };
    let (mut head, body) = response.into_parts();
    // HTTP/2 has no connection-specific fields (RFC 9113 §8.2.2).
    strip_hop_by_hop(&mut head.headers);
    let end = body.is_end_stream();
    let Ok(stream) = respond.send_response(&Response::from_parts(head, ()), end) else {
        return;
    };
    if !end {
        send_body(body, stream).await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Context;
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio::io::{DuplexStream, ReadBuf};

    use super::*;
    use crate::h2::full;
    use crate::wire::frame::{self, Frame};

    /// A transport that keeps every write it was given, one entry each.
    struct Recording {
        io: DuplexStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let written = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
            self.writes.lock().unwrap().push(buf[..written].to_vec());
            Poll::Ready(Ok(written))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// For each HEADERS frame the server sent, the index of the write it began in.
    fn writes_with_headers(writes: &[Vec<u8>]) -> Vec<usize> {
        let ends: Vec<usize> = writes
            .iter()
            .scan(0, |end, write| {
                *end += write.len();
                Some(*end)
            })
            .collect();
        let mut received = BytesMut::from(&writes.concat()[..]);
        let mut found = Vec::new();
        loop {
            let start = ends.last().copied().unwrap_or(0) - received.len();
            match frame::read(&mut received, frame::MAX_MAX_FRAME_SIZE).unwrap() {
                Some(Frame::Headers { .. }) => {
                    found.push(ends.partition_point(|&end| end <= start));
                }
                Some(_) => {}
                None => return found,
            }
        }
    }

    #[tokio::test]
    async fn answers_ready_together_leave_in_one_write() {
        const CALLS: usize = 8;
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let transport = Recording {
            io: theirs,
            writes: writes.clone(),
        };
        let (release, released) = tokio::sync::watch::channel(false);
        let waiting = Arc::new(AtomicUsize::new(0));
        let server = {
            let waiting = waiting.clone();
            tokio::spawn(serve(transport, move |_request| {
                let mut released = released.clone();
                waiting.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = released.wait_for(|released| *released).await;
                    Response::new(full("ok"))
                }
            }))
        };
        let (client, driver) = client::handshake(ours, CONFIG);
        tokio::spawn(driver);
        let mut answers = Vec::new();
        for _ in 0..CALLS {
            std::future::poll_fn(|cx| client.poll_ready(cx))
                .await
                .unwrap();
            let head = Request::get("https://hello/").body(()).unwrap();
            answers.push(client.send_request(&head, true).unwrap().0);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while waiting.load(Ordering::SeqCst) < CALLS {
            assert!(
                tokio::time::Instant::now() < deadline,
                "every request taken"
            );
            tokio::task::yield_now().await;
        }
        // All answers become ready at once, as a burst of replies from an app does.
        release.send(true).unwrap();
        for answer in answers {
            let response = tokio::time::timeout(Duration::from_secs(10), answer)
                .await
                .expect("answered")
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let writes = writes.lock().unwrap().clone();
        let carrying = writes_with_headers(&writes);
        assert_eq!(carrying.len(), CALLS, "one HEADERS frame an answer");
        assert!(
            carrying.iter().all(|&write| write == carrying[0]),
            "the answers went out in writes {carrying:?}, not in one"
        );
        drop(client);
        server.abort();
    }
}
