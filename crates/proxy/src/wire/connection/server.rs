//! A server's side of the connection: the client's preface, the streams it opens (its
//! requests, checked as RFC 9113 §8.3.1 asks, within our limit on concurrent streams), the
//! answers written back, and the graceful GOAWAY of a server that stops.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};

use super::message::{self, Expect, Incoming};
use super::stream::{Head, Stream};
use super::{Config, Connection, Role, StreamError};
use crate::wire::frame::{self, Reason, Settings};

impl Connection {
    /// A server's connection: its settings and connection window already in `out`, the
    /// client's preface expected first.
    pub fn server(config: Config) -> Connection {
        let settings = Settings {
            max_concurrent_streams: Some(config.max_concurrent_streams),
            initial_window_size: Some(config.stream_window),
            max_header_list_size: Some(config.max_header_list),
            ..Settings::default()
        };
        Connection::start(Role::Server, config, Vec::with_capacity(4096), &settings)
    }

    /// Takes the client's preface off `received`: false while it has not all come, or when
    /// what came is not HTTP/2 (the connection then fails).
    pub(super) fn read_preface(&mut self) -> bool {
        let preface = &frame::PREFACE[..];
        let have = self.received.len().min(preface.len());
        if self.received[..have] != preface[..have] {
            self.go_away(Reason::PROTOCOL_ERROR, "not HTTP/2's connection preface");
            return false;
        }
        if have < preface.len() {
            return false;
        }
        let _ = self.received.split_to(preface.len());
        self.preface_pending = false;
        true
    }

    /// The next stream the peer opened, its request ready for [`take_request`]; `None`
    /// once the connection takes no more.
    ///
    /// [`take_request`]: Connection::take_request
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<u32>> {
        if let Some(id) = self.accepted.pop_front() {
            return Poll::Ready(Some(id));
        }
        if self.is_closing() {
            return Poll::Ready(None);
        }
        self.accept_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Stream `id`'s request (its body to follow by [`poll_data`](Connection::poll_data)).
    pub fn take_request(&mut self, id: u32) -> Option<Request<()>> {
        match self.streams.get_mut(&id)?.recv.head.take()? {
            Head::Request(request) => Some(request),
            Head::Response(..) => None,
        }
    }

    /// Answers stream `id` with `status` and `fields`, which end the stream if
    /// `end_stream`; a body follows by [`send_data`](Connection::send_data) otherwise.
    pub fn send_response(
        &mut self,
        id: u32,
        status: StatusCode,
        fields: &HeaderMap,
        end_stream: bool,
    ) -> Result<(), StreamError> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(StreamError::Refused);
        };
        if stream.reset || stream.send.head_sent {
            let error = stream.recv.error.clone();
            return Err(error.unwrap_or(StreamError::Reset(Reason::STREAM_CLOSED)));
        }
        self.write_block(id, end_stream, |encoder, block| {
            message::write_response(encoder, status, fields, block)
        });
        let stream = self.streams.get_mut(&id).expect("the stream answered");
        stream.send.head_sent = true;
        stream.send.ended = end_stream;
        stream.send.end_queued = end_stream;
        self.settle(id);
        Ok(())
    }

    /// Stops taking streams: GOAWAY with the last one the peer opened, which all finish;
    /// the connection is over once they have.
    pub fn shut_down(&mut self) {
        if self.going_away || self.failed.is_some() {
            return;
        }
        frame::write_goaway(&mut self.out, self.last_peer_id, Reason::NO_ERROR);
        self.going_away = true;
        self.wake.extend(self.accept_waker.take());
    }

    /// A header block on a stream the peer opens with it.
    pub(super) fn on_request(&mut self, id: u32, block: Bytes, end_stream: bool) {
        let mut incoming = Incoming::new(Expect::Request);
        let Ok(list_size) = self.decoder.decode(&block, |field| incoming.push(field)) else {
            return self.go_away(
                Reason::COMPRESSION_ERROR,
                "a header block that does not decode",
            );
        };
        if id.is_multiple_of(2) {
            return self.go_away(Reason::PROTOCOL_ERROR, "a client's stream with an even id");
        }
        self.last_peer_id = id;
        if self.going_away {
            // Above our GOAWAY's last stream: not processed, as it said.
            return;
        }
        if self.active >= self.config.max_concurrent_streams {
            frame::write_rst_stream(&mut self.out, id, Reason::REFUSED_STREAM);
            return;
        }
        self.peer_opened += 1;
        if list_size > self.config.max_header_list as usize {
            // RFC 9113 §10.5.1: an HTTP answer the client can show, 431, rather than a reset;
            // the rest of the request is not wanted (RST_STREAM NO_ERROR after the answer).
            self.write_block(id, true, |encoder, block| {
                message::write_response(
                    encoder,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    &HeaderMap::new(),
                    block,
                )
            });
            if !end_stream {
                frame::write_rst_stream(&mut self.out, id, Reason::NO_ERROR);
            }
            return;
        }
        let length = incoming.content_length();
        let request = incoming.request();
        let Some(request) = request.filter(|_| incoming.malformed.is_none()) else {
            frame::write_rst_stream(&mut self.out, id, Reason::PROTOCOL_ERROR);
            return;
        };
        let mut stream = Stream::new(
            self.config.stream_window,
            self.peer_initial_window,
            false,
            false,
        );
        stream.send.head_sent = false;
        stream.recv.head = Some(Head::Request(request));
        stream.recv.head_came = true;
        stream.recv.content_length = length;
        self.streams.insert(id, stream);
        self.active += 1;
        self.accepted.push_back(id);
        self.wake.extend(self.accept_waker.take());
        if end_stream {
            self.end_recv(id);
        }
    }
}
