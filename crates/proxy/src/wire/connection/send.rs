//! A stream's body on its way out: queued by its task, written as the peer's windows allow
//! (the stream's, the connection's, and its frame size), its end or trailers after the last
//! byte.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;

use super::stream::Stream;
use super::{Connection, StreamError, message};
use crate::wire::frame::{self, Reason};

impl Connection {
    /// Ready once stream `id` was reset, by either end (or is gone).
    pub fn poll_reset(&mut self, id: u32, cx: &mut Context<'_>) -> Poll<()> {
        match self.streams.get_mut(&id) {
            Some(stream) if !stream.reset => {
                stream.send.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Ready when stream `id` may queue more of its body (its queue is below the send
    /// buffer); an error when it may send no more.
    pub fn poll_capacity(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(StreamError::Refused));
        };
        if stream.reset || stream.send.end_queued {
            let error = stream.recv.error.clone();
            return Poll::Ready(Err(
                error.unwrap_or(StreamError::Reset(Reason::STREAM_CLOSED))
            ));
        }
        if stream.send.pending_len < self.config.send_buffer {
            return Poll::Ready(Ok(()));
        }
        stream.send.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues `data` on stream `id`, the body's end if `end_stream`; sent as the windows allow.
    pub fn send_data(&mut self, id: u32, data: Bytes, end_stream: bool) -> Result<(), StreamError> {
        let stream = self.sendable(id)?;
        stream.send.pending_len += data.len();
        if !data.is_empty() {
            stream.send.pending.push_back(data);
        }
        stream.send.end_queued = end_stream;
        self.flush_stream(id);
        Ok(())
    }

    /// Ends stream `id`'s body with `trailers`, after what is queued.
    pub fn send_trailers(&mut self, id: u32, trailers: HeaderMap) -> Result<(), StreamError> {
        let stream = self.sendable(id)?;
        stream.send.trailers = Some(trailers);
        stream.send.end_queued = true;
        self.flush_stream(id);
        Ok(())
    }

    fn sendable(&mut self, id: u32) -> Result<&mut Stream, StreamError> {
        match self.streams.get_mut(&id) {
            Some(stream) if !stream.reset && !stream.send.end_queued && stream.send.head_sent => {
                Ok(stream)
            }
            Some(stream) => Err(stream
                .recv
                .error
                .clone()
                .unwrap_or(StreamError::Reset(Reason::STREAM_CLOSED))),
            None => Err(StreamError::Refused),
        }
    }

    /// Resets stream `id` with `reason` (its body failed, or its task gave up).
    pub fn reset(&mut self, id: u32, reason: Reason) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.is_done()
        {
            frame::write_rst_stream(&mut self.out, id, reason);
            stream.fail(StreamError::Reset(reason), &mut self.wake);
            self.settle(id);
        }
    }

    /// Stream `id`'s task is done with it; its unread data is given back to the
    /// connection's window. A stream whose body's end is queued (an answer, say, that the
    /// peer's window still holds back) stays until that has gone out; any other that has
    /// not ended is reset (CANCEL). Then it is forgotten.
    pub fn release(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let unread = std::mem::take(&mut stream.recv.buffered);
        stream.recv.data.clear();
        let flushing = stream.send.end_queued && !stream.send.ended && !stream.reset;
        if flushing {
            stream.released = true;
            stream.recv.waker = None;
            stream.send.waker = None;
        }
        self.release_connection(unread as u32);
        if !flushing {
            self.reset(id, Reason::CANCEL);
            self.streams.remove(&id);
        }
    }

    /// Writes what the windows allow of stream `id`'s queued body, its end when all is out.
    pub(super) fn flush_stream(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let send = &mut stream.send;
        loop {
            let Some(front) = send.pending.front_mut() else {
                if send.end_queued && !send.ended {
                    match send.trailers.take() {
                        Some(trailers) => {
                            let encoder = &mut self.encoder;
                            frame::write_headers(
                                &mut self.out,
                                id,
                                true,
                                self.peer_max_frame,
                                |block| {
                                    encoder.begin(block);
                                    message::write_fields(encoder, &trailers, block)
                                },
                            );
                        }
                        None => frame::write_data(&mut self.out, id, &[], true),
                    }
                    send.ended = true;
                }
                break;
            };
            let allowed = send
                .window
                .min(self.send_window)
                .min(i64::from(self.peer_max_frame));
            if allowed <= 0 {
                if !self.blocked.contains(&id) {
                    self.blocked.push(id);
                }
                break;
            }
            let chunk = if front.len() as i64 <= allowed {
                send.pending.pop_front().expect("a front")
            } else {
                front.split_to(allowed as usize)
            };
            let last = send.pending.is_empty() && send.end_queued && send.trailers.is_none();
            frame::write_data(&mut self.out, id, &chunk, last);
            let len = chunk.len();
            send.window -= len as i64;
            self.send_window -= len as i64;
            send.pending_len -= len;
            send.ended |= last;
        }
        if send.pending_len < self.config.send_buffer {
            self.wake.extend(send.waker.take());
        }
        self.settle(id);
    }
}
