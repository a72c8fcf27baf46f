//! Bodies into the mesh's own HTTP/2 streams ([`super::client`]): a request's on its way to
//! another sidecar, an answer's from the inbound side.
//!
//! - [`send_body`] — a body into a send stream, no faster than the peer's window allows;
//!   [`StreamWriter`] — the same stream written to as bytes.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::io::AsyncWrite;

use super::{Body, BoxError, client};
use crate::wire::frame::Reason;

/// Where a body is sent: a stream of the mesh's own HTTP/2 ([`super::client`]), a request's
/// to another sidecar or an answer's from the inbound side.
pub(crate) trait BodySender {
    /// Waits until `wanted` bytes (at least one) may go, and says how many.
    fn poll_window(&mut self, cx: &mut Context<'_>, wanted: usize)
    -> Poll<Result<usize, BoxError>>;
    fn send(&mut self, data: Bytes, end_stream: bool) -> Result<(), BoxError>;
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), BoxError>;
    /// Resets the stream: the body failed.
    fn cancel(&mut self);
    /// Ready once the peer reset the stream.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl BodySender for client::SendStream {
    fn poll_window(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<Result<usize, BoxError>> {
        // The connection sends what is queued as the windows allow; a stream queues no more
        // than its send buffer ahead.
        ready!(self.poll_capacity(cx))?;
        Poll::Ready(Ok(wanted))
    }

    fn send(&mut self, data: Bytes, end_stream: bool) -> Result<(), BoxError> {
        self.send_data(data, end_stream).map_err(Into::into)
    }

    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), BoxError> {
        client::SendStream::send_trailers(self, trailers).map_err(Into::into)
    }

    fn cancel(&mut self) {
        self.send_reset(Reason::CANCEL);
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        client::SendStream::poll_reset(self, cx)
    }
}

/// Sends `body` on `stream` frame by frame: each data frame waits for window from the peer,
/// trailers end the stream, as does the body's end. A body that fails resets the stream
/// (the peer must not take half a body for a whole one); so does a peer that resets it.
pub(crate) async fn send_body(mut body: Body, mut stream: impl BodySender) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // The peer reset the stream (an answer came early, say): nothing more to send.
            () = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => {
                stream.cancel();
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
    stream: &mut impl BodySender,
    mut data: Bytes,
    end: bool,
) -> Result<(), BoxError> {
    if data.is_empty() {
        return if end { stream.send(data, true) } else { Ok(()) };
    }
    while !data.is_empty() {
        let granted = std::future::poll_fn(|cx| stream.poll_window(cx, data.len())).await?;
        let chunk = data.split_to(granted);
        stream.send(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// An HTTP/2 send stream written to as bytes (a body relayed from an HTTP/1 connection), no
/// faster than the peer's window allows.
pub(crate) struct StreamWriter<'s, S>(pub(crate) &'s mut S);

impl<S: BodySender + Unpin> AsyncWrite for StreamWriter<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let stream = &mut *self.0;
        let granted = ready!(stream.poll_window(cx, bytes.len())).map_err(std::io::Error::other)?;
        let chunk = Bytes::copy_from_slice(&bytes[..granted]);
        Poll::Ready(
            stream
                .send(chunk, false)
                .map(|()| granted)
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
