//! Frames written into a buffer of bytes to send; the caller keeps to the peer's limits
//! (frame size, windows), which [`write_headers`] splits a block by.

use super::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADER_LEN, HEADERS, PING,
    RST_STREAM, Reason, SETTINGS, Settings, WINDOW_UPDATE,
};

pub(super) fn write_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

pub(super) fn set_length(head: &mut [u8], len: usize) {
    let len = (len as u32).to_be_bytes();
    head[..3].copy_from_slice(&len[1..]);
}

/// Writes a HEADERS frame for `stream` whose block `encode` writes, followed by as many
/// CONTINUATION frames as `max_frame_size` (the peer's) makes it need.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    end_stream: bool,
    max_frame_size: u32,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    let flags = if end_stream { END_STREAM } else { 0 };
    write_head(out, 0, HEADERS, flags, stream);
    encode(out);
    let max = max_frame_size as usize;
    let len = out.len() - start - HEADER_LEN;
    if len <= max {
        set_length(&mut out[start..], len);
        out[start + 4] |= END_HEADERS;
        return;
    }
    // Rare: a block larger than a frame. The rest moves behind CONTINUATION headers.
    let rest = out.split_off(start + HEADER_LEN + max);
    set_length(&mut out[start..], max);
    let mut chunks = rest.chunks(max).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        write_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// Writes a DATA frame: `data` no longer than the peer's frame size, nor than the windows.
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { END_STREAM } else { 0 };
    write_head(out, data.len(), DATA, flags, stream);
    out.extend_from_slice(data);
}

pub fn write_settings(out: &mut Vec<u8>, settings: &Settings) {
    settings.write(out);
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_head(out, 0, SETTINGS, ACK, 0);
}

pub fn write_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    write_head(out, 8, PING, if ack { ACK } else { 0 }, 0);
    out.extend_from_slice(&payload);
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    write_head(out, 8, GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    write_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}
