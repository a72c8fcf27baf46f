//! The client side of an HTTP/2 connection without I/O: bytes received go in
//! ([`Connection::received`], then [`Connection::read_frames`]), bytes to send come out
//! ([`Connection::out`]), and a stream's task opens it, reads its response and sends its body
//! through the calls in between, each given the task's `Context` where it may wait. The
//! tasks to wake are gathered ([`Connection::take_wakers`]) for the caller to wake once it
//! has let go of the connection. What the mesh's sidecars open to each other.
//!
//! The rules kept: stream ids odd and rising; the peer's limits (concurrent streams, frame
//! size, windows: §5.2, §6.9, changes of the initial window applied to open streams); our
//! windows given back as the stream's task reads (half a window at a time, in one
//! WINDOW_UPDATE); a header block read whole, CONTINUATION by CONTINUATION, and decoded even
//! for a stream that is gone (HPACK's table must stay in step); a malformed response or a
//! `content-length` its data does not match resets its stream, not the connection (§8.1.1);
//! GOAWAY fails the streams the peer did not process as refused (safe to send elsewhere)
//! and lets the others finish; PING answered; push refused (it is disabled in our settings).

mod message;
mod stream;

use std::collections::HashMap;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};

use self::message::{Expect, Incoming};
use self::stream::Stream;
use crate::fast_hash::FastHash;
use crate::wire::frame::{self, DEFAULT_WINDOW, Frame, MAX_WINDOW, Reason, Settings};
use crate::wire::hpack::{DEFAULT_TABLE_SIZE, Decoder, Encoder};

/// What we allow the peer and buffer for our own streams.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_list: u32,
    /// A stream's queued body bytes beyond which its task waits for the peer's window.
    pub send_buffer: usize,
}

/// Why a stream did not get its answer, or could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The peer did not process it (REFUSED_STREAM, beyond its GOAWAY, or the connection
    /// could take no new stream): safe to send again, elsewhere.
    #[error("the peer did not process the stream")]
    Refused,
    #[error("the peer reset the stream ({0})")]
    Reset(Reason),
    /// The peer's answer broke HTTP/2's rules; the stream was reset.
    #[error("the answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the connection failed: {0}")]
    Connection(String),
}

/// A header block whose CONTINUATION frames are still to come.
#[derive(Debug)]
struct Continuation {
    stream: u32,
    block: BytesMut,
    end_stream: bool,
}

/// The largest header block taken in, CONTINUATION frames included: a peer that sends more
/// (a "CONTINUATION flood") is told to calm down.
const MAX_BLOCK: usize = 64 << 10;

/// The largest stream id (§5.1.1): past it, the connection takes no new stream.
const MAX_STREAM_ID: u32 = MAX_WINDOW;

#[derive(Debug)]
pub struct Connection {
    /// Bytes received and not yet read as frames.
    pub received: BytesMut,
    /// Bytes to send, in order.
    pub out: Vec<u8>,
    config: Config,
    encoder: Encoder,
    decoder: Decoder,
    streams: HashMap<u32, Stream, FastHash>,
    next_id: u32,
    /// Streams that count against the peer's limit.
    active: u32,
    peer_max_streams: u32,
    peer_max_frame: u32,
    peer_initial_window: u32,
    /// What the peer's connection window allows us.
    send_window: i64,
    /// What we allow the peer on the connection, and what was read since we last gave any.
    recv_window: i64,
    recv_unacked: u32,
    continuation: Option<Continuation>,
    /// The peer's GOAWAY: the last stream it processes.
    goaway: Option<u32>,
    failed: Option<String>,
    /// Streams with body bytes the windows hold back.
    blocked: Vec<u32>,
    /// Tasks waiting for room for a new stream.
    ready_waiters: Vec<Waker>,
    wake: Vec<Waker>,
}

impl Connection {
    /// A connection whose preface, settings and connection window are already in `out`.
    pub fn new(config: Config) -> Connection {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(frame::PREFACE);
        frame::write_settings(
            &mut out,
            &Settings {
                enable_push: Some(false),
                initial_window_size: Some(config.stream_window),
                max_header_list_size: Some(config.max_header_list),
                ..Settings::default()
            },
        );
        if config.connection_window > DEFAULT_WINDOW {
            frame::write_window_update(&mut out, 0, config.connection_window - DEFAULT_WINDOW);
        }
        Connection {
            received: BytesMut::with_capacity(16 << 10),
            out,
            config,
            encoder: Encoder::default(),
            decoder: Decoder::new(DEFAULT_TABLE_SIZE),
            streams: HashMap::default(),
            next_id: 1,
            active: 0,
            peer_max_streams: u32::MAX,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: DEFAULT_WINDOW,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(config.connection_window.max(DEFAULT_WINDOW)),
            recv_unacked: 0,
            continuation: None,
            goaway: None,
            failed: None,
            blocked: Vec::new(),
            ready_waiters: Vec::new(),
            wake: Vec::new(),
        }
    }

    /// The tasks to wake now that the connection changed.
    pub fn take_wakers(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.wake)
    }

    /// The connection failed (or ended), and why: every stream fails with it.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Takes no new stream: failed, told to go away, or out of stream ids.
    pub fn is_closing(&self) -> bool {
        self.failed.is_some() || self.goaway.is_some() || self.next_id > MAX_STREAM_ID
    }

    /// No stream is left: a closing connection may end.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
    }

    /// Ends the connection for `why` (the transport failed or closed): its streams fail.
    pub fn fail(&mut self, why: String) {
        if self.failed.is_some() {
            return;
        }
        for stream in self.streams.values_mut() {
            stream.fail(StreamError::Connection(why.clone()), &mut self.wake);
        }
        self.active = 0;
        self.wake.append(&mut self.ready_waiters);
        self.failed = Some(why);
    }

    /// Ends the connection with our GOAWAY for `reason`.
    fn go_away(&mut self, reason: Reason, why: &str) {
        if self.failed.is_none() {
            frame::write_goaway(&mut self.out, 0, reason);
            self.fail(format!("{reason}: {why}"));
        }
    }

    // === opening streams ===

    /// Ready when the peer's limit leaves room for one more stream; an error when this
    /// connection will take none (the request is safe to send on another).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        if self.is_closing() {
            return Poll::Ready(Err(StreamError::Refused));
        }
        if self.active < self.peer_max_streams {
            return Poll::Ready(Ok(()));
        }
        self.ready_waiters.push(cx.waker().clone());
        Poll::Pending
    }

    /// Opens a stream with `head`, which ends the request if `end_stream`; its id.
    pub fn open(&mut self, head: &Request<()>, end_stream: bool) -> Result<u32, StreamError> {
        if self.is_closing() || self.active >= self.peer_max_streams {
            return Err(StreamError::Refused);
        }
        let id = self.next_id;
        self.next_id += 2;
        let Connection {
            encoder,
            out,
            peer_max_frame,
            ..
        } = self;
        frame::write_headers(out, id, end_stream, *peer_max_frame, |block| {
            message::write_request(encoder, head, block)
        });
        let to_head = head.method() == Method::HEAD;
        let stream = Stream::new(
            self.config.stream_window,
            self.peer_initial_window,
            end_stream,
            to_head,
        );
        self.streams.insert(id, stream);
        self.active += 1;
        Ok(id)
    }

    // === a stream's answer ===

    /// The response head of stream `id`, once it came.
    pub fn poll_response(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(StatusCode, HeaderMap), StreamError>> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(StreamError::Refused));
        };
        if let Some(head) = stream.recv.head.take() {
            return Poll::Ready(Ok(head));
        }
        if let Some(error) = &stream.recv.error {
            return Poll::Ready(Err(error.clone()));
        }
        stream.recv.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next data of stream `id`'s answer, `None` at its end; what is read is given back
    /// to the peer's windows.
    pub fn poll_data(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, StreamError>>> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Poll::Ready(None);
        };
        if let Some(data) = stream.recv.data.pop_front() {
            stream.recv.buffered -= data.len();
            let len = data.len() as u32;
            self.release_stream(id, len);
            self.release_connection(len);
            return Poll::Ready(Some(Ok(data)));
        }
        if let Some(error) = &stream.recv.error {
            return Poll::Ready(Some(Err(error.clone())));
        }
        if stream.recv.end {
            return Poll::Ready(None);
        }
        stream.recv.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Stream `id`'s trailers, once its data has been read: `None` when it ended without.
    pub fn poll_trailers(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, StreamError>> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Poll::Ready(Ok(None));
        };
        if let Some(error) = &stream.recv.error {
            return Poll::Ready(Err(error.clone()));
        }
        if stream.recv.end {
            return Poll::Ready(Ok(stream.recv.trailers.take()));
        }
        stream.recv.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Nothing more is to be read of stream `id`'s answer: no data, no trailers, no error.
    pub fn is_end(&self, id: u32) -> bool {
        self.streams.get(&id).is_none_or(|s| {
            let recv = &s.recv;
            recv.end && recv.data.is_empty() && recv.trailers.is_none() && recv.error.is_none()
        })
    }

    // === a stream's body ===

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
            Some(stream) if !stream.reset && !stream.send.end_queued => Ok(stream),
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

    /// Stream `id`'s task is done with it: reset if it has not ended (CANCEL), its unread
    /// data given back to the connection's window, and forgotten.
    pub fn release(&mut self, id: u32) {
        self.reset(id, Reason::CANCEL);
        if let Some(stream) = self.streams.remove(&id) {
            self.release_connection(stream.recv.buffered as u32);
        }
    }

    /// Writes what the windows allow of stream `id`'s queued body, its end when all is out.
    fn flush_stream(&mut self, id: u32) {
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

    /// Stream `id` ended both ways: it no longer counts against the peer's limit.
    fn settle(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id)
            && stream.counted
            && stream.is_done()
        {
            stream.counted = false;
            self.active -= 1;
            if let Some(waiter) = self.ready_waiters.pop() {
                self.wake.push(waiter);
            }
        }
    }

    fn release_stream(&mut self, id: u32, len: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.recv.unacked += len;
        if !stream.recv.end && stream.recv.unacked >= self.config.stream_window / 2 {
            frame::write_window_update(&mut self.out, id, stream.recv.unacked);
            stream.recv.window += i64::from(stream.recv.unacked);
            stream.recv.unacked = 0;
        }
    }

    fn release_connection(&mut self, len: u32) {
        self.recv_unacked += len;
        let window = self.config.connection_window.max(DEFAULT_WINDOW);
        if self.recv_unacked >= window / 2 {
            frame::write_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    // === frames from the peer ===

    /// Reads the frames `received` holds. A connection error is answered with GOAWAY and
    /// fails every stream; the connection is then [`failed`](Connection::failed).
    pub fn read_frames(&mut self) {
        while self.failed.is_none() {
            match frame::read(&mut self.received, frame::DEFAULT_MAX_FRAME_SIZE) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) => break,
                Err(frame::Error::Connection(reason, why)) => self.go_away(reason, why),
                Err(frame::Error::Stream(id, reason, why)) => self.stream_error(id, reason, why),
            }
        }
    }

    fn stream_error(&mut self, id: u32, reason: Reason, why: &'static str) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.is_done()
        {
            frame::write_rst_stream(&mut self.out, id, reason);
            stream.fail(StreamError::Malformed(why), &mut self.wake);
            self.settle(id);
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        if let Some(continuation) = &self.continuation {
            let stream = continuation.stream;
            return match frame {
                Frame::Continuation {
                    stream: id,
                    block,
                    end_headers,
                } if id == stream => self.on_continuation(block, end_headers),
                _ => self.go_away(Reason::PROTOCOL_ERROR, "a frame inside a header block"),
            };
        }
        match frame {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len),
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
            } => {
                if end_headers {
                    self.on_headers(stream, block, end_stream);
                } else if block.len() > MAX_BLOCK {
                    self.go_away(Reason::ENHANCE_YOUR_CALM, "a header block too large");
                } else {
                    self.continuation = Some(Continuation {
                        stream,
                        block: BytesMut::from(&block[..]),
                        end_stream,
                    });
                }
            }
            Frame::Continuation { .. } => {
                self.go_away(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            }
            Frame::RstStream { stream, reason } => self.on_reset(stream, reason),
            Frame::Settings(settings) => self.on_settings(settings),
            Frame::SettingsAck | Frame::Priority { .. } | Frame::Unknown { .. } => {}
            Frame::PushPromise { .. } => {
                self.go_away(Reason::PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::write_ping(&mut self.out, true, payload);
                }
            }
            Frame::GoAway { last_stream, .. } => self.on_goaway(last_stream),
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
        }
    }

    fn on_continuation(&mut self, block: Bytes, end_headers: bool) {
        let continuation = self
            .continuation
            .as_mut()
            .expect("a header block under way");
        if continuation.block.len() + block.len() > MAX_BLOCK {
            return self.go_away(Reason::ENHANCE_YOUR_CALM, "a header block too large");
        }
        continuation.block.extend_from_slice(&block);
        if end_headers {
            let Continuation {
                stream,
                block,
                end_stream,
            } = self.continuation.take().expect("a header block under way");
            self.on_headers(stream, block.freeze(), end_stream);
        }
    }

    /// Whether `id` is a stream we opened (it may be over): a frame on any other is the
    /// peer's error, since it may open none.
    fn is_ours(&self, id: u32) -> bool {
        id % 2 == 1 && id < self.next_id
    }

    fn on_headers(&mut self, id: u32, block: Bytes, end_stream: bool) {
        let expect = match self.streams.get(&id) {
            Some(stream) if stream.recv.head_came => Expect::Trailers,
            _ => Expect::Response,
        };
        let mut incoming = Incoming::new(expect);
        let Ok(list_size) = self.decoder.decode(&block, |field| incoming.push(field)) else {
            return self.go_away(
                Reason::COMPRESSION_ERROR,
                "a header block that does not decode",
            );
        };
        if !self.is_ours(id) {
            return self.go_away(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a stream we did not open",
            );
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            // A stream we reset and forgot: what was in flight is dropped.
            return;
        };
        if stream.reset {
            return;
        }
        if stream.recv.end {
            return self.stream_error(id, Reason::STREAM_CLOSED, "HEADERS after the stream's end");
        }
        if list_size > self.config.max_header_list as usize {
            incoming.malformed = Some("a header list larger than we allow");
        }
        incoming.finish();
        let length = incoming.content_length();
        if let Some(why) = incoming.malformed {
            return self.stream_error(id, Reason::PROTOCOL_ERROR, why);
        }
        match expect {
            Expect::Response => {
                let status = incoming.status.expect("a checked response has a status");
                if status.is_informational() {
                    if end_stream {
                        return self.stream_error(
                            id,
                            Reason::PROTOCOL_ERROR,
                            "an informational response that ends the stream",
                        );
                    }
                    return;
                }
                let no_body = stream.recv.to_head
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED;
                stream.recv.content_length = if no_body { None } else { length };
                stream.recv.head = Some((status, incoming.fields));
                stream.recv.head_came = true;
            }
            Expect::Trailers => {
                if !end_stream {
                    return self.stream_error(
                        id,
                        Reason::PROTOCOL_ERROR,
                        "trailers without END_STREAM",
                    );
                }
                stream.recv.trailers = Some(incoming.fields);
            }
        }
        self.wake_recv(id);
        if end_stream {
            self.end_recv(id);
        }
    }

    fn on_data(&mut self, id: u32, data: Bytes, end_stream: bool, flow_len: u32) {
        if i64::from(flow_len) > self.recv_window {
            return self.go_away(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            );
        }
        self.recv_window -= i64::from(flow_len);
        if !self.is_ours(id) {
            return self.go_away(Reason::PROTOCOL_ERROR, "DATA on a stream we did not open");
        }
        let padding = flow_len - data.len() as u32;
        let receiving = match self.streams.get_mut(&id) {
            Some(stream) if !stream.reset => {
                if stream.recv.end {
                    self.release_connection(flow_len);
                    return self.stream_error(
                        id,
                        Reason::STREAM_CLOSED,
                        "DATA after the stream's end",
                    );
                }
                if !stream.recv.head_came {
                    self.release_connection(flow_len);
                    return self.stream_error(
                        id,
                        Reason::PROTOCOL_ERROR,
                        "DATA before the response head",
                    );
                }
                if i64::from(flow_len) > stream.recv.window {
                    self.release_connection(flow_len);
                    return self.stream_error(
                        id,
                        Reason::FLOW_CONTROL_ERROR,
                        "DATA beyond the stream's window",
                    );
                }
                stream.recv.window -= i64::from(flow_len);
                true
            }
            _ => false,
        };
        if !receiving {
            // A stream we reset or forgot: its bytes still counted on the connection.
            return self.release_connection(flow_len);
        }
        self.release_connection(padding);
        self.release_stream(id, padding);
        let stream = self.streams.get_mut(&id).expect("a receiving stream");
        stream.recv.received += data.len() as u64;
        if !data.is_empty() {
            stream.recv.buffered += data.len();
            stream.recv.data.push_back(data);
        }
        self.wake_recv(id);
        if end_stream {
            self.end_recv(id);
        }
    }

    fn wake_recv(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            self.wake.extend(stream.recv.waker.take());
        }
    }

    /// The peer ended stream `id`: what came must be what `content-length` said.
    fn end_recv(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if let Some(length) = stream.recv.content_length
            && length != stream.recv.received
        {
            return self.stream_error(
                id,
                Reason::PROTOCOL_ERROR,
                "a body whose length is not its content-length",
            );
        }
        stream.recv.end = true;
        self.wake_recv(id);
        self.settle(id);
    }

    fn on_reset(&mut self, id: u32, reason: Reason) {
        if !self.is_ours(id) {
            return self.go_away(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on a stream we did not open",
            );
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let error = match reason {
            Reason::REFUSED_STREAM => StreamError::Refused,
            _ => StreamError::Reset(reason),
        };
        stream.fail(error, &mut self.wake);
        self.settle(id);
    }

    fn on_goaway(&mut self, last_stream: u32) {
        self.goaway = Some(last_stream);
        let refused: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| id > last_stream)
            .collect();
        for id in refused {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.fail(StreamError::Refused, &mut self.wake);
            }
            self.settle(id);
        }
        self.wake.append(&mut self.ready_waiters);
    }

    fn on_settings(&mut self, settings: Settings) {
        if settings.enable_push == Some(true) {
            return self.go_away(
                Reason::PROTOCOL_ERROR,
                "a server's SETTINGS_ENABLE_PUSH of 1",
            );
        }
        if let Some(size) = settings.header_table_size {
            self.encoder.set_peer_table_size(size as usize);
        }
        if let Some(max) = settings.max_concurrent_streams {
            let more = max > self.peer_max_streams;
            self.peer_max_streams = max;
            if more {
                self.wake.append(&mut self.ready_waiters);
            }
        }
        if let Some(max) = settings.max_frame_size {
            self.peer_max_frame = max;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for stream in self.streams.values_mut() {
                stream.send.window += delta;
                if stream.send.window > i64::from(MAX_WINDOW) {
                    return self.go_away(Reason::FLOW_CONTROL_ERROR, "a window above 2^31-1");
                }
            }
        }
        frame::write_settings_ack(&mut self.out);
        self.flush_blocked();
    }

    fn on_window_update(&mut self, id: u32, increment: u32) {
        if id == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return self.go_away(Reason::FLOW_CONTROL_ERROR, "a window above 2^31-1");
            }
            return self.flush_blocked();
        }
        if !self.is_ours(id) {
            return self.go_away(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on a stream we did not open",
            );
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.send.window += i64::from(increment);
        if stream.send.window > i64::from(MAX_WINDOW) {
            return self.stream_error(id, Reason::FLOW_CONTROL_ERROR, "a window above 2^31-1");
        }
        self.blocked.retain(|&blocked| blocked != id);
        self.flush_stream(id);
    }

    fn flush_blocked(&mut self) {
        for id in std::mem::take(&mut self.blocked) {
            self.flush_stream(id);
        }
    }
}

#[cfg(test)]
mod tests;
