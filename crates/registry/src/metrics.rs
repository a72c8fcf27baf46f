//! The registry's Prometheus metrics, served at `/metrics` in the text format.
//!
//! Counters are updated on the request path (one atomic add); gauges that describe the
//! catalog are computed at scrape time from the catalog itself, so they cannot drift.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wharf_model::Status;

use crate::catalog::Catalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/v1/health/service/{name}`), never the raw path, so that label
    /// cardinality stays bounded.
    pub endpoint: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    service: String,
    /// `up` or `down`.
    direction: &'static str,
    /// `stable` or `panic`.
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Every metric the registry exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub blocking_held: Gauge,
    revision: Gauge<u64, AtomicU64>,
    instances: Gauge,
    checks: Family<StatusLabels, Gauge>,
    known_leader: Gauge,
    last_contact: Gauge<f64, AtomicU64>,
    watch_lag: Gauge<u64, AtomicU64>,
    event_age: Gauge<f64, AtomicU64>,
    reloads: Counter,
    last_reload: Gauge<f64, AtomicU64>,
    /// Failed attempts to keep this node's liveness lease.
    pub lease_failures: Counter,
    autoscale_decisions: Family<DecisionLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wharf_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint and status code",
            requests.clone(),
        );
        let blocking_held = Gauge::default();
        registry.register(
            "blocking_queries_held",
            "Blocking queries waiting for a change",
            blocking_held.clone(),
        );
        let revision = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "catalog_revision",
            "Store revision the catalog has applied",
            revision.clone(),
        );
        let instances = Gauge::default();
        registry.register(
            "instances",
            "Registered service instances",
            instances.clone(),
        );
        let checks = Family::<StatusLabels, Gauge>::default();
        registry.register("checks", "Health checks by status", checks.clone());
        let known_leader = Gauge::default();
        registry.register(
            "store_known_leader",
            "1 while the store reaches a leader (always, for the embedded store)",
            known_leader.clone(),
        );
        let last_contact = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "store_last_contact_seconds",
            "Seconds since the store's servers last answered",
            last_contact.clone(),
        );
        let watch_lag = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_watch_lag_revisions",
            "Revisions the store's servers have reported beyond what the catalog has applied",
            watch_lag.clone(),
        );
        let event_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "catalog_last_change_age_seconds",
            "Seconds since the catalog applied its last change",
            event_age.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "catalog_reloads",
            "Times the catalog read the whole store again (a broken or compacted watch)",
            reloads.clone(),
        );
        let last_reload = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "catalog_last_reload_seconds",
            "How long the catalog's last reload of the whole store took (a relist), from the broken watch to the new one",
            last_reload.clone(),
        );
        let lease_failures = Counter::default();
        registry.register(
            "lease_keepalive_failures",
            "Failed attempts to keep this node's liveness lease",
            lease_failures.clone(),
        );
        let autoscale_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "autoscale_decisions",
            "Changes of count the supervisors' autoscalers made, by service, direction and mode",
            autoscale_decisions.clone(),
        );
        Metrics {
            autoscale_decisions,
            lease_failures,
            known_leader,
            last_contact,
            watch_lag,
            event_age,
            reloads,
            last_reload,
            registry,
            requests,
            blocking_held,
            revision,
            instances,
            checks,
        }
    }
}

impl Metrics {
    /// Counts an autoscaler's change of count.
    pub fn autoscale_decision(&self, service: &str, up: bool, mode: &str) {
        let mode = match mode {
            "panic" => "panic",
            _ => "stable",
        };
        self.autoscale_decisions
            .get_or_create(&DecisionLabels {
                service: service.to_owned(),
                direction: if up { "up" } else { "down" },
                mode,
            })
            .inc();
    }

    /// The text exposition, with the catalog and store gauges refreshed first.
    pub fn render(&self, catalog: &Catalog, contact: wharf_store::Contact) -> String {
        self.known_leader.set(i64::from(contact.known_leader));
        self.last_contact.set(contact.last_contact.as_secs_f64());
        self.event_age
            .set(catalog.since_last_change().as_secs_f64());
        self.reloads
            .inc_by(catalog.reloads().saturating_sub(self.reloads.get()));
        self.last_reload.set(catalog.last_reload().as_secs_f64());
        catalog.read(|state| {
            self.watch_lag
                .set(contact.head.saturating_sub(state.revision()));
            self.revision.set(state.revision());
            self.instances.set(state.instances.len() as i64);
            for status in [Status::Passing, Status::Warning, Status::Critical] {
                let count = state
                    .checks
                    .values()
                    .filter(|c| c.value.status == status)
                    .count();
                self.checks
                    .get_or_create(&StatusLabels {
                        status: status.as_str(),
                    })
                    .set(count as i64);
            }
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Counts a held blocking query for as long as it lives.
pub struct HeldQuery<'a>(&'a Gauge);

impl<'a> HeldQuery<'a> {
    pub fn new(gauge: &'a Gauge) -> HeldQuery<'a> {
        gauge.inc();
        HeldQuery(gauge)
    }
}

impl Drop for HeldQuery<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
