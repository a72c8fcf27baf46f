//! The server side driven by hand: by Wharf's own client connection back to back (bytes
//! moved between the two), and by frames the test writes where a client would break a rule.

use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};

use super::*;
use crate::wire::frame::Frame;
use crate::wire::hpack::Pseudo;

const CONFIG: Config = Config {
    stream_window: 1000,
    connection_window: 3000,
    max_header_list: 16 << 10,
    send_buffer: 1500,
    max_concurrent_streams: 2,
};

/// Moves bytes both ways until neither end has any to send.
fn pump(client: &mut Connection, server: &mut Connection) {
    for _ in 0..1000 {
        if client.out.is_empty() && server.out.is_empty() {
            return;
        }
        server.received.extend_from_slice(&client.out);
        client.out.clear();
        server.read_frames();
        client.received.extend_from_slice(&server.out);
        server.out.clear();
        client.read_frames();
        client.wake_tasks();
        server.wake_tasks();
    }
    panic!("the two ends never went quiet");
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn ready<T>(poll: Poll<T>) -> T {
    match poll {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("pending"),
    }
}

/// Reads stream `id`'s body whole, pumping as the windows need.
fn read_all(
    reader: &mut Connection,
    other: &mut Connection,
    id: u32,
    reader_is_server: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..10_000 {
        match reader.poll_data(id, &mut cx()) {
            Poll::Ready(Some(Ok(data))) => body.extend_from_slice(&data),
            Poll::Ready(None) => return body,
            Poll::Ready(Some(Err(e))) => panic!("{e}"),
            Poll::Pending => {
                if reader_is_server {
                    pump(other, reader);
                } else {
                    pump(reader, other);
                }
            }
        }
    }
    panic!("the body never ended");
}

#[test]
fn our_client_and_server_carry_a_request_and_its_answer_both_ways() {
    let mut client = Connection::new(CONFIG);
    let mut server = Connection::server(CONFIG);
    let head = Request::post("https://api/notes?x=1")
        .header("content-type", "text/plain")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let id = client.open(&head, false).unwrap();
    let upload: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    pump(&mut client, &mut server);
    let accepted = ready(server.poll_accept(&mut cx())).unwrap();
    assert_eq!(accepted, id);
    let request = server.take_request(id).unwrap();
    assert_eq!(request.method(), "POST");
    assert_eq!(request.uri(), "https://api/notes?x=1");
    assert_eq!(request.headers()["content-type"], "text/plain");
    assert_eq!(request.headers()["te"], "trailers");
    // The upload goes as the server's windows (1000 a stream, 3000 the connection) allow.
    let mut sent = 0;
    let mut received = Vec::new();
    while sent < upload.len() || !server.is_end(id) {
        if sent < upload.len() && client.poll_capacity(id, &mut cx()).is_ready() {
            let end = (sent + 700).min(upload.len());
            let last = end == upload.len();
            client
                .send_data(id, Bytes::copy_from_slice(&upload[sent..end]), last)
                .unwrap();
            sent = end;
        }
        pump(&mut client, &mut server);
        while let Poll::Ready(Some(Ok(data))) = server.poll_data(id, &mut cx()) {
            received.extend_from_slice(&data);
        }
        pump(&mut client, &mut server);
    }
    assert_eq!(received, upload);
    // The answer, a body larger than the client's windows, and trailers.
    let mut fields = HeaderMap::new();
    fields.insert("x-answer", HeaderValue::from_static("42"));
    server
        .send_response(id, StatusCode::CREATED, &fields, false)
        .unwrap();
    let download = vec![b'd'; 9_000];
    server
        .send_data(id, Bytes::from(download.clone()), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    server.send_trailers(id, trailers).unwrap();
    pump(&mut client, &mut server);
    let (status, head_fields) = ready(client.poll_response(id, &mut cx())).unwrap();
    assert_eq!(
        (status, &head_fields["x-answer"]),
        (StatusCode::CREATED, &HeaderValue::from_static("42"))
    );
    assert_eq!(read_all(&mut client, &mut server, id, false), download);
    assert_eq!(
        ready(client.poll_trailers(id, &mut cx())).unwrap().unwrap()["grpc-status"],
        "0"
    );
    client.release(id);
    server.release(id);
    pump(&mut client, &mut server);
    assert!(client.is_idle() && server.is_idle());
    assert!(client.failed().is_none() && server.failed().is_none());
}

/// The test's client: a preface, then frames it writes itself.
struct Raw {
    encoder: Encoder,
    bytes: Vec<u8>,
}

impl Raw {
    fn new() -> Raw {
        let mut bytes = frame::PREFACE.to_vec();
        frame::write_settings(&mut bytes, &Settings::default());
        Raw {
            encoder: Encoder::default(),
            bytes,
        }
    }

    fn headers(&mut self, id: u32, pseudo: &[(Pseudo, &str)], fields: &[(&str, &str)], end: bool) {
        let encoder = &mut self.encoder;
        frame::write_headers(&mut self.bytes, id, end, 1 << 14, |block| {
            encoder.begin(block);
            for (name, value) in pseudo {
                encoder.pseudo(*name, value.as_bytes(), block);
            }
            for (name, value) in fields {
                encoder.field(
                    &HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    &HeaderValue::from_str(value).unwrap(),
                    block,
                );
            }
        });
    }

    fn get(&mut self, id: u32) {
        self.headers(id, GET, &[], true);
    }

    /// Delivers what was written to `server`; the frames it answered with.
    fn deliver(&mut self, server: &mut Connection) -> Vec<Frame> {
        server.received.extend_from_slice(&self.bytes);
        self.bytes.clear();
        server.read_frames();
        let mut answer = BytesMut::from(&server.out[..]);
        server.out.clear();
        let mut frames = Vec::new();
        while let Some(frame) = frame::read(&mut answer, 1 << 20).unwrap() {
            if !matches!(
                frame,
                Frame::Settings(_) | Frame::SettingsAck | Frame::WindowUpdate { .. }
            ) {
                frames.push(frame);
            }
        }
        frames
    }
}

const GET: &[(Pseudo, &str)] = &[
    (Pseudo::Method, "GET"),
    (Pseudo::Scheme, "https"),
    (Pseudo::Authority, "api"),
    (Pseudo::Path, "/"),
];

#[test]
fn malformed_requests_are_reset_and_never_accepted() {
    // (pseudo-headers, fields)
    type Case = (
        &'static [(Pseudo, &'static str)],
        &'static [(&'static str, &'static str)],
    );
    let cases: [Case; 8] = [
        (&[(Pseudo::Method, "GET"), (Pseudo::Scheme, "https")], &[]),
        (&[(Pseudo::Scheme, "https"), (Pseudo::Path, "/")], &[]),
        (
            &[
                (Pseudo::Method, "GET"),
                (Pseudo::Method, "GET"),
                (Pseudo::Scheme, "https"),
                (Pseudo::Path, "/"),
            ],
            &[],
        ),
        (
            &[
                (Pseudo::Method, "GET"),
                (Pseudo::Scheme, "https"),
                (Pseudo::Path, "/"),
                (Pseudo::Status, "200"),
            ],
            &[],
        ),
        (
            &[
                (Pseudo::Method, "GET"),
                (Pseudo::Scheme, "https"),
                (Pseudo::Path, ""),
            ],
            &[],
        ),
        (GET, &[("connection", "keep-alive")]),
        (GET, &[("te", "gzip")]),
        (
            &[
                (Pseudo::Method, "CONNECT"),
                (Pseudo::Authority, "db:5432"),
                (Pseudo::Path, "/"),
            ],
            &[],
        ),
    ];
    for (at, (pseudo, fields)) in cases.iter().enumerate() {
        let mut server = Connection::server(CONFIG);
        let mut raw = Raw::new();
        raw.headers(1, pseudo, fields, true);
        let frames = raw.deliver(&mut server);
        assert_eq!(
            frames,
            [Frame::RstStream {
                stream: 1,
                reason: Reason::PROTOCOL_ERROR
            }],
            "case {at}"
        );
        assert!(server.poll_accept(&mut cx()).is_pending(), "case {at}");
        assert!(server.failed().is_none(), "case {at}");
    }
    // CONNECT with an authority alone is a request.
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    raw.headers(
        1,
        &[(Pseudo::Method, "CONNECT"), (Pseudo::Authority, "db:5432")],
        &[],
        false,
    );
    assert!(raw.deliver(&mut server).is_empty());
    let id = ready(server.poll_accept(&mut cx())).unwrap();
    assert_eq!(server.take_request(id).unwrap().uri(), "db:5432");
}

#[test]
fn streams_beyond_our_limit_are_refused() {
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    for id in [1, 3, 5] {
        raw.get(id);
    }
    assert_eq!(
        raw.deliver(&mut server),
        [Frame::RstStream {
            stream: 5,
            reason: Reason::REFUSED_STREAM
        }]
    );
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(1));
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(3));
    // One answered: room for another.
    server
        .send_response(1, StatusCode::OK, &HeaderMap::new(), true)
        .unwrap();
    raw.get(7);
    let frames = raw.deliver(&mut server);
    assert!(
        matches!(
            frames[..],
            [Frame::Headers {
                stream: 1,
                end_stream: true,
                ..
            }]
        ),
        "{frames:?}"
    );
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(7));
}

#[test]
fn what_is_not_http2_or_breaks_the_id_rules_ends_the_connection() {
    // A preface in pieces is waited for; anything else is refused at once.
    let mut server = Connection::server(CONFIG);
    server.received.extend_from_slice(&frame::PREFACE[..10]);
    server.read_frames();
    assert!(server.failed().is_none());
    server.received.extend_from_slice(b"GET / HTTP/1.1\r\n");
    server.read_frames();
    assert!(server.failed().unwrap().contains("preface"));
    for id in [2, 3] {
        let mut server = Connection::server(CONFIG);
        let mut raw = Raw::new();
        if id == 3 {
            // Stream ids only rise: 3 after 5.
            raw.get(5);
        }
        raw.get(id);
        let frames = raw.deliver(&mut server);
        let last = frames.last().cloned();
        if id == 2 {
            assert!(
                matches!(
                    last,
                    Some(Frame::GoAway {
                        reason: Reason::PROTOCOL_ERROR,
                        ..
                    })
                ),
                "{frames:?}"
            );
        } else {
            // 3 is below the highest opened: taken as a closed stream's late frame, ignored.
            assert!(server.failed().is_none());
            assert_eq!(ready(server.poll_accept(&mut cx())), Some(5));
            assert!(server.poll_accept(&mut cx()).is_pending());
        }
    }
}

#[test]
fn a_server_that_stops_finishes_what_it_took_and_no_more() {
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    raw.get(1);
    let _ = raw.deliver(&mut server);
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(1));
    server.shut_down();
    raw.get(3);
    let frames = raw.deliver(&mut server);
    assert_eq!(
        frames,
        [Frame::GoAway {
            last_stream: 1,
            reason: Reason::NO_ERROR
        }]
    );
    assert_eq!(
        ready(server.poll_accept(&mut cx())),
        None,
        "3 is not processed"
    );
    server
        .send_response(1, StatusCode::OK, &HeaderMap::new(), true)
        .unwrap();
    server.release(1);
    assert!(server.is_closing() && server.is_idle());
}

#[test]
fn a_rapid_reset_flood_is_told_to_calm_down() {
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    let mut id = 1;
    for _ in 0..150 {
        raw.get(id);
        frame::write_rst_stream(&mut raw.bytes, id, Reason::CANCEL);
        id += 2;
    }
    let frames = raw.deliver(&mut server);
    assert!(
        matches!(
            frames.last(),
            Some(Frame::GoAway {
                reason: Reason::ENHANCE_YOUR_CALM,
                ..
            })
        ),
        "{frames:?}"
    );
    // Fewer resets than that, among answered streams, are a client's right.
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    for id in (1..200).step_by(2) {
        raw.get(id);
        let _ = raw.deliver(&mut server);
        let accepted = ready(server.poll_accept(&mut cx())).unwrap();
        server
            .send_response(accepted, StatusCode::OK, &HeaderMap::new(), true)
            .unwrap();
        server.release(accepted);
        frame::write_rst_stream(&mut raw.bytes, id, Reason::CANCEL);
    }
    let _ = raw.deliver(&mut server);
    assert!(server.failed().is_none());
}

#[test]
fn a_request_body_unlike_its_content_length_is_reset() {
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    let post = [
        (Pseudo::Method, "POST"),
        (Pseudo::Scheme, "https"),
        (Pseudo::Path, "/"),
    ];
    raw.headers(1, &post, &[("content-length", "3")], false);
    frame::write_data(&mut raw.bytes, 1, b"four", true);
    let frames = raw.deliver(&mut server);
    assert_eq!(
        frames,
        [Frame::RstStream {
            stream: 1,
            reason: Reason::PROTOCOL_ERROR
        }]
    );
    let id = ready(server.poll_accept(&mut cx())).unwrap();
    // No :authority: the request's URI is its path.
    assert_eq!(server.take_request(id).unwrap().uri(), "/");
    assert!(matches!(
        ready(server.poll_data(id, &mut cx())),
        Some(Ok(_))
    ));
    assert!(matches!(
        ready(server.poll_data(id, &mut cx())),
        Some(Err(StreamError::Malformed(_)))
    ));
}

#[test]
fn a_header_list_over_our_limit_is_answered_431() {
    let mut server = Connection::server(CONFIG);
    let mut raw = Raw::new();
    let big = "b".repeat(20 << 10);
    raw.headers(1, GET, &[("x-big", &big)], false);
    let frames = raw.deliver(&mut server);
    let [
        Frame::Headers {
            stream: 1,
            block,
            end_stream: true,
            end_headers: true,
        },
        Frame::RstStream {
            stream: 1,
            reason: Reason::NO_ERROR,
        },
    ] = &frames[..]
    else {
        panic!("{frames:?}");
    };
    let mut status = None;
    crate::wire::hpack::Decoder::default()
        .decode(block, |field| {
            if let Ok(field) = field
                && field.name == crate::wire::hpack::Name::Pseudo(Pseudo::Status)
            {
                status = Some(field.value);
            }
        })
        .unwrap();
    assert_eq!(status.unwrap(), "431");
    assert!(server.poll_accept(&mut cx()).is_pending());
    // The body the client had already sent is counted and dropped; the connection goes on.
    frame::write_data(&mut raw.bytes, 1, &[0; 500], true);
    raw.get(3);
    assert!(raw.deliver(&mut server).is_empty());
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(3));
    assert!(server.failed().is_none());
}

#[test]
fn an_answer_let_go_of_before_the_window_allowed_it_still_goes_out_whole() {
    let mut client = Connection::new(CONFIG);
    let mut server = Connection::server(CONFIG);
    // A GET, and a POST whose body the server does not wait for.
    let get = client
        .open(&Request::get("https://api/").body(()).unwrap(), true)
        .unwrap();
    let post = client
        .open(&Request::post("https://api/").body(()).unwrap(), false)
        .unwrap();
    client
        .send_data(post, Bytes::from_static(b"part of a body"), false)
        .unwrap();
    pump(&mut client, &mut server);
    let answer: Vec<u8> = (0..5_000u32).map(|i| i as u8).collect();
    for id in [get, post] {
        assert_eq!(ready(server.poll_accept(&mut cx())), Some(id));
        server
            .send_response(id, StatusCode::OK, &HeaderMap::new(), false)
            .unwrap();
        // Five times the client's stream window (1000), queued whole, then let go of.
        server
            .send_data(id, Bytes::from(answer.clone()), true)
            .unwrap();
        server.release(id);
    }
    pump(&mut client, &mut server);
    for id in [get, post] {
        assert_eq!(ready(client.poll_response(id, &mut cx())).unwrap().0, 200);
        assert_eq!(read_all(&mut client, &mut server, id, false), answer);
    }
    pump(&mut client, &mut server);
    // The POST's body was not wanted: the server said so once its answer was out.
    let more = client.send_data(post, Bytes::from_static(b"more"), true);
    assert!(more.is_err(), "{more:?}");
    assert!(server.is_idle(), "the server forgot both streams");
    client.release(get);
    client.release(post);
    assert!(client.is_idle());
    assert!(client.failed().is_none() && server.failed().is_none());
}

#[test]
fn a_request_body_that_ends_after_its_answer_was_let_go_of_costs_the_answer_nothing() {
    let mut client = Connection::new(CONFIG);
    let mut server = Connection::server(CONFIG);
    let head = Request::post("https://api/")
        .header("content-length", "20")
        .body(())
        .unwrap();
    let id = client.open(&head, false).unwrap();
    client
        .send_data(id, Bytes::from_static(b"first fourteen"), false)
        .unwrap();
    pump(&mut client, &mut server);
    assert_eq!(ready(server.poll_accept(&mut cx())), Some(id));
    server
        .send_response(id, StatusCode::OK, &HeaderMap::new(), false)
        .unwrap();
    let answer = vec![b'a'; 5_000];
    server
        .send_data(id, Bytes::from(answer.clone()), true)
        .unwrap();
    server.release(id);
    // The rest of the body, dropped by the server uncounted: not a length mismatch.
    client
        .send_data(id, Bytes::from_static(b"last 6"), true)
        .unwrap();
    pump(&mut client, &mut server);
    assert_eq!(ready(client.poll_response(id, &mut cx())).unwrap().0, 200);
    assert_eq!(read_all(&mut client, &mut server, id, false), answer);
    pump(&mut client, &mut server);
    assert!(server.is_idle());
    assert!(client.failed().is_none() && server.failed().is_none());
}
