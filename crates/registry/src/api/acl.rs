//! Consul's ACL endpoints (`/v1/acl/...`): bootstrap, policies and tokens, in Consul's
//! shapes. With ACLs off they answer 401 `ACL support disabled`, as Consul does (py-consul
//! turns that into `ACLDisabled`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::StatusCode;
use serde_json::{Map, Value, json};
use wharf_model::parse_go_duration;

use super::access::Access;
use super::blocking::answer;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{
    AclState, Need, NodeIdentity, Policy, PolicyRequest, Scope, ServiceIdentity, Token,
    TokenRequest,
};
use crate::catalog::{Resource, Stored};

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

fn enabled(agent: &Agent) -> Result<(), ApiError> {
    if agent.config.acl.enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ACL support disabled",
        ))
    }
}

fn params(query: &Option<String>) -> Params {
    Params::parse(query.as_deref())
}

fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A short digest of a record, Consul's `Hash` (clients compare it, never read it).
fn hash(value: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(value).expect("ACL records serialise");
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy_json(policy: &Stored<Policy>, with_rules: bool) -> Value {
    let p = &policy.value;
    let mut out = json!({
        "ID": p.id,
        "Name": p.name,
        "Description": p.description,
        "Datacenters": if p.datacenters.is_empty() { Value::Null } else { json!(p.datacenters) },
        "Hash": hash(p),
        "CreateIndex": policy.create_index + 1,
        "ModifyIndex": policy.modify_index + 1,
    });
    if with_rules {
        out["Rules"] = json!(p.rules);
    }
    out
}

/// A token as Consul shows it; `show_secret` false hides the secret (a token that may only
/// read ACLs).
fn token_json(acl: &AclState, token: &Stored<Token>, show_secret: bool) -> Value {
    let t = &token.value;
    let policies: Vec<Value> = t
        .policies
        .iter()
        .filter_map(|id| acl.policy(id))
        .map(|p| json!({"ID": p.value.id, "Name": p.value.name}))
        .collect();
    let mut out = json!({
        "AccessorID": t.accessor_id,
        "SecretID": if show_secret { t.secret_id.as_str() } else { "<hidden>" },
        "Description": t.description,
        "Policies": policies,
        "Local": t.local,
        "CreateTime": rfc3339_ms(t.create_time),
        "Hash": hash(t),
        "CreateIndex": token.create_index + 1,
        "ModifyIndex": token.modify_index + 1,
    });
    if !t.service_identities.is_empty() {
        out["ServiceIdentities"] = t
            .service_identities
            .iter()
            .map(|s| {
                let mut v = json!({"ServiceName": s.service_name});
                if !s.datacenters.is_empty() {
                    v["Datacenters"] = json!(s.datacenters);
                }
                v
            })
            .collect();
    }
    if !t.node_identities.is_empty() {
        out["NodeIdentities"] = t
            .node_identities
            .iter()
            .map(|n| json!({"NodeName": n.node_name, "Datacenter": n.datacenter}))
            .collect();
    }
    if let Some(at) = t.expiration_time {
        out["ExpirationTime"] = json!(rfc3339_ms(at));
    }
    out
}

/// The body as a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "Request decode failed: expected a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!("Request decode failed: {e}"))),
    }
}

/// A field looked up as Go's decoder does: case-insensitively.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(map, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {name} must be a string"
        ))),
    }
}

fn strings_field(map: &Map<String, Value>, name: &str) -> Result<Vec<String>, ApiError> {
    match field(map, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Request decode failed: {name} must be a list of strings"
                    ))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {name} must be a list"
        ))),
    }
}

fn objects_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
) -> Result<Vec<&'a Map<String, Value>>, ApiError> {
    match field(map, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_object().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Request decode failed: {name} must be a list of objects"
                    ))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {name} must be a list"
        ))),
    }
}

/// Whether `text` reads as a UUID (8-4-4-4-12 hexadecimal digits).
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

// === bootstrap ===

/// `PUT /v1/acl/bootstrap`: the first management token, once; `{"BootstrapSecret": UUID}`
/// chooses its secret.
pub(super) async fn bootstrap(State(agent): Shared, body: RequestBody) -> Answer {
    enabled(&agent)?;
    let secret = string_field(&object(&body)?, "BootstrapSecret")?.filter(|s| !s.is_empty());
    if let Some(secret) = &secret
        && !is_uuid(secret)
    {
        return Err(ApiError::bad_request(format!(
            "BootstrapSecret {secret:?} is not a UUID"
        )));
    }
    let token = agent.acl_bootstrap(secret).await?;
    let body = agent
        .catalog
        .read(|s| to_json(&token_json(&s.acl, &token, true), false));
    Ok(json(body))
}

// === policies ===

fn policy_request(body: &[u8], id: Option<String>) -> Result<PolicyRequest, ApiError> {
    let map = object(body)?;
    if let (Some(path_id), Some(body_id)) = (&id, string_field(&map, "ID")?)
        && !body_id.is_empty()
        && body_id != *path_id
    {
        return Err(ApiError::bad_request(
            "Policy ID in the URL and in the body differ",
        ));
    }
    Ok(PolicyRequest {
        id,
        name: string_field(&map, "Name")?.unwrap_or_default(),
        description: string_field(&map, "Description")?.unwrap_or_default(),
        rules: string_field(&map, "Rules")?.unwrap_or_default(),
        datacenters: strings_field(&map, "Datacenters")?,
    })
}

async fn write_policy(agent: &Agent, request: PolicyRequest) -> Answer {
    let policy = agent.acl_write_policy(request).await?;
    Ok(json(to_json(&policy_json(&policy, true), false)))
}

/// `PUT /v1/acl/policy`: a new policy.
pub(super) async fn create_policy(
    State(agent): Shared,
    access: Access,
    body: RequestBody,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    write_policy(&agent, policy_request(&body, None)?).await
}

/// `PUT /v1/acl/policy/<id>`: the policy replaced.
pub(super) async fn update_policy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    body: RequestBody,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    write_policy(&agent, policy_request(&body, Some(id))?).await
}

/// `GET /v1/acl/policy/<id>`.
pub(super) async fn read_policy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let missing = format!("Cannot find policy {id:?}");
    answer_policy(&agent, &access, &q, |acl| acl.policy(&id), missing).await
}

/// `GET /v1/acl/policy/name/<name>`.
pub(super) async fn read_policy_by_name(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let missing = format!("Cannot find policy named {name:?}");
    answer_policy(&agent, &access, &q, |acl| acl.policy_named(&name), missing).await
}

/// The policy `find` picks, with its rules (404 `missing` when none).
async fn answer_policy(
    agent: &Agent,
    access: &Access,
    q: &Option<String>,
    find: impl Fn(&AclState) -> Option<Stored<Policy>>,
    missing: String,
) -> Answer {
    enabled(agent)?;
    access.require(Scope::Acl, Need::Read)?;
    let p = params(q);
    answer(agent, &p, Resource::Acl, |state| {
        let policy = find(&state.acl).ok_or_else(|| ApiError::not_found(missing.clone()))?;
        Ok(to_json(&policy_json(&policy, true), p.has("pretty")))
    })
    .await
}

/// `DELETE /v1/acl/policy/<id>`: `true`.
pub(super) async fn delete_policy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    agent.acl_delete_policy(&id).await?;
    Ok(json(b"true".to_vec()))
}

/// `GET /v1/acl/policies`: every policy, without its rules.
pub(super) async fn list_policies(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Read)?;
    let p = params(&q);
    answer(&agent, &p, Resource::Acl, |state| {
        let all: Vec<Value> = state
            .acl
            .all_policies()
            .iter()
            .map(|policy| policy_json(policy, false))
            .collect();
        Ok(to_json(&all, p.has("pretty")))
    })
    .await
}

// === tokens ===

fn token_request(body: &[u8], accessor: Option<String>) -> Result<TokenRequest, ApiError> {
    let map = object(body)?;
    let body_accessor = string_field(&map, "AccessorID")?.filter(|a| !a.is_empty());
    if let (Some(path), Some(body)) = (&accessor, &body_accessor)
        && path != body
    {
        return Err(ApiError::bad_request(
            "Token AccessorID in the URL and in the body differ",
        ));
    }
    if !objects_field(&map, "Roles")?.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid Token: roles are not supported by this registry; link policies instead",
        ));
    }
    if !objects_field(&map, "TemplatedPolicies")?.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid Token: templated policies are not supported by this registry; link \
             policies or use ServiceIdentities / NodeIdentities instead",
        ));
    }
    let mut request = TokenRequest {
        accessor_id: accessor.or(body_accessor),
        secret_id: string_field(&map, "SecretID")?.filter(|s| !s.is_empty()),
        description: string_field(&map, "Description")?.unwrap_or_default(),
        local: match field(&map, "Local") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                ApiError::bad_request("Request decode failed: Local must be true or false")
            })?,
        },
        ..TokenRequest::default()
    };
    for link in objects_field(&map, "Policies")? {
        match (string_field(link, "ID")?, string_field(link, "Name")?) {
            (Some(id), _) if !id.is_empty() => request.policy_ids.push(id),
            (_, Some(name)) if !name.is_empty() => request.policy_names.push(name),
            _ => {
                return Err(ApiError::bad_request(
                    "Invalid Token: a policy link needs an ID or a Name",
                ));
            }
        }
    }
    for identity in objects_field(&map, "ServiceIdentities")? {
        request.service_identities.push(ServiceIdentity {
            service_name: string_field(identity, "ServiceName")?.unwrap_or_default(),
            datacenters: strings_field(identity, "Datacenters")?,
        });
    }
    for identity in objects_field(&map, "NodeIdentities")? {
        request.node_identities.push(NodeIdentity {
            node_name: string_field(identity, "NodeName")?.unwrap_or_default(),
            datacenter: string_field(identity, "Datacenter")?.unwrap_or_default(),
        });
    }
    let ttl = string_field(&map, "ExpirationTTL")?.filter(|t| !t.is_empty());
    let at = string_field(&map, "ExpirationTime")?.filter(|t| !t.is_empty());
    request.expiration_time = match (ttl, at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Invalid Token: ExpirationTime and ExpirationTTL are mutually exclusive",
            ));
        }
        (Some(ttl), None) => {
            let ttl = parse_go_duration(&ttl).map_err(|e| {
                ApiError::bad_request(format!("Invalid Token: ExpirationTTL {ttl:?}: {e}"))
            })?;
            if ttl < std::time::Duration::from_secs(1)
                || ttl > std::time::Duration::from_secs(24 * 3600)
            {
                return Err(ApiError::bad_request(
                    "Invalid Token: ExpirationTTL must be from 1s to 24h",
                ));
            }
            Some(crate::now_ms().saturating_add(ttl.as_millis() as u64))
        }
        (None, Some(at)) => {
            let parsed =
                time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "Invalid Token: ExpirationTime {at:?} is not an RFC 3339 time: {e}"
                        ))
                    })?;
            let ms = parsed.unix_timestamp_nanos() / 1_000_000;
            if ms <= i128::from(crate::now_ms()) {
                return Err(ApiError::bad_request(
                    "Invalid Token: ExpirationTime cannot be in the past",
                ));
            }
            Some(u64::try_from(ms).unwrap_or(u64::MAX))
        }
        (None, None) => None,
    };
    Ok(request)
}

async fn write_token(agent: &Agent, request: TokenRequest, create: bool) -> Answer {
    let token = agent.acl_write_token(request, create).await?;
    let body = agent
        .catalog
        .read(|s| to_json(&token_json(&s.acl, &token, true), false));
    Ok(json(body))
}

/// `PUT /v1/acl/token`: a new token.
pub(super) async fn create_token(
    State(agent): Shared,
    access: Access,
    body: RequestBody,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    write_token(&agent, token_request(&body, None)?, true).await
}

/// `PUT /v1/acl/token/<accessor>`: the token's links and description replaced.
pub(super) async fn update_token(
    State(agent): Shared,
    Path(accessor): Path<String>,
    access: Access,
    body: RequestBody,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    let request = token_request(&body, Some(accessor))?;
    write_token(&agent, request, false).await
}

/// `PUT /v1/acl/token/<accessor>/clone`: a new token with the same links.
pub(super) async fn clone_token(
    State(agent): Shared,
    Path(accessor): Path<String>,
    access: Access,
    body: RequestBody,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    let description = string_field(&object(&body)?, "Description")?;
    let original = agent
        .catalog
        .read(|s| s.acl.token(&accessor))
        .ok_or_else(|| ApiError::not_found(format!("Cannot find token {accessor:?}")))?
        .value;
    let request = TokenRequest {
        description: description.unwrap_or(original.description),
        policy_ids: original.policies,
        service_identities: original.service_identities,
        node_identities: original.node_identities,
        local: original.local,
        expiration_time: original.expiration_time,
        ..TokenRequest::default()
    };
    write_token(&agent, request, true).await
}

/// `GET /v1/acl/token/<accessor>`.
pub(super) async fn read_token(
    State(agent): Shared,
    Path(accessor): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Read)?;
    let show_secret = access.authorizer()?.allows(Scope::Acl, Need::Write);
    let p = params(&q);
    answer(&agent, &p, Resource::Acl, |state| {
        let token = state
            .acl
            .token(&accessor)
            .ok_or_else(|| ApiError::not_found(format!("Cannot find token {accessor:?}")))?;
        Ok(to_json(
            &token_json(&state.acl, &token, show_secret),
            p.has("pretty"),
        ))
    })
    .await
}

/// `GET /v1/acl/token/self`: the token the request carries (any valid one may read itself).
pub(super) async fn token_self(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    enabled(&agent)?;
    let accessor = access.authorizer()?.accessor().to_owned();
    let p = params(&q);
    answer(&agent, &p, Resource::Acl, |state| {
        let token = state
            .acl
            .token(&accessor)
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
        Ok(to_json(
            &token_json(&state.acl, &token, true),
            p.has("pretty"),
        ))
    })
    .await
}

/// `DELETE /v1/acl/token/<accessor>`: `true`.
pub(super) async fn delete_token(
    State(agent): Shared,
    Path(accessor): Path<String>,
    access: Access,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Write)?;
    let requested_by = access.authorizer()?.accessor().to_owned();
    agent.acl_delete_token(&accessor, &requested_by).await?;
    Ok(json(b"true".to_vec()))
}

/// `GET /v1/acl/tokens`: every token (`?policy=<id>`: those linked to it).
pub(super) async fn list_tokens(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    enabled(&agent)?;
    access.require(Scope::Acl, Need::Read)?;
    let show_secret = access.authorizer()?.allows(Scope::Acl, Need::Write);
    let p = params(&q);
    let policy = p.get("policy").map(str::to_owned);
    answer(&agent, &p, Resource::Acl, |state| {
        let all: Vec<Value> = state
            .acl
            .all_tokens()
            .iter()
            .filter(|t| {
                policy
                    .as_ref()
                    .is_none_or(|id| t.value.policies.contains(id))
            })
            .map(|t| token_json(&state.acl, t, show_secret))
            .collect();
        Ok(to_json(&all, p.has("pretty")))
    })
    .await
}
