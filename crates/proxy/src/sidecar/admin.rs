//! A sidecar's admin listener: `/ready` (can it serve, and is it serving from what it holds
//! because the registry is out of reach: fail static), `/metrics` (Prometheus text: its
//! leaf's and the roots' time to expiry, certificates put in use, whether the registry
//! answers, and inbound decisions by caller) and `/inbound` (JSON: its mode, connections by
//! kind and the plaintext callers it has seen, so that `wharf mesh status` can say whether
//! switching a permissive service to strict would refuse anyone).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
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

use crate::access::Observers;

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
    callers: Mutex<Callers>,
    /// Seconds since the epoch when the sidecar started.
    started: u64,
}

/// Most plaintext callers remembered by address; more are counted together.
const MAX_PLAINTEXT_CALLERS: usize = 64;

/// Inbound connections by kind, and the plaintext ones by caller address.
#[derive(Default)]
struct Callers {
    mtls: u64,
    plaintext: u64,
    plaintext_by_address: HashMap<IpAddr, Seen>,
    /// Plaintext connections from addresses beyond [`MAX_PLAINTEXT_CALLERS`].
    plaintext_others: u64,
}

#[derive(Clone, Copy)]
struct Seen {
    connections: u64,
    last: u64,
}

/// How an inbound connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Mtls,
    Plaintext,
}

impl ConnectionKind {
    fn label(self) -> &'static str {
        match self {
            ConnectionKind::Mtls => "mtls",
            ConnectionKind::Plaintext => "plaintext",
        }
    }
}

/// What `/inbound` says about the sidecar's inbound side.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InboundReport {
    pub service: String,
    /// `strict` or `permissive`.
    pub mode: String,
    /// Seconds since the epoch when the sidecar started (the counts are since then).
    pub since: u64,
    pub mtls_connections: u64,
    pub plaintext_connections: u64,
    /// The plaintext callers by address, the most recent first.
    pub plaintext_callers: Vec<PlaintextCaller>,
    /// Plaintext connections from callers beyond the ones listed.
    pub plaintext_others: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PlaintextCaller {
    pub address: IpAddr,
    pub connections: u64,
    /// Seconds since the epoch of its last connection.
    pub last_seen: u64,
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
            callers: Mutex::default(),
            started: now(),
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

    /// An inbound connection arrived from `peer`.
    pub fn connection(&self, kind: ConnectionKind, peer: IpAddr) {
        self.connections
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
        let mut callers = self.callers.lock().expect("callers lock");
        match kind {
            ConnectionKind::Mtls => callers.mtls += 1,
            ConnectionKind::Plaintext => {
                callers.plaintext += 1;
                let known = callers.plaintext_by_address.len();
                match callers.plaintext_by_address.get_mut(&peer) {
                    Some(seen) => {
                        seen.connections += 1;
                        seen.last = now();
                    }
                    None if known < MAX_PLAINTEXT_CALLERS => {
                        let seen = Seen {
                            connections: 1,
                            last: now(),
                        };
                        callers.plaintext_by_address.insert(peer, seen);
                    }
                    None => callers.plaintext_others += 1,
                }
            }
        }
    }

    /// The inbound side's connections so far, for `/inbound`.
    pub fn inbound_report(&self, service: &str, mode: super::Mode) -> InboundReport {
        let callers = self.callers.lock().expect("callers lock");
        let mut plaintext_callers: Vec<PlaintextCaller> = callers
            .plaintext_by_address
            .iter()
            .map(|(address, seen)| PlaintextCaller {
                address: *address,
                connections: seen.connections,
                last_seen: seen.last,
            })
            .collect();
        plaintext_callers.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(a.address.cmp(&b.address))
        });
        InboundReport {
            service: service.to_owned(),
            mode: mode.as_str().to_owned(),
            since: self.started,
            mtls_connections: callers.mtls,
            plaintext_connections: callers.plaintext,
            plaintext_callers,
            plaintext_others: callers.plaintext_others,
        }
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

/// Whom an admin listener speaks for.
#[derive(Debug, Clone)]
pub(crate) struct About {
    pub(crate) service: String,
    pub(crate) mode: super::Mode,
}

pub(crate) async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    about: About,
    observers: Arc<Observers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let about = Arc::new(about);
    while let Some((stream, _)) = super::next_connection(&listener, &mut shutdown).await {
        let (health, about, observers) = (health.clone(), about.clone(), observers.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            if request.uri().path() == "/tap" {
                let response = observers.tap(request.uri().query());
                return std::future::ready(Ok::<_, Infallible>(response));
            }
            let (status, body, content_type) = match request.uri().path() {
                "/inbound" => (
                    StatusCode::OK,
                    serde_json::to_string(&health.inbound_report(&about.service, about.mode))
                        .unwrap_or_default(),
                    "application/json",
                ),
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
                    "try /ready, /metrics, /inbound or /tap\n".into(),
                    "text/plain; charset=utf-8",
                ),
            };
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            std::future::ready(Ok::<_, Infallible>(response))
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_callers_are_counted_by_address_within_a_bound() {
        let health = Health::default();
        health.connection(ConnectionKind::Mtls, [10, 0, 0, 1].into());
        for i in 0..(MAX_PLAINTEXT_CALLERS as u32 + 10) {
            health.connection(
                ConnectionKind::Plaintext,
                std::net::Ipv4Addr::from(i).into(),
            );
        }
        health.connection(ConnectionKind::Plaintext, [0, 0, 0, 0].into());
        let report = health.inbound_report("api", super::super::Mode::Permissive);
        assert_eq!(report.mode, "permissive");
        assert_eq!(report.mtls_connections, 1);
        assert_eq!(
            report.plaintext_connections,
            MAX_PLAINTEXT_CALLERS as u64 + 11
        );
        assert_eq!(report.plaintext_callers.len(), MAX_PLAINTEXT_CALLERS);
        assert_eq!(
            report.plaintext_others, 10,
            "callers beyond the bound counted together"
        );
        let first = report
            .plaintext_callers
            .iter()
            .find(|c| c.address == IpAddr::from([0, 0, 0, 0]))
            .unwrap();
        assert_eq!(first.connections, 2, "a known caller's connections add up");
    }
}
