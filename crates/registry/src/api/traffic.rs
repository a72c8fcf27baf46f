//! `service-resolver` and `service-splitter` under `/v1/config` ([`crate::traffic`]), in
//! Consul's shapes, and `/v1/wharf/traffic`, the view the proxies follow. Both need
//! `service:write` on the entry's service to write and `service:read` to read, as in Consul.

use serde_json::{Value, json};
use wharf_model::traffic::{Resolver, Splitter};

use super::access::Access;
use super::blocking::answer;
use super::params::Params;
use super::{ApiError, to_json};
use crate::Agent;
use crate::acl::{Authorizer, Need, Scope};
use crate::catalog::{CatalogState, Resource, Stored};
use crate::traffic::{TrafficKind, indexes, views};

pub(super) const SERVICE_RESOLVER: &str = "service-resolver";
pub(super) const SERVICE_SPLITTER: &str = "service-splitter";

/// `PUT /v1/config` of a resolver or splitter: whether it was written (`cas`).
pub(super) async fn apply(
    agent: &Agent,
    access: &Access,
    kind: TrafficKind,
    mut body: Value,
    cas: Option<u64>,
) -> Result<bool, ApiError> {
    if let Some(object) = body.as_object_mut() {
        object.remove("Kind");
        object.remove("kind");
        // Indexes come back in what a client read; they are the store's to set.
        object.remove("CreateIndex");
        object.remove("ModifyIndex");
    }
    let decode =
        |e: serde_json::Error| ApiError::bad_request(format!("Request decode failed: {e}"));
    let name = body
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    access.require(Scope::Service(&name), Need::Write)?;
    let written = match kind {
        TrafficKind::Resolver => {
            let resolver: Resolver = serde_json::from_value(body).map_err(decode)?;
            agent.write_resolver(resolver, cas).await?
        }
        TrafficKind::Splitter => {
            let splitter: Splitter = serde_json::from_value(body).map_err(decode)?;
            agent.write_splitter(splitter, cas).await?
        }
    };
    Ok(written)
}

fn entry_json<T: serde::Serialize>(kind: TrafficKind, stored: &Stored<T>) -> Value {
    let mut entry = serde_json::to_value(&stored.value).expect("an entry serialises");
    let (create, modify) = indexes(stored);
    let object = entry.as_object_mut().expect("an entry is an object");
    object.insert("Kind".into(), json!(kind_name(kind)));
    object.insert("CreateIndex".into(), json!(create));
    object.insert("ModifyIndex".into(), json!(modify));
    entry
}

fn kind_name(kind: TrafficKind) -> &'static str {
    match kind {
        TrafficKind::Resolver => SERVICE_RESOLVER,
        TrafficKind::Splitter => SERVICE_SPLITTER,
    }
}

fn entry_of(state: &CatalogState, kind: TrafficKind, name: &str) -> Option<Value> {
    match kind {
        TrafficKind::Resolver => state.resolvers.get(name).map(|s| entry_json(kind, s)),
        TrafficKind::Splitter => state.splitters.get(name).map(|s| entry_json(kind, s)),
    }
}

/// `GET /v1/config/<kind>/<name>` (blocking).
pub(super) async fn read(
    agent: &Agent,
    access: &Access,
    kind: TrafficKind,
    name: &str,
    p: &Params,
) -> Result<axum::response::Response, ApiError> {
    let name = name.to_ascii_lowercase();
    access.require(Scope::Service(&name), Need::Read)?;
    answer(agent, p, Resource::Traffic, |state| {
        let entry = entry_of(state, kind, &name).ok_or_else(|| {
            ApiError::not_found(format!(
                "Config entry not found for {:?} / {name:?}",
                kind_name(kind)
            ))
        })?;
        Ok(to_json(&entry, p.has("pretty")))
    })
    .await
}

/// `GET /v1/config/<kind>` (blocking): the entries the token may read, by name.
pub(super) async fn list(
    agent: &Agent,
    acl: &Authorizer,
    kind: TrafficKind,
    p: &Params,
) -> Result<axum::response::Response, ApiError> {
    answer(agent, p, Resource::Traffic, |state| {
        let names: Vec<&String> = match kind {
            TrafficKind::Resolver => state.resolvers.keys().collect(),
            TrafficKind::Splitter => state.splitters.keys().collect(),
        };
        let entries: Vec<Value> = names
            .into_iter()
            .filter(|name| acl.allows(Scope::Service(name), Need::Read))
            .filter_map(|name| entry_of(state, kind, name))
            .collect();
        Ok(to_json(&entries, p.has("pretty")))
    })
    .await
}

/// `GET /v1/wharf/traffic` (blocking): every service's subsets and shares, for the proxies.
pub(super) async fn view(
    axum::extract::State(agent): axum::extract::State<std::sync::Arc<Agent>>,
    access: Access,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let p = Params::parse(q.as_deref());
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Traffic, |state| {
        let mut all = views(state);
        all.retain(|name, _| acl.allows(Scope::Service(name), Need::Read));
        Ok(to_json(&all, p.has("pretty")))
    })
    .await
}
