//! Wharf's own `/v1/wharf/stats`: the mesh's golden metrics gathered from its proxies, per
//! service (its windows, instances and the seed's three models, with its health counts from
//! the catalog) and per edge (caller → service); blocking on the reports' index. And
//! `PUT /v1/wharf/stats/report`, where proxies push them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use tokio::time::Instant;
use wharf_model::Status;
use wharf_stats::{Report, ServiceReport, ServiceView, WindowReport, WindowView};

use super::access::Access;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json_with_index, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};

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
        let mut changes = agent.stats.subscribe();
        while agent.stats.index() == client_index {
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    let index = agent.stats.index();
    let (mut merged, edges, proxies) = agent.stats.read(|reports| {
        let merged = wharf_stats::report::merge(reports.iter().copied());
        let mut edges: BTreeMap<(String, String), WindowReport> = BTreeMap::new();
        for report in reports {
            for service in &report.services {
                if acl.allows(Scope::Service(&service.name), Need::Read) {
                    edges
                        .entry((report.caller.clone(), service.name.clone()))
                        .or_default()
                        .merge(&service.minute);
                }
            }
        }
        (merged, edges, reports.len())
    });
    // Every service in the catalog is listed, with or without traffic.
    let health: BTreeMap<String, Health> = agent.catalog.read(|state| {
        let mut health = BTreeMap::new();
        for name in state.service_names().into_keys() {
            let mut counts = Health::default();
            for instance in state.instances_of(&name) {
                match state.status_of(&instance.value) {
                    Status::Passing => counts.passing += 1,
                    Status::Warning => counts.warning += 1,
                    Status::Critical => counts.critical += 1,
                }
            }
            health.insert(name.to_lowercase(), counts);
        }
        health
    });
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
        })
        .collect();
    let edges: Vec<Edge> = edges
        .iter()
        .map(|((source, destination), minute)| Edge {
            source,
            destination,
            minute: WindowView::from(&minute.summary()),
        })
        .collect();
    let body = StatsAnswer {
        services,
        edges,
        proxies,
    };
    Ok(json_with_index(to_json(&body, p.has("pretty")), index))
}

/// The answer, serialised as it is built (no intermediate JSON tree: a thousand services make
/// about 1.5 MB).
#[derive(serde::Serialize)]
struct StatsAnswer<'a> {
    services: Vec<ServiceEntry>,
    edges: Vec<Edge<'a>>,
    /// Report parts still fresh.
    proxies: usize,
}

#[derive(serde::Serialize)]
struct ServiceEntry {
    #[serde(flatten)]
    view: ServiceView,
    health: Health,
}

/// A service's instances by health, from the catalog.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Health {
    passing: u64,
    warning: u64,
    critical: u64,
}

#[derive(serde::Serialize)]
struct Edge<'a> {
    source: &'a str,
    destination: &'a str,
    minute: WindowView,
}
