//! The proxy's Prometheus metrics. Handles for a service (and its endpoints) are made once and
//! kept with it, so the request path adds to atomics without looking labels up.
//!
//! Wharf's own are `wharf_proxy_*`. Beside them, Linkerd's names and labels, so that
//! dashboards built for Linkerd's proxy work on Wharf's: `request_total`, `response_total`
//! (`classification` success or failure, `status_code`) and `response_latency_ms` (Linkerd's
//! buckets, 1 ms to 50 s), each by `direction` (`outbound`: what the proxy sends to a
//! service) and `authority` (the service).

mod histogram;
pub use histogram::Histogram;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    service: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    service: String,
    endpoint: String,
}

/// Linkerd's labels of a request or its latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkerdLabels {
    direction: &'static str,
    authority: String,
}

/// Linkerd's labels of a response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkerdResponseLabels {
    direction: &'static str,
    authority: String,
    classification: &'static str,
    status_code: u16,
}

/// Linkerd's latency buckets, in milliseconds.
fn linkerd_latency_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
        1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0,
        50_000.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    service: String,
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// All of the proxy's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    responses: Family<ClassLabels, Counter>,
    latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    endpoint_latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    retries: Family<ServiceLabels, Counter>,
    upstream_connections: Family<ServiceLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    pub open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub requests: Counter<u64, AtomicU64>,
    linkerd_requests: Family<LinkerdLabels, Counter>,
    linkerd_responses: Family<LinkerdResponseLabels, Counter>,
    linkerd_latency: Family<LinkerdLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let linkerd_requests = Family::<LinkerdLabels, Counter>::default();
        root.register(
            "request",
            "Requests, by direction and authority (Linkerd's name)",
            linkerd_requests.clone(),
        );
        let linkerd_responses = Family::<LinkerdResponseLabels, Counter>::default();
        root.register(
            "response",
            "Responses, by classification and status code (Linkerd's name)",
            linkerd_responses.clone(),
        );
        let linkerd_latency =
            Family::<LinkerdLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                linkerd_latency_histogram,
            );
        root.register(
            "response_latency_ms",
            "Time to response headers in milliseconds (Linkerd's name and buckets)",
            linkerd_latency.clone(),
        );
        let registry = root.sub_registry_with_prefix("wharf_proxy");
        let requests = Counter::default();
        registry.register("requests", "Requests received", requests.clone());
        let responses = Family::<ClassLabels, Counter>::default();
        registry.register(
            "responses",
            "Responses sent, by service and status class",
            responses.clone(),
        );
        let latency = Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers, per service",
            latency.clone(),
        );
        let endpoint_latency =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "upstream_duration_seconds",
            "Time to response headers, per endpoint",
            endpoint_latency.clone(),
        );
        let retries = Family::<ServiceLabels, Counter>::default();
        registry.register("retries", "Retries sent", retries.clone());
        let upstream_connections = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "upstream_connections",
            "Connections opened to a service's endpoints (few when kept connections are reused)",
            upstream_connections.clone(),
        );
        let ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "ejections",
            "Endpoints ejected by outlier detection",
            ejections.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Responses the proxy made itself, by reason",
            errors.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open",
            open_connections.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(root)),
            linkerd_requests,
            linkerd_responses,
            linkerd_latency,
            responses,
            latency,
            endpoint_latency,
            retries,
            upstream_connections,
            ejections,
            errors,
            open_connections,
            requests,
        }
    }
}

impl Metrics {
    pub fn service(&self, name: &str) -> ServiceMetrics {
        let labels = ServiceLabels {
            service: name.to_owned(),
        };
        let class = |class| {
            self.responses
                .get_or_create(&ClassLabels {
                    service: name.to_owned(),
                    class,
                })
                .clone()
        };
        let linkerd = LinkerdLabels {
            direction: "outbound",
            authority: name.to_owned(),
        };
        ServiceMetrics {
            name: name.to_owned(),
            linkerd_requests: self.linkerd_requests.get_or_create(&linkerd).clone(),
            linkerd_latency: self.linkerd_latency.get_or_create(&linkerd).clone(),
            statuses: Arc::default(),
            classes: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: self.latency.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            upstream_connections: self.upstream_connections.get_or_create(&labels).clone(),
            all: self.clone(),
        }
    }

    /// Counts a response the proxy made itself, for a service or `"-"` when none was routed.
    pub fn error(&self, service: &str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

/// One service's handles.
#[derive(Clone)]
pub struct ServiceMetrics {
    name: String,
    linkerd_requests: Counter,
    linkerd_latency: Histogram,
    /// `response_total` of the first few status codes answered, looked up once per code.
    statuses: Arc<[OnceLock<(u16, Counter)>; 6]>,
    classes: [Counter; 5],
    pub latency: Histogram,
    pub retries: Counter,
    pub upstream_connections: Counter,
    all: Metrics,
}

impl ServiceMetrics {
    pub fn response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        self.linkerd_requests.inc();
        let code = status.as_u16();
        // The codes seen first are kept without a lock: a service answers few codes.
        for slot in self.statuses.iter() {
            let (seen, counter) = slot.get_or_init(|| (code, self.linkerd_response(status)));
            if *seen == code {
                counter.inc();
                return;
            }
        }
        self.linkerd_response(status).inc(); // looked up each time beyond the first few
    }

    /// Linkerd's `response_total` counter of a status code.
    fn linkerd_response(&self, status: http::StatusCode) -> Counter {
        self.all
            .linkerd_responses
            .get_or_create(&LinkerdResponseLabels {
                direction: "outbound",
                authority: self.name.clone(),
                classification: if status.is_server_error() {
                    "failure"
                } else {
                    "success"
                },
                status_code: status.as_u16(),
            })
            .clone()
    }

    /// Records the time to an answer's head, in Wharf's histogram and Linkerd's.
    pub fn record_latency(&self, took: std::time::Duration) {
        self.latency.observe(took.as_secs_f64());
        self.linkerd_latency.observe(took.as_secs_f64() * 1000.0);
    }

    /// The latency histogram of one endpoint of this service.
    pub fn endpoint_latency(&self, endpoint: &str) -> Histogram {
        let labels = EndpointLabels {
            service: self.name.clone(),
            endpoint: endpoint.to_owned(),
        };
        self.all.endpoint_latency.get_or_create(&labels).clone()
    }

    pub fn ejection(&self, endpoint: &str) {
        self.all
            .ejections
            .get_or_create(&EndpointLabels {
                service: self.name.clone(),
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }

    pub fn error(&self, reason: &'static str) {
        self.all.error(&self.name, reason);
    }
}
