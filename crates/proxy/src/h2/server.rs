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
        tokio::select! {
            () = &mut driver => return Ok(()),
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
            Some(()) = streams.next(), if !streams.is_empty() => {}
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
