//! `GET /v1/agent/health/service/id/<id>` and `/name/<name>`: the local health of this registry
//! node's instances, as Consul's agent answers load balancers and orchestrators that probe it.
//! The answer's status code is the health: 200 passing, 429 warning, 503 critical or in
//! maintenance; with `?format=text` the body is just that word, otherwise Consul's
//! `AgentServiceChecksInfo` (`AggregatedStatus`, `Service`, `Checks`), an array of them by name.
//! The node's checks count for every instance, as in Consul. Unknown: 404 with Consul's text.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use wharf_model::{CheckKind, ServiceInstance, Status};

use super::access::Access;
use super::params::Params;
use super::shapes::{AgentServiceJson, HealthCheckJson};
use super::{ApiError, json, to_json};
use crate::acl::{Need, Scope};
use crate::catalog::{CatalogState, Stored};
use crate::{Agent, NodeInfo};

/// An instance's aggregated health, as Consul's agent words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Aggregated {
    Passing,
    Warning,
    Critical,
    Maintenance,
}

impl Aggregated {
    fn word(self) -> &'static str {
        match self {
            Aggregated::Passing => "passing",
            Aggregated::Warning => "warning",
            Aggregated::Critical => "critical",
            Aggregated::Maintenance => "maintenance",
        }
    }

    fn status_code(self) -> StatusCode {
        match self {
            Aggregated::Passing => StatusCode::OK,
            Aggregated::Warning => StatusCode::TOO_MANY_REQUESTS,
            Aggregated::Critical | Aggregated::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn aggregate(state: &CatalogState, instance: &ServiceInstance) -> Aggregated {
    let checks = state.checks_of(instance);
    if checks
        .iter()
        .any(|c| matches!(c.value.kind, CheckKind::Maintenance))
    {
        return Aggregated::Maintenance;
    }
    match Status::aggregate(checks.iter().map(|c| c.value.status)) {
        Status::Passing => Aggregated::Passing,
        Status::Warning => Aggregated::Warning,
        Status::Critical => Aggregated::Critical,
    }
}

/// One instance's `AgentServiceChecksInfo`.
fn info(
    agent: &Agent,
    state: &CatalogState,
    node: &NodeInfo,
    stored: &Stored<ServiceInstance>,
) -> (Aggregated, Value) {
    let status = aggregate(state, &stored.value);
    let mut service = AgentServiceJson::new(stored);
    service.datacenter = Some(&agent.node().datacenter);
    let checks: Vec<HealthCheckJson> = state
        .checks_of(&stored.value)
        .into_iter()
        .map(|c| HealthCheckJson::new(node, c, Some(&stored.value)))
        .collect();
    let body = json!({"AggregatedStatus": status.word(), "Service": service, "Checks": checks});
    (status, body)
}

fn respond(status: Aggregated, text: bool, body: Value, pretty: bool) -> Response {
    let mut response = if text {
        (status.status_code(), status.word()).into_response()
    } else {
        let mut response = json(to_json(&body, pretty));
        *response.status_mut() = status.status_code();
        response
    };
    if text {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// `GET /v1/agent/health/service/id/<id>`.
pub(super) async fn by_id(
    State(agent): State<Arc<Agent>>,
    access: Access,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let text = params.get("format") == Some("text");
    let found = agent.catalog.read(|state| {
        let stored = state.instance(&agent.node().name, &id)?;
        Some((
            stored.value.name.clone(),
            info(&agent, state, agent.node(), stored),
        ))
    });
    let Some((name, (status, body))) = found else {
        return Err(ApiError::not_found(format!("ServiceId {id} not found")));
    };
    access.require(Scope::Service(&name), Need::Read)?;
    Ok(respond(status, text, body, params.has("pretty")))
}

/// `GET /v1/agent/health/service/name/<name>`: every local instance of `name`; the status is
/// the worst of theirs.
pub(super) async fn by_name(
    State(agent): State<Arc<Agent>>,
    access: Access,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    access.require(Scope::Service(&name), Need::Read)?;
    let text = params.get("format") == Some("text");
    let infos: Vec<(Aggregated, Value)> = agent.catalog.read(|state| {
        state
            .instances_of(&name)
            .filter(|i| i.value.node == agent.node().name)
            .map(|stored| info(&agent, state, agent.node(), stored))
            .collect()
    });
    let Some(worst) = infos.iter().map(|(status, _)| *status).max() else {
        return Err(ApiError::not_found(format!("ServiceName {name} Not Found")));
    };
    let bodies: Vec<Value> = infos.into_iter().map(|(_, body)| body).collect();
    Ok(respond(
        worst,
        text,
        Value::Array(bodies),
        params.has("pretty"),
    ))
}
