//! Kept-alive HTTP/1.1 connections to one endpoint.
//!
//! Each proxy thread runs its own event loop, so each keeps its own idle connections (a
//! connection is registered with the loop that opened it): the pool has one shard per
//! thread, and a thread only takes from and returns to its own.
//!
//! A request takes the most recently used idle connection (or opens one) and owns it until the
//! response has been read to its end; then the connection goes back, ready for the next. An
//! idle connection that the endpoint closed (or that received bytes nobody asked for) shows
//! as readable, which costs no system call to see; it is dropped when next taken.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle connections kept per endpoint, at most.
const MAX_IDLE: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to an endpoint and the bytes read from it but not yet used (no buffer while
/// it idles in the pool).
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It carried a request before: if it fails before any answer, the endpoint may simply
    /// have closed it while idle.
    pub reused: bool,
}

/// Threads serving clients (so shards per pool); set before any pool is made.
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static THIS_WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many proxy threads there are (the largest count asked for wins).
pub fn set_workers(count: usize) {
    WORKERS.fetch_max(count.max(1), Ordering::Relaxed);
}

/// Which proxy thread this is.
pub fn set_this_worker(index: usize) {
    THIS_WORKER.set(index);
}

/// One endpoint's idle connections, a stack per proxy thread.
pub struct Pool {
    shards: Box<[Mutex<Vec<Conn>>]>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            shards: (0..WORKERS.load(Ordering::Relaxed))
                .map(|_| Mutex::default())
                .collect(),
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self
            .shards
            .iter()
            .map(|shard| shard.lock().map(|idle| idle.len()).unwrap_or(0))
            .sum();
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    fn shard(&self) -> &Mutex<Vec<Conn>> {
        &self.shards[THIS_WORKER.get() % self.shards.len()]
    }

    /// An idle connection that still looks usable, if there is one.
    pub fn take(&self) -> Option<Conn> {
        let shard = self.shard();
        loop {
            let mut conn = shard.lock().expect("pool lock").pop()?;
            if is_quiet(&conn.stream) {
                conn.reused = true;
                conn.buf = super::spare::read_buffer();
                return Some(conn);
            }
        }
    }

    /// Keeps a connection whose last exchange ended cleanly (nothing left in its buffer,
    /// which goes back to the thread's spares while the connection idles).
    pub fn put(&self, mut conn: Conn) {
        super::spare::return_read_buffer(std::mem::take(&mut conn.buf));
        let mut idle = self.shard().lock().expect("pool lock");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Opens a connection to `addr`.
pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
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
