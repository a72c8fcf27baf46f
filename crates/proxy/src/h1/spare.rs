//! Buffers lent to connections while they have something to do, and kept by the thread while
//! they idle. A gateway holds thousands of kept-alive connections, most of them quiet at any
//! moment; like nginx, which frees an idle connection's buffers, Wharf keeps buffers only for
//! the busy ones (measured: 13 KiB per idle client connection before, see
//! docs/benchmarks.md). Lending is a thread-local push and pop: each proxy thread has its own
//! spares, so nothing is shared or locked.

use std::cell::RefCell;

use bytes::BytesMut;

use super::body::READ_SIZE;

/// Spares kept per thread, at most; the rest are freed.
const MAX_SPARE: usize = 256;
/// A buffer grown larger than this (a big head) is freed rather than kept.
const MAX_KEPT: usize = 4 * READ_SIZE;

/// What a client connection works with: bytes read, bytes to send, the upstream request.
#[derive(Default)]
pub struct Buffers {
    pub read: BytesMut,
    pub out: Vec<u8>,
    pub request: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
    static READS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Buffers for a client connection with work to do.
pub fn buffers() -> Buffers {
    BUFFERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Buffers {
            read: BytesMut::with_capacity(READ_SIZE),
            out: Vec::with_capacity(1024),
            request: Vec::with_capacity(1024),
        })
}

/// Takes back a client connection's buffers; `read` must hold nothing unread.
pub fn return_buffers(mut buffers: Buffers) {
    debug_assert!(buffers.read.is_empty());
    if buffers.read.capacity() > MAX_KEPT
        || buffers.out.capacity() > MAX_KEPT
        || buffers.request.capacity() > MAX_KEPT
    {
        return;
    }
    buffers.read.clear();
    buffers.out.clear();
    buffers.request.clear();
    BUFFERS.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(buffers);
        }
    });
}

/// A read buffer for an upstream connection with a request to answer.
pub fn read_buffer() -> BytesMut {
    READS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

/// Takes back an upstream connection's read buffer; it must hold nothing unread.
pub fn return_read_buffer(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() > MAX_KEPT {
        return;
    }
    buf.clear();
    READS.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_lent_again_and_giants_are_not_kept() {
        let mut lent = buffers();
        lent.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let out_at = lent.out.as_ptr();
        return_buffers(lent);
        let again = buffers();
        assert_eq!(again.out.as_ptr(), out_at, "the same buffers come back");
        assert!(again.out.is_empty(), "and empty");
        let mut giant = again;
        giant.read.reserve(10 * MAX_KEPT);
        return_buffers(giant);
        assert!(buffers().read.capacity() <= MAX_KEPT);
    }
}
