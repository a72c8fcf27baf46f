//! Any bytes as what an HTTP/2 peer sends (`wharf_proxy::wire`): as frames, read until the
//! bytes end or a frame is refused; as HPACK header blocks on one connection's decoder; as
//! Huffman-coded strings; as what a server sends to the client connection of a sidecar with
//! three streams open, each then read to its end and let go; as what a client sends to a
//! server connection (after the preface), each request taken, read, answered and let go. Nothing panics; a decoded field sent again by Wharf's encoder
//! decodes to the same field (a regular one never indexed if it was); a Huffman string decoded and coded again decodes the same.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use wharf_proxy::wire::connection;
use wharf_proxy::wire::frame::{self, Frame};
use wharf_proxy::wire::hpack::{huffman, Decoder, Encoder, Field, Name};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => frames(rest),
        3 => client(rest),
        4 => server(rest),
        1 => {
            let mut decoder = Decoder::default();
            for block in rest.split(|&b| b == 0xfe) {
                if !blocks_round_trip(&mut decoder, &Bytes::copy_from_slice(block)) {
                    break;
                }
            }
        }
        _ => {
            // 2: Huffman.
            let mut decoded = Vec::new();
            if huffman::decode(rest, &mut decoded).is_ok() {
                let mut again = Vec::new();
                huffman::encode(&decoded, &mut again);
                assert_eq!(again.len(), huffman::encoded_len(&decoded));
                let mut twice = Vec::new();
                huffman::decode(&again, &mut twice).expect("our own coding decodes");
                assert_eq!(twice, decoded);
            }
            let mut coded = Vec::new();
            huffman::encode(rest, &mut coded);
            let mut back = Vec::new();
            huffman::decode(&coded, &mut back).expect("our own coding decodes");
            assert_eq!(back, rest);
        }
    }
});

fn client(bytes: &[u8]) {
    use std::task::{Context, Poll, Waker};
    let config = connection::Config {
        stream_window: 1000,
        connection_window: 3000,
        max_header_list: 16 << 10,
        send_buffer: 100,
        max_concurrent_streams: 0,
    };
    let mut connection = connection::Connection::new(config);
    let head = http::Request::post("https://api/").body(()).unwrap();
    let ids: Vec<u32> = (0..3)
        .filter_map(|_| connection.open(&head, false).ok())
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    // The server's bytes in two halves, the streams' tasks acting between them.
    let half = bytes.len() / 2;
    for part in [&bytes[..half], &bytes[half..]] {
        connection.received.extend_from_slice(part);
        connection.read_frames();
        for &id in &ids {
            let _ = connection.send_data(id, Bytes::from_static(&[7; 150]), false);
            let _ = connection.poll_capacity(id, &mut cx);
            let _ = connection.poll_response(id, &mut cx);
            while let Poll::Ready(Some(Ok(_))) = connection.poll_data(id, &mut cx) {}
            let _ = connection.poll_trailers(id, &mut cx);
            let _ = connection.is_end(id);
        }
        let _ = connection.poll_ready(&mut cx);
        connection.wake_tasks();
    }
    for id in ids {
        connection.release(id);
    }
    assert!(connection.is_idle(), "every stream let go is forgotten");
}

fn server(bytes: &[u8]) {
    use std::task::{Context, Poll, Waker};
    let config = connection::Config {
        stream_window: 1000,
        connection_window: 3000,
        max_header_list: 16 << 10,
        send_buffer: 100,
        max_concurrent_streams: 4,
    };
    let mut connection = connection::Connection::server(config);
    let mut cx = Context::from_waker(Waker::noop());
    connection.received.extend_from_slice(frame::PREFACE);
    let half = bytes.len() / 2;
    let mut taken = Vec::new();
    for part in [&bytes[..half], &bytes[half..]] {
        connection.received.extend_from_slice(part);
        connection.read_frames();
        while let Poll::Ready(Some(id)) = connection.poll_accept(&mut cx) {
            let _ = connection.take_request(id);
            taken.push(id);
        }
        for &id in &taken {
            while let Poll::Ready(Some(Ok(_))) = connection.poll_data(id, &mut cx) {}
            let _ = connection.poll_trailers(id, &mut cx);
            let fields = http::HeaderMap::new();
            if connection.send_response(id, http::StatusCode::OK, &fields, false).is_ok() {
                let _ = connection.send_data(id, Bytes::from_static(&[7; 150]), true);
            }
            let _ = connection.poll_capacity(id, &mut cx);
        }
        connection.wake_tasks();
    }
    connection.shut_down();
    // Let go of: an answer the peer's window holds back stays until it has gone out.
    for id in taken {
        connection.release(id);
    }
}

fn frames(bytes: &[u8]) {
    let mut received = BytesMut::from(bytes);
    let mut decoder = Decoder::default();
    loop {
        let before = received.len();
        match frame::read(&mut received, frame::DEFAULT_MAX_FRAME_SIZE) {
            Ok(Some(Frame::Headers { block, .. } | Frame::Continuation { block, .. })) => {
                if !blocks_round_trip(&mut decoder, &block) {
                    return;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
        assert!(received.len() < before, "a frame read takes bytes");
    }
}

/// Decodes `block`; each valid field is encoded again and must decode the same. False when
/// the block is refused (the connection would end).
fn blocks_round_trip(decoder: &mut Decoder, block: &Bytes) -> bool {
    let mut fields: Vec<Field> = Vec::new();
    if decoder.decode(block, |field| fields.extend(field.ok())).is_err() {
        return false;
    }
    let mut encoder = Encoder::default();
    let mut out = Vec::new();
    encoder.begin(&mut out);
    for field in &fields {
        match &field.name {
            Name::Pseudo(wharf_proxy::wire::hpack::Pseudo::Status) => {
                match http::StatusCode::from_bytes(field.value.as_bytes()) {
                    Ok(status) => encoder.status(status, &mut out),
                    Err(_) => return true,
                }
            }
            Name::Pseudo(pseudo) => encoder.pseudo(*pseudo, field.value.as_bytes(), &mut out),
            Name::Field(name) => encoder.field(name, &field.value, &mut out),
        }
    }
    let mut again = Vec::new();
    Decoder::default()
        .decode(&Bytes::from(out), |field| again.push(field.expect("our fields are valid")))
        .expect("our own block decodes");
    assert_eq!(again.len(), fields.len());
    for (a, b) in again.iter().zip(&fields) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.value.as_bytes(), b.value.as_bytes());
        // Pseudo-headers are made again by a proxy; a regular field keeps being never indexed.
        if let Name::Field(_) = a.name {
            assert_eq!(a.value.is_sensitive(), b.value.is_sensitive());
        }
    }
    true
}
