//! Consul's configuration entries (`/v1/config`), for the kinds Wharf keeps:
//! `service-intentions`, and `service-resolver` and `service-splitter` ([`super::traffic`]).
//! Consul itself stores intentions as these entries, one per destination with its sources;
//! Wharf stores each intention under its pair (so that the intentions API, sidecars and
//! `wharf intention` share one record) and answers the entry as the view of every intention
//! to that destination, in evaluation order. Writing an entry replaces that set in one
//! transaction. Other kinds Consul knows answer 501 with the kind named; a kind Consul does
//! not know is a 400, as Consul answers it.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_mesh::intentions::{Action, Intention, Permission};

use super::access::Access;
use super::blocking::answer;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{Authorizer, Need, Scope};
use crate::catalog::{CatalogState, Resource, Stored};
use crate::connect::{entry_indexes, intentions_to};
use crate::traffic::TrafficKind;

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

const SERVICE_INTENTIONS: &str = "service-intentions";

/// Every kind of entry Consul knows besides those Wharf keeps.
const OTHER_KINDS: &[&str] = &[
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "ingress-gateway",
    "terminating-gateway",
    "api-gateway",
    "http-route",
    "tcp-route",
    "inline-certificate",
    "file-system-certificate",
    "mesh",
    "exported-services",
    "sameness-group",
    "jwt-provider",
    "control-plane-request-limit",
];

/// A kind of entry Wharf keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Intentions,
    Traffic(TrafficKind),
}

/// The kind named in a path or a body, if Wharf keeps it.
fn kind(name: &str) -> Result<Kind, ApiError> {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        SERVICE_INTENTIONS => return Ok(Kind::Intentions),
        super::traffic::SERVICE_RESOLVER => return Ok(Kind::Traffic(TrafficKind::Resolver)),
        super::traffic::SERVICE_SPLITTER => return Ok(Kind::Traffic(TrafficKind::Splitter)),
        _ => {}
    }
    if OTHER_KINDS.contains(&name.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "Wharf does not implement /v1/config for {name} entries yet (only {SERVICE_INTENTIONS}, {}, {})",
                super::traffic::SERVICE_RESOLVER,
                super::traffic::SERVICE_SPLITTER
            ),
        ));
    }
    Err(ApiError::bad_request(format!(
        "invalid config entry kind: {name}"
    )))
}

/// One source of a `service-intentions` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Source {
    #[serde(default)]
    name: String,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    permissions: Vec<Permission>,
    #[serde(default)]
    description: String,
    #[serde(rename = "Type", default)]
    source_type: Option<String>,
}

/// A `service-intentions` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    sources: Vec<Source>,
    #[serde(default)]
    meta: serde_json::Map<String, Value>,
}

/// The intentions an entry stands for, checked as Consul checks them.
fn intentions(entry: Entry) -> Result<(String, Vec<Intention>), ApiError> {
    if entry.name.is_empty() {
        return Err(ApiError::bad_request("config entry Name is required"));
    }
    if !entry.meta.is_empty() {
        return Err(ApiError::bad_request(
            "Wharf keeps no Meta on service-intentions entries yet; send the entry without it",
        ));
    }
    let destination = entry.name.to_ascii_lowercase();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(entry.sources.len());
    for (i, source) in entry.sources.into_iter().enumerate() {
        if source.name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Sources[{i}].Name is required"
            )));
        }
        let name = source.name.to_ascii_lowercase();
        if !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(format!(
                "Sources[{i}].Name {name:?} is defined more than once"
            )));
        }
        if let Some(kind) = source.source_type.as_deref()
            && !kind.eq_ignore_ascii_case("consul")
        {
            return Err(ApiError::bad_request(format!(
                "Sources[{i}].Type {kind:?} is not supported: only \"consul\""
            )));
        }
        match (source.action, source.permissions.is_empty()) {
            (Some(_), false) => {
                return Err(ApiError::bad_request(format!(
                    "Sources[{i}].Action must be omitted if Permissions are specified"
                )));
            }
            (None, true) => {
                return Err(ApiError::bad_request(format!(
                    "Sources[{i}].Action must be set to 'allow' or 'deny'"
                )));
            }
            _ => {}
        }
        let mut intention = Intention::new(&name, &destination, Action::Allow);
        intention.action = source.action;
        intention.permissions = source.permissions;
        intention.description = source.description;
        intention
            .validate()
            .map_err(|e| ApiError::bad_request(format!("Sources[{i}]: {e}")))?;
        out.push(intention);
    }
    Ok((destination, out))
}

/// A `service-intentions` entry in Consul's shape, `None` when nothing goes to `destination`.
fn entry_json(destination: &str, sources: &[Stored<Intention>]) -> Option<Value> {
    let (create, modify) = entry_indexes(sources)?;
    let sources: Vec<Value> = sources
        .iter()
        .map(|stored| {
            let i = &stored.value;
            let mut source = json!({
                "Name": i.source_name,
                "Precedence": i.precedence,
                "Type": "consul",
            });
            let object = source.as_object_mut().expect("an object");
            match i.action {
                Some(action) => {
                    object.insert("Action".into(), json!(action));
                }
                None => {
                    object.insert("Permissions".into(), json!(i.permissions));
                }
            }
            if !i.description.is_empty() {
                object.insert("Description".into(), json!(i.description));
            }
            if !i.id.is_empty() {
                object.insert("LegacyID".into(), json!(i.id));
            }
            source
        })
        .collect();
    Some(json!({
        "Kind": SERVICE_INTENTIONS,
        "Name": destination,
        "Sources": sources,
        "CreateIndex": create,
        "ModifyIndex": modify,
    }))
}

fn cas(p: &Params) -> Result<Option<u64>, ApiError> {
    p.get("cas")
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid cas index {v:?}")))
        })
        .transpose()
}

/// `PUT /v1/config[?cas=N]`: writes the entry in the body; `true`, or `false` when `cas`
/// did not hold.
pub(super) async fn apply(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    let p = Params::parse(q.as_deref());
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let named = value
        .get("Kind")
        .or_else(|| value.get("kind"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Request decoding failed: Kind is required"))?;
    if let Kind::Traffic(kind) = kind(named)? {
        let written = super::traffic::apply(&agent, &access, kind, value, cas(&p)?).await?;
        return Ok(json(if written {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        }));
    }
    let entry: Entry = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let (destination, sources) = intentions(entry)?;
    access.require(Scope::Intention(&destination), Need::Write)?;
    let written = agent
        .replace_intentions_to(&destination, sources, cas(&p)?)
        .await?;
    Ok(json(if written {
        b"true".to_vec()
    } else {
        b"false".to_vec()
    }))
}

/// `GET /v1/config/<kind>/<name>` (blocking).
pub(super) async fn read(
    State(agent): Shared,
    Path((named, name)): Path<(String, String)>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = Params::parse(q.as_deref());
    if let Kind::Traffic(kind) = kind(&named)? {
        return super::traffic::read(&agent, &access, kind, &name, &p).await;
    }
    let kind = SERVICE_INTENTIONS;
    let destination = name.to_ascii_lowercase();
    access.require(Scope::Intention(&destination), Need::Read)?;
    answer(&agent, &p, Resource::Intentions, |state| {
        let entry =
            entry_json(&destination, &intentions_to(state, &destination)).ok_or_else(|| {
                ApiError::not_found(format!("Config entry not found for {kind:?} / {name:?}"))
            })?;
        Ok(to_json(&entry, p.has("pretty")))
    })
    .await
}

/// `GET /v1/config/<kind>` (blocking): every entry of the kind, by name.
pub(super) async fn list(
    State(agent): Shared,
    Path(named): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = Params::parse(q.as_deref());
    let acl = access.authorizer()?;
    if let Kind::Traffic(kind) = kind(&named)? {
        return super::traffic::list(&agent, acl, kind, &p).await;
    }
    answer(&agent, &p, Resource::Intentions, |state| {
        Ok(to_json(&all_entries(state, acl), p.has("pretty")))
    })
    .await
}

fn all_entries(state: &CatalogState, acl: &Authorizer) -> Vec<Value> {
    let destinations: std::collections::BTreeSet<&str> = state
        .intentions
        .values()
        .map(|stored| stored.value.destination_name.as_str())
        .filter(|destination| acl.allows(Scope::Intention(destination), Need::Read))
        .collect();
    destinations
        .into_iter()
        .filter_map(|destination| entry_json(destination, &intentions_to(state, destination)))
        .collect()
}

/// `DELETE /v1/config/<kind>/<name>[?cas=N]`: `{}`, or with `cas` whether it was deleted
/// (Consul's answers).
pub(super) async fn delete(
    State(agent): Shared,
    Path((named, name)): Path<(String, String)>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = Params::parse(q.as_deref());
    let cas = cas(&p)?;
    let deleted = match kind(&named)? {
        Kind::Traffic(kind) => {
            access.require(Scope::Service(&name.to_ascii_lowercase()), Need::Write)?;
            agent.delete_traffic(kind, &name, cas).await?
        }
        Kind::Intentions => {
            access.require(Scope::Intention(&name.to_ascii_lowercase()), Need::Write)?;
            agent.delete_intentions_to(&name, cas).await?
        }
    };
    Ok(json(match (cas, deleted) {
        (None, _) => b"{}".to_vec(),
        (Some(_), true) => b"true".to_vec(),
        (Some(_), false) => b"false".to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: Value) -> Result<(String, Vec<Intention>), ApiError> {
        intentions(serde_json::from_value(body).unwrap())
    }

    fn reason(result: Result<(String, Vec<Intention>), ApiError>) -> String {
        use axum::response::IntoResponse;
        let response = result.unwrap_err().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        format!("{response:?}")
    }

    #[test]
    fn an_entry_becomes_one_intention_per_source() {
        let (destination, sources) = entry(json!({
            "Name": "API",
            "Sources": [
                {"Name": "web", "Action": "allow", "Description": "the site"},
                {"Name": "*", "Action": "deny"},
                {"Name": "admin", "Permissions": [
                    {"Action": "allow", "HTTP": {"PathPrefix": "/admin", "Methods": ["GET"]}}
                ]},
            ],
        }))
        .unwrap();
        assert_eq!(destination, "api");
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[0].source_name, "web");
        assert_eq!(sources[0].destination_name, "api");
        assert_eq!(sources[0].action, Some(Action::Allow));
        assert_eq!(sources[0].description, "the site");
        assert_eq!(sources[2].action, None);
        assert_eq!(sources[2].permissions.len(), 1);
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let _ = reason(entry(json!({"Sources": []})));
        let _ = reason(entry(
            json!({"Name": "api", "Sources": [{"Action": "allow"}]}),
        ));
        let _ = reason(entry(json!({"Name": "api", "Sources": [{"Name": "web"}]})));
        let _ = reason(entry(json!({"Name": "api", "Sources": [
            {"Name": "web", "Action": "allow"}, {"Name": "Web", "Action": "deny"}]})));
        let _ = reason(entry(
            json!({"Name": "api", "Sources": [{"Name": "web", "Action": "allow",
            "Permissions": [{"Action": "deny", "HTTP": {"PathExact": "/"}}]}]}),
        ));
        let _ = reason(entry(
            json!({"Name": "api", "Meta": {"a": "b"}, "Sources": []}),
        ));
        let _ = reason(entry(json!({"Name": "api", "Sources": [
            {"Name": "web", "Action": "allow", "Type": "external"}]})));
    }

    #[test]
    fn kinds_consul_knows_are_501_and_others_400() {
        use axum::response::IntoResponse;
        assert_eq!(kind("Service-Intentions").unwrap(), Kind::Intentions);
        assert_eq!(
            kind("service-splitter").unwrap(),
            Kind::Traffic(TrafficKind::Splitter)
        );
        let status = |name: &str| kind(name).unwrap_err().into_response().status();
        assert_eq!(status("service-defaults"), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(status("nonsense"), StatusCode::BAD_REQUEST);
    }
}
