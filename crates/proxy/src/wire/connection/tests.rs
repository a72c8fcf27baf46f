//! The client driven by hand: the test plays the server with the same frame writers and
//! HPACK coder, and reads what the client sent from its `out`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};

use super::*;
use crate::wire::frame::Frame;
use crate::wire::hpack::{Field, Name};

const CONFIG: Config = Config {
    stream_window: 1000,
    connection_window: 100_000,
    max_header_list: 16 << 10,
    send_buffer: 64,
    max_concurrent_streams: 2,
};

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (counter.clone(), Waker::from(counter))
}

fn woken(counter: &Counter) -> usize {
    counter.0.load(Ordering::SeqCst)
}

/// The server's end: what it reads from the client, what it writes to it.
struct Server {
    from_client: BytesMut,
    encoder: Encoder,
    decoder: Decoder,
    preface_read: bool,
}

impl Server {
    fn new() -> Server {
        Server {
            from_client: BytesMut::new(),
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            preface_read: false,
        }
    }

    /// The frames the client wrote since last asked.
    fn frames(&mut self, client: &mut Connection) -> Vec<Frame> {
        self.from_client.extend_from_slice(&client.out);
        client.out.clear();
        if !self.preface_read {
            assert!(self.from_client.starts_with(frame::PREFACE));
            let _ = self.from_client.split_to(frame::PREFACE.len());
            self.preface_read = true;
        }
        let mut frames = Vec::new();
        while let Some(frame) = frame::read(&mut self.from_client, 1 << 20).unwrap() {
            frames.push(frame);
        }
        frames
    }

    /// The fields of a header block the client sent, as "name: value".
    fn fields(&mut self, block: &Bytes) -> Vec<String> {
        let mut lines = Vec::new();
        self.decoder
            .decode(block, |field| {
                let Field { name, value } = field.unwrap();
                let name = match name {
                    Name::Pseudo(pseudo) => pseudo.as_str().to_owned(),
                    Name::Field(name) => name.to_string(),
                };
                lines.push(format!("{name}: {}", value.to_str().unwrap()));
            })
            .unwrap();
        lines
    }

    fn block(&mut self, status: Option<u16>, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        self.encoder.begin(&mut block);
        if let Some(status) = status {
            self.encoder
                .status(StatusCode::from_u16(status).unwrap(), &mut block);
        }
        for (name, value) in fields {
            self.encoder.field(
                &HeaderName::from_bytes(name.as_bytes()).unwrap(),
                &HeaderValue::from_str(value).unwrap(),
                &mut block,
            );
        }
        block
    }

    fn respond(
        &mut self,
        client: &mut Connection,
        stream: u32,
        status: u16,
        fields: &[(&str, &str)],
        end: bool,
    ) {
        let block = self.block(Some(status), fields);
        let mut out = Vec::new();
        frame::write_headers(&mut out, stream, end, 1 << 14, |b| {
            b.extend_from_slice(&block)
        });
        deliver(client, &out);
    }
}

/// Bytes from the server, read; the tasks they concern woken, as the driver would.
fn deliver(client: &mut Connection, bytes: &[u8]) {
    client.received.extend_from_slice(bytes);
    client.read_frames();
    client.wake_tasks();
}

fn written(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out);
    out
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("https://api{path}")).body(()).unwrap()
}

fn ready<T>(poll: Poll<T>) -> T {
    match poll {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("pending"),
    }
}

#[test]
fn a_request_is_answered_with_head_body_and_end() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let id = client.open(&get("/notes?page=2"), true).unwrap();
    assert_eq!(id, 1);
    let frames = server.frames(&mut client);
    let [
        Frame::Settings(settings),
        Frame::WindowUpdate {
            stream: 0,
            increment,
        },
        Frame::Headers {
            stream: 1,
            block,
            end_stream: true,
            end_headers: true,
        },
    ] = &frames[..]
    else {
        panic!("{frames:?}");
    };
    assert_eq!(settings.enable_push, Some(false));
    assert_eq!(settings.initial_window_size, Some(1000));
    assert_eq!(*increment, 100_000 - 65_535);
    assert_eq!(
        server.fields(block),
        [
            ":method: GET",
            ":scheme: https",
            ":authority: api",
            ":path: /notes?page=2"
        ]
    );
    deliver(
        &mut client,
        &written(|o| frame::write_settings(o, &Settings::default())),
    );
    assert!(matches!(client.poll_response(id, &mut cx), Poll::Pending));
    server.respond(
        &mut client,
        1,
        200,
        &[("content-length", "5"), ("x-answer", "42")],
        false,
    );
    deliver(
        &mut client,
        &written(|o| frame::write_data(o, 1, b"hello", true)),
    );
    let (status, fields) = ready(client.poll_response(id, &mut cx)).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fields["x-answer"], "42");
    assert_eq!(
        ready(client.poll_data(id, &mut cx)).unwrap().unwrap(),
        "hello"
    );
    assert!(ready(client.poll_data(id, &mut cx)).is_none());
    assert_eq!(ready(client.poll_trailers(id, &mut cx)).unwrap(), None);
    assert!(client.is_end(id));
    // The server's settings were acknowledged; nothing is reset when the stream is let go.
    client.release(id);
    assert_eq!(server.frames(&mut client), [Frame::SettingsAck]);
    assert!(client.is_idle() && client.failed().is_none());
}

#[test]
fn the_peers_stream_limit_holds_new_streams_until_one_ends() {
    let (counter, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let limit = Settings {
        max_concurrent_streams: Some(1),
        ..Settings::default()
    };
    deliver(&mut client, &written(|o| frame::write_settings(o, &limit)));
    assert!(ready(client.poll_ready(&mut cx)).is_ok());
    let first = client.open(&get("/"), true).unwrap();
    assert!(client.poll_ready(&mut cx).is_pending());
    assert_eq!(client.open(&get("/"), true), Err(StreamError::Refused));
    server.respond(&mut client, first, 204, &[], true);
    assert_eq!(woken(&counter), 1, "the waiting task is woken");
    assert!(ready(client.poll_ready(&mut cx)).is_ok());
    assert_eq!(client.open(&get("/"), true), Ok(3));
}

#[test]
fn a_body_goes_out_as_the_windows_allow() {
    let (counter, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let small = Settings {
        initial_window_size: Some(10),
        ..Settings::default()
    };
    deliver(&mut client, &written(|o| frame::write_settings(o, &small)));
    let id = client
        .open(
            &Request::post("https://api/upload").body(()).unwrap(),
            false,
        )
        .unwrap();
    client
        .send_data(id, Bytes::from_static(b"0123456789abcdefghij"), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    client.send_trailers(id, trailers).unwrap();
    let data = |frames: &[Frame]| -> Vec<(Bytes, bool)> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    data, end_stream, ..
                } => Some((data.clone(), *end_stream)),
                _ => None,
            })
            .collect()
    };
    let frames = server.frames(&mut client);
    assert_eq!(data(&frames), [(Bytes::from_static(b"0123456789"), false)]);
    // The queue is over the send buffer? No: 10 bytes wait, under 64.
    assert!(
        ready(client.poll_capacity(id, &mut cx)).is_err(),
        "the body has ended"
    );
    deliver(
        &mut client,
        &written(|o| frame::write_window_update(o, id, 100)),
    );
    let frames = server.frames(&mut client);
    assert_eq!(data(&frames), [(Bytes::from_static(b"abcdefghij"), false)]);
    let Some(Frame::Headers {
        block,
        end_stream: true,
        ..
    }) = frames.last()
    else {
        panic!("{frames:?}");
    };
    assert_eq!(server.fields(block), ["grpc-status: 0"]);
    assert!(!client.is_closing() && woken(&counter) == 0);
}

#[test]
fn a_full_send_buffer_makes_the_body_wait() {
    let (counter, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let none = Settings {
        initial_window_size: Some(0),
        ..Settings::default()
    };
    deliver(&mut client, &written(|o| frame::write_settings(o, &none)));
    let id = client.open(&get("/"), false).unwrap();
    client
        .send_data(id, Bytes::from(vec![b'x'; 100]), false)
        .unwrap();
    assert!(client.poll_capacity(id, &mut cx).is_pending());
    let _ = server.frames(&mut client);
    deliver(
        &mut client,
        &written(|o| frame::write_window_update(o, id, 60)),
    );
    assert_eq!(woken(&counter), 1);
    assert!(ready(client.poll_capacity(id, &mut cx)).is_ok());
}

#[test]
fn what_is_read_is_given_back_half_a_window_at_a_time() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let id = client.open(&get("/"), true).unwrap();
    let _ = server.frames(&mut client);
    server.respond(&mut client, id, 200, &[], false);
    deliver(
        &mut client,
        &written(|o| frame::write_data(o, id, &[b'a'; 400], false)),
    );
    let _ = ready(client.poll_response(id, &mut cx)).unwrap();
    let _ = ready(client.poll_data(id, &mut cx));
    assert!(
        server.frames(&mut client).is_empty(),
        "under half the window"
    );
    deliver(
        &mut client,
        &written(|o| frame::write_data(o, id, &[b'b'; 200], false)),
    );
    let _ = ready(client.poll_data(id, &mut cx));
    assert_eq!(
        server.frames(&mut client),
        [Frame::WindowUpdate {
            stream: id,
            increment: 600
        }]
    );
    // More than the stream's window is the peer's error, on that stream only.
    deliver(
        &mut client,
        &written(|o| frame::write_data(o, id, &[b'c'; 1001], false)),
    );
    let frames = server.frames(&mut client);
    assert_eq!(
        frames,
        [Frame::RstStream {
            stream: id,
            reason: Reason::FLOW_CONTROL_ERROR
        }]
    );
    assert!(client.failed().is_none());
}

#[test]
fn goaway_refuses_the_streams_the_peer_did_not_process() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let first = client.open(&get("/"), true).unwrap();
    let second = client.open(&get("/"), true).unwrap();
    deliver(
        &mut client,
        &written(|o| frame::write_goaway(o, first, Reason::NO_ERROR)),
    );
    assert_eq!(
        ready(client.poll_response(second, &mut cx)),
        Err(StreamError::Refused)
    );
    assert!(client.poll_response(first, &mut cx).is_pending());
    assert_eq!(ready(client.poll_ready(&mut cx)), Err(StreamError::Refused));
    let mut server = Server::new();
    let _ = server.frames(&mut client);
    server.respond(&mut client, first, 200, &[], true);
    assert_eq!(ready(client.poll_response(first, &mut cx)).unwrap().0, 200);
    client.release(first);
    client.release(second);
    assert!(client.is_closing() && client.is_idle());
}

#[test]
fn a_malformed_answer_resets_its_stream_only() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    // (fields, status, body)
    type Case = (
        &'static [(&'static str, &'static str)],
        Option<u16>,
        &'static [u8],
    );
    let cases: [Case; 4] = [
        (&[("connection", "close")], Some(200), b""),
        (&[], None, b""),
        (&[("content-length", "3")], Some(200), b"four"),
        (&[("content-length", "x")], Some(200), b""),
    ];
    for (fields, status, body) in cases {
        let id = client.open(&get("/"), true).unwrap();
        let _ = server.frames(&mut client);
        let block = server.block(status, fields);
        let mut out = Vec::new();
        frame::write_headers(&mut out, id, body.is_empty(), 1 << 14, |b| {
            b.extend_from_slice(&block)
        });
        if !body.is_empty() {
            frame::write_data(&mut out, id, body, true);
        }
        deliver(&mut client, &out);
        let error = match client.poll_response(id, &mut cx) {
            Poll::Ready(Err(error)) => error,
            Poll::Ready(Ok(_)) => ready(client.poll_data(id, &mut cx))
                .and_then(|d| d.err())
                .or_else(|| ready(client.poll_data(id, &mut cx)).and_then(|d| d.err()))
                .expect("the body fails"),
            Poll::Pending => panic!("{fields:?}: pending"),
        };
        assert!(
            matches!(error, StreamError::Malformed(_)),
            "{fields:?}: {error:?}"
        );
        assert_eq!(
            server.frames(&mut client),
            [Frame::RstStream {
                stream: id,
                reason: Reason::PROTOCOL_ERROR
            }],
            "{fields:?}"
        );
        client.release(id);
        assert!(client.failed().is_none());
    }
}

#[test]
fn a_head_split_into_continuations_is_read_whole() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let id = client.open(&get("/"), true).unwrap();
    let _ = server.frames(&mut client);
    let long = "v".repeat(40_000);
    let block = server.block(Some(200), &[("x-long", &long)]);
    let out =
        written(|o| frame::write_headers(o, id, true, 1 << 14, |b| b.extend_from_slice(&block)));
    // Split across deliveries, mid-frame.
    deliver(&mut client, &out[..20_000]);
    assert!(client.poll_response(id, &mut cx).is_pending());
    deliver(&mut client, &out[20_000..]);
    // Over 16 KiB of fields: refused as malformed, the connection unharmed.
    assert!(matches!(
        ready(client.poll_response(id, &mut cx)),
        Err(StreamError::Malformed(_))
    ));
    assert!(client.failed().is_none());
    // A frame between HEADERS and its CONTINUATION is the connection's error.
    let id = client.open(&get("/"), true).unwrap();
    let out =
        written(|o| frame::write_headers(o, id, true, 1 << 14, |b| b.extend_from_slice(&block)));
    let mut broken = out[..frame::HEADER_LEN + (1 << 14)].to_vec();
    frame::write_ping(&mut broken, false, [0; 8]);
    deliver(&mut client, &broken);
    assert!(client.failed().unwrap().contains("PROTOCOL_ERROR"));
    assert!(matches!(
        ready(client.poll_response(id, &mut cx)),
        Err(StreamError::Connection(_))
    ));
    let frames = server.frames(&mut client);
    assert!(matches!(
        frames.last(),
        Some(Frame::GoAway {
            reason: Reason::PROTOCOL_ERROR,
            ..
        })
    ));
}

#[test]
fn informational_answers_are_skipped_and_trailers_read() {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let id = client.open(&get("/"), true).unwrap();
    let _ = server.frames(&mut client);
    server.respond(&mut client, id, 100, &[], false);
    assert!(client.poll_response(id, &mut cx).is_pending());
    server.respond(
        &mut client,
        id,
        200,
        &[("content-type", "application/grpc")],
        false,
    );
    deliver(
        &mut client,
        &written(|o| frame::write_data(o, id, b"msg", false)),
    );
    let trailers = server.block(None, &[("grpc-status", "0")]);
    deliver(
        &mut client,
        &written(|o| {
            frame::write_headers(o, id, true, 1 << 14, |b| b.extend_from_slice(&trailers))
        }),
    );
    assert_eq!(ready(client.poll_response(id, &mut cx)).unwrap().0, 200);
    assert_eq!(
        ready(client.poll_data(id, &mut cx)).unwrap().unwrap(),
        "msg"
    );
    assert!(ready(client.poll_data(id, &mut cx)).is_none());
    assert!(!client.is_end(id), "the trailers are still to be read");
    let trailers = ready(client.poll_trailers(id, &mut cx)).unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(client.is_end(id));
}

#[test]
fn a_stream_let_go_early_is_cancelled_and_its_late_data_still_counted() {
    let mut client = Connection::new(CONFIG);
    let mut server = Server::new();
    let id = client.open(&get("/"), true).unwrap();
    let _ = server.frames(&mut client);
    server.respond(&mut client, id, 200, &[], false);
    client.release(id);
    assert_eq!(
        server.frames(&mut client),
        [Frame::RstStream {
            stream: id,
            reason: Reason::CANCEL
        }]
    );
    // Data in flight for it: no error, and the connection's window comes back.
    for _ in 0..60 {
        deliver(
            &mut client,
            &written(|o| frame::write_data(o, id, &[0; 1000], false)),
        );
    }
    assert!(client.failed().is_none());
    let frames = server.frames(&mut client);
    assert_eq!(
        frames,
        [Frame::WindowUpdate {
            stream: 0,
            increment: 50_000
        }]
    );
    // A ping is answered.
    deliver(
        &mut client,
        &written(|o| frame::write_ping(o, false, *b"pingpong")),
    );
    assert_eq!(
        server.frames(&mut client),
        [Frame::Ping {
            ack: true,
            payload: *b"pingpong"
        }]
    );
}

#[test]
fn frames_on_streams_we_did_not_open_end_the_connection() {
    for bytes in [
        written(|o| frame::write_data(o, 2, b"x", false)),
        written(|o| frame::write_data(o, 9, b"x", false)),
        written(|o| frame::write_rst_stream(o, 7, Reason::CANCEL)),
        written(|o| {
            frame::write_settings(
                o,
                &Settings {
                    enable_push: Some(true),
                    ..Settings::default()
                },
            )
        }),
    ] {
        let mut client = Connection::new(CONFIG);
        client.open(&get("/"), true).unwrap();
        deliver(&mut client, &bytes);
        assert!(client.failed().is_some(), "{bytes:?}");
        assert!(client.is_closing());
    }
}

#[test]
fn a_failed_connection_fails_its_streams_and_lets_them_go() {
    let (counter, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut client = Connection::new(CONFIG);
    let done = client.open(&get("/"), true).unwrap();
    let waiting = client.open(&get("/"), false).unwrap();
    let mut server = Server::new();
    let _ = server.frames(&mut client);
    server.respond(&mut client, done, 200, &[], true);
    assert!(client.poll_response(waiting, &mut cx).is_pending());
    client.fail("the peer closed the connection".into());
    client.wake_tasks();
    assert_eq!(woken(&counter), 1, "the waiting task is woken");
    let error = StreamError::Connection("the peer closed the connection".into());
    assert_eq!(
        ready(client.poll_response(waiting, &mut cx)),
        Err(error.clone())
    );
    assert_eq!(client.send_data(waiting, Bytes::new(), true), Err(error));
    // The answer that came whole is still read whole.
    assert_eq!(ready(client.poll_response(done, &mut cx)).unwrap().0, 200);
    assert!(ready(client.poll_data(done, &mut cx)).is_none());
    assert_eq!(ready(client.poll_ready(&mut cx)), Err(StreamError::Refused));
    client.release(done);
    client.release(waiting);
    assert!(client.is_idle() && client.is_closing());
    assert!(
        server.frames(&mut client).is_empty(),
        "nothing more is sent"
    );
}
