//! Where the proxy learns endpoints: the registry's HTTP API only, with blocking queries
//! (the client crate's `Follower`), so that it works on top of a real Consul as well.
//!
//! Two kinds of watch: one on `/v1/catalog/services` (which names exist, to tell an unknown
//! service, 404, from one with no healthy instance, 503), and one per service routed to, on
//! `/v1/health/service/NAME?passing`, started by the first request for it. Each answer
//! replaces the service's [`EndpointSet`] atomically (`ArcSwap`), so the request path reads
//! endpoints without a lock. Endpoints that stay keep their state (load, latency, ejection).
//! And one on Wharf's `/v1/wharf/services`, for the services autoscaled from zero: one with no
//! instance is still routed to, its requests waiting for an instance (`plan::await_instance`).
//! And one on Wharf's `/v1/wharf/traffic`: the subsets of services split between versions
//! (Consul's `service-resolver` and `service-splitter`), which each set of endpoints is
//! divided by ([`crate::service::split`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use wharf_client::{Client, DesiredState, Health, Query, Read, ServiceEntry, Services};
use wharf_model::traffic::TrafficView;

use crate::service::split::Division;
use crate::service::{Balancer, Endpoint, EndpointSet, Policy, Service, ServiceDefaults};

/// How long the first request for a service waits for its first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(5);

/// Every service the proxy knows how to reach.
pub struct Directory {
    client: Option<Client>,
    defaults: ServiceDefaults,
    services: RwLock<HashMap<String, Arc<Service>, crate::fast_hash::FastHash>>,
    /// Lower-cased names that exist in the registry; `None` until the first answer.
    known: ArcSwap<Option<HashSet<String>>>,
    /// Turns true with the first answer about which services exist.
    known_ready: watch::Sender<bool>,
    /// Lower-cased names of supervised services that may scale to zero (`autoscale` with
    /// `min = 0`): routable with no instance; with how many held requests per ready instance
    /// each lets through at once.
    from_zero: ArcSwap<HashMap<String, u32>>,
    /// Lower-cased names of services split between subsets, and how.
    traffic: ArcSwap<HashMap<String, Arc<Division>>>,
    /// Wakes the proxy's golden-metrics reporter before its next second.
    pub(crate) report_now: Arc<tokio::sync::Notify>,
    metrics: crate::metrics::Metrics,
    /// Where the watches run: the runtime that made the directory, which outlives the proxy
    /// threads that route (their runtimes drop the connections they opened as they stop, and
    /// the registry client's pool is shared).
    runtime: tokio::runtime::Handle,
    /// Whether a routed name's endpoints are its instances (the gateway) or its Connect
    /// proxies (a sidecar's outbound side, which reaches the services' sidecars).
    connect: bool,
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
        Directory::build(client, static_upstreams, defaults, metrics, shutdown, false)
    }

    /// A directory whose endpoints for a service are its Connect proxies
    /// (`/v1/health/connect/NAME`): a sidecar's outbound side.
    pub fn of_proxies(
        client: Client,
        defaults: ServiceDefaults,
        metrics: crate::metrics::Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Directory> {
        Directory::build(Some(client), Vec::new(), defaults, metrics, shutdown, true)
    }

    fn build(
        client: Option<Client>,
        static_upstreams: Vec<(String, Vec<SocketAddr>)>,
        defaults: ServiceDefaults,
        metrics: crate::metrics::Metrics,
        shutdown: watch::Receiver<bool>,
        connect: bool,
    ) -> Arc<Directory> {
        let directory = Arc::new(Directory {
            runtime: tokio::runtime::Handle::current(),
            connect,
            client,
            defaults,
            services: RwLock::new(HashMap::default()),
            known: ArcSwap::from_pointee(None),
            known_ready: watch::Sender::new(false),
            from_zero: ArcSwap::from_pointee(HashMap::new()),
            traffic: ArcSwap::from_pointee(HashMap::new()),
            report_now: Arc::new(tokio::sync::Notify::new()),
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
            tokio::spawn(watch_supervised(Arc::downgrade(&directory)));
            tokio::spawn(watch_traffic(Arc::downgrade(&directory)));
        }
        directory
    }

    /// Whether the proxy can route: it has heard from the registry (or needs none).
    pub fn is_ready(&self) -> bool {
        self.client.is_none() || self.known.load().is_some()
    }

    fn new_service(&self, name: &str) -> (Arc<Service>, watch::Sender<bool>) {
        let (mut service, known) = Service::new(name, &self.defaults, self.metrics.service(name));
        service.report_now = self.report_now.clone();
        mark_from_zero(&service, self.from_zero.load().get(name).copied());
        service
            .division
            .store(Arc::new(self.traffic.load().get(name).cloned()));
        (Arc::new(service), known)
    }

    /// Every service routed to so far, by name.
    pub fn services(&self) -> Vec<Arc<Service>> {
        let mut all: Vec<Arc<Service>> = self
            .services
            .read()
            .expect("directory lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
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
                    // A service is known by its instances' name, or (to a sidecar, for a
                    // service whose app is not registered itself) by its proxies' name.
                    Some(known)
                        if !(known.contains(&*key)
                            || self.connect && known.contains(&format!("{key}-sidecar-proxy"))
                            || self.from_zero.load().contains_key(&*key)) =>
                    {
                        return Err(Lookup::Unknown);
                    }
                    Some(_) => {}
                }
                let mut services = self.services.write().expect("directory lock");
                if let Some(service) = services.get(&*key) {
                    service.clone()
                } else {
                    let (service, ready) = self.new_service(&key);
                    services.insert(key.clone().into_owned(), service.clone());
                    self.runtime.spawn(watch_service(
                        client,
                        self.connect,
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

/// Follows `query` for the directory's life (until it is dropped or the proxy stops), giving
/// each answer to `apply` and each failure, unless the proxy is stopping, to `failed`.
async fn follow<Q: Query>(
    directory: std::sync::Weak<Directory>,
    query: Q,
    apply: impl Fn(&Directory, Q::Answer),
    failed: impl Fn(wharf_client::ClientError),
) {
    let Some((mut follower, mut shutdown)) = directory.upgrade().and_then(|d| {
        let client = d.client.as_ref()?;
        Some((client.follow(query), d.shutdown.clone()))
    }) else {
        return;
    };
    while let Some(answer) = unless_stopping(&mut shutdown, follower.next()).await {
        let Some(directory) = directory.upgrade() else {
            return;
        };
        match answer {
            Ok(answer) => apply(&directory, answer),
            // Stopping may have begun while the query failed (the threads' runtimes drop the
            // connections they opened as the proxy stops): no outage to report then.
            Err(_) if *shutdown.borrow() => return,
            Err(e) => failed(e),
        }
    }
}

/// Follows which names exist in the catalog.
async fn watch_catalog(directory: std::sync::Weak<Directory>) {
    let apply = |directory: &Directory,
                 services: std::collections::BTreeMap<String, Vec<String>>| {
        let names: HashSet<String> = services.keys().map(|n| n.to_lowercase()).collect();
        directory.known.store(Arc::new(Some(names)));
        directory.known_ready.send_replace(true);
    };
    let failed = |e| tracing::warn!(error = %e, "proxy: cannot list services from the registry");
    follow(directory, Services, apply, failed).await;
}

/// Follows which supervised services may scale to zero. A registry that is not Wharf's (a
/// Consul) has no such list: the watch then keeps quiet, and every service needs an instance.
async fn watch_supervised(directory: std::sync::Weak<Directory>) {
    let apply =
        |directory: &Directory,
         desired: std::collections::BTreeMap<String, wharf_client::Desired>| {
            let names: HashMap<String, u32> = desired
                .iter()
                .filter(|(_, d)| d.min == Some(0))
                .map(|(name, d)| (name.to_lowercase(), release_per_instance(d)))
                .collect();
            for (name, service) in directory.services.read().expect("directory lock").iter() {
                mark_from_zero(service, names.get(name).copied());
            }
            directory.from_zero.store(Arc::new(names));
        };
    let failed = |e| tracing::debug!(error = %e, "proxy: no supervised services from the registry");
    follow(directory, DesiredState, apply, failed).await;
}

/// How many held requests per ready instance a service scaled from zero lets through at
/// once: its target concurrency, rounded up (0: all at once, for a target in requests/s).
fn release_per_instance(desired: &wharf_client::Desired) -> u32 {
    desired
        .target_concurrency
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(0, |t| t.ceil().min(f64::from(u32::MAX)) as u32)
}

/// Whether `service` may scale to zero, and how its held requests are let through.
fn mark_from_zero(service: &Service, release: Option<u32>) {
    use std::sync::atomic::Ordering::Relaxed;
    service.from_zero.store(release.is_some(), Relaxed);
    service
        .release_per_instance
        .store(release.unwrap_or(0), Relaxed);
}

/// Follows which services are split between subsets, and how. A registry that is not
/// Wharf's (a Consul) has no such view: the watch then keeps quiet, and nothing is split.
async fn watch_traffic(directory: std::sync::Weak<Directory>) {
    let apply = |directory: &Directory, views: std::collections::BTreeMap<String, TrafficView>| {
        let divisions: HashMap<String, Arc<Division>> = views
            .iter()
            .map(|(name, view)| (name.to_lowercase(), Arc::new(Division::new(view))))
            .collect();
        for (name, service) in directory.services.read().expect("directory lock").iter() {
            service
                .division
                .store(Arc::new(divisions.get(name).cloned()));
            divide(service);
        }
        directory.traffic.store(Arc::new(divisions));
    };
    let failed = |e| tracing::debug!(error = %e, "proxy: no traffic splits from the registry");
    follow(directory, Read::new("/v1/wharf/traffic"), apply, failed).await;
}

/// Divides the service's endpoints as it is split now (or not at all).
fn divide(service: &Service) {
    // Compare-and-swap: a new answer about the endpoints landing meanwhile is divided again.
    service.endpoints.rcu(|current| {
        EndpointSet::labelled(
            current.endpoints.clone(),
            current.labels.clone(),
            split_of(service, &current.labels),
        )
    });
    service.mark_subsets(&service.endpoints.load());
}

/// The service's split over endpoints described by `labels`, if it is split; sticky by the
/// request's hash key when the service names a hash header.
fn split_of(
    service: &Service,
    labels: &[Arc<serde_json::Value>],
) -> Option<crate::service::split::Split> {
    let division = service.division.load();
    let sticky = division.is_some() && service.hash_header.load().is_some();
    service
        .sticky_split
        .store(sticky, std::sync::atomic::Ordering::Relaxed);
    division.as_ref().as_ref().map(|d| d.split(labels, sticky))
}

/// What a subset's filter sees of an instance: its health entry in the API's shape.
fn labels(entry: &ServiceEntry) -> serde_json::Value {
    serde_json::json!({
        "Node": {"Node": entry.node.node, "Address": entry.node.address},
        "Service": {
            "ID": entry.service.id,
            "Service": entry.service.service,
            "Tags": entry.service.tags,
            "Address": entry.service.address,
            "Port": entry.service.port,
            "Meta": entry.service.meta,
        },
        "Checks": entry.checks.iter().map(|c| serde_json::json!({"Status": c.status})).collect::<Vec<_>>(),
    })
}

async fn watch_service(
    client: Client,
    connect: bool,
    service: std::sync::Weak<Service>,
    known: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(name) = service.upgrade().map(|s| s.name.clone()) else {
        return;
    };
    let query = if connect {
        Health::connect(&name)
    } else {
        Health::passing(&name)
    };
    let mut follower = client.follow(query);
    while let Some(answer) = unless_stopping(&mut shutdown, follower.next()).await {
        let Some(service) = service.upgrade() else {
            return;
        };
        match answer {
            Ok(entries) => update(&service, &entries),
            Err(_) if *shutdown.borrow() => return,
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "proxy: cannot watch service; keeping its last endpoints");
            }
        }
        // Either way, requests waiting for the first answer go on with what is known.
        let _ = known.send(true);
    }
}

/// Replaces the service's endpoints, keeping the state of those that stay.
fn update(service: &Service, entries: &[ServiceEntry]) {
    let current = service.endpoints.load();
    let mut endpoints = Vec::with_capacity(entries.len());
    let mut labelled = Vec::with_capacity(entries.len());
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
        labelled.push(Arc::new(labels(entry)));
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
        service.routes.enable(
            meta.get("wharf-routes")
                .is_some_and(|v| v == "on" || v == "true"),
        );
    }
    if endpoints.is_empty() {
        // Back to zero: the next instances' held requests start from no permit again.
        service
            .gate
            .store(Arc::new(crate::service::Gate::default()));
    }
    let split = split_of(service, &labelled);
    let set = Arc::new(EndpointSet::labelled(endpoints, labelled, split));
    service.mark_subsets(&set);
    service.endpoints.store(set);
    service.arrivals.notify_waiters();
}

/// A client of the registry at `url` with `credentials`, the environment's where unset.
pub(crate) fn registry_client(
    url: &str,
    credentials: &wharf_client::Credentials,
) -> Result<wharf_client::Client, wharf_client::ClientError> {
    wharf_client::Client::connect(url, &credentials.clone().or_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(instances: &[(&str, u16)], meta: serde_json::Value) -> Vec<ServiceEntry> {
        let list: Vec<serde_json::Value> = instances
            .iter()
            .map(|(id, port)| {
                serde_json::json!({
                    "Node": {"Node": "local", "Address": "127.0.0.1"},
                    "Service": {"ID": id, "Service": "web", "Port": port, "Meta": meta},
                })
            })
            .collect();
        serde_json::from_value(serde_json::Value::Array(list)).unwrap()
    }

    fn web() -> Service {
        let defaults = ServiceDefaults {
            policy: Policy::RoundRobin,
            max_concurrency: 10,
            routes: false,
        };
        let metrics = crate::metrics::Metrics::default().service("web");
        Service::new("web", &defaults, metrics).0
    }

    #[test]
    fn an_answer_replaces_the_set_and_endpoints_that_stay_keep_their_state() {
        let web = web();
        update(
            &web,
            &entries(&[("web-1", 8001), ("web-2", 8002)], serde_json::json!({})),
        );
        let first = web.endpoints.load_full();
        assert_eq!(first.endpoints.len(), 2);
        let _busy = first.endpoints[0].start();

        update(
            &web,
            &entries(&[("web-1", 8001), ("web-3", 8003)], serde_json::json!({})),
        );
        let second = web.endpoints.load();
        let ids: Vec<&str> = second.endpoints.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["web-1", "web-3"]);
        assert!(
            Arc::ptr_eq(&first.endpoints[0], &second.endpoints[0]),
            "web-1 stayed: the same endpoint, its load and latency kept"
        );
        assert_eq!(second.endpoints[0].inflight(), 1);

        // The same id on a new port is a new endpoint (the instance restarted).
        update(&web, &entries(&[("web-1", 9001)], serde_json::json!({})));
        assert!(!Arc::ptr_eq(
            &first.endpoints[0],
            &web.endpoints.load().endpoints[0]
        ));
    }

    #[test]
    fn a_split_service_sends_each_subset_its_share_and_follows_changes() {
        let web = web();
        let view: TrafficView = serde_json::from_value(serde_json::json!({
            "Subsets": {"v1": "Service.Meta.version == v1", "v2": "Service.Meta.version == v2"},
            "Splits": [{"Subset": "v1", "Ppm": 900_000}, {"Subset": "v2", "Ppm": 100_000}],
        }))
        .unwrap();
        web.division
            .store(Arc::new(Some(Arc::new(Division::new(&view)))));
        let mut all = entries(
            &[("web-1", 8001), ("web-2", 8002)],
            serde_json::json!({"version": "v1"}),
        );
        all.extend(entries(
            &[("web-3", 8003)],
            serde_json::json!({"version": "v2"}),
        ));
        update(&web, &all);
        let picks = |web: &Service| {
            let set = web.endpoints.load();
            let balancer = web.balancer.load();
            let mut counts = std::collections::BTreeMap::new();
            for _ in 0..10_000 {
                let i = balancer.pick(&set, &[], None).unwrap();
                *counts.entry(set.endpoints[i].id.clone()).or_insert(0) += 1;
            }
            counts
        };
        let counts = picks(&web);
        assert!((990..=1010).contains(&counts["web-3"]), "{counts:?}");
        assert!((4400..=4600).contains(&counts["web-1"]), "{counts:?}");
        // The split removed: every endpoint again, round robin.
        web.division.store(Arc::new(None));
        divide(&web);
        let counts = picks(&web);
        assert!((3300..=3400).contains(&counts["web-3"]), "{counts:?}");
    }

    #[test]
    fn service_meta_sets_the_policy_and_the_hash_header() {
        let web = web();
        let meta = serde_json::json!({"wharf-balance": "ring-hash", "wharf-hash-header": "x-user"});
        update(&web, &entries(&[("web-1", 8001)], meta));
        assert_eq!(web.balancer.load().policy, Policy::RingHash);
        assert_eq!(
            web.hash_header.load().as_ref().as_ref().map(|h| h.as_str()),
            Some("x-user")
        );
        // An instance without an IP address is skipped, not routed to.
        let mut odd = entries(&[("web-9", 8009)], serde_json::json!({}));
        odd[0].node.address = "not-an-ip".into();
        update(&web, &odd);
        assert!(web.endpoints.load().endpoints.is_empty());
    }
}
