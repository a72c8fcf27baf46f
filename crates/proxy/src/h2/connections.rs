//! The HTTP/2 path's connections to endpoints, owned by this transport and kept per proxy
//! thread by endpoint address (as `h1::pool` keeps the HTTP/1 path's): HTTP/1.1 connections
//! for ordinary requests, which every backend speaks, and hyper's HTTP/2 client for gRPC,
//! which needs HTTP/2 end to end.
//!
//! Why not hyper-util's pooled client for the HTTP/1.1 side too: it looks connections up by
//! scheme and authority under a lock, wraps each in a pool guard and signals readiness through
//! extra channels on every request. The request path already holds the endpoint, so this keeps
//! a stack of idle connections per address on each thread (each thread runs its own event loop,
//! and a connection belongs to the loop that opened it): a request takes one that is ready (or
//! opens one) and puts it back as soon as the response head has arrived; a connection still
//! busy streaming a body is simply skipped by the next request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Body;
use crate::plan::AttemptError;

/// Idle connections kept per endpoint and thread, at most.
const MAX_IDLE: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Returns between two sweeps of closed connections (addresses no longer routed to).
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
struct Idle {
    by_endpoint: HashMap<SocketAddr, Vec<SendRequest<Body>>>,
    returns_since_sweep: u32,
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::default();
    static GRPC: Client<HttpConnector, Body> = grpc_client();
}

/// Sends `request` over HTTP/1.1 on a ready connection to `addr`, opening one if none is.
pub(crate) async fn send_http1(
    addr: SocketAddr,
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, AttemptError> {
    let mut sender = match take_ready(addr) {
        Some(sender) => sender,
        None => connect(addr).await?,
    };
    let response = sender.send_request(request).await.map_err(|e| {
        let message = wharf_model::error_chain(&e);
        if e.is_canceled() {
            // A reused connection that the server closed while idle: nothing was processed.
            AttemptError::Connect(message)
        } else {
            AttemptError::Upstream(message)
        }
    })?;
    if !sender.is_closed() {
        put(addr, sender);
    }
    Ok(response)
}

/// Sends a gRPC request (its URI absolute, its version HTTP/2) on this thread's HTTP/2 client.
pub(crate) async fn send_grpc(
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, AttemptError> {
    let client = GRPC.with(Client::clone);
    client.request(request).await.map_err(|e| {
        let message = wharf_model::error_chain(&e);
        if e.is_connect() {
            AttemptError::Connect(message)
        } else {
            AttemptError::Upstream(message)
        }
    })
}

/// The most recently used idle connection to `addr` that is ready; busy ones stay for
/// later, closed ones are dropped.
fn take_ready(addr: SocketAddr) -> Option<SendRequest<Body>> {
    IDLE.with_borrow_mut(|idle| {
        let kept = idle.by_endpoint.get_mut(&addr)?;
        let mut position = kept.len();
        while position > 0 {
            position -= 1;
            if kept[position].is_closed() {
                kept.swap_remove(position);
            } else if kept[position].is_ready() {
                return Some(kept.swap_remove(position));
            }
        }
        None
    })
}

fn put(addr: SocketAddr, sender: SendRequest<Body>) {
    IDLE.with_borrow_mut(|idle| {
        let kept = idle.by_endpoint.entry(addr).or_default();
        if kept.len() < MAX_IDLE {
            kept.push(sender);
        }
        idle.returns_since_sweep += 1;
        if idle.returns_since_sweep >= SWEEP_EVERY {
            idle.returns_since_sweep = 0;
            idle.by_endpoint.retain(|_, kept| {
                kept.retain(|sender| !sender.is_closed());
                !kept.is_empty()
            });
        }
    });
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, AttemptError> {
    let failed = |e: &dyn std::error::Error| {
        AttemptError::Connect(format!("connect {addr}: {}", wharf_model::error_chain(e)))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn grpc_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .timer(TokioTimer::new())
        .http2_only(true)
        .build(connector)
}
