//! A sidecar's inbound side: terminates mTLS from other sidecars (and the gateway), knows the
//! caller by the SPIFFE identity in its certificate, asks the cached intentions, and forwards
//! what is allowed to the app on loopback (HTTP/1.1, or h2c for gRPC, which needs HTTP/2's
//! trailers end to end). HTTP services are decided per request (L7
//! permissions, and so that a change of intention also reaches requests on connections
//! already open); a denied request gets 403 with `x-wharf-error: denied`. TCP services are
//! decided per connection; a denied one is closed.
//!
//! In `permissive` mode (for moving a service to mTLS), a connection whose first byte is not
//! a TLS handshake record is served as plaintext from an unknown caller, with no intention
//! to check, and counted as such (`wharf_sidecar_inbound_connections_total{kind}`), so that
//! the metrics say whether switching to `strict` would refuse anyone. `strict` refuses it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wharf_mesh::SpiffeId;
use wharf_mesh::intentions::RequestFacts;

use super::Protocol;
use super::admin::ConnectionKind;
use super::credentials::InboundTls;
use super::policy::Policy;
use crate::answers::Refusal;
use crate::h2::{self, Body};
use crate::hop::strip_hop_by_hop;
use crate::plan::AttemptError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every inbound connection shares.
pub(crate) struct Inbound {
    pub(crate) service: String,
    pub(crate) app: SocketAddr,
    pub(crate) protocol: Protocol,
    pub(crate) tls: watch::Receiver<Option<InboundTls>>,
    pub(crate) policy: Policy,
    pub(crate) health: Arc<super::admin::Health>,
    pub(crate) mode: super::Mode,
    /// The access log and taps, shared with the outbound side.
    pub(crate) observers: Arc<crate::access::Observers>,
    /// Its golden metrics by caller.
    pub(crate) callers: Arc<crate::golden::CallerRows>,
}

/// Whether the first bytes of a connection are a TLS handshake record (content type 22,
/// then a 3.x version): a ClientHello, as a TLS client sends first.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16] | [0x16, 0x03, ..])
}

pub(crate) async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((stream, peer)) = super::next_connection(&listener, &mut shutdown).await {
        let inbound = inbound.clone();
        tokio::spawn(async move {
            if let Err(why) = connection(stream, peer, &inbound).await {
                tracing::info!(%peer, service = %inbound.service, "sidecar: refused a connection: {why}");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: &Arc<Inbound>,
) -> Result<(), String> {
    if inbound.mode == super::Mode::Permissive {
        let mut first = [0u8; 2];
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
            .await
            .map_err(|_| "nothing arrived in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if n > 0 && !looks_like_tls(&first[..n]) {
            inbound
                .health
                .connection(ConnectionKind::Plaintext, peer.ip());
            return plaintext(stream, peer, inbound).await;
        }
    }
    inbound.health.connection(ConnectionKind::Mtls, peer.ip());
    let Some(tls) = inbound.tls.borrow().clone() else {
        return Err("no certificate yet".into());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "the TLS handshake did not finish in time".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let caller =
        wharf_mesh::tls::peer_identity(stream.get_ref().1.peer_certificates(), &tls.trust_domain)
            .map_err(|e| e.to_string())?;
    match inbound.protocol {
        Protocol::Tcp => {
            let decision = decide::<()>(inbound, &caller, None);
            if let Err(refusal) = decision {
                return Err(refusal.to_string());
            }
            pipe_to_app(stream, inbound).await
        }
        Protocol::Http => {
            let xfcc = HeaderValue::from_str(&format!("By={};URI={caller}", tls.identity)).ok();
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                // Other sidecars (and the gateway): their streams answered in this task.
                let identity = &caller;
                return h2::server::serve(stream, |request| {
                    let who = Caller {
                        name: &identity.service,
                        mtls: true,
                        client: peer,
                    };
                    handle(inbound, who, Some(identity), xfcc.clone(), request)
                })
                .await
                .map_err(|e| format!("serving: {e}"));
            }
            let inbound = inbound.clone();
            let caller = Arc::new(caller);
            let service = service_fn(move |request: Request<Incoming>| {
                let (inbound, identity, xfcc) = (inbound.clone(), caller.clone(), xfcc.clone());
                async move {
                    let caller = Caller {
                        name: &identity.service,
                        mtls: true,
                        client: peer,
                    };
                    Ok::<_, std::convert::Infallible>(
                        handle(&inbound, caller, Some(&identity), xfcc, request).await,
                    )
                }
            });
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
                .map_err(|e| format!("serving: {e}"))
        }
    }
}

/// A TCP service's connection, admitted: bytes both ways between the caller and the app.
async fn pipe_to_app(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    inbound: &Inbound,
) -> Result<(), String> {
    let mut app = TcpStream::connect(inbound.app)
        .await
        .map_err(|e| format!("the app at {}: {e}", inbound.app))?;
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut app).await;
    Ok(())
}

/// A permissive inbound side's plaintext connection: no identity, so no intention applies.
async fn plaintext(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: &Arc<Inbound>,
) -> Result<(), String> {
    match inbound.protocol {
        Protocol::Tcp => pipe_to_app(stream, inbound).await,
        Protocol::Http => {
            let inbound = inbound.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let inbound = inbound.clone();
                async move {
                    let caller = Caller {
                        name: "unknown",
                        mtls: false,
                        client: peer,
                    };
                    Ok::<_, std::convert::Infallible>(
                        handle(&inbound, caller, None, None, request).await,
                    )
                }
            });
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
                .map_err(|e| format!("serving: {e}"))
        }
    }
}

struct Facts<'r, B>(&'r Request<B>);

impl<B> RequestFacts for Facts<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }
    fn path(&self) -> &str {
        self.0.uri().path()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.0.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

/// The intentions' decision for `caller`, per request when there is one.
fn decide<B>(
    inbound: &Inbound,
    caller: &SpiffeId,
    request: Option<&Request<B>>,
) -> Result<(), Refusal> {
    let Some(policy) = inbound.policy.load_full() else {
        return Err(Refusal::Denied(
            "the sidecar has not heard the intentions yet".into(),
        ));
    };
    let decision = match request {
        Some(request) => policy.decide_request(&caller.service, &inbound.service, &Facts(request)),
        None => policy.decide_connection(&caller.service, &inbound.service),
    };
    inbound.health.decided(&caller.service, decision.allowed);
    if decision.allowed {
        Ok(())
    } else {
        Err(Refusal::Denied(format!(
            "{} may not call {}: {}",
            caller.service, inbound.service, decision.reason
        )))
    }
}

/// Who called, as the golden metrics and the access log name them.
struct Caller<'c> {
    name: &'c str,
    mtls: bool,
    client: SocketAddr,
}

/// One request from a caller: decided (when it has an identity), sent to the app, recorded.
async fn handle<B>(
    inbound: &Inbound,
    caller: Caller<'_>,
    identity: Option<&SpiffeId>,
    xfcc: Option<HeaderValue>,
    request: Request<B>,
) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    let line = inbound.observers.begin(
        caller.client,
        h2::version_name(request.version()),
        request.method().as_str(),
        &inbound.service,
        request.uri().path_and_query().map_or("/", |p| p.as_str()),
    );
    let decided = match identity {
        Some(identity) => decide(inbound, identity, Some(&request)),
        None => Ok(()),
    };
    let answer = match decided {
        Ok(()) => to_app(inbound, xfcc, request).await,
        Err(denied) => Err(denied),
    };
    let latency = started.elapsed();
    match answer {
        Ok(response) => {
            let failed = response.status().is_server_error();
            inbound
                .callers
                .record(caller.name, caller.mtls, failed, latency);
            if let Some(line) = line {
                let status = response.status().as_u16();
                inbound.observers.inbound(line, caller.name, status, None);
            }
            response
        }
        Err(refusal) => {
            inbound
                .callers
                .record(caller.name, caller.mtls, true, latency);
            if let Some(line) = line {
                inbound
                    .observers
                    .inbound_refused(line, caller.name, &refusal);
            }
            h2::refusal_response(&refusal)
        }
    }
}

/// Sends an admitted request to the app and relays its answer: HTTP/1.1 on the HTTP/1 path's
/// kept connections ([`crate::h1::client`]), or h2c for gRPC. The caller's certificate goes
/// on as `x-forwarded-client-cert` (Envoy's field), replacing any the caller sent.
async fn to_app<B>(
    inbound: &Inbound,
    xfcc: Option<HeaderValue>,
    request: Request<B>,
) -> Result<Response<Body>, Refusal>
where
    B: HttpBody<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
    let failed = |e: AttemptError| Refusal::Upstream(format!("the app at {}: {e}", inbound.app));
    if !h2::is_grpc(request.headers()) {
        return crate::h1::client::send(inbound.app, request, &[(XFCC, xfcc)])
            .await
            .map_err(failed);
    }
    // gRPC needs HTTP/2 end to end (trailers): h2c to the app.
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(XFCC);
    if let Some(xfcc) = xfcc {
        parts.headers.insert(XFCC, xfcc);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::try_from(format!("http://{}{path}", inbound.app))
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_2;
    let upstream = Request::from_parts(parts, body.map_err(|e| Box::new(e) as _).boxed());
    let response = crate::h2::connections::send_grpc(upstream)
        .await
        .map_err(failed)?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as _).boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_told_from_plaintext_by_its_first_bytes() {
        assert!(looks_like_tls(&[0x16, 0x03]));
        assert!(
            looks_like_tls(&[0x16]),
            "one byte so far: a handshake record"
        );
        for plaintext in [&b"GE"[..], b"PR", b"\r\n", &[0x16, 0x00], &[0x00], &[]] {
            assert!(!looks_like_tls(plaintext), "{plaintext:?}");
        }
        // Every two-byte start: only 0x16 0x03 is TLS.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(looks_like_tls(&[a, b]), a == 0x16 && b == 0x03);
            }
        }
    }
}
