//! The probes behind HTTP, TCP and gRPC checks, with Consul's status rules.
//!
//! - HTTP: 2xx passes, 429 warns, anything else (or no answer within the timeout) is critical;
//!   the output is the status line and the start of the body, as Consul reports it.
//! - TCP: a completed connect passes.
//! - gRPC: `grpc.health.v1.Health/Check` over h2c; `SERVING` passes. The request and answer
//!   are each a one-field protobuf message, so they are encoded here by hand rather than
//!   pulling a protobuf code generator into the build.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wharf_model::check::MAX_OUTPUT;
use wharf_model::{CheckKind, Status, error_chain};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http1_client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build_http()
    })
}

fn h2c_client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http()
    })
}

/// Runs one probe; returns the status and Consul-style output.
pub async fn run(kind: &CheckKind, timeout: Duration) -> (Status, String) {
    let result = match kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            ..
        } => tokio::time::timeout(timeout, http(url, method, header, body)).await,
        CheckKind::Tcp { address } => tokio::time::timeout(timeout, tcp(address)).await,
        CheckKind::Grpc { target, .. } => tokio::time::timeout(timeout, grpc(target)).await,
        CheckKind::Ttl { .. } | CheckKind::Maintenance | CheckKind::External => {
            return (
                Status::Critical,
                "TTL, maintenance and external checks are not probed".into(),
            );
        }
    };
    result.unwrap_or_else(|_| {
        (
            Status::Critical,
            format!("{} check timed out after {timeout:?}", kind.type_name()),
        )
    })
}

async fn http(
    url: &str,
    method: &str,
    header: &std::collections::BTreeMap<String, Vec<String>>,
    body: &str,
) -> (Status, String) {
    let method = if method.is_empty() { "GET" } else { method };
    let mut request = http::Request::builder().method(method).uri(url);
    request = request
        .header("user-agent", "Consul Health Check")
        .header("accept", "text/plain, text/*, */*");
    for (name, values) in header {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let request = match request.body(Full::new(Bytes::from(body.to_owned()))) {
        Ok(request) => request,
        Err(e) => {
            return (
                Status::Critical,
                format!("HTTP {method} {url}: invalid request: {e}"),
            );
        }
    };
    if url.starts_with("https://") {
        return (
            Status::Critical,
            format!("HTTP {method} {url}: https checks are not supported yet"),
        );
    }
    let response = match http1_client().request(request).await {
        Ok(response) => response,
        Err(e) => {
            return (
                Status::Critical,
                format!("HTTP {method} {url}: {}", error_chain(&e)),
            );
        }
    };
    let code = response.status();
    let status = if code.is_success() {
        Status::Passing
    } else if code.as_u16() == 429 {
        Status::Warning
    } else {
        Status::Critical
    };
    let body = match Limited::new(response.into_body(), MAX_OUTPUT)
        .collect()
        .await
    {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::from("(body longer than the output limit)"),
    };
    (
        status,
        format!("HTTP {method} {url}: {code} Output: {body}"),
    )
}

async fn tcp(address: &str) -> (Status, String) {
    match tokio::net::TcpStream::connect(address).await {
        Ok(_) => (Status::Passing, format!("TCP connect {address}: Success")),
        Err(e) => (Status::Critical, format!("dial tcp {address}: {e}")),
    }
}

/// `host:port[/service]` → the gRPC health status of that service.
async fn grpc(target: &str) -> (Status, String) {
    let (address, service) = target.split_once('/').unwrap_or((target, ""));
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0); // not compressed
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)));
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            return (
                Status::Critical,
                format!("gRPC {target}: invalid target: {e}"),
            );
        }
    };
    let response = match h2c_client().request(request).await {
        Ok(response) => response,
        Err(e) => {
            return (
                Status::Critical,
                format!("gRPC {target}: {}", error_chain(&e)),
            );
        }
    };
    let header_status = response.headers().get("grpc-status").cloned();
    let collected = match Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(collected) => collected,
        Err(e) => return (Status::Critical, format!("gRPC {target}: {e}")),
    };
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(header_status);
    if let Some(code) = grpc_status.filter(|code| code.as_bytes() != b"0") {
        return (
            Status::Critical,
            format!(
                "gRPC {target}: grpc-status {}",
                String::from_utf8_lossy(code.as_bytes())
            ),
        );
    }
    match decode_serving_status(collected.to_bytes()) {
        Some(1) => (Status::Passing, format!("gRPC {target}: SERVING")),
        Some(other) => (
            Status::Critical,
            format!("gRPC {target}: status {other} (not SERVING)"),
        ),
        None => (
            Status::Critical,
            format!("gRPC {target}: malformed health response"),
        ),
    }
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads field 1 (`status`, varint) of a `HealthCheckResponse` inside one gRPC frame.
fn decode_serving_status(mut frame: Bytes) -> Option<u64> {
    if frame.len() < 5 || frame[0] != 0 {
        return None;
    }
    frame.advance(1);
    let len = frame.get_u32() as usize;
    let mut message = frame.get(..len)?;
    let mut status = 0; // proto3 default: UNKNOWN
    while !message.is_empty() {
        let key = read_varint(&mut message)?;
        match key & 7 {
            0 => {
                let value = read_varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let len = usize::try_from(read_varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_health_responses() {
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(decode_serving_status(serving), Some(1));
        let not_serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x02]);
        assert_eq!(decode_serving_status(not_serving), Some(2));
        let empty = Bytes::from_static(&[0, 0, 0, 0, 0]);
        assert_eq!(decode_serving_status(empty), Some(0));
        assert_eq!(
            decode_serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])),
            None
        );
        assert_eq!(
            decode_serving_status(Bytes::from_static(&[0, 0, 0, 0, 1, 0x08])),
            None
        );
    }

    #[tokio::test]
    async fn tcp_probe_follows_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let kind = CheckKind::Tcp {
            address: address.clone(),
        };
        assert_eq!(run(&kind, Duration::from_secs(5)).await.0, Status::Passing);
        drop(listener);
        assert_eq!(run(&kind, Duration::from_secs(5)).await.0, Status::Critical);
    }
}
