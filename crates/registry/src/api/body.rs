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

/// A whole request body, at most [`MAX_BODY`] bytes, none of its frames later than the
/// registry's read timeout.
#[derive(Debug)]
pub struct RequestBody(pub Bytes);

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
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let mut body = request.into_body();
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
                    return Err(too_large());
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(RequestBody(collected.freeze()))
    }
}
