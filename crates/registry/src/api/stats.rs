//! Wharf's own `/v1/wharf/stats`: the mesh's golden metrics gathered from its proxies, per
//! service (its windows, instances and the seed's three models, with its health counts from
//! the catalog) and per edge (caller → service); blocking on the reports' index. And
//! `PUT /v1/wharf/stats/report`, where proxies push them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use tokio::time::Instant;
use wharf_model::Status;
use wharf_stats::{Report, ServiceReport, ServiceView, WindowView};

use super::access::Access;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json_with_index, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::catalog::Resource;

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

/// `PUT /v1/wharf/stats/report`: a proxy's report; the token must be allowed to write every
/// service it reports on (a stranger cannot paint the dashboard).
pub(super) async fn report(State(agent): Shared, access: Access, body: RequestBody) -> Answer {
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    if report.proxy.is_empty() {
        return Err(ApiError::bad_request("a report needs its proxy's name"));
    }
    for service in &report.services {
        access.require(Scope::Service(&service.name), Need::Write)?;
    }
    agent.stats.take(report);
    Ok(super::json(b"true".to_vec()))
}

/// `GET /v1/wharf/stats[?index=&wait=]`.
pub(super) async fn read(State(agent): Shared, access: Access, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(q.as_deref());
    p.check_common(&agent.node().datacenter)?;
    let acl = access.authorizer()?;
    if let Some((client_index, wait)) = p.blocking()? {
        let deadline = Instant::now() + wait;
        // Subscribed before the index is read, so that a change in between is not missed.
        let mut reports = agent.stats.subscribe();
        let mut services = agent.catalog.subscribe(&Resource::Services);
        let mut checks = agent.catalog.subscribe(&Resource::Checks);
        while stats_index(&agent) == client_index {
            let changed = async {
                tokio::select! {
                    r = reports.changed() => r.is_ok(),
                    r = services.changed() => r.is_ok(),
                    r = checks.changed() => r.is_ok(),
                }
            };
            match tokio::time::timeout_at(deadline, changed).await {
                Ok(true) => continue,
                Ok(false) | Err(_) => break,
            }
        }
    }
    let index = stats_index(&agent);
    let (mut merged, edges, (proxies, open_connections)) = agent.stats.read(|reports| {
        let merged = wharf_stats::report::merge(reports.iter().copied());
        let mut edges = wharf_stats::report::edges(reports.iter().copied());
        edges.retain(|(_, destination), _| acl.allows(Scope::Service(destination), Need::Read));
        // Each part of a proxy's report says its connections: counted once per proxy.
        let mut connections: HashMap<&str, u64> = HashMap::new();
        for report in reports {
            let name = report.proxy_name();
            let count = connections.entry(name).or_default();
            *count = (*count).max(report.open_connections);
        }
        let open_connections = connections.values().sum::<u64>();
        (merged, edges, (reports.len(), open_connections))
    });
    // Every service in the catalog is listed, with or without traffic; its Connect proxies are
    // counted with it, not listed apart.
    let (health, proxies_of, supervised) = agent.catalog.read(|state| {
        let supervised: HashMap<String, Supervised> = state
            .desired
            .iter()
            .map(|(name, desired)| (name.to_lowercase(), Supervised::from(desired)))
            .collect();
        let mut health: BTreeMap<String, Health> = BTreeMap::new();
        let mut proxies_of = HashMap::new();
        for name in state.service_names().into_keys() {
            for instance in state.instances_of(&name) {
                if let Some(destination) = instance.value.proxy_for() {
                    health.entry(destination).or_default().sidecars += 1;
                    if let Some(id) = instance.value.id.strip_suffix(SIDECAR_SUFFIX) {
                        proxies_of.insert(instance.value.id.clone(), id.to_owned());
                    }
                    continue;
                }
                let counts = health.entry(name.to_lowercase()).or_default();
                match state.status_of(&instance.value) {
                    Status::Passing => counts.passing += 1,
                    Status::Warning => counts.warning += 1,
                    Status::Critical => counts.critical += 1,
                }
            }
        }
        (health, proxies_of, supervised)
    });
    // A gateway with mTLS on calls instances through their sidecars, and reports them by the
    // sidecar's id: they are named by the instance's.
    for service in merged.values_mut() {
        for instance in &mut service.instances {
            if let Some(id) = proxies_of.get(&instance.id) {
                instance.id.clone_from(id);
            }
        }
    }
    for name in health.keys() {
        merged.entry(name.clone()).or_insert_with(|| ServiceReport {
            name: name.clone(),
            ..ServiceReport::default()
        });
    }
    let services: Vec<ServiceEntry> = merged
        .values()
        .filter(|s| acl.allows(Scope::Service(&s.name), Need::Read))
        .map(|service| ServiceEntry {
            view: ServiceView::from(service),
            health: health.get(&service.name).copied().unwrap_or_default(),
            desired: supervised.get(&service.name).cloned(),
        })
        .collect();
    let intentions = agent.intentions();
    let edges: Vec<Edge> = edges
        .iter()
        .map(|((source, destination), edge)| {
            let decision = intentions.decide_connection(source, destination);
            Edge {
                source,
                destination,
                mtls: edge.mtls,
                bytes_in: edge.bytes_in,
                bytes_out: edge.bytes_out,
                intention: if decision.per_request {
                    "per-request"
                } else if decision.allowed {
                    "allow"
                } else {
                    "deny"
                },
                minute: WindowView::from(&edge.minute.summary()),
            }
        })
        .collect();
    let body = StatsAnswer {
        services,
        edges,
        proxies,
        open_connections,
    };
    Ok(json_with_index(to_json(&body, p.has("pretty")), index))
}

/// `GET /v1/wharf/proxies`: the proxies reporting now, where their admin listeners are, and
/// what they carry (the services they route to, and a sidecar's own service), for `wharf tap`
/// to find the ones that see a service's requests. A proxy is listed to a token that may read
/// one of its services.
pub(super) async fn proxies(State(agent): Shared, access: Access, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(q.as_deref());
    p.check_common(&agent.node().datacenter)?;
    let acl = access.authorizer()?;
    let mut listed: BTreeMap<String, ProxyEntry> = BTreeMap::new();
    agent.stats.read(|reports| {
        for report in reports {
            let name = report.proxy_name();
            let entry = listed.entry(name.to_owned()).or_insert_with(|| ProxyEntry {
                proxy: name.to_owned(),
                caller: report.caller.clone(),
                mtls: report.mtls,
                admin: report.admin.clone(),
                open_connections: 0,
                services: Vec::new(),
                callers: Vec::new(),
            });
            // Every part says it: the proxy's, once.
            entry.open_connections = entry.open_connections.max(report.open_connections);
            entry
                .services
                .extend(report.services.iter().map(|s| s.name.clone()));
            entry
                .callers
                .extend(report.inbound.iter().map(|c| c.caller.clone()));
        }
    });
    let readable = |name: &str| acl.allows(Scope::Service(name), Need::Read);
    let body: Vec<ProxyEntry> = listed
        .into_values()
        .filter(|proxy| readable(&proxy.caller) || proxy.services.iter().any(|s| readable(s)))
        .map(|mut proxy| {
            proxy.services.retain(|s| readable(s));
            proxy.services.sort();
            proxy.services.dedup();
            proxy.callers.sort();
            proxy.callers.dedup();
            proxy
        })
        .collect();
    Ok(super::json(to_json(&body, p.has("pretty"))))
}

#[derive(serde::Serialize)]
struct ProxyEntry {
    proxy: String,
    caller: String,
    mtls: bool,
    admin: Option<String>,
    /// Its clients' connections open now.
    open_connections: u64,
    /// The services it routes to.
    services: Vec<String>,
    /// A sidecar's callers (its own service is `caller`).
    callers: Vec<String>,
}

/// The index of the stats: it moves with every report taken and with every change of the
/// catalog's services or checks, so that a view blocked on it sees a health change at once
/// even where no proxy reports. All three only grow, so their sum moves when any one does.
fn stats_index(agent: &Agent) -> u64 {
    let catalog = agent
        .catalog
        .read(|state| state.index(&Resource::Services) + state.index(&Resource::Checks));
    agent.stats.index() + catalog
}

/// The answer, serialised as it is built (no intermediate JSON tree: a thousand services make
/// about 1.5 MB).
#[derive(serde::Serialize)]
struct StatsAnswer<'a> {
    services: Vec<ServiceEntry>,
    edges: Vec<Edge<'a>>,
    /// Report parts still fresh.
    proxies: usize,
    /// The proxies' client connections open now.
    open_connections: u64,
}

#[derive(serde::Serialize)]
struct ServiceEntry {
    #[serde(flatten)]
    view: ServiceView,
    health: Health,
    /// What the supervisor is asked to run of it, for a service `wharf up` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    desired: Option<Supervised>,
}

/// A supervised service's desired count, its autoscale bounds and the autoscaler's last
/// decision: desired beside current (`health.passing`) in the views.
#[derive(Debug, Clone, serde::Serialize)]
struct Supervised {
    replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_decision: Option<DecisionView>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct DecisionView {
    from: u32,
    to: u32,
    mode: String,
    load: f64,
    per_instance: f64,
    target: f64,
    ready: u32,
    /// Unix seconds.
    at: u64,
}

impl From<&crate::keys::Desired> for Supervised {
    fn from(desired: &crate::keys::Desired) -> Supervised {
        Supervised {
            replicas: desired.replicas,
            min: desired.bounds.map(|b| b.min),
            max: desired.bounds.map(|b| b.max),
            last_decision: desired.decision.as_ref().map(|d| DecisionView {
                from: d.from,
                to: d.to,
                mode: d.mode.clone(),
                load: d.load,
                per_instance: d.per_instance,
                target: d.target,
                ready: d.ready,
                at: d.at,
            }),
        }
    }
}

/// A service's instances by health, from the catalog.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Health {
    passing: u64,
    warning: u64,
    critical: u64,
    /// Its Connect proxies (sidecars), whatever their health.
    sidecars: u64,
}

/// How a sidecar's id is made from its instance's (Consul's naming, and Wharf's sidecars').
const SIDECAR_SUFFIX: &str = "-sidecar-proxy";

#[derive(serde::Serialize)]
struct Edge<'a> {
    source: &'a str,
    destination: &'a str,
    /// Carried over mutual TLS with `source` as the caller's identity.
    mtls: bool,
    /// What the intentions say of the edge (`allow`/`deny` as `/v1/connect/intentions/check`, or
    /// `per-request` where an L7 intention decides each request); sidecars enforce it, a
    /// plaintext gateway does not.
    intention: &'static str,
    minute: WindowView,
    /// Bytes of the last minute, caller to service and back.
    bytes_in: u64,
    bytes_out: u64,
}

/// `GET /v1/wharf/load/<service>`: what an autoscaler reads every second, for one service and
/// small (the whole stats view is a megabyte at a thousand services): its requests in flight
/// now, summed over its instances in every proxy's last report (each proxy pushes one a
/// second), with those a proxy holds while a service scaled to zero starts, and its requests
/// per second over the last minute.
pub(super) async fn load(
    State(agent): Shared,
    axum::extract::Path(name): axum::extract::Path<String>,
    access: Access,
) -> Answer {
    access.require(Scope::Service(&name), Need::Read)?;
    let (in_flight, rps, proxies) = agent.stats.read(|reports| {
        let mut load = (0u64, 0f64, 0usize);
        for report in reports {
            for service in report.services.iter().filter(|s| s.name == name) {
                // Requests held for a service scaled to zero are load no instance has yet.
                load.0 +=
                    service.instances.iter().map(|i| i.in_flight).sum::<u64>() + service.waiting;
                load.1 += service.minute.requests as f64 / service.minute.seconds.max(1) as f64;
                load.2 += 1;
            }
        }
        load
    });
    let answer = serde_json::json!({
        "Service": name,
        "InFlight": in_flight,
        "Rps": rps,
        "Proxies": proxies,
    });
    Ok(super::json(to_json(&answer, false)))
}
