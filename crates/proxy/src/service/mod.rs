//! The domain below the transports: a service, its endpoints, how one is chosen and which are
//! kept out for failing. Nothing here knows how requests travel (HTTP/1, HTTP/2, TLS) or
//! where endpoints come from (the registry, `--upstream`): the transports and discovery build
//! on this module, never the other way round.
//!
//! - [`endpoint`] — one instance: load, peak-EWMA latency, outlier state;
//! - [`balance`] — the policies over a service's [`EndpointSet`];
//! - [`outlier`] — passive ejection after consecutive failures;
//! - [`routes`] — golden metrics by route class, bounded;
//! - [`split`] — the split of a service's traffic between its subsets;
//! - this file — [`Service`]: endpoints, balancer, limits, retry budget and metrics together.

pub mod balance;
pub mod endpoint;
pub mod outlier;
pub mod routes;
pub mod split;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use balance::{Balancer, EndpointSet, Policy};
pub use endpoint::Endpoint;

use crate::metrics::ServiceMetrics;

/// Settings every service gets.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub policy: Policy,
    pub max_concurrency: usize,
    /// Golden metrics by route class for every service, not only those whose meta asks.
    pub routes: bool,
}

/// A routable service: its endpoints, balancer and per-service limits.
pub struct Service {
    pub name: String,
    pub endpoints: ArcSwap<EndpointSet>,
    pub balancer: ArcSwap<Balancer>,
    pub limiter: Arc<tokio::sync::Semaphore>,
    pub budget: tower::retry::budget::TpsBudget,
    pub metrics: ServiceMetrics,
    /// Golden metrics of every request to it (as answered to the client).
    pub golden: wharf_stats::Row,
    /// Golden metrics by route class (bounded).
    pub routes: routes::Routes,
    /// Retries sent and endpoints ejected, for the golden metrics' last minute.
    pub retries: wharf_stats::Volume,
    pub ejections: wharf_stats::Volume,
    /// Bytes from its clients (requests) and to them (answers), in the last minute.
    pub bytes_in: wharf_stats::Volume,
    pub bytes_out: wharf_stats::Volume,
    /// Header whose value is the ring-hash key (service meta `wharf-hash-header`).
    pub hash_header: ArcSwap<Option<http::HeaderName>>,
    /// Whether the service's split between subsets goes by the request's hash key (it has a
    /// split and a hash header): a request then needs its key whatever the policy.
    pub sticky_split: std::sync::atomic::AtomicBool,
    /// Its subsets and their shares, if the registry splits it.
    pub division: ArcSwap<Option<Arc<split::Division>>>,
    /// Golden metrics per subset of its split, by name (kept while the subset is split to).
    pub subsets: std::sync::Mutex<std::collections::BTreeMap<String, Arc<wharf_stats::Row>>>,
    /// Turns true once the service's endpoints are known (or given up on for now).
    known: watch::Receiver<bool>,
    /// Whether the service may have no instance at all for a while (autoscaled with
    /// `min = 0`): its requests then wait for one instead of being refused.
    pub from_zero: std::sync::atomic::AtomicBool,
    /// Requests waiting now for its first instance.
    pub waiting: std::sync::atomic::AtomicU64,
    /// Held requests let through at most this many per ready instance at once (its
    /// autoscaler's target concurrency); 0: all at once.
    pub release_per_instance: std::sync::atomic::AtomicU32,
    /// The permits held requests are let through by, since it last had no instance.
    pub gate: ArcSwap<Gate>,
    /// Woken each time its endpoints change.
    pub arrivals: tokio::sync::Notify,
    /// Asks its proxy to report now rather than at the next second (a request began to wait
    /// for a service scaled to zero: the autoscaler should hear of it at once). Its
    /// directory's, shared by all its services.
    pub report_now: Arc<tokio::sync::Notify>,
}

impl Service {
    /// A service with no endpoints yet, and the sender that says when they are known.
    pub fn new(
        name: &str,
        defaults: &ServiceDefaults,
        metrics: ServiceMetrics,
    ) -> (Service, watch::Sender<bool>) {
        let (known_tx, known) = watch::channel(false);
        let service = Service {
            name: name.to_owned(),
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            balancer: ArcSwap::from_pointee(Balancer::new(defaults.policy)),
            limiter: Arc::new(tokio::sync::Semaphore::new(defaults.max_concurrency)),
            // Linkerd's and Envoy's budget: retries may add 20% to requests, plus 10/s so
            // that a quiet service can still retry, over a 10 s window.
            budget: tower::retry::budget::TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            metrics,
            golden: wharf_stats::Row::new(crate::clock::now_secs()),
            routes: routes::Routes::new(defaults.routes),
            retries: wharf_stats::Volume::default(),
            ejections: wharf_stats::Volume::default(),
            bytes_in: wharf_stats::Volume::default(),
            bytes_out: wharf_stats::Volume::default(),
            hash_header: ArcSwap::from_pointee(None),
            sticky_split: Default::default(),
            division: ArcSwap::from_pointee(None),
            subsets: Default::default(),
            known,
            from_zero: Default::default(),
            waiting: Default::default(),
            release_per_instance: Default::default(),
            gate: ArcSwap::from_pointee(Gate::default()),
            arrivals: tokio::sync::Notify::new(),
            report_now: Arc::new(tokio::sync::Notify::new()),
        };
        (service, known_tx)
    }

    /// Points each endpoint of `set` at the golden metrics of the subset it serves (the first
    /// share that has it), none when the service is not split; forgets subsets no longer
    /// split to.
    pub fn mark_subsets(&self, set: &EndpointSet) {
        let mut rows = self.subsets.lock().expect("subset rows");
        let mut marked = vec![None; set.endpoints.len()];
        let mut named = std::collections::BTreeSet::new();
        if let Some(split) = &set.split {
            for (subset, members) in split.shares() {
                named.insert(subset.to_owned());
                let row = rows
                    .entry(subset.to_owned())
                    .or_insert_with(|| Arc::new(wharf_stats::Row::new(crate::clock::now_secs())))
                    .clone();
                for &i in members {
                    if marked[i].is_none() {
                        marked[i] = Some(row.clone());
                    }
                }
            }
        }
        rows.retain(|name, _| named.contains(name));
        for (endpoint, row) in set.endpoints.iter().zip(marked) {
            endpoint.subset.store(row);
        }
    }

    /// Waits (at most `limit`) until the service's endpoints are known.
    pub async fn wait_known(&self, limit: Duration) {
        if !*self.known.borrow() {
            let mut known = self.known.clone();
            let _ = tokio::time::timeout(limit, known.wait_for(|k| *k)).await;
        }
    }

    /// The ring-hash key of a request, the same on every transport: the request's value of
    /// the service's hash header (`value_of` looks it up in whatever form the transport holds
    /// its head), else the client's address. `None` unless the service balances by ring hash
    /// or splits by the key, so that other services hash nothing.
    pub(crate) fn ring_key<'h>(
        &self,
        value_of: impl FnOnce(&http::HeaderName) -> Option<&'h [u8]>,
        client: IpAddr,
    ) -> Option<u64> {
        if self.balancer.load().policy != Policy::RingHash
            && !self.sticky_split.load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let header = self.hash_header.load();
        let from_header = header.as_ref().as_ref().and_then(value_of);
        Some(from_header.map_or_else(|| balance::hash(&client), |v| balance::hash(&v)))
    }
}

/// How many held requests of a service scaled up from zero may be answered at once: the
/// target concurrency per instance ready so far (grown as instances pass, made anew when it
/// goes back to zero). A held request takes a permit until it is answered.
#[derive(Debug)]
pub struct Gate {
    pub permits: Arc<tokio::sync::Semaphore>,
    /// The ready instances whose permits were added.
    pub opened_for: std::sync::atomic::AtomicUsize,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            permits: Arc::new(tokio::sync::Semaphore::new(0)),
            opened_for: Default::default(),
        }
    }
}

impl Gate {
    /// Adds the permits of instances ready beyond those counted: `per_instance` each.
    pub fn open_for(&self, ready: usize, per_instance: u32) {
        let before = self
            .opened_for
            .fetch_max(ready, std::sync::atomic::Ordering::Relaxed);
        if ready > before {
            self.permits
                .add_permits((ready - before) * per_instance as usize);
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(policy: Policy, header: Option<&str>) -> Service {
        let defaults = ServiceDefaults {
            policy,
            max_concurrency: 10,
            routes: false,
        };
        let metrics = crate::metrics::Metrics::default().service("web");
        let (service, _known) = Service::new("web", &defaults, metrics);
        service.hash_header.store(Arc::new(
            header.map(|h| http::HeaderName::from_bytes(h.as_bytes()).unwrap()),
        ));
        service
    }

    #[test]
    fn the_ring_key_is_the_header_value_else_the_client() {
        let client: IpAddr = "10.0.0.7".parse().unwrap();
        let sticky = service(Policy::RingHash, Some("x-user"));
        let alice = sticky.ring_key(|name| (name == "x-user").then_some(&b"alice"[..]), client);
        assert_eq!(alice, Some(balance::hash(&&b"alice"[..])));
        assert_ne!(
            alice,
            sticky.ring_key(|_| Some(&b"bob"[..]), client),
            "users spread"
        );
        assert_eq!(
            sticky.ring_key(|_| None, client),
            Some(balance::hash(&client)),
            "a request without the header sticks by its client"
        );
        let by_client = service(Policy::RingHash, None);
        assert_eq!(
            by_client.ring_key(|_| panic!("no header to look up"), client),
            Some(balance::hash(&client))
        );
        let round_robin = service(Policy::RoundRobin, Some("x-user"));
        assert_eq!(
            round_robin.ring_key(|_| panic!("nothing hashed"), client),
            None
        );
    }
}
