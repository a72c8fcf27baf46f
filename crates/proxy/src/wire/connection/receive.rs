//! Frames from the peer, one by one: what each means to the connection and its streams.

use bytes::{Bytes, BytesMut};
use http::StatusCode;

use super::message::{Expect, Incoming};
use super::stream::Head;
use super::{Connection, Continuation, MAX_BLOCK, Role, StreamError};

/// Streams a peer may reset before we answer them, beyond which resetting more than half
/// of what it opens ends the connection (the "rapid reset" of CVE-2023-44487).
const RAPID_RESETS: u32 = 100;
use crate::wire::frame::{self, Frame, MAX_WINDOW, Reason, Settings};

impl Connection {
    /// Reads the frames `received` holds. A connection error is answered with GOAWAY and
    /// fails every stream; the connection is then [`failed`](Connection::failed).
    pub fn read_frames(&mut self) {
        if self.preface_pending && !self.read_preface() {
            return;
        }
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

    /// Whether `id` is a stream of this connection (it may be over): one we opened, or, a
    /// server, one the peer opened. A frame on any other is the peer's error.
    fn is_ours(&self, id: u32) -> bool {
        match self.role {
            Role::Client => id % 2 == 1 && id < self.next_id,
            Role::Server => id % 2 == 1 && id <= self.last_peer_id,
        }
    }

    fn on_headers(&mut self, id: u32, block: Bytes, end_stream: bool) {
        if self.role == Role::Server && id > self.last_peer_id {
            return self.on_request(id, block, end_stream);
        }
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
            // A request opens its stream: `on_request`.
            Expect::Request => {}
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
                stream.recv.head = Some(Head::Response(status, incoming.fields));
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
            Some(stream) if !stream.reset && !stream.released => {
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
            // A stream we reset, let go of or forgot: its bytes still counted on the
            // connection.
            self.release_connection(flow_len);
            if end_stream && self.streams.get(&id).is_some_and(|s| s.released) {
                self.end_recv(id);
            }
            return;
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
    pub(super) fn end_recv(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        // A released stream's data is dropped uncounted: its length is no longer checked.
        if !stream.released
            && let Some(length) = stream.recv.content_length
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
        if self.role == Role::Server && !stream.send.head_sent && !stream.reset {
            self.peer_resets += 1;
            if self.peer_resets > RAPID_RESETS && self.peer_resets * 2 > self.peer_opened {
                return self.go_away(
                    Reason::ENHANCE_YOUR_CALM,
                    "streams reset as fast as they open",
                );
            }
        }
        let error = match reason {
            Reason::REFUSED_STREAM => StreamError::Refused,
            _ => StreamError::Reset(reason),
        };
        stream.fail(error, &mut self.wake);
        self.settle(id);
    }

    fn on_goaway(&mut self, last_stream: u32) {
        self.goaway = Some(last_stream);
        if self.role == Role::Server {
            // The client opens no more; its `last_stream` counts our pushes, of which
            // there are none. Its streams finish.
            self.wake.extend(self.accept_waker.take());
            return;
        }
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
        if self.role == Role::Client && settings.enable_push == Some(true) {
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
