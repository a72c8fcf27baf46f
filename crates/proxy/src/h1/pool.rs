//! Kept-alive HTTP/1.1 connections, owned by the HTTP/1 transport and kept per proxy thread,
//! by endpoint address (as pingora's connector owns its pool).
//!
//! Each proxy thread runs its own event loop, and a connection is registered with the loop
//! that opened it, so each thread keeps its own idle connections in a thread-local map: no
//! lock, no count of threads to agree on beforehand, and an endpoint carries no transport
//! state. (It used to: a pool per endpoint, sharded by a process-wide thread count that the
//! endpoints of `--upstream` services were created before, so all threads shared their one
//! shard.) Connections are keyed by address: an instance that comes back on the same
//! address may use the connections kept for it.
//!
//! A request takes the most recently used idle connection (or opens one) and owns it until the
//! response has been read to its end; then the connection goes back, ready for the next. An
//! idle connection that the endpoint closed (or that received bytes nobody asked for) shows
//! as readable, which costs no system call to see; it is dropped when next taken, and every
//! [`SWEEP_EVERY`] returns the thread drops such connections everywhere, so that addresses
//! no longer routed to do not keep theirs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle connections kept per endpoint and thread, at most.
const MAX_IDLE: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Returns between two sweeps of a thread's idle connections.
const SWEEP_EVERY: u32 = 4096;

/// A connection to an endpoint and the bytes read from it but not yet used (no buffer while
/// it idles in the pool).
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// It carried a request before: if it fails before any answer, the endpoint may simply
    /// have closed it while idle.
    pub(crate) reused: bool,
}

/// One thread's idle connections.
#[derive(Default)]
struct Idle {
    by_endpoint: HashMap<SocketAddr, Vec<Conn>>,
    returns_since_sweep: u32,
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::default();
}

/// An idle connection to `addr` that still looks usable, if this thread has one. With
/// `confirm` (for a request that could not be sent again if the connection turned out to be
/// closed), the socket itself is asked, one system call, rather than the runtime's cached
/// readiness, which may not have caught up with a close that just happened.
pub(crate) fn take(addr: SocketAddr, confirm: bool) -> Option<Conn> {
    IDLE.with_borrow_mut(|idle| {
        let kept = idle.by_endpoint.get_mut(&addr)?;
        while let Some(mut conn) = kept.pop() {
            if is_quiet(&conn.stream) && (!confirm || peek_is_quiet(&conn.stream)) {
                conn.reused = true;
                conn.buf = super::spare::read_buffer();
                return Some(conn);
            }
        }
        None
    })
}

/// Keeps a connection to `addr` whose last exchange ended cleanly (nothing left in its
/// buffer, which goes back to the thread's spares while the connection idles).
pub(crate) fn put(addr: SocketAddr, mut conn: Conn) {
    super::spare::return_read_buffer(std::mem::take(&mut conn.buf));
    IDLE.with_borrow_mut(|idle| {
        let kept = idle.by_endpoint.entry(addr).or_default();
        if kept.len() < MAX_IDLE {
            kept.push(conn);
        }
        idle.returns_since_sweep += 1;
        if idle.returns_since_sweep >= SWEEP_EVERY {
            idle.returns_since_sweep = 0;
            sweep(idle);
        }
    });
}

/// Drops the idle connections that their endpoints closed, and the addresses left with none.
fn sweep(idle: &mut Idle) {
    idle.by_endpoint.retain(|_, kept| {
        kept.retain(|conn| is_quiet(&conn.stream));
        !kept.is_empty()
    });
}

/// How many idle connections this thread keeps to `addr` (for tests).
#[cfg(test)]
fn idle_count(addr: SocketAddr) -> usize {
    IDLE.with_borrow(|idle| idle.by_endpoint.get(&addr).map_or(0, Vec::len))
}

/// Opens a connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Conn {
        stream,
        buf: super::spare::read_buffer(),
        reused: false,
    })
}

/// Asks the socket (a non-blocking peek): nothing to read, not closed.
fn peek_is_quiet(stream: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut probe) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false, // closed (0) or stray bytes
    }
}

/// Nothing to read on an idle connection: no close, no stray bytes. Readiness is cached by
/// the runtime (cleared by the last read that drained the socket), so a quiet connection
/// costs nothing to check and a possibly stale "readable" is confirmed with one read.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut context) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(listener: &tokio::net::TcpListener) -> (Conn, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(connect(addr), listener.accept());
        (conn.unwrap(), accepted.unwrap().0)
    }

    /// Waits (with a deadline) until the runtime has seen that the peer of the oldest idle
    /// connection to `addr` closed it.
    async fn until_seen_closed(addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while IDLE.with_borrow(|idle| is_quiet(&idle.by_endpoint[&addr][0].stream)) {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_comes_back_to_its_thread_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn, _peer) = pair(&listener).await;
        put(addr, conn);
        assert_eq!(idle_count(addr), 1);
        let elsewhere = std::thread::spawn(move || take(addr, false).is_none())
            .join()
            .unwrap();
        assert!(
            elsewhere,
            "another proxy thread has its own idle connections"
        );
        let again = take(addr, false).expect("the kept connection");
        assert!(again.reused);
        assert!(take(addr, false).is_none(), "taken once");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_the_endpoint_closed_are_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, peer) = pair(&listener).await;
        put(addr, closed);
        drop(peer);
        until_seen_closed(addr).await;
        assert!(
            take(addr, false).is_none(),
            "a closed connection is not handed out"
        );

        let (closed, peer) = pair(&listener).await;
        let (open, _open_peer) = pair(&listener).await;
        put(addr, closed);
        put(addr, open);
        drop(peer);
        until_seen_closed(addr).await;
        IDLE.with_borrow_mut(sweep);
        assert_eq!(idle_count(addr), 1, "the sweep keeps only the open one");
        drop(take(addr, false));
        IDLE.with_borrow_mut(sweep);
        assert!(
            IDLE.with_borrow(|idle| idle.by_endpoint.is_empty()),
            "an address left with nothing is forgotten"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_confirmed_take_sees_a_close_the_runtime_has_not_yet() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn, peer) = pair(&listener).await;
        put(addr, conn);
        // Closed just now: no await in between, so the runtime has not polled for it and its
        // cached readiness still says quiet.
        drop(peer);
        assert!(
            IDLE.with_borrow(|idle| is_quiet(&idle.by_endpoint[&addr][0].stream)),
            "the cache has not caught up (the case a confirmed take is for)"
        );
        assert!(
            take(addr, true).is_none(),
            "asking the socket sees the close"
        );
    }
}
