//! A sidecar's outbound side: a plain listener on loopback that the app calls by `Host`, as
//! the gateway routes, and that carries each request over mTLS (HTTP/2, pooled and
//! multiplexed) to a sidecar of the destination service, through the same request plan as
//! the gateway (balancing, retries within the budget, timeouts, outlier ejection). The app's
//! connections are read by the gateway's own HTTP/1.x path ([`crate::h1`]; h2c, for gRPC,
//! by [`crate::h2`]), with the mesh as the upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::h1;
use crate::h2::Upstream;
use crate::plan::Shared;

/// How long the app may take to send a head once it has begun (the gateway's default).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an app's kept-alive connection may wait for its next request: longer than the
/// idle time of common client pools (Go's 90 s), so that the app closes first and never
/// sends on a connection this side has just closed.
const KEEPALIVE: Duration = Duration::from_secs(300);

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    upstream: Upstream,
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = Arc::new(upstream);
    while let Some((stream, peer)) = super::next_connection(&listener, &mut shutdown).await {
        let (shared, upstream, shutdown) = (shared.clone(), upstream.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Client connections open now, for the golden metrics' report and /metrics.
            let gauge = shared.metrics.open_connections.clone();
            gauge.inc();
            let timeouts = (HEADER_TIMEOUT, KEEPALIVE);
            h1::serve(stream, peer, shared, timeouts, &upstream, shutdown).await;
            gauge.dec();
        });
    }
}
