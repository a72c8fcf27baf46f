//! What every request path shares, whatever the protocol it speaks: the plan of a request's
//! attempts ([`Attempts`]): which endpoint next, how long one attempt may take, and
//! whether a failed attempt may be tried again elsewhere — retryable, attempts left, before
//! the overall deadline and within the service's retry budget.
//!
//! Retries sit above the balancer so that a retry reaches another instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tower::retry::budget::Budget;

pub(crate) use crate::answers::Refusal;
use crate::discovery::Service;
use crate::endpoint::Endpoint;

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: usize = 3;

/// Largest request body kept in memory so that the request can be retried.
pub const MAX_REPLAY: u64 = 64 * 1024;

/// Request deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the request's arrival to the response headers, retries included.
    pub overall: Duration,
    /// One attempt.
    pub per_try: Duration,
}

/// The service a request is for, from its `Host` (or HTTP/2 `:authority`): `NAME`,
/// `NAME.service.wharf` or `NAME.service.consul`, any port, any case (lowercase is returned
/// as a borrow, the common case, so that routing allocates nothing).
pub fn service_name(host: &str) -> Option<std::borrow::Cow<'_, str>> {
    let host = host.trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.trim_end_matches('.');
    let lower = |suffix: &str| {
        host.len() >= suffix.len()
            && host.is_char_boundary(host.len() - suffix.len())
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    let name = if lower(".service.wharf") {
        &host[..host.len() - ".service.wharf".len()]
    } else if lower(".service.consul") {
        &host[..host.len() - ".service.consul".len()]
    } else {
        host
    };
    if name.is_empty() {
        None
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(name))
    }
}

/// How an attempt ended, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again on another endpoint.
    Retry,
    /// The failure is final.
    Stop,
    /// It could have been retried, but the service's retry budget is spent.
    BudgetExhausted,
}

/// The attempts of one request to one service.
pub struct Attempts<'s> {
    service: &'s Service,
    per_try: Duration,
    deadline: Instant,
    hash_key: Option<u64>,
    /// Indexes of the endpoints already tried (in the set current at the time).
    tried: Vec<usize>,
    made: usize,
}

impl<'s> Attempts<'s> {
    /// Starts the plan; the request counts towards the service's retry budget.
    pub fn new(service: &'s Service, timeouts: Timeouts, hash_key: Option<u64>) -> Attempts<'s> {
        service.budget.deposit();
        Attempts {
            service,
            per_try: timeouts.per_try,
            deadline: Instant::now() + timeouts.overall,
            hash_key,
            tried: Vec::new(),
            made: 0,
        }
    }

    /// The endpoint for the next attempt (its index in the current set, for [`Self::failed`]).
    pub fn pick(&mut self) -> Result<(usize, Arc<Endpoint>), Refusal> {
        let set = self.service.endpoints.load();
        if tried_all(&self.tried, set.endpoints.len()) {
            self.tried.clear(); // every endpoint tried: a retry may go to one again
        }
        let index = self
            .service
            .balancer
            .load()
            .pick(&set, &self.tried, self.hash_key)
            .ok_or_else(|| Refusal::NoHealthyInstance(self.service.name.clone()))?;
        self.made += 1;
        Ok((index, set.endpoints[index].clone()))
    }

    /// How long this attempt may take: the per-try timeout, cut short by the overall deadline.
    pub fn time_limit(&self) -> Duration {
        self.per_try
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Records a failed attempt against the endpoint (outlier detection) and says whether to
    /// try again: only if `retryable`, attempts are left, the deadline has not passed and the
    /// budget allows.
    pub fn failed(&mut self, index: usize, endpoint: &Endpoint, retryable: bool) -> Next {
        let now = Instant::now();
        record_failure(self.service, endpoint, now);
        if !retryable || self.made >= MAX_ATTEMPTS || now >= self.deadline {
            return Next::Stop;
        }
        if !self.service.budget.withdraw() {
            return Next::BudgetExhausted;
        }
        self.service.metrics.retries.inc();
        self.tried.push(index);
        Next::Retry
    }

    /// Records an answer from the endpoint: a 5xx counts as a failure for outlier detection.
    pub fn answered(&self, endpoint: &Endpoint, status: StatusCode) {
        if status.is_server_error() {
            record_failure(self.service, endpoint, Instant::now());
        } else {
            endpoint.outlier.success();
        }
    }

    /// Records how long an attempt took, in the endpoint's latency histogram.
    pub fn observe(&self, endpoint: &Endpoint, elapsed: Duration) {
        endpoint
            .latency
            .get_or_init(|| self.service.metrics.endpoint_latency(&endpoint.id))
            .observe(elapsed.as_secs_f64());
    }
}

fn tried_all(tried: &[usize], endpoints: usize) -> bool {
    !tried.is_empty() && tried.len() >= endpoints
}

fn record_failure(service: &Service, endpoint: &Endpoint, now: Instant) {
    if endpoint.outlier.failure(now) {
        tracing::info!(service = %service.name, endpoint = %endpoint.id, "ejecting endpoint after consecutive failures");
        service.metrics.ejection(&endpoint.id);
    }
}

/// 5xx answers that say "try elsewhere": bad gateway, unavailable, gateway timeout.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_host_in_every_form() {
        let name = |host| service_name(host).map(|n| n.into_owned());
        assert_eq!(name("hello").as_deref(), Some("hello"));
        assert_eq!(name("Hello:8080").as_deref(), Some("hello"));
        assert_eq!(name("hello.service.wharf").as_deref(), Some("hello"));
        assert_eq!(name("hello.SERVICE.consul:80").as_deref(), Some("hello"));
        assert_eq!(name("hello.service.wharf.").as_deref(), Some("hello"));
        assert_eq!(name(".service.wharf"), None);
        assert_eq!(name(""), None);
        assert_eq!(name(":80"), None);
        assert!(matches!(
            service_name("hello:80"),
            Some(std::borrow::Cow::Borrowed("hello"))
        ));
    }

    #[test]
    fn each_refusal_says_why() {
        let refusal = Refusal::NoHealthyInstance("api".into());
        assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusal.reason(), "no-healthy-instance");
        assert_eq!(refusal.to_string(), "api has no healthy instance");
        assert_eq!(
            Refusal::Timeout("api".into()).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
