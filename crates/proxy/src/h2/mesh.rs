//! HTTP/2 over mutual TLS to other sidecars: what a sidecar's outbound side sends on. One
//! multiplexed connection per destination sidecar, caller identity and proxy thread (so a
//! handshake is paid per connection, not per request), opened with this sidecar's current certificate (a rotation
//! reaches new connections; open ones keep running), the server verified by the mesh's roots,
//! by its service's DNS name and by the SPIFFE identity in its certificate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::Body;
use crate::plan::AttemptError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

thread_local! {
    /// Kept connections by (destination sidecar, its service, the caller's identity).
    static CONNECTIONS: RefCell<HashMap<(SocketAddr, String, String), SendRequest<Body>>> = RefCell::default();
}

/// Sends `request` to the sidecar of `service` at `addr`.
pub(crate) async fn send(
    tls: &MeshTls,
    service: &str,
    addr: SocketAddr,
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, AttemptError> {
    let caller = tls
        .borrow()
        .as_ref()
        .map(|client| client.identity.clone())
        .unwrap_or_default();
    let key = (addr, service.to_owned(), caller);
    let kept = CONNECTIONS.with_borrow_mut(|all| match all.get(&key) {
        Some(sender) if !sender.is_closed() => Some(sender.clone()),
        Some(_) => {
            all.remove(&key);
            None
        }
        None => None,
    });
    let mut sender = match kept {
        Some(sender) => sender,
        None => {
            let sender = connect(tls, service, addr).await?;
            CONNECTIONS.with_borrow_mut(|all| all.insert(key, sender.clone()));
            sender
        }
    };
    sender.ready().await.map_err(|e| {
        AttemptError::Connect(format!(
            "connection to {addr}: {}",
            wharf_model::error_chain(&e)
        ))
    })?;
    sender.send_request(request).await.map_err(|e| {
        let message = wharf_model::error_chain(&e);
        if e.is_canceled() {
            AttemptError::Connect(message)
        } else {
            AttemptError::Upstream(message)
        }
    })
}

async fn connect(
    tls: &MeshTls,
    service: &str,
    addr: SocketAddr,
) -> Result<SendRequest<Body>, AttemptError> {
    let stream = dial(tls, service, addr).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| AttemptError::Connect(format!("HTTP/2 with {addr}: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
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
