//! A sidecar's admin listener: `/ready` (can it serve, and is it serving from what it holds
//! because the registry is out of reach: fail static) and `/metrics` (Prometheus text: its
//! leaf's and the roots' time to expiry, certificates put in use, whether the registry
//! answers, and inbound decisions by caller).

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    caller: String,
    decision: &'static str,
}

/// What the admin listener reports, updated by the rest of the sidecar.
pub struct Health {
    registry: Mutex<Registry>,
    /// Seconds since the epoch when the leaf in use expires (0: none yet).
    pub leaf_not_after: AtomicU64,
    /// Seconds since the epoch when the first of the trusted roots expires (0: none yet).
    pub roots_not_after: AtomicU64,
    leaf_expiry: Gauge<i64, AtomicI64>,
    roots_expiry: Gauge<i64, AtomicI64>,
    pub certificates: Counter,
    registry_reachable: Gauge<i64, AtomicI64>,
    /// The last error from the registry, while it lasts.
    pub registry_error: Mutex<Option<String>>,
    decisions: Family<DecisionLabels, Counter>,
    connections: Family<KindLabels, Counter>,
    pub has_intentions: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Default for Health {
    fn default() -> Health {
        let mut registry = Registry::with_prefix("wharf_sidecar");
        let leaf_expiry = Gauge::default();
        registry.register(
            "leaf_expiry_seconds",
            "Seconds until the leaf certificate in use expires",
            leaf_expiry.clone(),
        );
        let roots_expiry = Gauge::default();
        registry.register(
            "root_expiry_seconds",
            "Seconds until the first trusted root expires",
            roots_expiry.clone(),
        );
        let certificates = Counter::default();
        registry.register(
            "certificates",
            "Certificates put in use (the first included: renewals are this minus one)",
            certificates.clone(),
        );
        let registry_reachable = Gauge::default();
        registry.register(
            "registry_reachable",
            "1 while the registry answers, 0 while the sidecar serves from what it holds",
            registry_reachable.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "inbound_decisions",
            "Inbound requests (or TCP connections) by caller and decision",
            decisions.clone(),
        );
        let connections = Family::<KindLabels, Counter>::default();
        registry.register(
            "inbound_connections",
            "Inbound connections by kind: mtls, or plaintext (permissive mode only)",
            connections.clone(),
        );
        Health {
            connections,
            registry: Mutex::new(registry),
            leaf_not_after: AtomicU64::new(0),
            roots_not_after: AtomicU64::new(0),
            leaf_expiry,
            roots_expiry,
            certificates,
            registry_reachable,
            registry_error: Mutex::new(None),
            decisions,
            has_intentions: Default::default(),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Health {
    /// A registry answer arrived (`Ok`) or failed.
    pub fn registry_answered(&self, result: Result<(), String>) {
        let mut error = self.registry_error.lock().expect("health lock");
        match result {
            Ok(()) => {
                if error.take().is_some() {
                    tracing::info!("sidecar: the registry answers again");
                }
            }
            Err(e) => {
                if error.is_none() {
                    tracing::warn!(error = %e, "sidecar: the registry is out of reach; serving with the certificate and intentions held (fail static)");
                }
                *error = Some(e);
            }
        }
    }

    pub fn connection(&self, kind: &'static str) {
        self.connections.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn decided(&self, caller: &str, allowed: bool) {
        self.decisions
            .get_or_create(&DecisionLabels {
                caller: caller.to_owned(),
                decision: if allowed { "allow" } else { "deny" },
            })
            .inc();
    }

    fn ready(&self) -> (StatusCode, String) {
        let leaf = self.leaf_not_after.load(Ordering::Relaxed);
        let now = now();
        if leaf == 0 {
            return (StatusCode::SERVICE_UNAVAILABLE, "no certificate yet".into());
        }
        if leaf <= now {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the certificate expired and the registry gave no new one".into(),
            );
        }
        if !self.has_intentions.load(Ordering::Relaxed) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no intentions heard yet".into(),
            );
        }
        match &*self.registry_error.lock().expect("health lock") {
            Some(e) => (
                StatusCode::OK,
                format!(
                    "ready (fail static: the registry is out of reach: {e}; the certificate is valid for {} s more)",
                    leaf - now
                ),
            ),
            None => (StatusCode::OK, "ready".into()),
        }
    }

    fn render(&self) -> String {
        let now = now() as i64;
        let gauge = |at: u64| if at == 0 { 0 } else { at as i64 - now };
        self.leaf_expiry
            .set(gauge(self.leaf_not_after.load(Ordering::Relaxed)));
        self.roots_expiry
            .set(gauge(self.roots_not_after.load(Ordering::Relaxed)));
        let reachable = self.registry_error.lock().expect("health lock").is_none();
        self.registry_reachable.set(i64::from(reachable));
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("a String");
        out
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((stream, _)) = super::next_connection(&listener, &mut shutdown).await {
        let health = health.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let (status, body, content_type) = match request.uri().path() {
                "/ready" => {
                    let (status, text) = health.ready();
                    (status, format!("{text}\n"), "text/plain; charset=utf-8")
                }
                "/metrics" => (
                    StatusCode::OK,
                    health.render(),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    "try /ready or /metrics\n".into(),
                    "text/plain; charset=utf-8",
                ),
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
