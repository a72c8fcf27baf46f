//! A sidecar's outbound side: a plain listener on loopback that the app calls by `Host`, as
//! the gateway routes, and that carries each request over mTLS (HTTP/2, pooled and
//! multiplexed) to a sidecar of the destination service, through the same request plan as
//! the gateway (balancing, retries within the budget, timeouts, outlier ejection).

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::h2::{self, Upstream};
use crate::plan::Shared;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    upstream: Upstream,
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = Arc::new(upstream);
    while let Some((stream, peer)) = super::next_connection(&listener, &mut shutdown).await {
        let (shared, upstream) = (shared.clone(), upstream.clone());
        tokio::spawn(async move {
            // Client connections open now, for the golden metrics' report and /metrics.
            let gauge = shared.metrics.open_connections.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let (shared, upstream) = (shared.clone(), upstream.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        h2::handle(shared, request, peer, &upstream).await,
                    )
                }
            });
            gauge.inc();
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            gauge.dec();
        });
    }
}
