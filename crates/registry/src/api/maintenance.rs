//! Maintenance mode, as Consul's agent does it: `PUT /v1/agent/service/maintenance/<id>`
//! adds (or removes) the critical check `_service_maintenance:<id>` on that instance, and
//! `PUT /v1/agent/maintenance` the node's `_node_maintenance`, so that the instance (or every
//! instance of the node) leaves `?passing`, DNS and the proxies while keeping its other
//! checks. `enable` is required; `reason` becomes the check's notes.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use wharf_model::{Check, CheckKind, Status};

use super::ApiError;
use super::access::Access;
use super::body::RequestBody;
use super::params::Params;
use crate::Agent;
use crate::acl::{Need, Scope};

/// Consul's ids of the maintenance checks.
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
const NODE_MAINTENANCE: &str = "_node_maintenance";

type Answer = Result<Response, ApiError>;

/// `?enable=` (required) and `?reason=`.
fn order(query: Option<&str>) -> Result<(bool, String), ApiError> {
    let params = Params::parse(query);
    let enable = match params.get("enable") {
        None => return Err(ApiError::bad_request("Missing value for enable")),
        // Go's `ParseBool`, which (unlike a bare `?passing`) refuses an empty value.
        Some(value) => (!value.is_empty())
            .then(|| super::params::parse_go_bool(value))
            .flatten()
            .ok_or_else(|| ApiError::bad_request("Invalid value for enable"))?,
    };
    Ok((enable, params.get("reason").unwrap_or_default().to_owned()))
}

fn maintenance_check(id: String, name: &str, service_id: String, notes: String) -> Check {
    Check {
        id,
        name: name.to_owned(),
        service_id,
        notes,
        kind: CheckKind::Maintenance,
        interval: None,
        timeout: None,
        deregister_critical_after: None,
        thresholds: Default::default(),
        status: Status::Critical,
        output: String::new(),
        critical_since_ms: None,
        node: String::new(),
    }
}

/// Enables (adds the check, idempotently) or disables (removes it if present).
async fn switch(agent: &Agent, enable: bool, check: Check) -> Answer {
    let present = agent
        .catalog
        .read(|state| state.check(&agent.node().name, &check.id).is_some());
    match (enable, present) {
        (true, _) => agent.register_check(check).await?,
        (false, true) => agent.deregister_check(&check.id).await?,
        (false, false) => {}
    }
    Ok(http::StatusCode::OK.into_response())
}

/// `PUT /v1/agent/service/maintenance/<id>?enable=&reason=`.
pub(super) async fn service(
    State(agent): State<Arc<Agent>>,
    access: Access,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    _body: RequestBody,
) -> Answer {
    let (enable, reason) = order(query.as_deref())?;
    let name = agent.catalog.read(|state| {
        state
            .instance(&agent.node().name, &id)
            .map(|i| i.value.name.clone())
    });
    let Some(name) = name else {
        return Err(ApiError::not_found(format!("Unknown service ID {id:?}")));
    };
    access.require(Scope::Service(&name), Need::Write)?;
    let notes = if reason.is_empty() {
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.".to_owned()
    } else {
        reason
    };
    let check = maintenance_check(
        format!("{SERVICE_MAINTENANCE_PREFIX}{id}"),
        "Service Maintenance Mode",
        id,
        notes,
    );
    switch(&agent, enable, check).await
}

/// `PUT /v1/agent/maintenance?enable=&reason=`: the whole node.
pub(super) async fn node(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
    _body: RequestBody,
) -> Answer {
    let (enable, reason) = order(query.as_deref())?;
    access.require(Scope::Node(&agent.node().name), Need::Write)?;
    let notes = if reason.is_empty() {
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.".to_owned()
    } else {
        reason
    };
    let check = maintenance_check(
        NODE_MAINTENANCE.to_owned(),
        "Node Maintenance Mode",
        String::new(),
        notes,
    );
    switch(&agent, enable, check).await
}
