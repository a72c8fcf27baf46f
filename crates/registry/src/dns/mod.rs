//! The DNS interface: find healthy instances by name with `dig`, HAProxy or any resolver.
//!
//! The wire format comes from `hickory-proto` (pinned: its API moves between releases, and
//! only [`answer`] touches it). The servers are written here rather than with
//! `hickory-server`: its authority model is built around zones of stored records, while every
//! answer here is computed from the live catalog, and the size rules (Consul's answer limit
//! without EDNS0, no TC for that limit) are ours to apply. What is left is two small loops.
//!
//! UDP: a few tasks share one socket, each answering in turn (a question costs microseconds;
//! spawning per packet would cost more). TCP: a task per connection, length-prefixed
//! messages, closed after [`TCP_IDLE`] of silence.

pub mod answer;
pub mod names;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

pub use answer::{Transport, Zone};

use crate::catalog::Catalog;

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
    let udp = Arc::new(udp);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(serve_udp(
            udp.clone(),
            zone.clone(),
            catalog.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(serve_tcp(tcp, zone, catalog, shutdown)));
    for task in tasks {
        let _ = task.await;
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    zone: Arc<Zone>,
    catalog: Arc<Catalog>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; keep serving.
                    tracing::debug!(error = %e, "dns udp receive");
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => return,
        };
        let reply = catalog.read(|state| answer::answer(&zone, state, &buf[..len], Transport::Udp));
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer).await;
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
