//! The encoding side: fields in, a header block out.
//!
//! Only the static table is used: a field it holds whole is sent by index, a field whose
//! name it holds is sent with that index and the value as it is, every other one as two
//! strings; none is added to the dynamic table and none is Huffman-coded. Between sidecars,
//! on loopback or a data centre's network, the bytes this costs are cheaper than what it
//! saves: a field looked up in a dynamic table is a hash of its name and value on every
//! request, and Huffman coding a value is a table lookup per byte on both ends — the largest
//! costs of `h2`'s encoder. A peer's decoder takes literals as readily as indices.
//!
//! The peer is told once, at the first block, that the table's size is 0, and again after
//! each time it lowers `SETTINGS_HEADER_TABLE_SIZE` (RFC 7541 §4.2: decoders such as
//! nghttp2 wait for an update then).

use http::{HeaderName, HeaderValue};

use super::table::static_index_of;
use super::{Pseudo, write_integer};

/// A connection's encoder.
#[derive(Debug)]
pub struct Encoder {
    size_update_due: bool,
    peer_table_size: usize,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            size_update_due: true,
            peer_table_size: super::decode::DEFAULT_TABLE_SIZE,
        }
    }
}

impl Encoder {
    /// The peer's `SETTINGS_HEADER_TABLE_SIZE`, as its settings frame gave it.
    pub fn set_peer_table_size(&mut self, size: usize) {
        if size < self.peer_table_size {
            self.size_update_due = true;
        }
        self.peer_table_size = size;
    }

    /// Starts a header block in `out`.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.size_update_due) {
            out.push(0x20);
        }
    }

    /// A request's pseudo-header.
    pub fn pseudo(&self, pseudo: Pseudo, value: &[u8], out: &mut Vec<u8>) {
        let whole = match (pseudo, value) {
            (Pseudo::Method, b"GET") => Some(2),
            (Pseudo::Method, b"POST") => Some(3),
            (Pseudo::Path, b"/") => Some(4),
            (Pseudo::Scheme, b"http") => Some(6),
            (Pseudo::Scheme, b"https") => Some(7),
            _ => None,
        };
        if let Some(index) = whole {
            out.push(0x80 | index);
            return;
        }
        let name_index = match pseudo {
            Pseudo::Authority => 1,
            Pseudo::Method => 2,
            Pseudo::Path => 4,
            Pseudo::Scheme => 6,
            Pseudo::Status => 8,
            Pseudo::Protocol => {
                out.push(0x00);
                write_string(out, pseudo.as_str().as_bytes());
                write_string(out, value);
                return;
            }
        };
        write_integer(out, 0x00, 4, name_index);
        write_string(out, value);
    }

    /// A response's `:status`.
    pub fn status(&self, status: http::StatusCode, out: &mut Vec<u8>) {
        let index = match status.as_u16() {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                out.push(0x08);
                write_string(out, status.as_str().as_bytes());
                return;
            }
        };
        out.push(0x80 | index);
    }

    /// A regular field; never indexed, as RFC 7541 §7.1.3 asks, when its value is sensitive.
    pub fn field(&self, name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
        let flags = if value.is_sensitive() { 0x10 } else { 0x00 };
        match static_index_of(name.as_str()) {
            Some(index) => write_integer(out, flags, 4, index),
            None => {
                out.push(flags);
                write_string(out, name.as_str().as_bytes());
            }
        }
        write_string(out, value.as_bytes());
    }
}

/// A string literal as it is (§5.2, `H` clear).
fn write_string(out: &mut Vec<u8>, string: &[u8]) {
    write_integer(out, 0x00, 7, string.len());
    out.extend_from_slice(string);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;

    use super::super::{Decoder, Field, Name};
    use super::*;

    fn decoded(decoder: &mut Decoder, block: Vec<u8>) -> Vec<Field> {
        let mut fields = Vec::new();
        decoder
            .decode(&Bytes::from(block), |field| fields.push(field.unwrap()))
            .unwrap();
        fields
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_fields() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::default();
        let mut secret = HeaderValue::from_static("00-abc-01");
        secret.set_sensitive(true);
        for round in 0..3 {
            let mut block = Vec::new();
            encoder.begin(&mut block);
            encoder.pseudo(Pseudo::Method, b"GET", &mut block);
            encoder.pseudo(Pseudo::Scheme, b"https", &mut block);
            encoder.pseudo(Pseudo::Authority, b"api", &mut block);
            encoder.pseudo(Pseudo::Path, b"/notes?page=2", &mut block);
            encoder.pseudo(Pseudo::Protocol, b"websocket", &mut block);
            encoder.field(
                &HeaderName::from_static("content-type"),
                &HeaderValue::from_static("text/plain"),
                &mut block,
            );
            encoder.field(
                &HeaderName::from_static("x-forwarded-for"),
                &HeaderValue::from_static("127.0.0.1"),
                &mut block,
            );
            encoder.field(&HeaderName::from_static("traceparent"), &secret, &mut block);
            // The size update goes once, at the first block.
            assert_eq!(block[0] == 0x20, round == 0);
            let fields = decoded(&mut decoder, block);
            let names: Vec<String> = fields
                .iter()
                .map(|f| match &f.name {
                    Name::Pseudo(p) => p.as_str().to_owned(),
                    Name::Field(n) => n.to_string(),
                })
                .collect();
            assert_eq!(
                names,
                [
                    ":method",
                    ":scheme",
                    ":authority",
                    ":path",
                    ":protocol",
                    "content-type",
                    "x-forwarded-for",
                    "traceparent"
                ]
            );
            let values: Vec<&[u8]> = fields.iter().map(|f| f.value.as_bytes()).collect();
            assert_eq!(
                values,
                [
                    &b"GET"[..],
                    b"https",
                    b"api",
                    b"/notes?page=2",
                    b"websocket",
                    b"text/plain",
                    b"127.0.0.1",
                    b"00-abc-01"
                ]
            );
            assert!(fields[7].value.is_sensitive() && !fields[6].value.is_sensitive());
        }
    }

    #[test]
    fn every_status_round_trips() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::default();
        for code in [100, 200, 204, 206, 301, 304, 400, 403, 404, 500, 503, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            let mut block = Vec::new();
            encoder.begin(&mut block);
            encoder.status(status, &mut block);
            let fields = decoded(&mut decoder, block);
            assert_eq!(fields[0].name, Name::Pseudo(Pseudo::Status));
            assert_eq!(fields[0].value.as_bytes(), status.as_str().as_bytes());
        }
    }

    #[test]
    fn a_lowered_peer_table_size_is_answered_with_an_update() {
        let mut encoder = Encoder::default();
        let mut block = Vec::new();
        encoder.begin(&mut block);
        assert_eq!(block, [0x20]);
        encoder.set_peer_table_size(8192);
        block.clear();
        encoder.begin(&mut block);
        assert!(block.is_empty(), "a larger table needs no update");
        encoder.set_peer_table_size(100);
        encoder.begin(&mut block);
        assert_eq!(block, [0x20]);
    }
}
