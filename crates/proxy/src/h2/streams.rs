//! Bodies between the `h2` crate's streams and `http_body`'s: what the mesh's HTTP/2 client
//! ([`super::mesh`]) reads answers from and sends requests into, without hyper in between.
//!
//! Why `h2` directly there: hyper's HTTP/2 client hands every request to its connection task
//! over a channel, spawns a task per request to carry the response back through a oneshot,
//! and wraps the body again; measured with `bench/mesh_instructions.sh`, that was about a
//! sixth of the client-side sidecar's instructions per request. With `h2`'s own handles a
//! request is sent from, and its answer awaited in, the task that holds the request.
//!
//! - [`RecvBody`] — a receive stream as a body: data, then trailers; the flow-control window
//!   given back as each frame is read (so the peer may send on), as hyper does;
//! - [`send_body`] — a body into a send stream, no faster than the peer's window allows.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Body;

/// An HTTP/2 receive stream read as a body.
pub(crate) struct RecvBody {
    stream: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(crate) fn new(stream: RecvStream) -> RecvBody {
        RecvBody {
            stream,
            data_done: false,
        }
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The bytes are ours now: the peer may send as many again.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Sends `body` on `stream` frame by frame: each data frame waits for window from the peer,
/// trailers end the stream, as does the body's end. A body that fails resets the stream
/// (the peer must not take half a body for a whole one); so does a peer that resets it.
pub(crate) async fn send_body(mut body: Body, mut stream: SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // The peer reset the stream (an answer came early, say): nothing more to send.
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if send_data(&mut stream, data, end).await.is_err() || end {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

/// Sends `data` as the peer's window allows, in as many frames as it takes.
async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return if end {
            stream.send_data(data, true)
        } else {
            Ok(())
        };
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream closed under the body.
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}
