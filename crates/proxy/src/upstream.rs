//! HTTP/1.1 connections to one endpoint, kept for reuse.
//!
//! The general pooled client (hyper-util's) looks connections up by scheme and authority
//! under a lock, wraps each in a pool guard and signals readiness through extra channels on
//! every request. The proxy already holds the endpoint when it sends, so each endpoint keeps
//! its own stack of idle connections: a request takes one that is ready (or opens one), and
//! puts it back as soon as the response head has arrived; a connection still busy streaming a
//! body is simply skipped by the next request.

use std::net::SocketAddr;
use std::sync::Mutex;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::forward::Body;

/// Idle connections kept per endpoint, at most.
const MAX_IDLE: usize = 256;

/// Why a request did not get a response.
#[derive(Debug)]
pub struct SendError {
    /// Nothing was sent: the connection could not be made.
    pub connect: bool,
    pub message: String,
}

/// One endpoint's connections.
#[derive(Debug, Default)]
pub struct Connections {
    idle: Mutex<Vec<SendRequest<Body>>>,
}

impl Connections {
    /// Sends `request` on a ready connection to `addr`, opening one if none is.
    pub async fn send(
        &self,
        addr: SocketAddr,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let mut sender = match self.take_ready() {
            Some(sender) => sender,
            None => connect(addr).await?,
        };
        let response = sender.send_request(request).await.map_err(|e| SendError {
            // A reused connection that the server closed while idle: nothing was processed.
            connect: e.is_canceled(),
            message: wharf_model::error_chain(&e),
        })?;
        if !sender.is_closed() {
            let mut idle = self.idle.lock().expect("connections lock");
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
        Ok(response)
    }

    /// The most recently used idle connection that is ready; busy ones stay for later,
    /// closed ones are dropped.
    fn take_ready(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().expect("connections lock");
        let mut found = None;
        let mut position = idle.len();
        while position > 0 {
            position -= 1;
            if idle[position].is_closed() {
                idle.swap_remove(position);
            } else if idle[position].is_ready() {
                found = Some(idle.swap_remove(position));
                break;
            }
        }
        found
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, SendError> {
    let failed = |e: &dyn std::error::Error| SendError {
        connect: true,
        message: format!("connect {addr}: {}", wharf_model::error_chain(e)),
    };
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(addr),
    )
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
