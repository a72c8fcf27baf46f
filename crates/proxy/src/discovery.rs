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

use crate::service::{Balancer, Endpoint, EndpointSet, Policy, Service, ServiceDefaults};

/// How long a blocking query is held.
const WAIT: Duration = Duration::from_secs(60);
/// How long the first request for a service waits for its first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(5);

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
        let (service, known) = Service::new(name, &self.defaults, self.metrics.service(name));
        (Arc::new(service), known)
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
        service.wait_known(FIRST_ANSWER).await;
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
