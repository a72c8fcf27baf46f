//! The decoding side: header blocks in, fields out, the dynamic table kept in step.

use bytes::Bytes;
use http::HeaderValue;

use super::table::{self, Dynamic, Entry};
use super::{DecodeError, Field, Malformed, Name, Pseudo, huffman, read_integer};

/// What the peer may assume of our dynamic table until our settings say otherwise.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// A connection's decoder: its dynamic table and the size our settings allow it.
#[derive(Debug)]
pub struct Decoder {
    table: Dynamic,
    allowed: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    /// A decoder whose table may hold `allowed` bytes (`SETTINGS_HEADER_TABLE_SIZE`).
    pub fn new(allowed: usize) -> Decoder {
        Decoder {
            table: Dynamic::new(allowed),
            allowed,
        }
    }

    /// Decodes `block`, handing each field to `each` in order, and returns the header list's
    /// size (names, values and 32 a field: what `SETTINGS_MAX_HEADER_LIST_SIZE` limits).
    /// The whole block is always decoded, whatever `each` does with it: the table must stay
    /// in step with the peer's.
    pub fn decode(
        &mut self,
        block: &Bytes,
        mut each: impl FnMut(Result<Field, Malformed>),
    ) -> Result<usize, DecodeError> {
        let bytes = &block[..];
        let (mut at, mut list_size, mut fields_seen) = (0, 0, false);
        while let Some(&first) = bytes.get(at) {
            let entry = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = read_integer(bytes, &mut at, 7)?;
                self.entry(index)?.clone()
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing (§6.2.1).
                let entry = self.literal(block, &mut at, 6)?;
                self.table.insert(entry.clone());
                entry
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), only before the block's first field.
                if fields_seen {
                    return Err(DecodeError::LateTableSizeUpdate);
                }
                let asked = read_integer(bytes, &mut at, 5)?;
                if asked > self.allowed {
                    return Err(DecodeError::TableSizeTooLarge {
                        asked,
                        allowed: self.allowed,
                    });
                }
                self.table.set_max_size(asked);
                continue;
            } else {
                // Literal without indexing (§6.2.2), or never indexed (§6.2.3).
                let mut entry = self.literal(block, &mut at, 4)?;
                if first & 0x10 != 0
                    && let Ok(value) = &mut entry.value
                {
                    value.set_sensitive(true);
                }
                entry
            };
            fields_seen = true;
            list_size += entry.size();
            each(entry.field());
        }
        Ok(list_size)
    }

    /// The entry at `index`, in the static table (1 to 61) or the dynamic one (62 on).
    fn entry(&self, index: usize) -> Result<&Entry, DecodeError> {
        match index {
            1..=61 => table::static_entry(index),
            _ => index.checked_sub(62).and_then(|at| self.table.get(at)),
        }
        .ok_or(DecodeError::NoSuchIndex(index))
    }

    /// A literal field at `*at`: its name by index (the first byte's `prefix` bits) or as a
    /// string, then its value.
    fn literal(&self, block: &Bytes, at: &mut usize, prefix: u8) -> Result<Entry, DecodeError> {
        let index = read_integer(block, at, prefix)?;
        let (name, name_len) = if index == 0 {
            let raw = read_string(block, at)?;
            (parse_name(&raw), raw.len())
        } else {
            let entry = self.entry(index)?;
            (entry.name.clone(), entry.name_len)
        };
        let raw = read_string(block, at)?;
        Ok(Entry {
            name,
            name_len,
            value_len: raw.len(),
            value: HeaderValue::from_maybe_shared(raw).map_err(|_| Malformed),
        })
    }
}

/// A string literal (§5.2) at `*at`: a slice of the block, or its Huffman decoding.
fn read_string(block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
    let huffman = block.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = read_integer(block, at, 7)?;
    let end = at.checked_add(len).filter(|&end| end <= block.len());
    let end = end.ok_or(DecodeError::Truncated)?;
    let raw = &block[*at..end];
    let string = if huffman {
        let mut decoded = Vec::new();
        huffman::decode(raw, &mut decoded)?;
        Bytes::from(decoded)
    } else {
        block.slice(*at..end)
    };
    *at = end;
    Ok(string)
}

/// A name as HTTP/2 allows it: a known pseudo-header, or a field name in lower case.
fn parse_name(raw: &[u8]) -> Result<Name, Malformed> {
    if raw.first() == Some(&b':') {
        return Pseudo::parse(raw).map(Name::Pseudo).ok_or(Malformed);
    }
    http::HeaderName::from_lowercase(raw)
        .map(Name::Field)
        .map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Bytes {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    /// The block's fields as "name: value" lines, `!` marking a sensitive one.
    fn decode(decoder: &mut Decoder, block: &Bytes) -> Result<Vec<String>, DecodeError> {
        let mut lines = Vec::new();
        decoder.decode(block, |field| {
            lines.push(match field {
                Ok(Field { name, value }) => {
                    let name = match name {
                        Name::Pseudo(pseudo) => pseudo.as_str().to_owned(),
                        Name::Field(name) => name.to_string(),
                    };
                    let mark = if value.is_sensitive() { "!" } else { "" };
                    format!("{mark}{name}: {}", value.to_str().unwrap())
                }
                Err(Malformed) => "malformed".to_owned(),
            })
        })?;
        Ok(lines)
    }

    #[test]
    fn the_rfc_request_examples_decode_in_sequence() {
        // RFC 7541 C.3 (plain) and C.4 (Huffman): three requests on one connection.
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut decoder = Decoder::default();
            let base = [
                ":method: GET",
                ":scheme: http",
                ":path: /",
                ":authority: www.example.com",
            ];
            assert_eq!(decode(&mut decoder, &hex(blocks[0])).unwrap(), base);
            let mut second = base.to_vec();
            second.push("cache-control: no-cache");
            assert_eq!(decode(&mut decoder, &hex(blocks[1])).unwrap(), second);
            assert_eq!(
                decode(&mut decoder, &hex(blocks[2])).unwrap(),
                [
                    ":method: GET",
                    ":scheme: https",
                    ":path: /index.html",
                    ":authority: www.example.com",
                    "custom-key: custom-value"
                ]
            );
            assert_eq!(decoder.table.size(), 164);
        }
    }

    #[test]
    fn the_rfc_response_examples_evict_as_the_rfc_says() {
        // RFC 7541 C.6: responses with Huffman, a table of 256 bytes, evictions.
        let mut decoder = Decoder::new(256);
        let first = decode(
            &mut decoder,
            &hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"),
        )
        .unwrap();
        assert_eq!(
            first,
            [
                ":status: 302",
                "cache-control: private",
                "date: Mon, 21 Oct 2013 20:13:21 GMT",
                "location: https://www.example.com"
            ]
        );
        assert_eq!(decoder.table.size(), 222);
        let second = decode(&mut decoder, &hex("4883 640e ffc1 c0bf")).unwrap();
        assert_eq!(second[0], ":status: 307");
        assert_eq!(decoder.table.size(), 222);
        let third = decode(
            &mut decoder,
            &hex("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07"),
        )
        .unwrap();
        assert_eq!(
            third,
            [
                ":status: 200",
                "cache-control: private",
                "date: Mon, 21 Oct 2013 20:13:22 GMT",
                "location: https://www.example.com",
                "content-encoding: gzip",
                "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            ]
        );
        assert_eq!(decoder.table.size(), 215);
    }

    #[test]
    fn never_indexed_fields_stay_sensitive_and_out_of_the_table() {
        // RFC 7541 C.2.3: "password: secret", never indexed.
        let mut decoder = Decoder::default();
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(decode(&mut decoder, &block).unwrap(), ["!password: secret"]);
        assert_eq!(decoder.table.len(), 0);
    }

    #[test]
    fn malformed_fields_are_marked_and_the_table_stays_in_step() {
        let mut decoder = Decoder::default();
        // "X-Up: 1" indexed (an upper-case name), ":bad: 1", "x-ok: a\nb", then the first
        // entry again by index and its name with a new value.
        let mut block = vec![0x40, 4];
        block.extend_from_slice(b"X-Up");
        block.extend_from_slice(&[1, b'1']);
        block.extend_from_slice(&[0x00, 4]);
        block.extend_from_slice(b":bad");
        block.extend_from_slice(&[1, b'1']);
        block.extend_from_slice(&[0x40, 4]);
        block.extend_from_slice(b"x-ok");
        block.extend_from_slice(&[3, b'a', b'\n', b'b']);
        // Index 62 is now "x-ok: a\nb", 63 "X-Up: 1"; then 63 by index, and 62's name with
        // the value "c".
        block.push(0x80 | 63);
        block.extend_from_slice(&[0x40 | 62, 1, b'c']);
        let lines = decode(&mut decoder, &Bytes::from(block)).unwrap();
        assert_eq!(
            lines,
            [
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "x-ok: c"
            ]
        );
    }

    #[test]
    fn broken_blocks_are_errors() {
        let cases = [
            ("80", DecodeError::NoSuchIndex(0)),
            ("be", DecodeError::NoSuchIndex(62)),
            ("4005 6162", DecodeError::Truncated),
            ("40ff", DecodeError::Truncated),
            (
                "3fe2 1f",
                DecodeError::TableSizeTooLarge {
                    asked: 4097,
                    allowed: 4096,
                },
            ),
            ("8220", DecodeError::LateTableSizeUpdate),
            ("4081 ff00", DecodeError::Huffman),
        ];
        for (block, error) in cases {
            let mut decoder = Decoder::default();
            assert_eq!(decode(&mut decoder, &hex(block)), Err(error), "{block}");
        }
        // A table size update within what is allowed shrinks the table.
        let mut decoder = Decoder::default();
        decode(&mut decoder, &hex("4001 6101 62")).unwrap();
        assert_eq!(decoder.table.len(), 1);
        assert_eq!(
            decode(&mut decoder, &hex("20")).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(decoder.table.len(), 0);
    }
}
