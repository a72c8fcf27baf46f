//! `/v1/session/...`: Consul's sessions ([`crate::session`]) in Consul's shapes. Creating and
//! destroying need `session:write` on the session's node, reading `session:read`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Access;
use super::blocking::answer;
use super::body::{RequestBody, go_fields};
use super::params::Params;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::catalog::{Resource, Stored};
use crate::session::{Behavior, NewSession, ServiceCheck, Session};

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

/// A session in Consul's shape (`LockDelay` in nanoseconds, `TTL` a Go duration).
fn session_json(stored: &Stored<Session>) -> Value {
    let session = &stored.value;
    let ttl = if session.ttl_ms == 0 {
        String::new()
    } else {
        wharf_model::format_go_duration(Duration::from_millis(session.ttl_ms))
    };
    let service_checks: Option<Vec<Value>> = (!session.service_checks.is_empty()).then(|| {
        session
            .service_checks
            .iter()
            .map(|c| json!({"ID": c.id, "Namespace": c.namespace}))
            .collect()
    });
    json!({
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": session.lock_delay_ms * 1_000_000,
        "Behavior": session.behavior.name(),
        "TTL": ttl,
        "NodeChecks": session.node_checks,
        "ServiceChecks": service_checks,
        "Checks": session.node_checks,
        "CreateIndex": stored.create_index + 1,
        "ModifyIndex": stored.create_index + 1,
    })
}

/// The fields of a session to create, as Consul spells them.
const CREATE_FIELDS: &[&str] = &[
    "Name",
    "Node",
    "Checks",
    "NodeChecks",
    "ServiceChecks",
    "LockDelay",
    "Behavior",
    "TTL",
];

/// The body of `PUT /v1/session/create`, as Consul decodes it (unknown fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    checks: Option<Vec<String>>,
    #[serde(default)]
    node_checks: Option<Vec<String>>,
    #[serde(default)]
    service_checks: Option<Vec<ServiceCheck>>,
    #[serde(default)]
    lock_delay: Option<Value>,
    #[serde(default)]
    behavior: String,
    #[serde(default, rename = "TTL")]
    ttl: String,
}

/// Consul's lock delay: a Go duration, or a number (below 1,000 seconds, otherwise
/// nanoseconds).
fn lock_delay(value: &Value) -> Result<Duration, ApiError> {
    let bad = || ApiError::bad_request(format!("Request decode failed: invalid LockDelay {value}"));
    match value {
        Value::String(text) => wharf_model::parse_go_duration(text).map_err(|_| bad()),
        Value::Number(n) => {
            let n = n.as_f64().filter(|n| *n >= 0.0).ok_or_else(bad)?;
            Ok(if n < 1000.0 {
                Duration::from_secs_f64(n)
            } else {
                Duration::from_nanos(n as u64)
            })
        }
        Value::Null => Ok(crate::session::DEFAULT_LOCK_DELAY),
        _ => Err(bad()),
    }
}

/// `PUT /v1/session/create`: `{"ID": ...}`.
pub(super) async fn create(
    State(agent): Shared,
    access: Access,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let decoded: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        let decode =
            |e: serde_json::Error| ApiError::bad_request(format!("Request decode failed: {e}"));
        let mut value = go_fields(
            serde_json::from_slice(&body).map_err(decode)?,
            CREATE_FIELDS,
        );
        if let Some(Value::Array(checks)) = value.get_mut("ServiceChecks") {
            for check in checks.iter_mut() {
                *check = go_fields(std::mem::take(check), &["ID", "Namespace"]);
            }
        }
        serde_json::from_value(value).map_err(decode)?
    };
    let behavior = match decoded.behavior.as_str() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid Behavior setting '{other}'"
            )));
        }
    };
    let ttl = match decoded.ttl.as_str() {
        "" => None,
        text => Some(wharf_model::parse_go_duration(text).map_err(|_| {
            ApiError::bad_request(format!("Request decode failed: invalid TTL {text:?}"))
        })?),
    };
    let node = (!decoded.node.is_empty()).then_some(decoded.node);
    let node_name = node.clone().unwrap_or_else(|| agent.node().name.clone());
    access.require(Scope::Session(&node_name), Need::Write)?;
    let request = NewSession {
        name: decoded.name,
        node,
        node_checks: decoded.node_checks.or(decoded.checks),
        service_checks: decoded.service_checks.unwrap_or_default(),
        lock_delay: decoded.lock_delay.as_ref().map(lock_delay).transpose()?,
        behavior,
        ttl,
    };
    let id = agent.create_session(request).await?;
    Ok(json(to_json(&json!({ "ID": id }), params.has("pretty"))))
}

fn session_node(agent: &Agent, id: &str) -> Option<String> {
    agent
        .catalog
        .read(|state| state.sessions.get(id).map(|s| s.value.node.clone()))
}

/// `PUT /v1/session/destroy/<id>`: `true` (also for a session already gone, as Consul).
pub(super) async fn destroy(
    State(agent): Shared,
    access: Access,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    Params::parse(query.as_deref()).check_common(&agent.node().datacenter)?;
    if let Some(node) = session_node(&agent, &id) {
        access.require(Scope::Session(&node), Need::Write)?;
    }
    agent.destroy_session(&id).await?;
    Ok(json(b"true".to_vec()))
}

/// `PUT /v1/session/renew/<id>`: the session, its TTL restarted; 404 if it is gone.
pub(super) async fn renew(
    State(agent): Shared,
    access: Access,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    if let Some(node) = session_node(&agent, &id) {
        access.require(Scope::Session(&node), Need::Write)?;
    }
    let renewed = agent.renew_session(&id).await?;
    Ok(json(to_json(
        &[session_json(&renewed)],
        params.has("pretty"),
    )))
}

fn listing(
    access: &Access,
    params: &Params,
    keep: impl Fn(&Session) -> bool,
    state: &crate::CatalogState,
) -> Result<Vec<u8>, ApiError> {
    let authorizer = access.authorizer()?;
    let sessions: Vec<Value> = state
        .sessions
        .values()
        .filter(|s| keep(&s.value))
        .filter(|s| authorizer.allows(Scope::Session(&s.value.node), Need::Read))
        .map(session_json)
        .collect();
    Ok(to_json(&sessions, params.has("pretty")))
}

/// `GET /v1/session/info/<id>`: `[session]`, or `[]` when there is none.
pub(super) async fn info(
    State(agent): Shared,
    access: Access,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    answer(&agent, &params, Resource::Sessions, |state| {
        listing(&access, &params, |s| s.id == id, state)
    })
    .await
}

/// `GET /v1/session/node/<node>`: the node's sessions.
pub(super) async fn of_node(
    State(agent): Shared,
    access: Access,
    Path(node): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    answer(&agent, &params, Resource::Sessions, |state| {
        listing(&access, &params, |s| s.node == node, state)
    })
    .await
}

/// `GET /v1/session/list`: every session.
pub(super) async fn list(
    State(agent): Shared,
    access: Access,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    answer(&agent, &params, Resource::Sessions, |state| {
        listing(&access, &params, |_| true, state)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_delay_is_a_duration_or_consuls_number() {
        assert_eq!(lock_delay(&json!("15s")).unwrap(), Duration::from_secs(15));
        assert_eq!(
            lock_delay(&json!(10)).unwrap(),
            Duration::from_secs(10),
            "seconds below 1000"
        );
        assert_eq!(
            lock_delay(&json!(2_000_000_000u64)).unwrap(),
            Duration::from_secs(2),
            "nanoseconds above"
        );
        assert!(lock_delay(&json!("soon")).is_err());
        assert!(lock_delay(&json!(-1)).is_err());
    }
}
