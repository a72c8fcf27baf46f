//! Every answer the proxy makes itself, in one place: [`Refusal`] names each (its status,
//! its `x-wharf-error` reason, its one-line body), and this module renders it for both
//! transports, [`write_h1`] for the hand-written HTTP/1 path and [`http2_response`] for the
//! HTTP/2 path on hyper. `docs/request-lifecycle.md` lists them.

use std::io::Write;

use http::{HeaderValue, Response, StatusCode};

/// A response the proxy makes itself, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoHost,
    UnknownService(String),
    RegistryUnavailable,
    Overloaded(String),
    NoHealthyInstance(String),
    RetryBudgetExhausted(String),
    Timeout(String),
    Upstream(String),
    BadRequestBody(String),
    /// HTTP/1: the request head did not arrive within the header timeout.
    HeadTimeout,
    /// HTTP/1: the request head is over the size or field-count limit (what was over).
    HeadTooLarge(String),
    /// HTTP/1: the request head cannot be read, or its framing is ambiguous (why).
    MalformedRequest(String),
    /// HTTP/1: a `CONNECT`, which a gateway does not tunnel.
    ConnectNotSupported,
    /// A sidecar's inbound side: no intention lets the caller in (why).
    Denied(String),
    /// A service scaled to zero had no instance pass within the wait (its name, the wait).
    NotStarted(String, std::time::Duration),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost | Refusal::BadRequestBody(_) | Refusal::MalformedRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::ConnectNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Denied(_) => StatusCode::FORBIDDEN,
            Refusal::UnknownService(_) => StatusCode::NOT_FOUND,
            Refusal::RegistryUnavailable
            | Refusal::Overloaded(_)
            | Refusal::NoHealthyInstance(_)
            | Refusal::NotStarted(..)
            | Refusal::RetryBudgetExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `x-wharf-error` value, also the `reason` label of the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoHost => "no-host",
            Refusal::UnknownService(_) => "unknown-service",
            Refusal::RegistryUnavailable => "registry-unavailable",
            Refusal::Overloaded(_) => "overloaded",
            Refusal::NoHealthyInstance(_) => "no-healthy-instance",
            Refusal::RetryBudgetExhausted(_) => "retry-budget-exhausted",
            Refusal::Timeout(_) => "timeout",
            Refusal::Upstream(_) => "upstream-error",
            Refusal::BadRequestBody(_) => "bad-request-body",
            Refusal::HeadTimeout => "head-timeout",
            Refusal::HeadTooLarge(_) => "head-too-large",
            Refusal::MalformedRequest(_) => "malformed-request",
            Refusal::ConnectNotSupported => "connect-not-supported",
            Refusal::Denied(_) => "denied",
            Refusal::NotStarted(..) => "not-started",
        }
    }
}

/// The one-line explanation in the body.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoHost => write!(
                f,
                "the request names no service: set Host to NAME or NAME.service.wharf"
            ),
            Refusal::UnknownService(name) => write!(f, "no service named {name:?}"),
            Refusal::RegistryUnavailable => {
                write!(f, "the proxy has not reached the registry yet")
            }
            Refusal::Overloaded(name) => write!(f, "{name} has too many requests in flight"),
            Refusal::NoHealthyInstance(name) => write!(f, "{name} has no healthy instance"),
            Refusal::RetryBudgetExhausted(name) => write!(
                f,
                "{name}: the attempt failed and the retry budget is spent"
            ),
            Refusal::Timeout(name) => write!(f, "{name} did not answer in time"),
            Refusal::Upstream(error) => write!(f, "{error}"),
            Refusal::BadRequestBody(error) => {
                write!(f, "could not read the request body: {error}")
            }
            Refusal::HeadTimeout => write!(f, "the request head did not arrive in time"),
            Refusal::HeadTooLarge(what) | Refusal::MalformedRequest(what) => write!(f, "{what}"),
            Refusal::ConnectNotSupported => write!(
                f,
                "CONNECT is not supported: this is a gateway, not a forward proxy"
            ),
            Refusal::Denied(why) => write!(f, "denied: {why}"),
            Refusal::NotStarted(name, wait) => write!(
                f,
                "{name} is scaled to zero and no instance passed within {}s of the request",
                wait.as_secs()
            ),
        }
    }
}

/// Writes `refusal` as an HTTP/1.1 response into `out`, with `connection: close` if `close`.
pub(crate) fn write_h1(out: &mut Vec<u8>, refusal: &Refusal, close: bool) {
    let body = format!("{refusal}\n");
    let status = refusal.status();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nx-wharf-error: {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        refusal.reason(),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
}

/// `refusal` as a response of the HTTP/2 path (the transport boxes the body as it boxes
/// every body).
pub(crate) fn http2_response(refusal: &Refusal) -> Response<bytes::Bytes> {
    let mut response = Response::new(bytes::Bytes::from(format!("{refusal}\n")));
    *response.status_mut() = refusal.status();
    let headers = response.headers_mut();
    headers.insert("x-wharf-error", HeaderValue::from_static(refusal.reason()));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_renderings_carry_the_status_the_reason_and_the_line() {
        let refusal = Refusal::HeadTooLarge("the request head is over 64 KiB".into());
        let mut out = Vec::new();
        write_h1(&mut out, &refusal, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nx-wharf-error: head-too-large\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nthe request head is over 64 KiB\n"));
        let response = http2_response(&refusal);
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(response.headers()["x-wharf-error"], "head-too-large");
    }

    #[test]
    fn every_refusal_has_its_own_reason() {
        let all = [
            Refusal::NoHost,
            Refusal::UnknownService("a".into()),
            Refusal::RegistryUnavailable,
            Refusal::Overloaded("a".into()),
            Refusal::NoHealthyInstance("a".into()),
            Refusal::RetryBudgetExhausted("a".into()),
            Refusal::Timeout("a".into()),
            Refusal::Upstream("x".into()),
            Refusal::BadRequestBody("x".into()),
            Refusal::HeadTimeout,
            Refusal::HeadTooLarge("x".into()),
            Refusal::MalformedRequest("x".into()),
            Refusal::ConnectNotSupported,
            Refusal::Denied("x".into()),
        ];
        let reasons: std::collections::HashSet<&str> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(
            all.iter()
                .all(|r| r.status().is_client_error() || r.status().is_server_error())
        );
    }
}
