//! Where the proxy learns endpoints: the registry's HTTP API only, with blocking queries, so
//! that it works on top of a real Consul as well.
//!
//! Two kinds of watch: one on `/v1/catalog/services` (which names exist, to tell an unknown
//! service, 404, from one with no healthy instance, 503), and one per service routed to, on
//! `/v1/health/service/NAME?passing`, started by the first request for it. Each answer
//! replaces the service's [`EndpointSet`] atomically (`ArcSwap`), so the request path reads
//! endpoints without a lock. Endpoints that stay keep their state (load, latency, ejection).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use wharf_client::{Blocking, Client, ServiceEntry};

use crate::balance::{Balancer, EndpointSet, Policy};
use crate::endpoint::Endpoint;
use crate::metrics::ServiceMetrics;

/// How long a blocking query is held.
const WAIT: Duration = Duration::from_secs(60);
/// How long the first request for a service waits for its first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(5);

/// A routable service: its endpoints, balancer and per-service limits.
pub struct Service {
    pub name: String,
    pub endpoints: ArcSwap<EndpointSet>,
    pub balancer: ArcSwap<Balancer>,
    pub limiter: Arc<tokio::sync::Semaphore>,
    pub budget: tower::retry::budget::TpsBudget,
    pub metrics: ServiceMetrics,
    /// Header whose value is the ring-hash key (service meta `wharf-hash-header`).
    pub hash_header: ArcSwap<Option<http::HeaderName>>,
    ready: watch::Receiver<bool>,
}

impl Service {
    /// The ring-hash key of a request, the same on both request paths: the request's value of
    /// the service's hash header (`value_of` looks it up in whatever form the path holds its
    /// head), else the client's address. `None` unless the service balances by ring hash,
    /// so that other policies hash nothing.
    pub(crate) fn ring_key<'h>(
        &self,
        value_of: impl FnOnce(&http::HeaderName) -> Option<&'h [u8]>,
        client: IpAddr,
    ) -> Option<u64> {
        if self.balancer.load().policy != Policy::RingHash {
            return None;
        }
        let header = self.hash_header.load();
        let from_header = header.as_ref().as_ref().and_then(value_of);
        Some(from_header.map_or_else(
            || crate::balance::hash(&client),
            |v| crate::balance::hash(&v),
        ))
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Settings every service gets.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub policy: Policy,
    pub max_concurrency: usize,
}

/// Every service the proxy knows how to reach.
pub struct Directory {
    client: Option<Client>,
    defaults: ServiceDefaults,
    services: RwLock<HashMap<String, Arc<Service>>>,
    /// Lower-cased names that exist in the registry; `None` until the first answer.
    known: ArcSwap<Option<HashSet<String>>>,
    /// Turns true with the first answer about which services exist.
    known_ready: watch::Sender<bool>,
    metrics: crate::metrics::Metrics,
    /// Turns true when the proxy stops: the watches end quietly, before the registry they
    /// watch goes away (which they would otherwise report as an outage).
    shutdown: watch::Receiver<bool>,
}

/// Why a name cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    RegistryUnavailable,
}

impl Directory {
    /// A directory fed by the registry at `client`, plus `static_upstreams` (NAME → addresses)
    /// that need no registry.
    pub fn new(
        client: Option<Client>,
        static_upstreams: Vec<(String, Vec<SocketAddr>)>,
        defaults: ServiceDefaults,
        metrics: crate::metrics::Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Directory> {
        let directory = Arc::new(Directory {
            client,
            defaults,
            services: RwLock::new(HashMap::new()),
            known: ArcSwap::from_pointee(None),
            known_ready: watch::Sender::new(false),
            metrics,
            shutdown,
        });
        for (name, addrs) in static_upstreams {
            let endpoints = addrs
                .iter()
                .map(|a| Arc::new(Endpoint::new(a.to_string(), *a, 1)))
                .collect();
            let (service, ready) = directory.new_service(&name);
            service
                .endpoints
                .store(Arc::new(EndpointSet::new(endpoints)));
            let _ = ready.send(true);
            directory
                .services
                .write()
                .expect("directory lock")
                .insert(name.to_lowercase(), service);
        }
        if directory.client.is_some() {
            tokio::spawn(watch_catalog(Arc::downgrade(&directory)));
        }
        directory
    }

    /// Whether the proxy can route: it has heard from the registry (or needs none).
    pub fn is_ready(&self) -> bool {
        self.client.is_none() || self.known.load().is_some()
    }

    fn new_service(&self, name: &str) -> (Arc<Service>, watch::Sender<bool>) {
        let (ready_tx, ready) = watch::channel(false);
        let service = Arc::new(Service {
            name: name.to_owned(),
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            balancer: ArcSwap::from_pointee(Balancer::new(self.defaults.policy)),
            limiter: Arc::new(tokio::sync::Semaphore::new(self.defaults.max_concurrency)),
            // Linkerd's and Envoy's budget: retries may add 20% to requests, plus 10/s so
            // that a quiet service can still retry, over a 10 s window.
            budget: tower::retry::budget::TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            metrics: self.metrics.service(name),
            hash_header: ArcSwap::from_pointee(None),
            ready,
        });
        (service, ready_tx)
    }

    /// The service called `name` (case-insensitive), starting its watch on first use.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<Service>, Lookup> {
        let key: std::borrow::Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        };
        let existing = self
            .services
            .read()
            .expect("directory lock")
            .get(&*key)
            .cloned();
        let service = match existing {
            Some(service) => service,
            None => {
                let Some(client) = self.client.clone() else {
                    return Err(Lookup::Unknown);
                };
                if self.known.load().is_none() {
                    // Just started: give the registry a moment before refusing.
                    let mut ready = self.known_ready.subscribe();
                    let _ = tokio::time::timeout(FIRST_ANSWER, ready.wait_for(|r| *r)).await;
                }
                match &**self.known.load() {
                    None => return Err(Lookup::RegistryUnavailable),
                    Some(known) if !known.contains(&*key) => return Err(Lookup::Unknown),
                    Some(_) => {}
                }
                let mut services = self.services.write().expect("directory lock");
                if let Some(service) = services.get(&*key) {
                    service.clone()
                } else {
                    let (service, ready) = self.new_service(&key);
                    services.insert(key.clone().into_owned(), service.clone());
                    tokio::spawn(watch_service(
                        client,
                        Arc::downgrade(&service),
                        ready,
                        self.shutdown.clone(),
                    ));
                    service
                }
            }
        };
        if !*service.ready.borrow() {
            let mut ready = service.ready.clone();
            let _ = tokio::time::timeout(FIRST_ANSWER, ready.wait_for(|r| *r)).await;
        }
        Ok(service)
    }
}

/// `work`'s output, or `None` if the proxy stops first. Stopping wins a tie: as the proxy
/// stops, its threads' runtimes drop the connections they opened, so an answer may fail at
/// that same moment, and that is no outage to report.
async fn unless_stopping<T>(
    shutdown: &mut watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stop| *stop) => None,
        output = work => Some(output),
    }
}

async fn watch_catalog(directory: std::sync::Weak<Directory>) {
    let mut index = 0;
    let mut failures = 0u32;
    let Some(mut shutdown) = directory.upgrade().map(|d| d.shutdown.clone()) else {
        return;
    };
    loop {
        let Some(client) = directory.upgrade().and_then(|d| d.client.clone()) else {
            return;
        };
        let blocking = (index > 0).then_some(Blocking { index, wait: WAIT });
        let Some(answer) = unless_stopping(&mut shutdown, client.services_blocking(blocking)).await
        else {
            return;
        };
        match answer {
            Ok((services, next)) => {
                failures = 0;
                index = if next < index { 0 } else { next };
                let names: HashSet<String> = services.keys().map(|n| n.to_lowercase()).collect();
                let Some(directory) = directory.upgrade() else {
                    return;
                };
                directory.known.store(Arc::new(Some(names)));
                directory.known_ready.send_replace(true);
            }
            Err(e) => {
                failures += 1;
                index = 0;
                tracing::warn!(error = %e, "proxy: cannot list services from the registry");
                let pause = tokio::time::sleep(backoff(failures));
                if unless_stopping(&mut shutdown, pause).await.is_none() {
                    return;
                }
            }
        }
    }
}

async fn watch_service(
    client: Client,
    service: std::sync::Weak<Service>,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut index = 0;
    let mut failures = 0u32;
    loop {
        let Some(name) = service.upgrade().map(|s| s.name.clone()) else {
            return;
        };
        let blocking = (index > 0).then_some(Blocking { index, wait: WAIT });
        let health = client.health_service(&name, true, blocking);
        let Some(answer) = unless_stopping(&mut shutdown, health).await else {
            return;
        };
        match answer {
            Ok((entries, next)) => {
                failures = 0;
                index = if next < index { 0 } else { next };
                let Some(service) = service.upgrade() else {
                    return;
                };
                update(&service, &entries);
                let _ = ready.send(true);
            }
            Err(e) => {
                failures += 1;
                index = 0;
                tracing::warn!(service = %name, error = %e, "proxy: cannot watch service; keeping its last endpoints");
                // Let waiting requests go on with what is known rather than hang.
                let _ = ready.send(true);
                let pause = tokio::time::sleep(backoff(failures));
                if unless_stopping(&mut shutdown, pause).await.is_none() {
                    return;
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.pow(failures.min(8))).min(Duration::from_secs(10))
}

/// Replaces the service's endpoints, keeping the state of those that stay.
fn update(service: &Service, entries: &[ServiceEntry]) {
    let current = service.endpoints.load();
    let mut endpoints = Vec::with_capacity(entries.len());
    for entry in entries {
        let Ok(ip) = entry.address().parse::<IpAddr>() else {
            tracing::warn!(instance = %entry.service.id, address = %entry.address(), "proxy: skipping an instance without an IP address");
            continue;
        };
        let addr = SocketAddr::new(ip, entry.service.port);
        let weight = entry.service.weights.map_or(1, |w| w.passing);
        let existing = current
            .endpoints
            .iter()
            .find(|e| e.id == entry.service.id && e.addr == addr && e.weight == weight.max(1));
        endpoints.push(
            existing
                .cloned()
                .unwrap_or_else(|| Arc::new(Endpoint::new(entry.service.id.clone(), addr, weight))),
        );
    }
    // Per-service policy from service meta, as the first instance declares it.
    if let Some(meta) = entries.first().map(|e| &e.service.meta) {
        if let Some(policy) = meta
            .get("wharf-balance")
            .and_then(|p| p.parse::<Policy>().ok())
            && service.balancer.load().policy != policy
        {
            service.balancer.store(Arc::new(Balancer::new(policy)));
        }
        let header = meta
            .get("wharf-hash-header")
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
        service.hash_header.store(Arc::new(header));
    }
    service
        .endpoints
        .store(Arc::new(EndpointSet::new(endpoints)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(policy: Policy, header: Option<&str>) -> Arc<Service> {
        let (_, shutdown) = watch::channel(false);
        let defaults = ServiceDefaults {
            policy,
            max_concurrency: 10,
        };
        let directory = Directory::new(None, Vec::new(), defaults, Default::default(), shutdown);
        let (service, _ready) = directory.new_service("web");
        service.hash_header.store(Arc::new(
            header.map(|h| http::HeaderName::from_bytes(h.as_bytes()).unwrap()),
        ));
        service
    }

    #[tokio::test]
    async fn the_ring_key_is_the_header_value_else_the_client() {
        let client: IpAddr = "10.0.0.7".parse().unwrap();
        let sticky = service(Policy::RingHash, Some("x-user"));
        let alice = sticky.ring_key(|name| (name == "x-user").then_some(&b"alice"[..]), client);
        assert_eq!(alice, Some(crate::balance::hash(&&b"alice"[..])));
        assert_ne!(
            alice,
            sticky.ring_key(|_| Some(&b"bob"[..]), client),
            "users spread"
        );
        assert_eq!(
            sticky.ring_key(|_| None, client),
            Some(crate::balance::hash(&client)),
            "a request without the header sticks by its client"
        );
        let by_client = service(Policy::RingHash, None);
        assert_eq!(
            by_client.ring_key(|_| panic!("no header to look up"), client),
            Some(crate::balance::hash(&client))
        );
        let round_robin = service(Policy::RoundRobin, Some("x-user"));
        assert_eq!(
            round_robin.ring_key(|_| panic!("nothing hashed"), client),
            None
        );
    }
}
