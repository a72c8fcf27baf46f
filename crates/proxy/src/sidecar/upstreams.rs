//! A sidecar's TCP upstreams (Consul's `Upstreams` with a local bind port): one plain
//! listener on loopback per destination service, for apps that speak something other than
//! HTTP (a database client). Each connection the app opens becomes one mTLS connection to a
//! healthy sidecar of the destination, chosen by the request plan as for an HTTP request
//! (balancing, outlier ejection, a connect failure tried elsewhere within the retry budget,
//! a time limit per try); then bytes flow both ways until either side closes. The
//! destination's sidecar decides by intention per connection, and closes a denied one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::h2::mesh::{self, MeshTls};
use crate::plan::{self, AttemptError, Failure, RequestTraits, Shared, Transport};
use crate::service::{Endpoint, Service};

type MeshStream = tokio_rustls::client::TlsStream<TcpStream>;

/// One attempt to reach the destination: an mTLS connection, nothing sent on it yet (so a
/// failed one may always be tried on another endpoint).
struct Dial<'t> {
    tls: &'t MeshTls,
}

impl Transport for Dial<'_> {
    type Answer = MeshStream;

    fn status(_: &MeshStream) -> StatusCode {
        StatusCode::OK
    }

    async fn send(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<MeshStream, AttemptError> {
        mesh::dial(self.tls, &service.name, endpoint.addr).await
    }
}

/// Serves the upstream `name` on `listener` until shutdown.
pub(crate) async fn serve(
    name: String,
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: MeshTls,
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = Arc::new((name, tls));
    while let Some((stream, peer)) = super::next_connection(&listener, &mut shutdown).await {
        let (shared, upstream) = (shared.clone(), upstream.clone());
        tokio::spawn(async move {
            let (name, tls) = &*upstream;
            if let Err(why) = carry(stream, name, &shared, tls).await {
                tracing::info!(%peer, upstream = %name, "sidecar: closed a TCP upstream connection: {why}");
            }
        });
    }
}

async fn carry(
    mut app: TcpStream,
    name: &str,
    shared: &Shared,
    tls: &MeshTls,
) -> Result<(), String> {
    let service = plan::route(shared, Some(name))
        .await
        .map_err(|refusal| refusal.to_string())?;
    let started = Instant::now();
    let _permit = plan::admit(&service).map_err(|refusal| refusal.to_string())?;
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let nothing_sent = RequestTraits {
        idempotent: true,
        replayable: true,
    };
    let (_, mut remote) = plan::forward(
        &service,
        shared.timeouts,
        None,
        nothing_sent,
        &mut Dial { tls },
        timer,
        started,
    )
    .await
    .map_err(|failure| match failure {
        Failure::Refused(refusal) => {
            plan::refused(&service, started, &refusal);
            refusal.to_string()
        }
        Failure::ClientGone => "the app went away".to_owned(),
    })?;
    let _ = tokio::io::copy_bidirectional(&mut app, &mut remote).await;
    Ok(())
}

/// `NAME=ADDR`, as `--upstream` takes it.
pub fn parse_upstream(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=ADDR"))?;
    wharf_mesh::identity::check_name(name).map_err(|e| format!("{text:?}: {e}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{text:?}: {addr:?} is not an address: {e}"))?;
    Ok((name.to_ascii_lowercase(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_name_equals_address() {
        assert_eq!(
            parse_upstream("DB=127.0.0.1:5432").unwrap(),
            ("db".to_owned(), "127.0.0.1:5432".parse().unwrap())
        );
        for bad in [
            "db",
            "db=",
            "=127.0.0.1:1",
            "d b=127.0.0.1:1",
            "db=localhost",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
