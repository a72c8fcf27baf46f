//! Consul Connect's endpoints: the CA (roots, leaves, configuration), `authorize`, and
//! intentions, answered in Consul's shapes (consul-compat, mesh-research §1(b)).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use wharf_mesh::ca::unix;
use wharf_mesh::identity::{SpiffeId, check_name};
use wharf_mesh::intentions::Intention;

use super::access::Access;
use super::blocking::answer;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json, json_with_index, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::catalog::{CatalogState, Resource, Stored};
use crate::connect::CaState;

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

/// Longest a leaf's blocking query is held (Consul: 10 minutes).
const MAX_LEAF_WAIT: Duration = Duration::from_secs(600);

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn params(query: &Option<String>) -> Params {
    Params::parse(query.as_deref())
}

fn no_ca() -> ApiError {
    ApiError::internal("the CA is not made yet")
}

fn roots_json(ca: &Stored<CaState>) -> Value {
    let now = unix(SystemTime::now());
    let roots: Vec<Value> = ca
        .value
        .trusted(now)
        .map(|trusted| {
            let root = &trusted.root;
            json!({
                "ID": root.id,
                "Name": root.name,
                "SerialNumber": root.serial,
                "SigningKeyID": root.signing_key_id,
                "ExternalTrustDomain": ca.value.trust_domain.trim_end_matches(".consul"),
                "NotBefore": rfc3339(root.not_before),
                "NotAfter": rfc3339(root.not_after),
                "RootCert": root.cert_pem,
                "IntermediateCerts": null,
                "Active": root.id == ca.value.active_root_id,
                "PrivateKeyType": "ec",
                "PrivateKeyBits": 256,
                "CreateIndex": ca.create_index + 1,
                "ModifyIndex": ca.modify_index + 1,
            })
        })
        .collect();
    json!({
        "ActiveRootID": ca.value.active_root_id,
        "TrustDomain": ca.value.trust_domain,
        "Roots": roots,
    })
}

/// `GET /v1/agent/connect/ca/roots` and `/v1/connect/ca/roots` (blocking); the latter with
/// `?pem=true` answers the trusted roots as one PEM chain.
pub(super) async fn ca_roots(State(agent): Shared, RawQuery(q): RawQuery) -> Answer {
    let p = params(&q);
    let pem = p.get("pem").is_some_and(|v| v != "0" && v != "false");
    let response = answer(&agent, &p, Resource::ConnectCa, |state: &CatalogState| {
        let ca = state.ca.as_ref().ok_or_else(no_ca)?;
        if pem {
            let now = unix(SystemTime::now());
            let chain: String = ca
                .value
                .trusted(now)
                .map(|r| r.root.cert_pem.clone())
                .collect();
            return Ok(chain.into_bytes());
        }
        Ok(to_json(&roots_json(ca), p.has("pretty")))
    })
    .await?;
    Ok(if pem {
        with_content_type(response, "application/pem-certificate-chain")
    } else {
        response
    })
}

fn with_content_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /v1/agent/connect/ca/leaf/<service>`: the service's leaf, blocking until a new one
/// is due (renewal time, or the roots changed).
pub(super) async fn ca_leaf(
    State(agent): Shared,
    Path(service): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    p.check_common(&agent.node().datacenter)?;
    check_name(&service).map_err(|e| ApiError::bad_request(e.to_string()))?;
    access.require(Scope::Service(&service), Need::Write)?;
    let mut leaf = agent.leaf(&service)?;
    if let Some((client_index, wait)) = p.blocking()?
        && client_index == leaf.index
    {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_LEAF_WAIT);
        let mut roots = agent.catalog.subscribe(&Resource::ConnectCa);
        let renew = tokio::time::Instant::now() + crate::connect::until(leaf.renew_at);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(renew)) => {}
            _ = roots.changed() => {}
        }
        leaf = agent.leaf(&service)?;
    }
    let l = &leaf.leaf;
    let body = json!({
        "SerialNumber": l.serial,
        "CertPEM": l.cert_pem,
        "PrivateKeyPEM": l.key_pem,
        "Service": service,
        "ServiceURI": l.identity.to_string(),
        "ValidAfter": rfc3339(l.valid_after),
        "ValidBefore": rfc3339(l.valid_before),
        "Namespace": "default",
        "CreateIndex": leaf.index,
        "ModifyIndex": leaf.index,
    });
    Ok(json_with_index(to_json(&body, p.has("pretty")), leaf.index))
}

/// `GET /v1/connect/ca/configuration`.
pub(super) async fn ca_configuration(State(agent): Shared, access: Access) -> Answer {
    access.require(Scope::Operator, Need::Read)?;
    let ca = agent.ca()?;
    let body = json!({
        "Provider": "consul",
        "ClusterID": ca.value.cluster_id,
        "Config": {
            "LeafCertTTL": format!("{}s", ca.value.leaf_ttl_secs),
            "PrivateKeyType": "ec",
            "PrivateKeyBits": 256,
            "RootCertTTL": "87600h",
        },
        "State": null,
        "ForceWithoutCrossSigning": false,
        "CreateIndex": ca.create_index + 1,
        "ModifyIndex": ca.modify_index + 1,
    });
    Ok(json_with_index(to_json(&body, false), ca.modify_index + 1))
}

/// `PUT /v1/connect/ca/configuration`: a `PrivateKey` (PEM, EC P-256) rotates the root to
/// it; `LeafCertTTL` changes the lifetime of leaves issued from now on.
pub(super) async fn set_ca_configuration(
    State(agent): Shared,
    access: Access,
    body: RequestBody,
) -> Answer {
    access.require(Scope::Operator, Need::Write)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let provider = value
        .get("Provider")
        .and_then(Value::as_str)
        .unwrap_or("consul");
    if provider != "consul" {
        return Err(ApiError::bad_request(format!(
            "Invalid CA configuration: provider {provider:?} is not supported; Wharf's CA is \"consul\""
        )));
    }
    let config = value.get("Config").cloned().unwrap_or(Value::Null);
    if !config.is_null() && !config.is_object() {
        return Err(ApiError::bad_request(
            "Invalid CA configuration: Config must be an object",
        ));
    }
    let ttl = match config.get("LeafCertTTL") {
        None => None,
        Some(v) => {
            let text = v.as_str().ok_or_else(|| {
                ApiError::bad_request("Invalid CA configuration: LeafCertTTL must be a duration")
            })?;
            let ttl = wharf_model::duration::parse_go_duration(text).map_err(|e| {
                ApiError::bad_request(format!("Invalid CA configuration: LeafCertTTL: {e}"))
            })?;
            if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(365 * 24 * 3600) {
                return Err(ApiError::bad_request(
                    "Invalid CA configuration: LeafCertTTL must be from 1s to 8760h",
                ));
            }
            Some(ttl)
        }
    };
    let key = match config.get("PrivateKey") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| {
            ApiError::bad_request("Invalid CA configuration: PrivateKey must be a PEM string")
        })?),
    };
    if let Some(key) = key {
        agent.rotate_root(Some(key)).await?;
    }
    if let Some(ttl) = ttl {
        agent.set_leaf_ttl(ttl).await?;
    }
    Ok(json(b"true".to_vec()))
}

/// `POST /v1/agent/connect/authorize`: may the client certificate's service connect to
/// `Target`? (L4: an L7 intention counts as a deny, as in Consul.)
pub(super) async fn authorize(State(agent): Shared, access: Access, body: RequestBody) -> Answer {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let target = field("Target");
    if target.is_empty() {
        return Err(ApiError::bad_request("Target service must be specified"));
    }
    access.require(Scope::Service(target), Need::Write)?;
    let uri = field("ClientCertURI");
    if uri.is_empty() {
        return Err(ApiError::bad_request("ClientCertURI must be specified"));
    }
    let client = SpiffeId::parse(uri).map_err(|e| {
        ApiError::bad_request(format!("ClientCertURI not a valid Connect identifier: {e}"))
    })?;
    let ca = agent.ca()?;
    let (authorized, reason) = if client.trust_domain != ca.value.trust_domain {
        (
            false,
            "Client certificate is from a different trust domain".to_owned(),
        )
    } else {
        let decision = agent.intentions().check(&client.service, target);
        (decision.allowed, decision.reason)
    };
    Ok(json(to_json(
        &json!({"Authorized": authorized, "Reason": reason}),
        false,
    )))
}

/// `GET /v1/wharf/mesh`: Wharf's own; what a sidecar needs besides its certificate and the
/// intentions: the decision when no intention matches.
pub(super) async fn mesh_settings(State(agent): Shared) -> Answer {
    let default = match agent.config.mesh.default_intention {
        wharf_mesh::intentions::DefaultAction::Allow => "allow",
        wharf_mesh::intentions::DefaultAction::Deny => "deny",
    };
    Ok(json(to_json(&json!({"DefaultIntention": default}), false)))
}

// === intentions ===

fn intention_json(stored: &Stored<Intention>) -> Value {
    let mut value = serde_json::to_value(&stored.value).expect("an intention serialises");
    if let Some(object) = value.as_object_mut() {
        object.insert("CreateIndex".into(), json!(stored.create_index + 1));
        object.insert("ModifyIndex".into(), json!(stored.modify_index + 1));
    }
    value
}

fn pair(p: &Params) -> Result<(String, String), ApiError> {
    let source = p
        .get("source")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("required query parameter 'source' not set"))?;
    let destination = p
        .get("destination")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("required query parameter 'destination' not set"))?;
    Ok((
        source.to_ascii_lowercase(),
        destination.to_ascii_lowercase(),
    ))
}

fn decode_intention(body: &[u8]) -> Result<Intention, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Failed to decode intention body: {e}")))
}

/// `PUT /v1/connect/intentions/exact?source=&destination=`.
pub(super) async fn put_exact(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    let (source, destination) = pair(&params(&q))?;
    access.require(Scope::Intention(&destination), Need::Write)?;
    let mut intention = decode_intention(&body)?;
    intention.source_name = source;
    intention.destination_name = destination;
    agent.upsert_intention(intention).await?;
    Ok(json(b"true".to_vec()))
}

/// `GET /v1/connect/intentions/exact?source=&destination=`.
pub(super) async fn get_exact(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let (source, destination) = pair(&p)?;
    access.require(Scope::Intention(&destination), Need::Read)?;
    let key = format!("{source}/{destination}");
    answer(&agent, &p, Resource::Intentions, |state| {
        let stored = state
            .intentions
            .get(&key)
            .ok_or_else(|| ApiError::not_found("Intention not found"))?;
        Ok(to_json(&intention_json(stored), p.has("pretty")))
    })
    .await
}

/// `DELETE /v1/connect/intentions/exact?source=&destination=`.
pub(super) async fn delete_exact(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let (source, destination) = pair(&params(&q))?;
    access.require(Scope::Intention(&destination), Need::Write)?;
    agent.delete_intention(&source, &destination).await?;
    Ok(json(b"true".to_vec()))
}

/// `GET /v1/connect/intentions`: every intention, in evaluation order (blocking; `?filter` is
/// the route's [`super::filter::filtered`]).
pub(super) async fn list(State(agent): Shared, access: Access, RawQuery(q): RawQuery) -> Answer {
    let p = params(&q);
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Intentions, |state| {
        let mut all: Vec<&Stored<Intention>> = state
            .intentions
            .values()
            .filter(|i| acl.allows(Scope::Intention(&i.value.destination_name), Need::Read))
            .collect();
        sort_stored(&mut all);
        let list: Vec<Value> = all.into_iter().map(intention_json).collect();
        Ok(to_json(&list, p.has("pretty")))
    })
    .await
}

fn sort_stored(all: &mut [&Stored<Intention>]) {
    all.sort_by(|a, b| wharf_mesh::intentions::order(&a.value, &b.value));
}

/// `GET /v1/connect/intentions/check?source=&destination=` → `{"Allowed": …}`.
pub(super) async fn check(State(agent): Shared, access: Access, RawQuery(q): RawQuery) -> Answer {
    let (source, destination) = pair(&params(&q))?;
    access.require(Scope::Intention(&destination), Need::Read)?;
    let decision = agent.intentions().check(&source, &destination);
    Ok(json(to_json(&json!({"Allowed": decision.allowed}), false)))
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=…` (repeatable): for each
/// name, the intentions that apply to it, in evaluation order.
pub(super) async fn matching(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let acl = access.authorizer()?;
    let by_source = match p.get("by") {
        Some("source") => true,
        Some("destination") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'by' must be 'source' or 'destination', not {other:?}"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "required query parameter 'by' not set",
            ));
        }
    };
    let names: Vec<String> = p.all("name").map(str::to_ascii_lowercase).collect();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "required query parameter 'name' not set",
        ));
    }
    answer(&agent, &p, Resource::Intentions, |state| {
        let mut all: Vec<&Stored<Intention>> = state
            .intentions
            .values()
            .filter(|i| acl.allows(Scope::Intention(&i.value.destination_name), Need::Read))
            .collect();
        sort_stored(&mut all);
        let mut out = serde_json::Map::new();
        for name in &names {
            let matched: Vec<Value> = all
                .iter()
                .filter(|s| {
                    let side = if by_source {
                        &s.value.source_name
                    } else {
                        &s.value.destination_name
                    };
                    side == "*" || side == name
                })
                .map(|s| intention_json(s))
                .collect();
            out.insert(name.clone(), Value::Array(matched));
        }
        Ok(to_json(&out, p.has("pretty")))
    })
    .await
}

/// `POST /v1/connect/intentions` (legacy): creates one with an ID → `{"ID": …}`.
pub(super) async fn create_legacy(
    State(agent): Shared,
    access: Access,
    body: RequestBody,
) -> Answer {
    let mut intention = decode_intention(&body)?;
    access.require(
        Scope::Intention(&intention.destination_name.to_ascii_lowercase()),
        Need::Write,
    )?;
    let key = format!(
        "{}/{}",
        intention.source_name.to_ascii_lowercase(),
        intention.destination_name.to_ascii_lowercase()
    );
    if agent
        .catalog
        .read(|state| state.intentions.contains_key(&key))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "duplicate intention found: {} => {}",
                intention.source_name, intention.destination_name
            ),
        ));
    }
    intention.id = crate::node::random_uuid();
    let id = intention.id.clone();
    agent.upsert_intention(intention).await?;
    Ok(json(to_json(&json!({"ID": id}), false)))
}

fn by_id(agent: &Agent, id: &str) -> Result<Stored<Intention>, ApiError> {
    agent
        .intention_by_id(id)
        .ok_or_else(|| ApiError::not_found("Intention not found"))
}

/// `GET /v1/connect/intentions/<id>` (legacy).
pub(super) async fn get_legacy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
) -> Answer {
    let stored = by_id(&agent, &id)?;
    access.require(Scope::Intention(&stored.value.destination_name), Need::Read)?;
    Ok(json(to_json(&intention_json(&stored), false)))
}

/// `PUT /v1/connect/intentions/<id>` (legacy): replaces it, source and destination included.
pub(super) async fn put_legacy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    body: RequestBody,
) -> Answer {
    let old = by_id(&agent, &id)?;
    let mut intention = decode_intention(&body)?;
    access.require(Scope::Intention(&old.value.destination_name), Need::Write)?;
    access.require(
        Scope::Intention(&intention.destination_name.to_ascii_lowercase()),
        Need::Write,
    )?;
    intention.id = id;
    if (
        intention.source_name.as_str(),
        intention.destination_name.as_str(),
    ) != (
        old.value.source_name.as_str(),
        old.value.destination_name.as_str(),
    ) {
        agent
            .delete_intention(&old.value.source_name, &old.value.destination_name)
            .await?;
    }
    agent.upsert_intention(intention).await?;
    Ok(http::StatusCode::OK.into_response())
}

/// `DELETE /v1/connect/intentions/<id>` (legacy).
pub(super) async fn delete_legacy(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
) -> Answer {
    let old = by_id(&agent, &id)?;
    access.require(Scope::Intention(&old.value.destination_name), Need::Write)?;
    agent
        .delete_intention(&old.value.source_name, &old.value.destination_name)
        .await
        .map_err(ApiError::from)?;
    Ok(http::StatusCode::OK.into_response())
}
