//! The DNS interface: find healthy instances by name with `dig`, HAProxy or any resolver.
//!
//! The wire format comes from `hickory-proto` (pinned: its API moves between releases, and
//! only [`answer`] touches it). The servers are written here rather than with
//! `hickory-server`: its authority model is built around zones of stored records, while every
//! answer here is computed from the live catalog, and the size rules (Consul's answer limit
//! without EDNS0, no TC for that limit) are ours to apply. What is left is two small loops.
//!
//! UDP: a few threads share one socket, each taking a batch of questions per system call.
//! TCP: a task per connection, length-prefixed messages, closed after [`TCP_IDLE`] of silence;
//! with a TLS configuration, every TCP connection is DNS over TLS (RFC 7858, ALPN `dot`),
//! its handshake bound by the same idle limit, while UDP stays plain.

pub mod answer;
pub mod cache;
pub mod names;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

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
    tls: Option<Arc<rustls::ServerConfig>>,
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
    serve_tcp(
        tcp,
        tls.map(tokio_rustls::TlsAcceptor::from),
        zone,
        catalog,
        shutdown,
    )
    .await;
}

/// Datagrams taken from (and answers given to) the kernel per system call.
const UDP_BATCH: usize = 32;
/// Room for one datagram; a larger question is cut and gets FORMERR.
const UDP_DATAGRAM: usize = 4096;

/// One UDP worker: a plain thread blocking on the socket, taking and answering up to
/// [`UDP_BATCH`] datagrams per system call (`recvmmsg`/`sendmmsg`, as NSD does). A question
/// costs a microsecond; the system calls around it cost more, so batching them is what sets
/// the rate. The thread notices shutdown through the socket's receive timeout.
fn serve_udp(
    socket: std::net::UdpSocket,
    zone: Arc<Zone>,
    catalog: Arc<Catalog>,
    shutdown: watch::Receiver<bool>,
) {
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

    let _ = socket.set_read_timeout(Some(Duration::from_millis(250)));
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; UDP_DATAGRAM]; UDP_BATCH];
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    let mut replies: Vec<Vec<u8>> = (0..UDP_BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut cache = cache::AnswerCache::default();
    while !*shutdown.borrow() {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(
                fd,
                &mut receive_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => received.extend(results.filter_map(|r| Some((r.bytes, r.address?)))),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; keep serving.
                    tracing::debug!(error = %e, "dns udp receive");
                    continue;
                }
            }
        }
        let mut answered: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(received.len());
        catalog.read(|state| {
            for (slot, (len, peer)) in received.iter().enumerate() {
                let packet = &buffers[slot][..(*len).min(UDP_DATAGRAM)];
                if cache.answer_into(&zone, state, packet, Transport::Udp, &mut replies[slot]) {
                    answered.push((slot, *peer));
                }
            }
        });
        if answered.is_empty() {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = answered
            .iter()
            .map(|(slot, _)| [IoSlice::new(&replies[*slot])])
            .collect();
        let addresses: Vec<Option<SockaddrStorage>> =
            answered.iter().map(|(_, peer)| Some(*peer)).collect();
        let control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
        if let Err(e) = sendmmsg(
            fd,
            &mut send_headers,
            slices.iter(),
            &addresses,
            control,
            MsgFlags::empty(),
        ) {
            tracing::debug!(error = %e, "dns udp send");
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        let (zone, catalog) = (zone.clone(), catalog.clone());
        match &tls {
            None => {
                tokio::spawn(serve_tcp_connection(stream, zone, catalog));
            }
            Some(acceptor) => {
                let accepting = acceptor.accept(stream);
                tokio::spawn(async move {
                    match tokio::time::timeout(TCP_IDLE, accepting).await {
                        Ok(Ok(stream)) => serve_tcp_connection(stream, zone, catalog).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "dns over tls: handshake"),
                        Err(_) => tracing::debug!("dns over tls: handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_tcp_connection(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    zone: Arc<Zone>,
    catalog: Arc<Catalog>,
) {
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
