//! HTTP/2 frames (RFC 9113 §4 and §6): read from a buffer of received bytes, checked as the
//! RFC asks of each type (stream 0 or not, lengths, padding, setting values), and written
//! into a buffer of bytes to send. What a frame means to a connection's streams is the
//! connection's business; a frame that is malformed by itself is an [`Error`] here, for the
//! connection or for one stream as the RFC says.

use bytes::{Buf, Bytes, BytesMut};

mod settings;
mod write;

pub use settings::Settings;
pub use write::{
    write_data, write_goaway, write_headers, write_ping, write_rst_stream, write_settings,
    write_settings_ack, write_window_update,
};

/// What a client sends first (§3.4), before its settings.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame's header: length (24 bits), type, flags, stream (31 bits).
pub const HEADER_LEN: usize = 9;
/// The largest frame payload a peer may send until its settings say more (§6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;
/// The largest a setting may make it.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The window every stream and the connection start with (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// An error code (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            Reason::NO_ERROR => "NO_ERROR",
            Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
            Reason::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Reason::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            Reason::STREAM_CLOSED => "STREAM_CLOSED",
            Reason::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Reason::REFUSED_STREAM => "REFUSED_STREAM",
            Reason::CANCEL => "CANCEL",
            Reason::COMPRESSION_ERROR => "COMPRESSION_ERROR",
            Reason::CONNECT_ERROR => "CONNECT_ERROR",
            Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Reason::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            Reason::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            Reason(other) => return write!(f, "error code {other:#x}"),
        };
        f.write_str(name)
    }
}

/// A frame that breaks the RFC by itself: the whole connection's error (answered with
/// GOAWAY) or one stream's (answered with RST_STREAM), and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Connection(Reason, &'static str),
    #[error("stream {0}: {1}: {2}")]
    Stream(u32, Reason, &'static str),
}

/// A frame read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `flow_len` is what the frame counts against flow control: its whole payload, padding
    /// included (§6.1).
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
        flow_len: u32,
    },
    /// The first part of a header block; CONTINUATION frames follow unless `end_headers`.
    Headers {
        stream: u32,
        block: Bytes,
        end_stream: bool,
        end_headers: bool,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings(Settings),
    SettingsAck,
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        block: Bytes,
        end_headers: bool,
    },
    /// A type this implementation does not know: ignored (§5.5). Its stream is kept, for a
    /// connection that waits for a CONTINUATION (any other frame there is an error).
    Unknown {
        stream: u32,
    },
}

/// Takes the next whole frame off the front of `received`, if there is one; `max_frame_size`
/// is what our settings allow the peer.
pub fn read(received: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, Error> {
    let Some(head) = received.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let (kind, flags) = (head[3], head[4]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_WINDOW;
    if len > max_frame_size {
        return Err(Error::Connection(
            Reason::FRAME_SIZE_ERROR,
            "a frame larger than SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    let total = HEADER_LEN + len as usize;
    if received.len() < total {
        received.reserve(total - received.len());
        return Ok(None);
    }
    received.advance(HEADER_LEN);
    let payload = received.split_to(len as usize).freeze();
    parse(kind, flags, stream, payload).map(Some)
}

fn parse(kind: u8, flags: u8, stream: u32, payload: Bytes) -> Result<Frame, Error> {
    let connection = |reason, what| Err(Error::Connection(reason, what));
    let on_stream = matches!(
        kind,
        DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION
    );
    if on_stream && stream == 0 {
        return connection(Reason::PROTOCOL_ERROR, "a stream's frame on stream 0");
    }
    if matches!(kind, SETTINGS | PING | GOAWAY) && stream != 0 {
        return connection(Reason::PROTOCOL_ERROR, "a connection's frame on a stream");
    }
    let len = payload.len();
    Ok(match kind {
        DATA => {
            let data = unpad(flags, payload)?;
            Frame::Data {
                stream,
                data,
                end_stream: flags & END_STREAM != 0,
                flow_len: len as u32,
            }
        }
        HEADERS => {
            let mut block = unpad(flags, payload)?;
            if flags & PRIORITY_FLAG != 0 {
                if block.len() < 5 {
                    return connection(
                        Reason::FRAME_SIZE_ERROR,
                        "HEADERS too short for its priority",
                    );
                }
                let dependency = block.get_u32() & MAX_WINDOW;
                block.advance(1);
                if dependency == stream {
                    return Err(Error::Stream(
                        stream,
                        Reason::PROTOCOL_ERROR,
                        "a stream that depends on itself",
                    ));
                }
            }
            Frame::Headers {
                stream,
                block,
                end_stream: flags & END_STREAM != 0,
                end_headers: flags & END_HEADERS != 0,
            }
        }
        PRIORITY => {
            if len != 5 {
                return Err(Error::Stream(
                    stream,
                    Reason::FRAME_SIZE_ERROR,
                    "PRIORITY not 5 bytes",
                ));
            }
            let dependency =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if dependency == stream {
                return Err(Error::Stream(
                    stream,
                    Reason::PROTOCOL_ERROR,
                    "a stream that depends on itself",
                ));
            }
            Frame::Priority { stream }
        }
        RST_STREAM => {
            if len != 4 {
                return connection(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes");
            }
            Frame::RstStream {
                stream,
                reason: Reason(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ])),
            }
        }
        SETTINGS if flags & ACK != 0 => {
            if len != 0 {
                return connection(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS acknowledgement with a payload",
                );
            }
            Frame::SettingsAck
        }
        SETTINGS => {
            if !len.is_multiple_of(6) {
                return connection(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS not a multiple of 6 bytes",
                );
            }
            Frame::Settings(Settings::parse(&payload)?)
        }
        PUSH_PROMISE => Frame::PushPromise { stream },
        PING => {
            let payload: [u8; 8] = payload[..]
                .try_into()
                .map_err(|_| Error::Connection(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
            Frame::Ping {
                ack: flags & ACK != 0,
                payload,
            }
        }
        GOAWAY => {
            if len < 8 {
                return connection(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes");
            }
            Frame::GoAway {
                last_stream: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & MAX_WINDOW,
                reason: Reason(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ])),
            }
        }
        WINDOW_UPDATE => {
            if len != 4 {
                return connection(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes");
            }
            let increment =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if increment == 0 {
                let what = "a WINDOW_UPDATE of 0";
                return Err(match stream {
                    0 => Error::Connection(Reason::PROTOCOL_ERROR, what),
                    _ => Error::Stream(stream, Reason::PROTOCOL_ERROR, what),
                });
            }
            Frame::WindowUpdate { stream, increment }
        }
        CONTINUATION => Frame::Continuation {
            stream,
            block: payload,
            end_headers: flags & END_HEADERS != 0,
        },
        _ => Frame::Unknown { stream },
    })
}

/// A padded frame's content (§6.1): the pad length byte and the padding removed.
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, Error> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let too_much = Error::Connection(Reason::PROTOCOL_ERROR, "padding as long as the frame");
    let pad = usize::from(*payload.first().ok_or(too_much)?);
    if pad >= payload.len() {
        return Err(too_much);
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::write::write_head;
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<Result<Frame, Error>> {
        let mut received = BytesMut::from(bytes);
        let mut frames = Vec::new();
        loop {
            match read(&mut received, DEFAULT_MAX_FRAME_SIZE) {
                Ok(Some(frame)) => frames.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    frames.push(Err(e));
                    break;
                }
            }
        }
        frames
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut out = Vec::new();
        let settings = Settings {
            header_table_size: Some(0),
            enable_push: Some(false),
            max_concurrent_streams: Some(200),
            initial_window_size: Some(1 << 20),
            max_frame_size: Some(1 << 15),
            max_header_list_size: Some(16 << 10),
            enable_connect_protocol: Some(true),
        };
        write_settings(&mut out, &settings);
        write_settings_ack(&mut out);
        write_headers(&mut out, 1, false, DEFAULT_MAX_FRAME_SIZE, |block| {
            block.extend_from_slice(b"\x82\x84")
        });
        write_data(&mut out, 1, b"hello", true);
        write_ping(&mut out, true, *b"12345678");
        write_window_update(&mut out, 0, 1000);
        write_rst_stream(&mut out, 3, Reason::CANCEL);
        write_goaway(&mut out, 7, Reason::NO_ERROR);
        let frames: Vec<Frame> = read_all(&out).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            frames,
            [
                Frame::Settings(settings),
                Frame::SettingsAck,
                Frame::Headers {
                    stream: 1,
                    block: Bytes::from_static(b"\x82\x84"),
                    end_stream: false,
                    end_headers: true
                },
                Frame::Data {
                    stream: 1,
                    data: Bytes::from_static(b"hello"),
                    end_stream: true,
                    flow_len: 5
                },
                Frame::Ping {
                    ack: true,
                    payload: *b"12345678"
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 1000
                },
                Frame::RstStream {
                    stream: 3,
                    reason: Reason::CANCEL
                },
                Frame::GoAway {
                    last_stream: 7,
                    reason: Reason::NO_ERROR
                },
            ]
        );
    }

    #[test]
    fn a_large_block_goes_on_in_continuation_frames() {
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        write_headers(&mut out, 5, true, DEFAULT_MAX_FRAME_SIZE, |out| {
            out.extend_from_slice(&block)
        });
        let frames: Vec<Frame> = read_all(&out).into_iter().map(Result::unwrap).collect();
        assert_eq!(frames.len(), 3);
        let mut joined = Vec::new();
        for (at, frame) in frames.iter().enumerate() {
            match frame {
                Frame::Headers {
                    stream: 5,
                    block,
                    end_stream: true,
                    end_headers: false,
                } if at == 0 => joined.extend_from_slice(block),
                Frame::Continuation {
                    stream: 5,
                    block,
                    end_headers,
                } if at > 0 => {
                    assert_eq!(*end_headers, at == 2);
                    joined.extend_from_slice(block);
                }
                other => panic!("frame {at}: {other:?}"),
            }
        }
        assert_eq!(joined, block);
    }

    #[test]
    fn padding_and_priority_are_taken_off() {
        // DATA: pad length 3, "hi", three bytes of padding.
        let data = frame(DATA, PADDED | END_STREAM, 1, b"\x03hi\0\0\0");
        // HEADERS: pad length 1, priority (depends on 0, weight 16), block 0x82, padding.
        let headers = frame(
            HEADERS,
            PADDED | PRIORITY_FLAG | END_HEADERS,
            3,
            b"\x01\0\0\0\0\x10\x82\0",
        );
        let frames = read_all(&[data, headers].concat());
        assert_eq!(
            frames,
            [
                Ok(Frame::Data {
                    stream: 1,
                    data: Bytes::from_static(b"hi"),
                    end_stream: true,
                    flow_len: 6
                }),
                Ok(Frame::Headers {
                    stream: 3,
                    block: Bytes::from_static(b"\x82"),
                    end_stream: false,
                    end_headers: true
                })
            ]
        );
    }

    #[test]
    fn frames_that_break_the_rfc_are_errors_of_the_right_scope() {
        use Reason as R;
        // (stream, reason): stream 0 for the connection's errors.
        let cases = [
            (frame(DATA, 0, 0, b"x"), (0, R::PROTOCOL_ERROR)),
            (frame(SETTINGS, 0, 1, b""), (0, R::PROTOCOL_ERROR)),
            (frame(DATA, PADDED, 1, b"\x03ab"), (0, R::PROTOCOL_ERROR)),
            (frame(DATA, PADDED, 1, b""), (0, R::PROTOCOL_ERROR)),
            (frame(PING, 0, 0, b"1234567"), (0, R::FRAME_SIZE_ERROR)),
            (
                frame(SETTINGS, ACK, 0, b"\0\x01\0\0\0\0"),
                (0, R::FRAME_SIZE_ERROR),
            ),
            (
                frame(SETTINGS, 0, 0, b"\0\x01\0\0\0"),
                (0, R::FRAME_SIZE_ERROR),
            ),
            (
                frame(SETTINGS, 0, 0, b"\0\x02\0\0\0\x02"),
                (0, R::PROTOCOL_ERROR),
            ),
            (
                frame(SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"),
                (0, R::FLOW_CONTROL_ERROR),
            ),
            (
                frame(SETTINGS, 0, 0, b"\0\x05\0\0\x3f\xff"),
                (0, R::PROTOCOL_ERROR),
            ),
            (
                frame(SETTINGS, 0, 0, b"\0\x05\x01\0\0\0"),
                (0, R::PROTOCOL_ERROR),
            ),
            (frame(RST_STREAM, 0, 1, b"\0\0\0"), (0, R::FRAME_SIZE_ERROR)),
            (frame(PRIORITY, 0, 1, b"\0\0\0\0"), (1, R::FRAME_SIZE_ERROR)),
            (
                frame(PRIORITY, 0, 3, b"\0\0\0\x03\x10"),
                (3, R::PROTOCOL_ERROR),
            ),
            (
                frame(HEADERS, PRIORITY_FLAG, 5, b"\0\0\0\x05\x10"),
                (5, R::PROTOCOL_ERROR),
            ),
            (
                frame(HEADERS, PRIORITY_FLAG, 5, b"\0\0"),
                (0, R::FRAME_SIZE_ERROR),
            ),
            (
                frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
                (0, R::PROTOCOL_ERROR),
            ),
            (
                frame(WINDOW_UPDATE, 0, 7, b"\0\0\0\0"),
                (7, R::PROTOCOL_ERROR),
            ),
            (
                frame(WINDOW_UPDATE, 0, 7, b"\0\0\0\0\0"),
                (0, R::FRAME_SIZE_ERROR),
            ),
            (frame(GOAWAY, 0, 0, b"\0\0\0\0"), (0, R::FRAME_SIZE_ERROR)),
            (frame(DATA, 0, 1, &[0; 16_385]), (0, R::FRAME_SIZE_ERROR)),
        ];
        for (at, (bytes, expected)) in cases.iter().enumerate() {
            let scope = match read_all(bytes).pop() {
                Some(Err(Error::Connection(reason, _))) => (0, reason),
                Some(Err(Error::Stream(stream, reason, _))) => (stream, reason),
                other => panic!("case {at}: {other:?}"),
            };
            assert_eq!(scope, *expected, "case {at}");
        }
    }

    #[test]
    fn unknown_types_and_settings_are_ignored_and_partial_frames_wait() {
        let unknown = frame(0xfa, 0xff, 9, b"whatever");
        let settings = frame(SETTINGS, 0, 0, b"\x00\x99\0\0\0\x01\0\x03\0\0\0\x0a");
        let whole = [unknown, settings].concat();
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        // Byte by byte: nothing is read before a frame is whole.
        for &byte in &whole {
            received.extend_from_slice(&[byte]);
            while let Some(frame) = read(&mut received, DEFAULT_MAX_FRAME_SIZE).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            [
                Frame::Unknown { stream: 9 },
                Frame::Settings(Settings {
                    max_concurrent_streams: Some(10),
                    ..Settings::default()
                })
            ]
        );
        assert!(received.is_empty());
    }
}
