//! The HTTP listener: hyper directly rather than `axum::serve`, for what Consul clients and
//! operators see: title-cased header names (`X-Consul-Index`, as Go prints them, for scripts
//! that grep `curl -i`), a graceful stop that answers held blocking queries, and Consul's
//! limits on one client: at most [`HttpLimits::max_conns_per_client`] connections per IP
//! address (more are answered 429 and closed, as Consul's `http_max_conns_per_client`), and
//! [`HttpLimits::read_timeout`] for a request head and for an idle kept-alive connection.
//! With TLS on (`--tls-cert`), every connection is a TLS one (rustls), its handshake bound by
//! the same read timeout.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::HttpLimits;

/// The read buffer's cap, and so the largest request head hyper reads (past it, hyper answers
/// a bare 431 and closes). The API's own limits (`api::MAX_URI`, `api::MAX_HEAD_FIELDS`) are
/// inside it, so that a head just over them gets their reasoned 414 or 431. It stays at
/// hyper's minimum, 8 KiB: every held blocking query keeps its connection's buffers, and a
/// larger cap costs about 7 KiB more per held query (measured with `wharf-bench hold`:
/// 14.3 KiB per query at 8 KiB, 21.5 KiB at 16 or 64 KiB).
const MAX_HEAD: usize = 8 * 1024;

/// The reason Consul gives when one address holds too many connections.
pub const TOO_MANY_CONNECTIONS: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls";

/// Serves `router` on `listener` until `shutdown` turns true, then waits (at most a few
/// seconds) for connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .title_case_headers(true)
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a head, on a new connection and
        // after each answer, so it bounds idle kept-alive connections too; a held blocking
        // query is not waiting for a head.
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(MAX_HEAD);
    let connections = ConnectionCounts::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = connections.take(peer.ip(), limits.max_conns_per_client) else {
            tracing::warn!(client = %peer.ip(), limit = limits.max_conns_per_client, "too many connections from one address");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => refuse(stream).await,
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(5), handshake).await
                        {
                            refuse(stream).await;
                        }
                    }
                }
            });
            continue;
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let read_timeout = limits.read_timeout;
        tokio::spawn(async move {
            // hyper's head timer starts only once the protocol is known, which takes a first
            // byte: a connection that sends none within the read timeout is closed here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let Ok(Ok(stream)) = tokio::time::timeout(read_timeout, handshake).await else {
                        return; // not TLS, or too slow to say hello
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Answers the request on a connection over the limit with 429 and its reason, then closes.
/// It reads the request first, so that closing does not reset the answer away.
async fn refuse<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_request| async {
        let body = Full::new(Bytes::from(format!("{TOO_MANY_CONNECTIONS}\n")));
        let mut response = http::Response::new(body);
        *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok::<_, Infallible>(response)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(stream), service);
    let _ = connection.await;
}

/// Open connections per client address.
#[derive(Debug, Clone, Default)]
struct ConnectionCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`ConnectionCounts`], given back when dropped.
struct Slot {
    counts: ConnectionCounts,
    ip: IpAddr,
}

impl ConnectionCounts {
    /// A slot for one more connection from `ip`, unless it already holds `limit` (0: no limit).
    fn take(&self, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut counts = self.0.lock().expect("connection counts lock");
        let count = counts.entry(ip).or_default();
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("connection counts lock");
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let counts = ConnectionCounts::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = counts.take(a, 2).unwrap();
        let _second = counts.take(a, 2).unwrap();
        assert!(counts.take(a, 2).is_none(), "a third from one address");
        assert!(
            counts.take(b, 2).is_some(),
            "another address has its own count"
        );
        drop(first);
        assert!(
            counts.take(a, 2).is_some(),
            "a closed connection frees its slot"
        );
        assert!(counts.take(a, 0).is_some(), "0 means no limit");
    }
}
