//! An HTTP/2 connection without I/O, either end of it ([`Role`]): bytes received go in
//! ([`Connection::received`], then [`Connection::read_frames`]), bytes to send come out
//! ([`Connection::out`]), and a stream's task opens it (a client's) or takes it (a server's,
//! [`Connection::poll_accept`]), reads what comes on it and sends its own head and body
//! through the calls in between, each given the task's `Context` where it may wait. The
//! tasks to wake are gathered as the connection changes, and woken by
//! [`Connection::wake_tasks`]. The client is what the mesh's sidecars open to each other
//! (`h2/client.rs`); the server ([`server`]) is to serve their inbound side.
//!
//! The rules kept: stream ids odd and rising; the peer's limits (concurrent streams, frame
//! size, windows: §5.2, §6.9, changes of the initial window applied to open streams), and a
//! server's own (streams beyond its limit refused, a flood of resets told to calm down); our
//! windows given back as the stream's task reads (half a window at a time, in one
//! WINDOW_UPDATE); a header block read whole, CONTINUATION by CONTINUATION, and decoded even
//! for a stream that is gone (HPACK's table must stay in step); a malformed message or a
//! `content-length` its data does not match resets its stream, not the connection (§8.1.1);
//! GOAWAY fails the streams the peer did not process as refused (safe to send elsewhere)
//! and lets the others finish; PING answered; push refused (a client disables it).

mod message;
mod receive;
mod send;
mod server;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};

use self::stream::{Head, Stream};
use crate::fast_hash::FastHash;
use crate::wire::frame::{self, DEFAULT_WINDOW, MAX_WINDOW, Reason, Settings};
use crate::wire::hpack::{DEFAULT_TABLE_SIZE, Decoder, Encoder};

/// What we allow the peer and buffer for our own streams.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_list: u32,
    /// A stream's queued body bytes beyond which its task waits for the peer's window.
    pub send_buffer: usize,
    /// How many streams a server lets the peer have open at once (a client's peer opens
    /// none).
    pub max_concurrent_streams: u32,
}

/// Which end of the connection this is: who opens streams, and what a head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
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
    role: Role,
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
    /// A server's: the client's preface is still to come.
    preface_pending: bool,
    /// A server's: the highest stream the peer opened.
    last_peer_id: u32,
    /// A server's: requests come and not yet taken, and the task that takes them.
    accepted: VecDeque<u32>,
    accept_waker: Option<Waker>,
    /// A server's: our GOAWAY went out; streams above `last_peer_id` are not processed.
    going_away: bool,
    /// A server's: streams the peer opened, and those it reset before they were answered
    /// (a "rapid reset" flood is told to calm down).
    peer_opened: u32,
    peer_resets: u32,
}

impl Connection {
    /// A client's connection whose preface, settings and connection window are already in
    /// `out`.
    pub fn new(config: Config) -> Connection {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(frame::PREFACE);
        let settings = Settings {
            enable_push: Some(false),
            initial_window_size: Some(config.stream_window),
            max_header_list_size: Some(config.max_header_list),
            ..Settings::default()
        };
        Connection::start(Role::Client, config, out, &settings)
    }

    fn start(role: Role, config: Config, mut out: Vec<u8>, settings: &Settings) -> Connection {
        frame::write_settings(&mut out, settings);
        if config.connection_window > DEFAULT_WINDOW {
            frame::write_window_update(&mut out, 0, config.connection_window - DEFAULT_WINDOW);
        }
        Connection {
            role,
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
            preface_pending: role == Role::Server,
            last_peer_id: 0,
            accepted: VecDeque::new(),
            accept_waker: None,
            going_away: false,
            peer_opened: 0,
            peer_resets: 0,
        }
    }

    /// Wakes the tasks the connection's changes concern. On tokio a wake only schedules
    /// the task, never runs it there and then, so the caller may hold the connection; the
    /// list keeps its room for the next changes.
    pub fn wake_tasks(&mut self) {
        self.wake.drain(..).for_each(Waker::wake);
    }

    /// The connection failed (or ended), and why: every stream fails with it.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Takes no new stream: failed, told to go away (or, a server, going away), or out of
    /// stream ids.
    pub fn is_closing(&self) -> bool {
        self.failed.is_some()
            || self.goaway.is_some()
            || self.going_away
            || self.next_id > MAX_STREAM_ID
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
            stream.counted = false;
        }
        self.active = 0;
        self.wake.append(&mut self.ready_waiters);
        self.wake.extend(self.accept_waker.take());
        self.failed = Some(why);
    }

    /// Ends the connection with our GOAWAY for `reason`.
    fn go_away(&mut self, reason: Reason, why: &str) {
        if self.failed.is_none() {
            frame::write_goaway(&mut self.out, self.last_peer_id, reason);
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
        self.write_block(id, end_stream, |encoder, block| {
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
        if let Some(Head::Response(status, fields)) = stream.recv.head.take() {
            return Poll::Ready(Ok((status, fields)));
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

    /// Writes a HEADERS frame (and CONTINUATION frames, if the peer's frame size needs them)
    /// for stream `id`, whose block `encode` makes with the connection's encoder.
    fn write_block(
        &mut self,
        id: u32,
        end_stream: bool,
        encode: impl FnOnce(&mut Encoder, &mut Vec<u8>),
    ) {
        let Connection {
            encoder,
            out,
            peer_max_frame,
            ..
        } = self;
        frame::write_headers(out, id, end_stream, *peer_max_frame, |block| {
            encode(encoder, block)
        });
    }

    /// Stream `id` ended both ways: it no longer counts against the peer's limit, and is
    /// forgotten if its task has let go of it. A released stream whose answer went out
    /// whole while the peer was still sending is told to stop (RST_STREAM: NO_ERROR from
    /// a server, RFC 9113 §8.1; CANCEL from a client).
    fn settle(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.released && stream.send.ended && !stream.recv.end && !stream.reset {
            let reason = match self.role {
                Role::Server => Reason::NO_ERROR,
                Role::Client => Reason::CANCEL,
            };
            frame::write_rst_stream(&mut self.out, id, reason);
            stream.fail(StreamError::Reset(reason), &mut self.wake);
        }
        if !stream.is_done() {
            return;
        }
        if stream.counted {
            stream.counted = false;
            self.active -= 1;
            if let Some(waiter) = self.ready_waiters.pop() {
                self.wake.push(waiter);
            }
        }
        if stream.released {
            self.streams.remove(&id);
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
}

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;
