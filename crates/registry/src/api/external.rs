//! `PUT /v1/catalog/register` and `/v1/catalog/deregister`: external nodes, services and
//! checks ([`crate::external`]), in Consul's bodies; both answer `true`. Registering needs
//! `node:write` on the node and `service:write` on the service; deregistering `node:write`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use wharf_model::{decode_catalog_deregistration, decode_catalog_registration};

use super::access::Access;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json};
use crate::Agent;
use crate::acl::{Need, Scope};

type Answer = Result<Response, ApiError>;

pub(super) async fn register(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Answer {
    Params::parse(query.as_deref()).check_common(&agent.node().datacenter)?;
    let registration =
        decode_catalog_registration(&body).map_err(|e| ApiError::bad_request(e.0))?;
    if let Some(dc) = registration
        .datacenter
        .as_deref()
        .filter(|dc| *dc != agent.node().datacenter)
    {
        return Err(ApiError::internal(format!("No path to datacenter {dc:?}")));
    }
    access.require(Scope::Node(&registration.node), Need::Write)?;
    if let Some(service) = &registration.service {
        access.require(Scope::Service(&service.name), Need::Write)?;
    }
    agent.register_external(registration).await?;
    Ok(json(b"true".to_vec()))
}

pub(super) async fn deregister(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Answer {
    Params::parse(query.as_deref()).check_common(&agent.node().datacenter)?;
    let deregistration =
        decode_catalog_deregistration(&body).map_err(|e| ApiError::bad_request(e.0))?;
    access.require(Scope::Node(&deregistration.node), Need::Write)?;
    agent.deregister_external(deregistration).await?;
    Ok(json(b"true".to_vec()))
}
