//! The life of a request through the proxy, in order, whatever the transport. This is the
//! file to read first; the transports (`h1` for HTTP/1.x, `h2` for HTTP/2 and gRPC) each
//! carry out the steps that touch bytes, and call the steps here for everything else.
//!
//! 1. **Route** ([`route`]): `Host` (HTTP/1) or `:authority` (HTTP/2) names the service
//!    ([`service_name`]: `NAME`, `NAME.service.wharf`, `NAME.service.consul`); the directory
//!    knows it (404 `unknown-service`, 400 `no-host`) or the registry cannot say
//!    (503 `registry-unavailable`).
//! 2. **Admit** ([`admit`]): the service's concurrency limit, held until the response body
//!    has been sent (503 `overloaded`).
//! 3. **Prepare** (transport): the hop rules of [`crate::hop`] applied to the head; a body of
//!    at most [`MAX_REPLAY`] bytes with a known length is read in full, so that the request is
//!    [replayable](RequestTraits::replayable); larger and streamed bodies get one attempt.
//!    The ring-hash key comes from the service ([`crate::service::Service::ring_key`]).
//! 4. **Attempts** ([`forward`]): the balancer picks an endpoint not tried yet; one attempt
//!    ([`Transport::send`]) runs within the per-try limit, cut short by the overall deadline,
//!    counted in the endpoint's in-flight load and latency; its outcome is classified
//!    ([`AttemptError`], or a response status) and recorded for outlier detection; a failure
//!    is tried again on another endpoint only if [`may_retry`] says so, attempts
//!    ([`MAX_ATTEMPTS`]) and time are left, and the service's retry budget allows.
//! 5. **Answer** (transport): the response relayed, or the [`Refusal`] rendered by
//!    [`crate::answers`]; every request's outcome is counted once ([`refused`],
//!    [`client_gone`], or by [`forward`] for an answer).
//!
//! Retries sit above the balancer so that a retry reaches another instance.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tower::retry::budget::Budget;
use wharf_stats::Outcome;

pub(crate) use crate::answers::Refusal;
use crate::discovery::{Directory, Lookup};
use crate::metrics::Metrics;
use crate::service::{Endpoint, Service};

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

/// What every transport's requests share.
pub struct Shared {
    pub directory: Arc<Directory>,
    pub timeouts: Timeouts,
    pub metrics: Metrics,
    /// The access log and taps.
    pub observers: Arc<crate::access::Observers>,
}

/// Step 1: the service a request is for, from its host (`None`: the request named none).
pub(crate) async fn route(shared: &Shared, host: Option<&str>) -> Result<Arc<Service>, Refusal> {
    let name = host.and_then(service_name).ok_or(Refusal::NoHost)?;
    shared
        .directory
        .get(&name)
        .await
        .map_err(|lookup| match lookup {
            Lookup::Unknown => Refusal::UnknownService(name.into_owned()),
            Lookup::RegistryUnavailable => Refusal::RegistryUnavailable,
        })
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

/// Step 2: a slot in the service's concurrency limit, for as long as the guard lives.
pub(crate) fn admit(service: &Service) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    service
        .limiter
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::Overloaded(service.name.clone()))
}

/// How long a request waits for the first instance of a service scaled to zero: the
/// supervisor's deadline for a process to open its port, as long as a start may take.
pub(crate) const START_WAIT: Duration = Duration::from_secs(30);

/// How many requests may wait at once for a service's first instance; more are refused.
pub(crate) const MAX_WAITING: u64 = 1_000;

/// Step 2, for a service scaled to zero (autoscaled with `min = 0`) that has no instance now:
/// the request waits, at most [`START_WAIT`], until one passes, and counts as the service's
/// load meanwhile (reported as `waiting`), which is what makes the autoscaler start one. At
/// most [`MAX_WAITING`] wait; more are refused as overload. Held requests then go on at most
/// the service's target concurrency per ready instance at a time (Knative's activator), so
/// that the first instance is not flooded with the whole queue: each takes a permit of the
/// service's [`crate::service::Gate`], kept until it is answered. Any other service goes
/// straight on.
pub(crate) async fn await_instance(
    service: &Service,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Refusal> {
    use std::sync::atomic::Ordering::Relaxed;
    if !service.from_zero.load(Relaxed) || !service.endpoints.load().endpoints.is_empty() {
        return Ok(None);
    }
    let before = service.waiting.fetch_add(1, Relaxed);
    if before >= MAX_WAITING {
        service.waiting.fetch_sub(1, Relaxed);
        return Err(Refusal::Overloaded(service.name.clone()));
    }
    if before == 0 {
        // The first to wait: the registry hears of it now, not at the next report.
        service.report_now.notify_one();
    }
    struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Relaxed);
        }
    }
    let _waiting = Waiting(&service.waiting);
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        // Listening before looking, so that an arrival in between is not missed.
        let arrived = service.arrivals.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let ready = service.endpoints.load().endpoints.len();
        let per_instance = service.release_per_instance.load(Relaxed);
        if ready > 0 && per_instance == 0 {
            return Ok(None);
        }
        if ready > 0 {
            let gate = service.gate.load_full();
            gate.open_for(ready, per_instance);
            // A permit, or more instances (more permits) first.
            tokio::select! {
                permit = gate.permits.clone().acquire_owned() => {
                    return Ok(permit.ok());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Refusal::NotStarted(service.name.clone(), START_WAIT));
                }
                _ = arrived => continue,
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return Err(Refusal::NotStarted(service.name.clone(), START_WAIT));
        }
    }
}

/// What about a request decides whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestTraits {
    /// Its method may be applied twice (RFC 9110 §9.2.2, [`crate::hop::is_idempotent`]).
    pub idempotent: bool,
    /// Its body is held whole by the proxy, so it can be sent again.
    pub replayable: bool,
}

/// Why an attempt produced no response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptError {
    /// Nothing was sent: no connection could be made (or a kept one was found closed before
    /// a byte went out).
    Connect(String),
    /// The endpoint failed after the request was (maybe) sent.
    Upstream(String),
    /// The per-try limit passed before the response head.
    Timeout,
    /// The client went away while its body was being relayed.
    ClientGone,
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Connect(e) | AttemptError::Upstream(e) => write!(f, "{e}"),
            AttemptError::Timeout => write!(f, "no answer in time"),
            AttemptError::ClientGone => write!(f, "the client went away"),
        }
    }
}

/// Whether a failed attempt may be tried again on another endpoint, as far as the request is
/// concerned (attempts, time and budget are [`forward`]'s to check). The one place this is
/// decided, for every transport.
pub(crate) fn may_retry(error: &AttemptError, request: RequestTraits) -> bool {
    match error {
        // Nothing reached the endpoint: any request may go elsewhere, if it can be sent again.
        AttemptError::Connect(_) => request.replayable,
        AttemptError::Upstream(_) | AttemptError::Timeout => {
            request.idempotent && request.replayable
        }
        AttemptError::ClientGone => false,
    }
}

/// Whether an answer with `status` may be tried again elsewhere.
pub(crate) fn may_retry_status(status: StatusCode, request: RequestTraits) -> bool {
    is_retryable_status(status) && request.idempotent && request.replayable
}

/// One transport's way of carrying a request to an endpoint: the one thing [`forward`] needs
/// from HTTP/1, HTTP/2 or whatever comes next.
pub(crate) trait Transport {
    /// A response head, with whatever the transport needs to relay the rest.
    type Answer;

    fn status(answer: &Self::Answer) -> StatusCode;

    /// How the answer counts in the golden metrics: a 5xx fails, and where the transport
    /// knows better (a gRPC status in the head) it says so.
    fn outcome(answer: &Self::Answer) -> Outcome {
        outcome_of(Self::status(answer))
    }

    /// Sends the request to `endpoint` and waits for the response head. Dropped (cancelled)
    /// when the attempt's time is up.
    async fn send(
        &mut self,
        service: &Service,
        endpoint: &Endpoint,
    ) -> Result<Self::Answer, AttemptError>;
}

/// How a request ended without an answer from an endpoint.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The proxy answers itself.
    Refused(Refusal),
    /// There is no one left to answer.
    ClientGone,
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Failure {
        Failure::Refused(refusal)
    }
}

/// Step 4: the attempts of one request, until an endpoint answers (the answer and who gave
/// it) or the request fails. `timer` is the transport's reusable per-try timer; `started` is
/// when the request arrived, for the service's latency, recorded with its status when an
/// answer's head arrives.
pub(crate) async fn forward<T: Transport>(
    service: &Service,
    timeouts: Timeouts,
    hash_key: Option<u64>,
    request: RequestTraits,
    transport: &mut T,
    mut timer: Pin<&mut tokio::time::Sleep>,
    started: Instant,
) -> Result<(Arc<Endpoint>, T::Answer), Failure> {
    let mut attempts = Attempts::new(service, timeouts, hash_key);
    loop {
        let (index, endpoint) = attempts.pick()?;
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + attempts.time_limit());
        let in_flight = endpoint.start();
        let sent = tokio::select! {
            biased;
            sent = transport.send(service, &endpoint) => sent,
            _ = timer.as_mut() => Err(AttemptError::Timeout),
        };
        let elapsed = in_flight.finish();
        attempts.observe(&endpoint, elapsed);
        let error = match sent {
            Ok(answer) => {
                let status = T::status(&answer);
                let now = crate::clock::now_secs();
                // The attempt, for its endpoint, whether or not it is retried.
                let outcome = T::outcome(&answer);
                endpoint.golden.record(now, outcome);
                if is_retryable_status(status) {
                    match attempts.failed(index, &endpoint, may_retry_status(status, request)) {
                        Next::Retry => {
                            // Not wanted by the client, but its subset failed it.
                            if let Some(subset) = &*endpoint.subset.load() {
                                subset.record(now, Outcome::Failure, elapsed);
                            }
                            continue;
                        }
                        Next::Stop | Next::BudgetExhausted => {}
                    }
                } else {
                    attempts.answered(&endpoint, status);
                }
                let took = started.elapsed();
                service.metrics.record_latency(took);
                service.metrics.response(status);
                service.golden.record(now, outcome, took);
                if let Some(subset) = &*endpoint.subset.load() {
                    subset.record(now, outcome, took);
                }
                return Ok((endpoint, answer));
            }
            Err(error) => error,
        };
        if !matches!(error, AttemptError::ClientGone) {
            let now = crate::clock::now_secs();
            endpoint.golden.record(now, Outcome::Failure);
            if let Some(subset) = &*endpoint.subset.load() {
                subset.record(now, Outcome::Failure, elapsed);
            }
        }
        let refusal = match &error {
            AttemptError::ClientGone => return Err(Failure::ClientGone),
            AttemptError::Connect(e) | AttemptError::Upstream(e) => {
                Refusal::Upstream(format!("{} ({}): {e}", endpoint.id, endpoint.addr))
            }
            AttemptError::Timeout => Refusal::Timeout(service.name.clone()),
        };
        match attempts.failed(index, &endpoint, may_retry(&error, request)) {
            Next::Retry => {}
            Next::Stop => return Err(refusal.into()),
            Next::BudgetExhausted => {
                return Err(Refusal::RetryBudgetExhausted(service.name.clone()).into());
            }
        }
    }
}

/// Step 5 for a refusal: counted for the service (reason, latency, status), before the
/// transport renders it.
pub(crate) fn refused(service: &Service, started: Instant, refusal: &Refusal) {
    service.metrics.error(refusal.reason());
    let took = started.elapsed();
    service.metrics.record_latency(took);
    service.metrics.response(refusal.status());
    service
        .golden
        .record(crate::clock::now_secs(), Outcome::Failure, took);
}

/// A 5xx is a failure for the golden metrics; anything else the service answered is not.
pub(crate) fn outcome_of(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// Step 5 for a client that went away before its answer: counted as a client error with the
/// reason `client-gone` (nginx logs these as 499), the same on every transport.
pub(crate) fn client_gone(service: &Service) {
    service.metrics.error(CLIENT_GONE);
    service.metrics.response(StatusCode::BAD_REQUEST);
}

/// The error reason counted for a client that went away.
pub(crate) const CLIENT_GONE: &str = "client-gone";

/// How an attempt ended, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Try again on another endpoint.
    Retry,
    /// The failure is final.
    Stop,
    /// It could have been retried, but the service's retry budget is spent.
    BudgetExhausted,
}

/// The attempts of one request to one service.
struct Attempts<'s> {
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
    fn new(service: &'s Service, timeouts: Timeouts, hash_key: Option<u64>) -> Attempts<'s> {
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
    fn pick(&mut self) -> Result<(usize, Arc<Endpoint>), Refusal> {
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
    fn time_limit(&self) -> Duration {
        self.per_try
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Records a failed attempt against the endpoint (outlier detection) and says whether to
    /// try again: only if `retryable`, attempts are left, the deadline has not passed and the
    /// budget allows.
    fn failed(&mut self, index: usize, endpoint: &Endpoint, retryable: bool) -> Next {
        let now = Instant::now();
        record_failure(self.service, endpoint, now);
        if !retryable || self.made >= MAX_ATTEMPTS || now >= self.deadline {
            return Next::Stop;
        }
        if !self.service.budget.withdraw() {
            return Next::BudgetExhausted;
        }
        self.service.metrics.retries.inc();
        self.service.retries.add(crate::clock::now_secs(), 1);
        self.tried.push(index);
        Next::Retry
    }

    /// Records an answer from the endpoint: a 5xx counts as a failure for outlier detection.
    fn answered(&self, endpoint: &Endpoint, status: StatusCode) {
        if status.is_server_error() {
            record_failure(self.service, endpoint, Instant::now());
        } else {
            endpoint.outlier.success();
        }
    }

    /// Records how long an attempt took, in the endpoint's latency histogram.
    fn observe(&self, endpoint: &Endpoint, elapsed: Duration) {
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
        service.ejections.add(crate::clock::now_secs(), 1);
    }
}

/// 5xx answers that say "try elsewhere": bad gateway, unavailable, gateway timeout.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
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

    use std::collections::VecDeque;

    use crate::service::{EndpointSet, Policy, ServiceDefaults};

    /// A transport whose attempts end as scripted, in order; it records who was tried.
    struct Scripted {
        outcomes: VecDeque<Outcome>,
        tried: Vec<String>,
        in_flight_seen: Vec<u32>,
    }

    enum Outcome {
        Answer(u16),
        Fail(AttemptError),
        Hang,
    }

    impl Scripted {
        fn new(outcomes: impl IntoIterator<Item = Outcome>) -> Scripted {
            Scripted {
                outcomes: outcomes.into_iter().collect(),
                tried: Vec::new(),
                in_flight_seen: Vec::new(),
            }
        }
    }

    impl Transport for Scripted {
        type Answer = StatusCode;

        fn status(answer: &StatusCode) -> StatusCode {
            *answer
        }

        async fn send(
            &mut self,
            _service: &Service,
            endpoint: &Endpoint,
        ) -> Result<StatusCode, AttemptError> {
            self.tried.push(endpoint.id.clone());
            self.in_flight_seen.push(endpoint.inflight());
            match self
                .outcomes
                .pop_front()
                .expect("an outcome for every attempt")
            {
                Outcome::Answer(status) => Ok(StatusCode::from_u16(status).unwrap()),
                Outcome::Fail(error) => Err(error),
                Outcome::Hang => std::future::pending().await,
            }
        }
    }

    fn service(endpoints: usize) -> Service {
        let defaults = ServiceDefaults {
            policy: Policy::RoundRobin,
            max_concurrency: 10,
            routes: false,
        };
        let metrics = Metrics::default().service("api");
        let (service, _known) = Service::new("api", &defaults, metrics);
        let endpoints = (0..endpoints)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                Arc::new(Endpoint::new(format!("api-{i}"), addr, 1))
            })
            .collect();
        service
            .endpoints
            .store(Arc::new(EndpointSet::new(endpoints)));
        service
    }

    const TIMEOUTS: Timeouts = Timeouts {
        overall: Duration::from_secs(15),
        per_try: Duration::from_secs(5),
    };
    const GET: RequestTraits = RequestTraits {
        idempotent: true,
        replayable: true,
    };
    const POST: RequestTraits = RequestTraits {
        idempotent: false,
        replayable: true,
    };
    const UPLOAD: RequestTraits = RequestTraits {
        idempotent: true,
        replayable: false,
    };

    async fn run(
        service: &Service,
        request: RequestTraits,
        transport: &mut Scripted,
    ) -> Result<StatusCode, Failure> {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        forward(
            service,
            TIMEOUTS,
            None,
            request,
            transport,
            timer,
            Instant::now(),
        )
        .await
        .map(|(_, status)| status)
    }

    fn upstream(message: &str) -> Outcome {
        Outcome::Fail(AttemptError::Upstream(message.into()))
    }

    fn connect() -> Outcome {
        Outcome::Fail(AttemptError::Connect("refused".into()))
    }

    #[tokio::test]
    async fn a_connect_error_goes_elsewhere_for_any_request_that_can_be_sent_again() {
        let api = service(3);
        let mut post = Scripted::new([connect(), Outcome::Answer(201)]);
        assert_eq!(run(&api, POST, &mut post).await.unwrap(), 201);
        assert_eq!(post.tried.len(), 2);
        assert_ne!(
            post.tried[0], post.tried[1],
            "a retry reaches another instance"
        );

        let mut upload = Scripted::new([connect()]);
        let failed = run(&api, UPLOAD, &mut upload).await;
        assert!(
            matches!(failed, Err(Failure::Refused(Refusal::Upstream(ref e))) if e.contains("api-") && e.contains("refused")),
            "a streamed body went once: {failed:?}"
        );
    }

    #[tokio::test]
    async fn an_upstream_failure_is_retried_only_for_idempotent_replayable_requests() {
        let api = service(3);
        let mut get = Scripted::new([upstream("reset"), Outcome::Answer(200)]);
        assert_eq!(run(&api, GET, &mut get).await.unwrap(), 200);

        let mut post = Scripted::new([upstream("reset")]);
        assert!(matches!(
            run(&api, POST, &mut post).await,
            Err(Failure::Refused(Refusal::Upstream(_)))
        ));
        assert_eq!(
            post.tried.len(),
            1,
            "a POST that may have arrived is not sent twice"
        );
    }

    #[tokio::test]
    async fn a_retryable_status_is_retried_else_passed_on() {
        let api = service(3);
        let mut get = Scripted::new([Outcome::Answer(503), Outcome::Answer(200)]);
        assert_eq!(run(&api, GET, &mut get).await.unwrap(), 200);

        let mut post = Scripted::new([Outcome::Answer(503)]);
        assert_eq!(
            run(&api, POST, &mut post).await.unwrap(),
            503,
            "the endpoint's own answer, not a refusal"
        );
        let mut get = Scripted::new([Outcome::Answer(500)]);
        assert_eq!(
            run(&api, GET, &mut get).await.unwrap(),
            500,
            "500 is not retried"
        );
        let mut always = Scripted::new((0..MAX_ATTEMPTS).map(|_| Outcome::Answer(502)));
        assert_eq!(run(&api, GET, &mut always).await.unwrap(), 502);
        assert_eq!(always.tried.len(), MAX_ATTEMPTS, "attempts are bounded");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_times_out_and_the_request_goes_elsewhere() {
        let api = service(2);
        let mut get = Scripted::new([Outcome::Hang, Outcome::Answer(200)]);
        assert_eq!(run(&api, GET, &mut get).await.unwrap(), 200);
        let mut post = Scripted::new([Outcome::Hang]);
        assert!(matches!(
            run(&api, POST, &mut post).await,
            Err(Failure::Refused(Refusal::Timeout(ref name))) if name == "api"
        ));
    }

    #[tokio::test]
    async fn a_client_that_goes_away_ends_the_request_without_a_retry() {
        let api = service(3);
        let mut get = Scripted::new([Outcome::Fail(AttemptError::ClientGone)]);
        assert!(matches!(
            run(&api, GET, &mut get).await,
            Err(Failure::ClientGone)
        ));
        assert_eq!(get.tried.len(), 1);
    }

    #[tokio::test]
    async fn no_endpoint_is_a_refusal_that_names_the_service() {
        let api = service(0);
        let mut get = Scripted::new([]);
        assert!(matches!(
            run(&api, GET, &mut get).await,
            Err(Failure::Refused(Refusal::NoHealthyInstance(ref name))) if name == "api"
        ));
    }

    #[tokio::test]
    async fn retries_stop_when_the_budget_is_spent() {
        let api = service(2);
        // The budget keeps 10 retries a second over 10 s in reserve, plus 20% of requests:
        // failing requests that retry twice each spend it within 100.
        let mut exhausted = false;
        for _ in 0..100 {
            let mut post = Scripted::new([connect(), connect(), connect()]);
            if let Err(Failure::Refused(Refusal::RetryBudgetExhausted(name))) =
                run(&api, POST, &mut post).await
            {
                assert_eq!(name, "api");
                exhausted = true;
                break;
            }
        }
        assert!(exhausted, "the retry budget ran out");
    }

    #[tokio::test]
    async fn attempts_count_in_flight_and_failures_eject() {
        let api = service(2);
        let mut get = Scripted::new([Outcome::Answer(200)]);
        run(&api, GET, &mut get).await.unwrap();
        assert_eq!(
            get.in_flight_seen,
            [1],
            "the attempt counts in its endpoint's load"
        );
        let set = api.endpoints.load();
        assert!(set.endpoints.iter().all(|e| e.inflight() == 0), "and ends");

        // Five answers of 500 in a row from one endpoint eject it (Envoy's default).
        let now = std::time::Instant::now();
        for _ in 0..crate::service::outlier::CONSECUTIVE_FAILURES * 2 {
            let mut get = Scripted::new([Outcome::Answer(500)]);
            run(&api, GET, &mut get).await.unwrap();
        }
        assert!(set.endpoints.iter().all(|e| e.outlier.is_ejected(now)));
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
