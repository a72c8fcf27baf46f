//! The DNS interface: find healthy instances by name with `dig`, HAProxy or any resolver.
//!
//! The wire format comes from `hickory-proto` (pinned: its API moves between releases, and
//! only [`answer`] touches it). The servers are written here rather than with
//! `hickory-server`: its authority model is built around zones of stored records, while every
//! answer here is computed from the live catalog, and the size rules (Consul's answer limit
//! without EDNS0, no TC for that limit) are ours to apply. What is left is two small loops.
//!
//! UDP: a few threads share one socket, each answering in turn. TCP: a task per connection,
//! length-prefixed messages, closed after [`TCP_IDLE`] of silence.

pub mod answer;
pub mod cache;
pub mod names;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use tokio::sync::watch;

pub use answer::{Transport, Zone};

use crate::catalog::Catalog;

/// Receive buffer asked for on the UDP socket.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// A TCP connection silent this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Binds UDP and TCP on the same port (UDP first, so that port 0 picks one free for both).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // Port 0 chose a UDP port whose TCP twin is taken: try another.
            Err(e) if addr.port() == 0 => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port for DNS")))
}

/// Serves DNS on both sockets until `shutdown` turns true.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    zone: Zone,
    catalog: Arc<Catalog>,
    shutdown: watch::Receiver<bool>,
) {
    let zone = Arc::new(zone);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let udp = match udp
        .into_std()
        .and_then(|socket| socket.set_nonblocking(false).map(|()| socket))
    {
        // A larger receive buffer absorbs bursts while a worker is descheduled; the kernel
        // caps it at net.core.rmem_max.
        Ok(socket) => {
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
            socket
        }
        Err(e) => {
            tracing::error!(error = %e, "dns: cannot use the UDP socket");
            return;
        }
    };
    for n in 0..workers {
        let Ok(socket) = udp.try_clone() else {
            continue;
        };
        let (zone, catalog, shutdown) = (zone.clone(), catalog.clone(), shutdown.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("wharf-dns-udp-{n}"))
            .spawn(move || serve_udp(socket, zone, catalog, shutdown));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "dns: cannot start a UDP worker");
        }
    }
    serve_tcp(tcp, zone, catalog, shutdown).await;
}

/// One UDP worker: a plain thread blocking on the socket. A question costs microseconds, so
/// the async reactor's readiness round trip per packet would cost more than the answer; a
/// blocking `recv_from` loop is what NSD and BIND do too. The thread notices shutdown through
/// a receive timeout.
fn serve_udp(
    socket: std::net::UdpSocket,
    zone: Arc<Zone>,
    catalog: Arc<Catalog>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(250)));
    let mut buf = vec![0u8; 65_535];
    let mut cache = cache::AnswerCache::default();
    let mut reply = Vec::with_capacity(4096);
    while !*shutdown.borrow() {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::debug!(error = %e, "dns udp receive");
                continue;
            }
        };
        let answered = catalog
            .read(|state| cache.answer_into(&zone, state, &buf[..len], Transport::Udp, &mut reply));
        if answered {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    zone: Arc<Zone>,
    catalog: Arc<Catalog>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "dns tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => return,
        };
        tokio::spawn(serve_tcp_connection(stream, zone.clone(), catalog.clone()));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>, catalog: Arc<Catalog>) {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let reply = catalog.read(|state| answer::answer(&zone, state, &buf, Transport::Tcp));
        let Some(reply) = reply else { continue };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
