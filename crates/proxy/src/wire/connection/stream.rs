//! One stream of a client connection: what has come in for its task to read (the response
//! head, data, trailers, or why not), what its task has queued to send that the peer's
//! windows do not yet allow, and the flow-control windows of both directions.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};

use super::StreamError;

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) recv: Recv,
    pub(super) send: Send,
    /// Counted against the peer's SETTINGS_MAX_CONCURRENT_STREAMS: until both directions
    /// ended, or the stream was reset.
    pub(super) counted: bool,
    /// Reset by either end: nothing more is sent, or read but what came before.
    pub(super) reset: bool,
    /// Its task let go of it with its body's end queued: what the peer's windows still hold
    /// back goes out, anything more that comes in is dropped, and the stream is forgotten
    /// once done.
    pub(super) released: bool,
}

#[derive(Debug, Default)]
pub(super) struct Recv {
    /// The final response head (a client's) or the request (a server's), until its task
    /// takes it.
    pub(super) head: Option<Head>,
    /// It came: a header block after it is trailers.
    pub(super) head_came: bool,
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// END_STREAM came (or the stream was reset after its end).
    pub(super) end: bool,
    pub(super) error: Option<StreamError>,
    /// What the peer may still send on this stream, and what was read since the last
    /// WINDOW_UPDATE gave it back.
    pub(super) window: i64,
    pub(super) unacked: u32,
    /// Bytes received and not yet read (given back to the connection if the stream goes).
    pub(super) buffered: usize,
    /// What `content-length` said, and what has come (§8.1.1: the two must agree).
    pub(super) content_length: Option<u64>,
    pub(super) received: u64,
    /// A response to HEAD: its `content-length` announces a body that does not come.
    pub(super) to_head: bool,
    pub(super) waker: Option<Waker>,
}

/// What opens a stream's incoming side.
#[derive(Debug)]
pub(super) enum Head {
    Response(StatusCode, HeaderMap),
    Request(Request<()>),
}

#[derive(Debug, Default)]
pub(super) struct Send {
    /// The head went out (a client's request at once, a server's answer when it is ready):
    /// the body may follow.
    pub(super) head_sent: bool,
    /// What the peer's windows allow on this stream.
    pub(super) window: i64,
    pub(super) pending: VecDeque<Bytes>,
    pub(super) pending_len: usize,
    /// The task's body ended (after `pending`, and `trailers` if any).
    pub(super) end_queued: bool,
    pub(super) trailers: Option<HeaderMap>,
    /// END_STREAM went out.
    pub(super) ended: bool,
    pub(super) waker: Option<Waker>,
}

impl Stream {
    pub(super) fn new(recv_window: u32, send_window: u32, ended: bool, to_head: bool) -> Stream {
        Stream {
            recv: Recv {
                window: i64::from(recv_window),
                to_head,
                ..Recv::default()
            },
            send: Send {
                window: i64::from(send_window),
                head_sent: true,
                ended,
                end_queued: ended,
                ..Send::default()
            },
            counted: true,
            reset: false,
            released: false,
        }
    }

    /// Fails whatever of the stream is still to come, waking its tasks into `wake`.
    pub(super) fn fail(&mut self, error: StreamError, wake: &mut Vec<Waker>) {
        if !self.recv.end && self.recv.error.is_none() {
            self.recv.error = Some(error);
        }
        self.reset = true;
        self.send.pending.clear();
        self.send.pending_len = 0;
        wake.extend(self.recv.waker.take());
        wake.extend(self.send.waker.take());
    }

    /// Both directions are over: the stream no longer counts against the peer's limit.
    pub(super) fn is_done(&self) -> bool {
        self.reset || (self.recv.end && self.send.ended)
    }
}
