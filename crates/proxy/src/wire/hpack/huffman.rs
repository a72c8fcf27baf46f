//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B): what peers may compress a string with.
//!
//! Decoding walks a state machine four bits at a time. Its states are the 256 inner nodes of
//! the code's tree (the code is complete: 257 leaves, EOS among them); each (state, nibble)
//! gives the next state, the symbol finished on the way if any (the shortest code has five
//! bits, so a nibble finishes at most one), and whether the bits left over since the last
//! symbol may end the string (at most seven, all ones: a prefix of EOS). The table (12 KiB)
//! is built from the code on first use, not stored in the binary: a table written out by
//! hand is one that nobody checks. Two lookups a byte, against a walk bit by bit.
//!
//! [`encode`] is the other way, for tests and fuzzing: Wharf sends its strings as they are
//! (see [`super::encode`] for why).

use std::sync::OnceLock;

use super::DecodeError;

/// (code, length in bits) of each symbol: the 256 octets, then EOS (256).
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

const EOS: u16 = 256;

/// One step of the decoder: from a state, by four bits.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    symbol: u8,
    flags: u8,
}

/// A symbol was finished by these four bits.
const EMITS: u8 = 1;
/// These bits reached EOS, or a code no symbol has: the string is invalid.
const FAILS: u8 = 2;
/// The bits since the last symbol may end the string: at most seven, all ones.
const MAY_END: u8 = 4;

type Table = [[Step; 16]; 256];

fn table() -> &'static Table {
    static TABLE: OnceLock<Box<Table>> = OnceLock::new();
    TABLE.get_or_init(build)
}

/// The tree's inner nodes: each child either another inner node or a symbol.
#[derive(Clone, Copy)]
enum Child {
    None,
    Node(u8),
    Symbol(u16),
}

fn build() -> Box<Table> {
    // The tree, inner nodes numbered from the root (0) as they are made; and for each the
    // bits that lead to it from the root: how many, and whether all are ones.
    let mut nodes: Vec<[Child; 2]> = vec![[Child::None; 2]];
    let mut paths: Vec<(u8, bool)> = vec![(0, true)];
    for (symbol, &(code, length)) in CODES.iter().enumerate() {
        let mut node = 0usize;
        for depth in (0..length).rev() {
            let bit = ((code >> depth) & 1) as usize;
            if depth == 0 {
                nodes[node][bit] = Child::Symbol(symbol as u16);
                break;
            }
            node = match nodes[node][bit] {
                Child::Node(next) => usize::from(next),
                Child::None => {
                    let next = nodes.len();
                    let (len, ones) = paths[node];
                    nodes.push([Child::None; 2]);
                    paths.push((len + 1, ones && bit == 1));
                    nodes[node][bit] = Child::Node(u8::try_from(next).expect("256 inner nodes"));
                    next
                }
                Child::Symbol(_) => unreachable!("the code is prefix-free"),
            };
        }
    }
    let may_end = |node: usize| {
        let (len, ones) = paths[node];
        ones && len <= 7
    };
    let mut table: Box<Table> = Box::new([[Step::default(); 16]; 256]);
    for (state, row) in table.iter_mut().enumerate().take(nodes.len()) {
        for (nibble, step) in row.iter_mut().enumerate() {
            let mut node = state;
            for shift in (0..4).rev() {
                let bit = (nibble >> shift) & 1;
                match nodes[node][bit] {
                    Child::Node(next) => node = usize::from(next),
                    Child::Symbol(EOS) | Child::None => {
                        step.flags = FAILS;
                        break;
                    }
                    Child::Symbol(symbol) => {
                        step.flags |= EMITS;
                        step.symbol = symbol as u8;
                        node = 0;
                    }
                }
            }
            if step.flags & FAILS == 0 {
                step.next = node as u8;
                if may_end(node) {
                    step.flags |= MAY_END;
                }
            }
        }
    }
    table
}

/// Appends the Huffman-decoded `bytes` to `out`.
pub fn decode(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let table = table();
    out.reserve(bytes.len() * 8 / 5);
    let (mut state, mut may_end) = (0u8, true);
    for &byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = table[usize::from(state)][usize::from(nibble)];
            if step.flags & FAILS != 0 {
                return Err(DecodeError::Huffman);
            }
            if step.flags & EMITS != 0 {
                out.push(step.symbol);
            }
            state = step.next;
            may_end = step.flags & MAY_END != 0;
        }
    }
    if may_end {
        Ok(())
    } else {
        Err(DecodeError::Huffman)
    }
}

/// Appends `bytes` Huffman-encoded to `out`, padded with ones to a whole byte.
pub fn encode(bytes: &[u8], out: &mut Vec<u8>) {
    let (mut bits, mut held) = (0u64, 0u32);
    for &byte in bytes {
        let (code, length) = CODES[usize::from(byte)];
        bits = (bits << length) | u64::from(code);
        held += u32::from(length);
        while held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
    }
    if held > 0 {
        let pad = 8 - held;
        out.push(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The encoded length of `bytes`, in bytes.
pub fn encoded_len(bytes: &[u8]) -> usize {
    let bits: usize = bytes
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        decode(bytes, &mut out).map(|()| out)
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn the_rfc_examples_decode() {
        // RFC 7541 Appendix C.4 and C.6.
        for (encoded, text) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ] {
            assert_eq!(decoded(&hex(encoded)).unwrap(), text.as_bytes(), "{text}");
            let mut again = Vec::new();
            encode(text.as_bytes(), &mut again);
            assert_eq!(again, hex(encoded), "{text}");
            assert_eq!(encoded_len(text.as_bytes()), again.len());
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = Vec::new();
        encode(&all, &mut encoded);
        assert_eq!(decoded(&encoded).unwrap(), all);
        for _ in 0..2000 {
            let len = fastrand::usize(0..40);
            let text: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            let mut encoded = Vec::new();
            encode(&text, &mut encoded);
            assert_eq!(decoded(&encoded).unwrap(), text);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        // "a" is 00011 (5 bits): padded with three ones it is valid, with zeros not.
        assert_eq!(decoded(&[0b0001_1111]).unwrap(), b"a");
        assert_eq!(decoded(&[0b0001_1000]), Err(DecodeError::Huffman));
        // Eight bits or more of padding: a whole byte of ones after a full symbol.
        assert_eq!(decoded(&[0b0001_1111, 0xff]), Err(DecodeError::Huffman));
        // EOS itself (30 ones) inside the string.
        assert_eq!(
            decoded(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Huffman)
        );
        assert_eq!(decoded(&[]).unwrap(), b"");
    }
}
