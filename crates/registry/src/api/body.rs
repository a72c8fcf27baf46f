//! Request bodies, read with a size limit and a stall limit, each refused with its reason.
//!
//! axum's `Bytes` extractor has a size limit but no notion of a body that stops moving: a
//! client that announces a body and then sends nothing would hold its connection (and its
//! slot under the per-client limit) for as long as it likes. Reading frame by frame with a
//! deadline per frame bounds that, as Envoy's stream idle timeout does, without bounding a
//! large body that keeps arriving.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;

use super::ApiError;
use crate::Agent;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Most bytes of a refused body read and dropped before the refusal is sent.
const DRAIN_LIMIT: usize = 4 * MAX_BODY;

/// Reads and drops what is left of a refused body, up to [`DRAIN_LIMIT`], so that a client
/// still sending it reads the refusal instead of a broken pipe (Go's server does the same
/// with the rest of an oversized body); past the limit the connection is simply closed.
async fn drain(body: &mut axum::body::Body, stall: std::time::Duration) {
    let mut dropped = 0;
    while dropped < DRAIN_LIMIT {
        match tokio::time::timeout(stall, body.frame()).await {
            Ok(Some(Ok(frame))) => dropped += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

/// A whole request body, at most [`MAX_BODY`] bytes, none of its frames later than the
/// registry's read timeout.
#[derive(Debug)]
pub(super) struct RequestBody(pub Bytes);

impl std::ops::Deref for RequestBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl FromRequest<Arc<Agent>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, agent: &Arc<Agent>) -> Result<Self, ApiError> {
        let stall = agent.config.http_limits.read_timeout;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large: at most {MAX_BODY} bytes"),
            )
        };
        let announced = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = request.into_body();
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            drain(&mut body, stall).await;
            return Err(too_large());
        }
        let mut collected = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout(stall, body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "Request body stalled: nothing received for {}",
                            wharf_model::format_go_duration(stall)
                        ),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(format!(
                        "Failed to read the request body: {e}"
                    )));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > MAX_BODY {
                    drain(&mut body, stall).await;
                    return Err(too_large());
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(RequestBody(collected.freeze()))
    }
}

/// An object's keys spelled as `names` spell them, matched case-insensitively as Go's JSON
/// decoder matches them (py-consul sends `ttl`, `lockdelay`; npm `consul` sends `TTL`,
/// `LockDelay`); keys that match none are left as they are.
pub(super) fn go_fields(value: serde_json::Value, names: &[&str]) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(go_spelling(map, names)),
        other => other,
    }
}

/// [`go_fields`] of an object.
pub(super) fn go_spelling(
    map: serde_json::Map<String, serde_json::Value>,
    names: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    map.into_iter()
        .map(|(key, value)| {
            let name = names.iter().find(|name| name.eq_ignore_ascii_case(&key));
            (name.map_or(key, |name| (*name).to_owned()), value)
        })
        .collect()
}
