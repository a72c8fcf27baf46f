//! HTTP/2 over mutual TLS to other sidecars: what a sidecar's outbound side sends on. One
//! multiplexed connection per destination sidecar, caller identity and proxy thread (so a
//! handshake is paid per connection, not per request), opened with this sidecar's current
//! certificate (a rotation reaches new connections; open ones keep running), the server
//! verified by the mesh's roots, by its service's DNS name and by the SPIFFE identity in its
//! certificate. On the mesh's own HTTP/2 client ([`super::client`] says why): a request goes
//! out, and its answer is awaited, in the task that holds it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::Body;
use super::client::{self, Client, ResponseFuture, SendStream, StreamError};
use super::streams::send_body;
use crate::fast_hash::FastHash;
use crate::plan::AttemptError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Flow-control windows and send buffer: hyper's defaults for its HTTP/2 client, which this
/// one replaces (a stream may have 2 MiB in flight, the connection 5 MiB).
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;
/// What a stream's body may queue ahead of the peer's window.
const SEND_BUFFER: usize = 64 << 10;
const MAX_HEADER_LIST: u32 = 16 << 10;

/// What a sidecar dials with: its client configuration and trust domain, replaced on rotation.
#[derive(Debug, Clone)]
pub struct MeshClient {
    pub config: Arc<rustls::ClientConfig>,
    pub trust_domain: String,
    /// Whom this client is (its SPIFFE id): connections are kept per caller, so that two
    /// sidecars in one process never share one (a connection carries its opener's identity).
    pub identity: String,
}

/// The sidecar's current client side (`None` until it has a certificate).
pub type MeshTls = watch::Receiver<Option<MeshClient>>;

/// What a request's body is on its way to the destination.
pub(crate) enum Outgoing {
    /// All of it, already read (nothing, often): sent with the head, no task of its own.
    Whole(Bytes),
    /// A stream (an upload, a gRPC stream), piped by a task of its own, since the answer may
    /// come, and be relayed, while the body still flows.
    Stream(Body),
}

/// A kept connection: the handle for new streams, and whether the connection still runs.
#[derive(Clone)]
struct Kept {
    sender: Client,
    open: Arc<AtomicBool>,
}

/// A kept connection and what it is for: the destination's service and the caller's identity
/// (a sidecar's address may serve several, and a thread may carry several callers).
struct KeptFor {
    service: String,
    caller: String,
    kept: Kept,
}

impl KeptFor {
    fn is_for(&self, service: &str, caller: &str) -> bool {
        self.service == service && self.caller == caller
    }
}

thread_local! {
    /// Kept connections by destination sidecar, then by (service, caller) in a short list:
    /// a request finds its connection without building a key (two strings) or hashing it
    /// with SipHash, which the `HashMap` by the whole key cost per request.
    static CONNECTIONS: RefCell<HashMap<SocketAddr, Vec<KeptFor>, FastHash>> = RefCell::default();
}

/// Whom this sidecar calls as: its SPIFFE id (empty before it has a certificate).
fn identity(client: &Option<MeshClient>) -> &str {
    client
        .as_ref()
        .map_or("", |client| client.identity.as_str())
}

/// The sender of `addr`'s running connection for (`service`, `caller`). One that no longer
/// runs is left for [`keep`] to replace.
fn kept_sender(addr: SocketAddr, service: &str, caller: &str) -> Option<Client> {
    CONNECTIONS.with_borrow(|all| {
        let kept = &all
            .get(&addr)?
            .iter()
            .find(|k| k.is_for(service, caller))?
            .kept;
        kept.open
            .load(Ordering::Acquire)
            .then(|| kept.sender.clone())
    })
}

/// Keeps `entry` as `addr`'s connection for its (service, caller), in place of any other
/// (one that stopped, or one two first requests opened at once: the last one opened is kept).
fn keep(addr: SocketAddr, entry: KeptFor) {
    CONNECTIONS.with_borrow_mut(|all| {
        let list = all.entry(addr).or_default();
        list.retain(|k| !k.is_for(&entry.service, &entry.caller));
        list.push(entry);
    });
}

/// Forgets `addr`'s connection for (`service`, `caller`), if it is still kept.
fn forget(addr: SocketAddr, service: &str, caller: &str) {
    CONNECTIONS.with_borrow_mut(|all| {
        if let Some(list) = all.get_mut(&addr) {
            list.retain(|k| !k.is_for(service, caller));
            if list.is_empty() {
                all.remove(&addr);
            }
        }
    });
}

/// Sends the request `head` with `body` to the sidecar of `service` at `addr`.
pub(crate) async fn send(
    tls: &MeshTls,
    service: &str,
    addr: SocketAddr,
    head: http::Request<()>,
    body: Outgoing,
) -> Result<http::Response<Body>, AttemptError> {
    let end_with_head = matches!(&body, Outgoing::Whole(bytes) if bytes.is_empty());
    let (response, mut stream) = open(tls, service, addr, head, end_with_head).await?;
    match body {
        Outgoing::Whole(bytes) if !bytes.is_empty() => {
            // At most a replayable body's size: h2 holds what the window does not yet allow.
            stream
                .send_data(bytes, true)
                .map_err(|e| AttemptError::Upstream(format!("sending the body: {e}")))?;
        }
        Outgoing::Whole(_) => {}
        Outgoing::Stream(body) => {
            tokio::spawn(send_body(body, stream));
        }
    }
    answer(response, addr).await
}

/// Opens a stream with the request `head` on a kept connection to the sidecar of `service`
/// at `addr` (or a new one), the head ending the request if `end_with_head`; the caller
/// sends the body, if any, on the stream.
pub(crate) async fn open(
    tls: &MeshTls,
    service: &str,
    addr: SocketAddr,
    head: http::Request<()>,
    end_with_head: bool,
) -> Result<(ResponseFuture, SendStream), AttemptError> {
    let kept = kept_sender(addr, service, identity(&tls.borrow()));
    let sender = match kept {
        Some(sender) => sender,
        None => {
            // The identity it opens with, read once: what the connection is kept under.
            let caller = identity(&tls.borrow()).to_owned();
            let kept = connect(tls, service, addr).await?;
            let sender = kept.sender.clone();
            let entry = KeptFor {
                service: service.to_owned(),
                caller,
                kept,
            };
            keep(addr, entry);
            sender
        }
    };
    let not_sent = |e: StreamError| {
        forget(addr, service, identity(&tls.borrow()));
        AttemptError::Connect(format!("connection to {addr}: {e}"))
    };
    // Ready when the peer's limit on concurrent streams leaves room for one more.
    std::future::poll_fn(|cx| sender.poll_ready(cx))
        .await
        .map_err(not_sent)?;
    sender.send_request(&head, end_with_head).map_err(not_sent)
}

/// The answer's head, once it comes, its body to follow.
pub(crate) async fn answer(
    response: ResponseFuture,
    addr: SocketAddr,
) -> Result<http::Response<Body>, AttemptError> {
    let response = response.await.map_err(|e| match e {
        // The peer did not process it (RFC 9113 §8.7): safe to send elsewhere.
        StreamError::Refused => AttemptError::Connect(format!("{addr} refused the stream")),
        e => AttemptError::Upstream(e.to_string()),
    })?;
    Ok(response.map(|body| body.map_err(|e| Box::new(e) as _).boxed()))
}

async fn connect(tls: &MeshTls, service: &str, addr: SocketAddr) -> Result<Kept, AttemptError> {
    let stream = dial(tls, service, addr).await?;
    let config = client::Config {
        stream_window: STREAM_WINDOW,
        connection_window: CONNECTION_WINDOW,
        max_header_list: MAX_HEADER_LIST,
        send_buffer: SEND_BUFFER,
        // Ours to open: the peer opens none.
        max_concurrent_streams: 0,
    };
    let (sender, connection) = client::handshake(stream, config);
    let open = Arc::new(AtomicBool::new(true));
    let running = open.clone();
    tokio::spawn(async move {
        connection.await;
        running.store(false, Ordering::Release);
    });
    Ok(Kept { sender, open })
}

/// A new mTLS connection to the sidecar of `service` at `addr`, opened with this sidecar's
/// current certificate, the server checked by the mesh's roots, by its service's DNS name and
/// by the SPIFFE identity in its certificate. What HTTP/2 runs on, and what a TCP upstream
/// pipes bytes through.
pub(crate) async fn dial(
    tls: &MeshTls,
    service: &str,
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, AttemptError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        AttemptError::Connect(format!("{what} {addr}: {e}"))
    };
    let Some(client) = tls.borrow().clone() else {
        return Err(AttemptError::Connect(
            "this sidecar has no certificate yet".into(),
        ));
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| failed("connect", &e))?
        .map_err(|e| failed("connect", &e))?;
    let _ = stream.set_nodelay(true);
    let name = wharf_mesh::tls::server_name(service).map_err(|e| failed("name", &e))?;
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|e| failed("TLS handshake with", &e))?
        .map_err(|e| failed("TLS handshake with", &e))?;
    let (_, session) = stream.get_ref();
    let peer = wharf_mesh::tls::peer_identity(session.peer_certificates(), &client.trust_domain)
        .map_err(|e| failed("the certificate of", &e))?;
    if !peer.service.eq_ignore_ascii_case(service) {
        return Err(failed(
            "the certificate of",
            &format!("it is {}, not {service}", peer.service),
        ));
    }
    Ok(stream)
}
