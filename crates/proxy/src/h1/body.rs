//! HTTP/1.x bodies on their way through: how each is delimited ([`Framing`]), where a chunked
//! one ends ([`Chunked`], a byte-level scanner, so that the body is passed on as it came,
//! trailers included, and the connection can carry the next message), and [`relay`], which
//! moves a body from one connection to the other without holding more than a read's worth.

use std::io;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from a connection at a time.
pub const READ_SIZE: usize = 16 * 1024;
/// A body that stops moving for this long is abandoned (Envoy's stream idle timeout), so that
/// a sender trickling nothing cannot hold two connections forever.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Body bytes already read that are copied behind the head so that both go in one write;
/// larger ones are written from where they lie.
const COALESCE: usize = 16 * 1024;

/// How a message's body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size too large")]
    Overflow,
    #[error("invalid chunk framing")]
    Framing,
}

/// Where a chunked body is, as its bytes go by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// The chunk size being read, then the bytes of the chunk still to come.
    size: u64,
    digits: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Reads `input` up to the end of the body: returns how many bytes belong to the body and
    /// whether it has ended; `data` gets the ranges of chunk data (not framing) among them.
    pub fn scan(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<(usize, bool), ChunkError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (input.len() - at).min(self.size.min(usize::MAX as u64) as usize);
                data(at..at + take);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.size > u64::MAX >> 4 {
                        return Err(ChunkError::Overflow);
                    }
                    self.size = self.size << 4 | u64::from(hex_value(b));
                    self.digits += 1;
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, _) => return Err(ChunkError::Size),
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(ChunkError::Framing),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::Trailer, b'\n') => return Err(ChunkError::Framing),
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::Trailer, _) => State::Trailer,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(ChunkError::Framing),
            };
        }
        Ok((at, self.state == State::Done))
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the body: {0}")]
    Read(io::Error),
    #[error("writing the body: {0}")]
    Write(io::Error),
    #[error("the connection closed before the body ended")]
    Truncated,
    #[error("no byte of the body for {0:?}")]
    Idle(std::time::Duration),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// Sends a body from `from` to `to`: first `out` (a head, usually) with the body bytes that
/// are already in `buf`, then the rest as it arrives. With `dechunk`, a chunked body goes
/// on as bare data (for an HTTP/1.0 client). Bytes after the body's end stay in `buf`. A
/// read that waits longer than `idle` ends the relay. Returns the body's bytes as they came
/// (chunk framing included), for the golden metrics.
pub async fn relay<R, W>(
    framing: Framing,
    dechunk: bool,
    idle: std::time::Duration,
    from: &mut R,
    buf: &mut BytesMut,
    to: &mut W,
    out: &mut Vec<u8>,
) -> Result<u64, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut moved = 0u64;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::default();
    loop {
        let (take, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = left.min(buf.len() as u64) as usize;
                left -= take as u64;
                (take, left == 0)
            }
            Framing::Chunked if dechunk => {
                let input = &buf[..];
                chunked.scan(input, |data| out.extend_from_slice(&input[data]))?
            }
            Framing::Chunked => chunked.scan(buf, |_| {})?,
            Framing::UntilClose => (buf.len(), false),
        };
        if !(dechunk && framing == Framing::Chunked) && take > 0 {
            if out.len() + take <= COALESCE {
                out.extend_from_slice(&buf[..take]);
            } else {
                flush(to, out).await?;
                to.write_all(&buf[..take])
                    .await
                    .map_err(RelayError::Write)?;
            }
        }
        buf.advance(take);
        moved += take as u64;
        flush(to, out).await?;
        if done {
            return Ok(moved);
        }
        buf.reserve(READ_SIZE);
        let read = tokio::time::timeout(idle, from.read_buf(buf))
            .await
            .map_err(|_| RelayError::Idle(idle))?
            .map_err(RelayError::Read)?;
        if read == 0 {
            return match framing {
                Framing::UntilClose => Ok(moved),
                _ => Err(RelayError::Truncated),
            };
        }
    }
}

async fn flush<W: AsyncWrite + Unpin>(to: &mut W, out: &mut Vec<u8>) -> Result<(), RelayError> {
    if !out.is_empty() {
        to.write_all(out).await.map_err(RelayError::Write)?;
        out.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";

    #[test]
    fn a_chunked_body_ends_where_it_says_in_any_split() {
        for split in 0..BODY.len() - 4 {
            let mut scanner = Chunked::default();
            let mut data = Vec::new();
            let (first, done) = scanner
                .scan(&BODY[..split], |r| data.extend_from_slice(&BODY[r]))
                .unwrap();
            assert_eq!(first, split, "nothing before the end is held back");
            assert!(!done);
            let rest = &BODY[split..];
            let (second, done) = scanner
                .scan(rest, |r| data.extend_from_slice(&rest[r]))
                .unwrap();
            assert!(done, "split at {split}");
            assert_eq!(
                first + second,
                BODY.len() - 4,
                "NEXT is not part of the body"
            );
            assert_eq!(data, b"hello, world");
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"5\nhello",
            b"ffffffffffffffffff\r\n",
            b"0\r\nbad\ntrailer",
        ] {
            let result = Chunked::default().scan(bad, |_| {});
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn relay_passes_a_body_on_and_leaves_what_follows() {
        let (mut source, mut source_end) = tokio::io::duplex(64);
        let (mut sink_end, mut sink) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            for piece in BODY[9..].chunks(7) {
                source_end.write_all(piece).await.unwrap();
            }
        });
        let mut buf = BytesMut::from(&BODY[..9]);
        let mut out = b"HEAD\r\n".to_vec();
        let moved = relay(
            Framing::Chunked,
            false,
            IDLE_TIMEOUT,
            &mut source,
            &mut buf,
            &mut sink_end,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(
            moved,
            (BODY.len() - 4) as u64,
            "the body as it came, framing included"
        );
        writer.await.unwrap();
        drop(sink_end);
        let mut sent = Vec::new();
        sink.read_to_end(&mut sent).await.unwrap();
        let mut expected = b"HEAD\r\n".to_vec();
        expected.extend_from_slice(&BODY[..BODY.len() - 4]);
        assert_eq!(sent, expected);
        // What came after the body was read (or not) but not sent.
        assert!(b"NEXT".starts_with(&buf));
    }

    /// Relays a body of 10 bytes whose first 3 are already read; the rest is up to `source`.
    async fn relay_ten_bytes(mut source: tokio::io::DuplexStream) -> Result<(), RelayError> {
        let (mut sink_end, _sink) = tokio::io::duplex(64);
        let mut buf = BytesMut::from(&b"abc"[..]);
        relay(
            Framing::Length(10),
            false,
            IDLE_TIMEOUT,
            &mut source,
            &mut buf,
            &mut sink_end,
            &mut Vec::new(),
        )
        .await
        .map(drop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_moving_is_abandoned() {
        let (source, _silent) = tokio::io::duplex(64);
        let result = relay_ten_bytes(source).await;
        assert!(matches!(result, Err(RelayError::Idle(_))), "{result:?}");
    }

    #[tokio::test]
    async fn relay_of_a_truncated_body_is_an_error() {
        let (source, closed) = tokio::io::duplex(64);
        drop(closed);
        let result = relay_ten_bytes(source).await;
        assert!(matches!(result, Err(RelayError::Truncated)));
    }
}
