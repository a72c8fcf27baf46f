//! `PUT /v1/event/fire/<name>` and `GET /v1/event/list`: Consul's user events
//! ([`crate::event`]). Firing takes the body as the payload and `?node=`, `?service=`, `?tag=`
//! as the event's filters, and answers the event; listing answers, oldest first, the events
//! kept that reach this registry node (`?name=` narrows them to one name), and blocks on
//! `?index=` until the next event. Firing needs `event:write` on the name, listing shows the
//! events of names with `event:read`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::StatusCode;

use super::access::Access;
use super::blocking::answer;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::catalog::Resource;
use crate::event::{Event, MAX_PAYLOAD, NewEvent};

type Answer = Result<Response, ApiError>;

pub(super) async fn fire(
    State(agent): State<Arc<Agent>>,
    access: Access,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    access.require(Scope::Event(&name), Need::Write)?;
    if body.len() > MAX_PAYLOAD {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Event payload too large: {} bytes, at most {MAX_PAYLOAD}",
                body.len()
            ),
        ));
    }
    let filter = |key| params.get(key).unwrap_or_default().to_owned();
    let event = agent
        .fire_event(NewEvent {
            name,
            payload: (!body.is_empty()).then(|| body.to_vec()),
            node_filter: filter("node"),
            service_filter: filter("service"),
            tag_filter: filter("tag"),
        })
        .await?;
    Ok(json(to_json(&event, params.has("pretty"))))
}

pub(super) async fn list(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    let name = params.get("name").unwrap_or_default().to_owned();
    let acl = access.authorizer()?;
    answer(&agent, &params, Resource::Events, |state| {
        let events: Vec<&Event> = state
            .events
            .values()
            .map(|e| &e.value)
            .filter(|e| name.is_empty() || e.name == name)
            .filter(|e| acl.allows(Scope::Event(&e.name), Need::Read))
            .filter(|e| e.reaches(&agent, state))
            .collect();
        Ok(to_json(&events, params.has("pretty")))
    })
    .await
}
