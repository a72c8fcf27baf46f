//! HPACK (RFC 7541): HTTP/2's header compression, as fields the proxy uses directly.
//!
//! Why by hand, with the `h2` crate in the tree: measured with `bench/mesh_instructions.sh`,
//! `h2`'s HPACK cost a sidecar pair about 16,600 instructions a request (a fifth of the
//! pair) for seven request fields and eight response ones: its encoder hashes every field
//! into its dynamic table and Huffman-codes every new string, its decoder makes each name a
//! `HeaderName` again, and each value a `HeaderValue`, even when it comes from the table.
//! Here:
//!
//! - the [`Decoder`] keeps its dynamic table as checked fields, so a field sent by index is
//!   a clone (a reference count), and hands each field over as a [`Field`] whose name is a
//!   pseudo-header or a `HeaderName` and whose value is a `HeaderValue`; a field that is not
//!   valid HTTP is handed over as [`Malformed`] (the stream's error, RFC 9113 §8.1.1), and
//!   decoding goes on, since the table must stay in step with the peer's;
//! - the [`Encoder`] indexes only what the static table holds and sends every other string as
//!   it is, neither added to the dynamic table nor Huffman-coded ([`encode`] says why).
//!
//! [`huffman`] decodes what peers compress; every peer may.

mod decode;
mod encode;
pub mod huffman;
mod table;

pub use decode::{DEFAULT_TABLE_SIZE, Decoder};
pub use encode::Encoder;

use http::{HeaderName, HeaderValue};

/// A field's name: a pseudo-header (RFC 9113 §8.3) or a regular field's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Pseudo(Pseudo),
    Field(HeaderName),
}

/// The pseudo-headers of requests and responses (`:protocol` from RFC 8441).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pseudo {
    Authority,
    Method,
    Path,
    Scheme,
    Status,
    Protocol,
}

impl Pseudo {
    pub fn as_str(self) -> &'static str {
        match self {
            Pseudo::Authority => ":authority",
            Pseudo::Method => ":method",
            Pseudo::Path => ":path",
            Pseudo::Scheme => ":scheme",
            Pseudo::Status => ":status",
            Pseudo::Protocol => ":protocol",
        }
    }

    fn parse(name: &[u8]) -> Option<Pseudo> {
        Some(match name {
            b":authority" => Pseudo::Authority,
            b":method" => Pseudo::Method,
            b":path" => Pseudo::Path,
            b":scheme" => Pseudo::Scheme,
            b":status" => Pseudo::Status,
            b":protocol" => Pseudo::Protocol,
            _ => return None,
        })
    }
}

/// One decoded field. A field the peer sent never-indexed (RFC 7541 §6.2.3) has its value
/// marked sensitive, which a proxy keeps on the next hop (§7.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Name,
    pub value: HeaderValue,
}

/// A field that decoded but is not valid in HTTP/2 (RFC 9113 §8.2.1): a name with upper case
/// or characters a name may not have, an unknown pseudo-header, a value with CR, LF or NUL.
/// The message it is part of is malformed; the connection is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A header block that cannot be decoded: a `COMPRESSION_ERROR` for the whole connection
/// (RFC 9113 §4.3), since the two ends' tables may no longer agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block is too large")]
    IntegerTooLarge,
    #[error("index {0} is in neither table")]
    NoSuchIndex(usize),
    #[error("a Huffman-coded string is not valid")]
    Huffman,
    #[error("a table size update of {asked} is above the {allowed} allowed")]
    TableSizeTooLarge { asked: usize, allowed: usize },
    #[error("a table size update after the block's first field")]
    LateTableSizeUpdate,
}

/// The largest integer a peer may send (the limit of HTTP/2's own sizes is 2^31): larger
/// ones are refused before they overflow anything.
const MAX_INTEGER: usize = 1 << 31;

/// Reads an integer with an `prefix`-bit prefix (RFC 7541 §5.1) at `*at`, moving past it.
fn read_integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = ((1u16 << prefix) - 1) as u8;
    let first = *block.get(*at).ok_or(DecodeError::Truncated)?;
    *at += 1;
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(DecodeError::IntegerTooLarge);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(DecodeError::IntegerTooLarge);
        }
    }
}

/// Writes `value` with an `prefix`-bit prefix, `flags` in the first byte's other bits.
fn write_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let mask = ((1u16 << prefix) - 1) as u8;
    if value < usize::from(mask) {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask);
    let mut rest = value - usize::from(mask);
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_as_the_rfc_writes_them() {
        // RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix, 42 at a byte's start.
        for (bytes, prefix, value) in [
            (&[0x0a][..], 5, 10),
            (&[0x1f, 0x9a, 0x0a][..], 5, 1337),
            (&[0x2a][..], 8, 42),
        ] {
            let mut at = 0;
            assert_eq!(read_integer(bytes, &mut at, prefix).unwrap(), value);
            assert_eq!(at, bytes.len());
            let mut out = Vec::new();
            write_integer(&mut out, 0, prefix, value);
            assert_eq!(out, bytes);
        }
        for value in [0, 1, 30, 31, 127, 128, 255, 16_384, 1 << 24, MAX_INTEGER] {
            for prefix in 1..=8 {
                let mut out = Vec::new();
                write_integer(&mut out, 0, prefix, value);
                let mut at = 0;
                assert_eq!(read_integer(&out, &mut at, prefix).unwrap(), value);
            }
        }
    }

    #[test]
    fn oversized_and_cut_integers_are_refused() {
        let mut at = 0;
        let huge = [0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(
            read_integer(&huge, &mut at, 5),
            Err(DecodeError::IntegerTooLarge)
        );
        // Leading continuation bytes of zero do not let an integer run on for ever.
        let padded = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        at = 0;
        assert_eq!(
            read_integer(&padded, &mut at, 5),
            Err(DecodeError::IntegerTooLarge)
        );
        at = 0;
        assert_eq!(
            read_integer(&[0x1f, 0x9a], &mut at, 5),
            Err(DecodeError::Truncated)
        );
        at = 0;
        assert_eq!(read_integer(&[], &mut at, 5), Err(DecodeError::Truncated));
    }
}
