//! One function per endpoint. Reads go through [`blocking::answer`]; writes through [`Agent`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::body::RequestBody;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wharf_model::{Status, decode_check_registration, decode_service_registration};

use super::access::Access;
use super::blocking::answer;
use super::params::Params;
use super::shapes::*;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{Authorizer, Need, Scope};
use crate::catalog::{CatalogState, Resource};

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

/// Consul's version that Wharf answers as; clients only display it.
const CONSUL_VERSION: &str = "1.15.0";

fn ok() -> Response {
    http::StatusCode::OK.into_response()
}

fn params(query: &Option<String>) -> Params {
    Params::parse(query.as_deref())
}

// === agent ===

pub(super) async fn agent_self(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let node = agent.node();
    access.require(Scope::Agent(&node.name), Need::Read)?;
    let body = json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": true,
            "Version": CONSUL_VERSION,
            "Revision": concat!("wharf-", env!("CARGO_PKG_VERSION")),
        },
        "DebugConfig": {},
        "Coord": null,
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {"dc": node.datacenter, "role": "consul", "build": CONSUL_VERSION},
            "Status": 1,
        },
        "Stats": {"wharf": {"version": env!("CARGO_PKG_VERSION")}},
        "Meta": node.meta,
        "xDS": null,
    });
    Ok(json(to_json(&body, params(&q).has("pretty"))))
}

pub(super) async fn agent_services(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    p.check_common(&agent.node().datacenter)?;
    let acl = access.authorizer()?;
    let body = agent.catalog.read(|state| {
        let services: BTreeMap<&str, AgentServiceJson> = state
            .instances
            .values()
            .filter(|s| agent.owns(&s.value.node))
            .filter(|s| acl.allows(Scope::Service(&s.value.name), Need::Read))
            .map(|s| {
                let mut entry = AgentServiceJson::new(s);
                entry.datacenter = Some(&agent.node().datacenter);
                (s.value.id.as_str(), entry)
            })
            .collect();
        to_json(&services, p.has("pretty"))
    });
    Ok(json(body))
}

pub(super) async fn agent_service(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    answer(&agent, &p, Resource::Services, |state| {
        let stored = state
            .instance(&agent.node().name, &id)
            .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))?;
        access.require(Scope::Service(&stored.value.name), Need::Read)?;
        let mut entry = AgentServiceJson::new(stored);
        entry.datacenter = Some(&agent.node().datacenter);
        entry.content_hash = Some(format!("{:016x}", stored.modify_index));
        Ok(to_json(&entry, p.has("pretty")))
    })
    .await
}

pub(super) async fn agent_checks(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    p.check_common(&agent.node().datacenter)?;
    let acl = access.authorizer()?;
    let body = agent.catalog.read(|state| {
        let checks: BTreeMap<&str, HealthCheckJson> = state
            .checks
            .values()
            .filter(|c| agent.owns(&c.value.node))
            .filter(|c| check_readable(&agent, acl, state, &c.value))
            .map(|c| (c.value.id.as_str(), check_json(&agent, state, c)))
            .collect();
        to_json(&checks, p.has("pretty"))
    });
    Ok(json(body))
}

fn check_json<'a>(
    agent: &'a Agent,
    state: &'a CatalogState,
    check: &'a crate::Stored<wharf_model::Check>,
) -> HealthCheckJson<'a> {
    let service = state.instance_of(&check.value).map(|s| &s.value);
    HealthCheckJson::new(node_of_check(agent, state, &check.value), check, service)
}

/// Whether `acl` may read `check`: a service check with its service, a node check with its
/// node (Consul's rule).
fn check_readable(
    agent: &Agent,
    acl: &Authorizer,
    state: &CatalogState,
    check: &wharf_model::Check,
) -> bool {
    match state.instance_of(check) {
        Some(instance) => instance_readable(agent, acl, &instance.value),
        None => acl.allows(Scope::Node(node_name(agent, &check.node)), Need::Read),
    }
}

/// Whether `acl` may read `instance`: its service and its node, as Consul filters catalog
/// and health answers.
fn instance_readable(
    agent: &Agent,
    acl: &Authorizer,
    instance: &wharf_model::ServiceInstance,
) -> bool {
    acl.allows(Scope::Service(&instance.name), Need::Read)
        && acl.allows(Scope::Node(node_name(agent, &instance.node)), Need::Read)
}

/// A record's node as ACLs name it: its own, or this node for records without one.
fn node_name<'a>(agent: &'a Agent, node: &'a str) -> &'a str {
    if node.is_empty() {
        &agent.node().name
    } else {
        node
    }
}

/// What writing a check of this node needs: write on its service, or on the node.
fn require_check_write(agent: &Agent, access: &Access, check_id: &str) -> Result<(), ApiError> {
    let service = agent.catalog.read(|state| {
        state
            .check(&agent.node().name, check_id)
            .and_then(|c| state.instance_of(&c.value))
            .map(|i| i.value.name.clone())
    });
    match service {
        Some(service) => access.require(Scope::Service(&service), Need::Write),
        // A node check, or none (the agent answers 404 for that).
        None => access.require(Scope::Node(&agent.node().name), Need::Write),
    }
}

/// The node an instance is on, as the API shows it: the record of the registry node it was
/// registered through, else this node (records from before nodes shared a store).
fn node_of<'s>(
    agent: &'s Agent,
    state: &'s CatalogState,
    instance: &wharf_model::ServiceInstance,
) -> &'s crate::NodeInfo {
    state.node_of(instance).unwrap_or(agent.node())
}

/// Whether `node` carries every `node-meta=k:v` asked for.
fn meta_matches(node: &crate::NodeInfo, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| node.meta.get(k) == Some(v))
}

/// Every registry node known, this one included, by name.
fn all_nodes<'s>(agent: &'s Agent, state: &'s CatalogState) -> Vec<&'s crate::NodeInfo> {
    let mut nodes: Vec<&crate::NodeInfo> = state.nodes.values().map(|n| &n.value).collect();
    if !state.nodes.contains_key(&agent.node().name) {
        nodes.push(agent.node());
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    nodes
}

pub(super) async fn register_service(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    let p = params(&q);
    let registration =
        decode_service_registration(&body).map_err(|e| ApiError::bad_request(e.0))?;
    access.require(Scope::Service(&registration.service.name), Need::Write)?;
    if registration.service.kind == "connect-proxy"
        && !registration.service.proxy_destination.is_empty()
    {
        // Consul: a proxy registers only with write on the service it fronts.
        access.require(
            Scope::Service(&registration.service.proxy_destination),
            Need::Write,
        )?;
    }
    let replace = match p.get("replace-existing-checks") {
        None => false,
        Some(v) => !matches!(v, "0" | "false" | "f" | "F" | "FALSE" | "False"),
    };
    agent.register_service(registration, replace).await?;
    Ok(ok())
}

pub(super) async fn deregister_service(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    _body: RequestBody,
) -> Answer {
    let name = agent.catalog.read(|state| {
        state
            .instance(&agent.node().name, &id)
            .map(|i| i.value.name.clone())
    });
    match name {
        Some(name) => access.require(Scope::Service(&name), Need::Write)?,
        None => {
            access.authorizer()?;
        }
    }
    agent.deregister_service(&id).await?;
    Ok(ok())
}

pub(super) async fn register_check(
    State(agent): Shared,
    access: Access,
    body: RequestBody,
) -> Answer {
    let check = decode_check_registration(&body).map_err(|e| ApiError::bad_request(e.0))?;
    if check.service_id.is_empty() {
        access.require(Scope::Node(&agent.node().name), Need::Write)?;
    } else {
        let service = agent.catalog.read(|state| {
            state
                .instance(&agent.node().name, &check.service_id)
                .map(|i| i.value.name.clone())
        });
        // An unknown service id is the agent's 400; the token must still resolve.
        match service {
            Some(service) => access.require(Scope::Service(&service), Need::Write)?,
            None => {
                access.authorizer()?;
            }
        }
    }
    agent.register_check(check).await?;
    Ok(ok())
}

pub(super) async fn deregister_check(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    _body: RequestBody,
) -> Answer {
    require_check_write(&agent, &access, &id)?;
    agent.deregister_check(&id).await?;
    Ok(ok())
}

async fn ttl_update(
    agent: &Agent,
    access: &Access,
    id: &str,
    status: Status,
    q: &Option<String>,
) -> Answer {
    require_check_write(agent, access, id)?;
    let note = params(q).get("note").unwrap_or("").to_owned();
    agent.update_ttl(id, status, &note).await?;
    Ok(ok())
}

pub(super) async fn check_pass(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    _body: RequestBody,
) -> Answer {
    ttl_update(&agent, &access, &id, Status::Passing, &q).await
}

pub(super) async fn check_warn(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    _body: RequestBody,
) -> Answer {
    ttl_update(&agent, &access, &id, Status::Warning, &q).await
}

pub(super) async fn check_fail(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    _body: RequestBody,
) -> Answer {
    ttl_update(&agent, &access, &id, Status::Critical, &q).await
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status": ..., "Output": ...}`.
pub(super) async fn check_update(
    State(agent): Shared,
    Path(id): Path<String>,
    access: Access,
    body: RequestBody,
) -> Answer {
    require_check_write(&agent, &access, &id)?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let field = |name: &str| {
        value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let status_text = field("status");
    let status = Status::parse(&status_text)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: {status_text:?}")))?;
    agent.update_ttl(&id, status, &field("output")).await?;
    Ok(ok())
}

/// Prometheus text exposition of the registry's metrics.
pub(super) async fn metrics(State(agent): Shared, access: Access) -> Answer {
    access.require(Scope::Agent(&agent.node().name), Need::Read)?;
    let body = agent.metrics.render(&agent.catalog, agent.store.contact());
    let mut response = body.into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

// === wharf ===

/// `GET /v1/wharf/services`: the desired state of supervised services, blocking-capable.
pub(super) async fn wharf_services(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Desired, |state| {
        let services: BTreeMap<&str, serde_json::Value> = state
            .desired
            .iter()
            .filter(|(name, _)| acl.allows(Scope::Service(name), Need::Read))
            .map(|(name, desired)| {
                let mut entry = json!({
                    "Replicas": desired.replicas,
                    "Restart": desired.restart,
                    "Promote": desired.promote,
                    "Abort": desired.abort,
                });
                if let Some(bounds) = desired.bounds {
                    entry["Min"] = json!(bounds.min);
                    entry["Max"] = json!(bounds.max);
                }
                if let Some(decision) = &desired.decision {
                    entry["Decision"] = json!(decision);
                }
                if let Some(target) = desired.target_concurrency {
                    entry["TargetConcurrency"] = json!(target);
                }
                (name.as_str(), entry)
            })
            .collect();
        Ok(to_json(&services, p.has("pretty")))
    })
    .await
}

/// The replicas asked for, from `?replicas=N` or a `{"Replicas": N}` body: 0 to 64.
fn replicas_from(body: &[u8], q: &Option<String>) -> Result<u32, ApiError> {
    let out_of_range = || ApiError::bad_request("Replicas must be a number from 0 to 64");
    let replicas = if let Some(text) = params(q).get("replicas") {
        text.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!("Invalid replicas {text:?}: expected 0 or more"))
        })?
    } else {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
        value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("replicas")))
            .and_then(|(_, v)| v.as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(out_of_range)?
    };
    if replicas > 64 {
        return Err(out_of_range());
    }
    Ok(replicas)
}

/// `PUT /v1/wharf/services/<name>` `{"Replicas": N}`: the supervisor declares what it runs.
pub(super) async fn declare_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    access.require(Scope::Service(&name), Need::Write)?;
    let replicas = replicas_from(&body, &q)?;
    let (bounds, target) = bounds_from(&body)?;
    agent
        .declare_service(&name, replicas, bounds, target)
        .await?;
    Ok(ok())
}

/// `DELETE /v1/wharf/services/<name>`: the supervisor no longer runs it.
pub(super) async fn forget_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
) -> Answer {
    access.require(Scope::Service(&name), Need::Write)?;
    agent.forget_service(&name).await?;
    Ok(ok())
}

/// An autoscaled service's `{"Min": a, "Max": b, "TargetConcurrency": t}` in a declaration's
/// body, if there.
fn bounds_from(body: &[u8]) -> Result<(Option<crate::keys::Bounds>, Option<f64>), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Declared {
        min: Option<u32>,
        max: Option<u32>,
        target_concurrency: Option<f64>,
    }
    if body.is_empty() {
        return Ok((None, None));
    }
    let declared: Declared = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let target = match declared.target_concurrency {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(ApiError::bad_request(
                "TargetConcurrency must be a number above 0",
            ));
        }
        target => target,
    };
    match (declared.min, declared.max) {
        (None, None) => Ok((None, target)),
        (Some(min), Some(max)) if min <= max && max <= 64 => {
            Ok((Some(crate::keys::Bounds { min, max }), target))
        }
        _ => Err(ApiError::bad_request(
            "Min and Max go together, with Min <= Max <= 64",
        )),
    }
}

/// An autoscaler's `{"Decision": {...}}` in a scale's body, if there.
fn decision_from(body: &[u8]) -> Result<Option<crate::keys::ScaleDecision>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Scaled {
        decision: Option<crate::keys::ScaleDecision>,
    }
    if body.is_empty() {
        return Ok(None);
    }
    let scaled: Scaled = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    Ok(scaled.decision)
}

/// `PUT /v1/wharf/scale/<name>?replicas=N`: `wharf scale NAME=N`.
pub(super) async fn scale_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    access.require(Scope::Service(&name), Need::Write)?;
    let replicas = replicas_from(&body, &q)?;
    let decision = decision_from(&body)?;
    let set = agent.scale(&name, replicas, decision).await?;
    Ok(json(to_json(&json!({ "Replicas": set }), false)))
}

/// `PUT /v1/wharf/apply?path=FILE[&dry-run]` with a manifest as the body: `wharf apply`.
/// Answers the plan and how each step went once all are done; a manifest that does not
/// validate is a 400 with its `file:line: reason`, and nothing changes.
pub(super) async fn apply_manifest(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
    body: RequestBody,
) -> Answer {
    access.require(Scope::Operator, Need::Write)?;
    let p = params(&q);
    let path = p
        .get("path")
        .filter(|path| path.starts_with('/'))
        .ok_or_else(|| ApiError::bad_request("path=FILE (absolute) names the manifest's file"))?;
    let manifest = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("The manifest is not UTF-8 text"))?;
    let deployment = crate::deploy::Deployment {
        path: path.to_owned(),
        manifest,
        dry_run: p.has("dry-run"),
    };
    match agent.deploy(deployment).await {
        Ok(deployed) => Ok(json(to_json(&deployed, p.has("pretty")))),
        Err(e @ crate::deploy::DeployError::NoSupervisor) => {
            Err(ApiError::new(http::StatusCode::CONFLICT, e.to_string()))
        }
        Err(crate::deploy::DeployError::Refused(reason)) => Err(ApiError::bad_request(reason)),
    }
}

/// `PUT /v1/wharf/rollout/<name>?order=promote|abort`: `wharf rollout promote|abort NAME`.
pub(super) async fn rollout_order(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
    _body: RequestBody,
) -> Answer {
    access.require(Scope::Service(&name), Need::Write)?;
    let p = params(&q);
    let order = p
        .get("order")
        .ok_or_else(|| ApiError::bad_request("order=promote or order=abort is required"))?;
    agent.rollout_order(&name, order).await?;
    Ok(ok())
}

/// `PUT /v1/wharf/restart/<name>`: `wharf restart NAME`.
pub(super) async fn restart_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    _body: RequestBody,
) -> Answer {
    access.require(Scope::Service(&name), Need::Write)?;
    agent.restart(&name).await?;
    Ok(ok())
}

// === status ===

/// The registry node holding its liveness lease the longest (Consul answers its Raft
/// leader's address; registry nodes elect none, etcd does): `""` when none is alive.
pub(super) async fn status_leader(State(agent): Shared) -> Answer {
    let leader = agent.catalog.read(|state| {
        state
            .alive
            .iter()
            .min_by_key(|(name, since)| (**since, (*name).clone()))
            .and_then(|(name, _)| state.nodes.get(name))
            .map_or_else(String::new, |n| format!("{}:8300", n.value.address))
    });
    Ok(json(to_json(&leader, false)))
}

/// The registry nodes alive now, by address.
pub(super) async fn status_peers(State(agent): Shared) -> Answer {
    let peers: Vec<String> = agent.catalog.read(|state| {
        state
            .alive
            .keys()
            .filter_map(|name| state.nodes.get(name))
            .map(|n| format!("{}:8300", n.value.address))
            .collect()
    });
    Ok(json(to_json(&peers, false)))
}

// === catalog ===

pub(super) async fn catalog_datacenters(State(agent): Shared) -> Answer {
    Ok(json(to_json(&[&agent.node().datacenter], false)))
}

/// The registry node named `name` (case-insensitive), this one included.
fn node_named<'s>(
    agent: &'s Agent,
    state: &'s CatalogState,
    name: &str,
) -> Option<&'s crate::NodeInfo> {
    all_nodes(agent, state)
        .into_iter()
        .find(|n| n.name.eq_ignore_ascii_case(name))
}

/// The registry node a check is on, as the API shows it.
fn node_of_check<'s>(
    agent: &'s Agent,
    state: &'s CatalogState,
    check: &wharf_model::Check,
) -> &'s crate::NodeInfo {
    state
        .nodes
        .get(&check.node)
        .map_or(agent.node(), |n| &n.value)
}

pub(super) async fn catalog_services(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let wanted = p.node_meta()?;
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Services, |state| {
        let mut names = if wanted.is_empty() {
            state.service_names()
        } else {
            // Only services with an instance on a node that carries the meta asked for.
            let mut names: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
            for instance in state.instances.values() {
                if meta_matches(node_of(&agent, state, &instance.value), &wanted) {
                    names
                        .entry(instance.value.name.clone())
                        .or_default()
                        .extend(instance.value.tags.iter().cloned());
                }
            }
            names
        };
        names.retain(|name, _| acl.allows(Scope::Service(name), Need::Read));
        Ok(to_json(&names, p.has("pretty")))
    })
    .await
}

/// Instances of `name` carrying every `tag` asked for.
fn tagged_instances<'a>(
    state: &'a CatalogState,
    name: &str,
    p: &Params,
) -> Vec<&'a crate::Stored<wharf_model::ServiceInstance>> {
    let tags: Vec<&str> = p.all("tag").collect();
    state
        .instances_of(name)
        .filter(|s| tags.iter().all(|t| s.value.has_tag(t)))
        .collect()
}

pub(super) async fn catalog_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let resource = Resource::Service(name.to_lowercase());
    let acl = access.authorizer()?;
    catalog_entries(&agent, acl, &name, &q, resource, tagged_instances).await
}

/// `GET /v1/catalog/connect/<name>`: the Connect proxies of `name`, in the catalog's shape.
pub(super) async fn catalog_connect(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let resource = Resource::Connect(name.to_lowercase());
    let acl = access.authorizer()?;
    catalog_entries(&agent, acl, &name, &q, resource, tagged_proxies).await
}

/// The Connect proxies of `name` carrying every `tag` asked for.
fn tagged_proxies<'a>(
    state: &'a CatalogState,
    name: &str,
    p: &Params,
) -> Vec<&'a crate::Stored<wharf_model::ServiceInstance>> {
    let tags: Vec<&str> = p.all("tag").collect();
    state
        .proxies_for(name)
        .filter(|s| tags.iter().all(|t| s.value.has_tag(t)))
        .collect()
}

/// Catalog entries of the instances `select` picks, blocking on `resource`.
async fn catalog_entries(
    agent: &Agent,
    acl: &Authorizer,
    name: &str,
    q: &Option<String>,
    resource: Resource,
    select: impl for<'s> Fn(
        &'s CatalogState,
        &str,
        &Params,
    ) -> Vec<&'s crate::Stored<wharf_model::ServiceInstance>>,
) -> Answer {
    let p = params(q);
    let wanted = p.node_meta()?;
    answer(agent, &p, resource, |state| {
        let entries: Vec<CatalogServiceJson> = select(state, name, &p)
            .into_iter()
            .filter(|s| instance_readable(agent, acl, &s.value))
            .map(|s| (node_of(agent, state, &s.value), s))
            .filter(|(node, _)| meta_matches(node, &wanted))
            .map(|(node, s)| CatalogServiceJson::new(node, s))
            .collect();
        Ok(to_json(&entries, p.has("pretty")))
    })
    .await
}

pub(super) async fn catalog_nodes(
    State(agent): Shared,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let wanted = p.node_meta()?;
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Services, |state| {
        let nodes: Vec<NodeJson> = all_nodes(&agent, state)
            .into_iter()
            .filter(|node| acl.allows(Scope::Node(&node.name), Need::Read))
            .filter(|node| meta_matches(node, &wanted))
            .map(NodeJson::new)
            .collect();
        Ok(to_json(&nodes, p.has("pretty")))
    })
    .await
}

pub(super) async fn catalog_node(
    State(agent): Shared,
    Path(node): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    node_and_services(&agent, &access, &node, &q, |node, services| {
        let services: BTreeMap<&str, AgentServiceJson> = services.collect();
        json!({"Node": node, "Services": services})
    })
    .await
}

/// `GET /v1/catalog/node-services/<node>` (Consul 1.7+): `/v1/catalog/node/<node>` with the
/// services as a list.
pub(super) async fn catalog_node_services(
    State(agent): Shared,
    Path(node): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    node_and_services(&agent, &access, &node, &q, |node, services| {
        let services: Vec<AgentServiceJson> = services.map(|(_, service)| service).collect();
        json!({"Node": node, "Services": services})
    })
    .await
}

/// A node (case-insensitive) and the instances on it that the token may read, shaped by
/// `shape`, blocking on the services' index; `null` for a node unknown or not readable.
async fn node_and_services(
    agent: &Agent,
    access: &Access,
    node: &str,
    q: &Option<String>,
    shape: impl for<'s> Fn(
        NodeJson<'s>,
        &mut dyn Iterator<Item = (&'s str, AgentServiceJson<'s>)>,
    ) -> serde_json::Value,
) -> Answer {
    let p = params(q);
    let acl = access.authorizer()?;
    answer(agent, &p, Resource::Services, |state| {
        let Some(found) =
            node_named(agent, state, node).filter(|n| acl.allows(Scope::Node(&n.name), Need::Read))
        else {
            return Ok(b"null".to_vec());
        };
        let mut services = state
            .instances
            .values()
            .filter(|s| node_of(agent, state, &s.value).name == found.name)
            .filter(|s| acl.allows(Scope::Service(&s.value.name), Need::Read))
            .map(|s| (s.value.id.as_str(), AgentServiceJson::new(s)));
        Ok(to_json(
            &shape(NodeJson::new(found), &mut services),
            p.has("pretty"),
        ))
    })
    .await
}

// === health ===

pub(super) async fn health_service(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let resource = Resource::Service(name.to_lowercase());
    let acl = access.authorizer()?;
    health_entries(&agent, acl, &name, &q, resource, tagged_instances).await
}

/// `GET /v1/health/connect/<name>`: the Connect proxies of `name` (instances of kind
/// `connect-proxy` whose `Proxy.DestinationServiceName` is `name`), with their health.
pub(super) async fn health_connect(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let resource = Resource::Connect(name.to_lowercase());
    let acl = access.authorizer()?;
    health_entries(&agent, acl, &name, &q, resource, tagged_proxies).await
}

/// Health entries (node, instance, checks) of the instances `select` picks, blocking on
/// `resource`; `passing` drops any with a non-passing check.
async fn health_entries(
    agent: &Agent,
    acl: &Authorizer,
    name: &str,
    q: &Option<String>,
    resource: Resource,
    select: impl for<'s> Fn(
        &'s CatalogState,
        &str,
        &Params,
    ) -> Vec<&'s crate::Stored<wharf_model::ServiceInstance>>,
) -> Answer {
    let p = params(q);
    let passing_only = p.passing()?;
    let wanted = p.node_meta()?;
    answer(agent, &p, resource, |state| {
        let mut entries = Vec::new();
        for stored in select(state, name, &p) {
            if !instance_readable(agent, acl, &stored.value) {
                continue;
            }
            let node = node_of(agent, state, &stored.value);
            if !meta_matches(node, &wanted) {
                continue;
            }
            let checks = state.checks_of(&stored.value);
            if passing_only && checks.iter().any(|c| c.value.status != Status::Passing) {
                continue;
            }
            entries.push(ServiceEntryJson {
                node: NodeJson::new(node),
                service: AgentServiceJson::new(stored),
                checks: checks
                    .into_iter()
                    .map(|c| check_json(agent, state, c))
                    .collect(),
            });
        }
        Ok(to_json(&entries, p.has("pretty")))
    })
    .await
}

pub(super) async fn health_checks(
    State(agent): Shared,
    Path(name): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let wanted = p.node_meta()?;
    let acl = access.authorizer()?;
    answer(
        &agent,
        &p,
        Resource::Service(name.to_lowercase()),
        |state| {
            let mut checks = Vec::new();
            for stored in state.instances_of(&name).filter(|s| {
                meta_matches(node_of(&agent, state, &s.value), &wanted)
                    && instance_readable(&agent, acl, &s.value)
            }) {
                for check in state.own_checks(&stored.value) {
                    checks.push(HealthCheckJson::new(
                        node_of(&agent, state, &stored.value),
                        check,
                        Some(&stored.value),
                    ));
                }
            }
            Ok(to_json(&checks, p.has("pretty")))
        },
    )
    .await
}

pub(super) async fn health_state(
    State(agent): Shared,
    Path(wanted): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let acl = access.authorizer()?;
    let p = params(&q);
    let filter = match wanted.as_str() {
        "any" => None,
        other => Some(
            Status::parse(other)
                .filter(|_| other == other.to_lowercase())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Bad state {other:?}: must be one of any, passing, warning, critical"
                    ))
                })?,
        ),
    };
    let wanted = p.node_meta()?;
    answer(&agent, &p, Resource::Checks, |state| {
        let checks: Vec<HealthCheckJson> = state
            .checks
            .values()
            .filter(|c| filter.is_none_or(|s| c.value.status == s))
            .filter(|c| meta_matches(node_of_check(&agent, state, &c.value), &wanted))
            .filter(|c| check_readable(&agent, acl, state, &c.value))
            .map(|c| check_json(&agent, state, c))
            .collect();
        Ok(to_json(&checks, p.has("pretty")))
    })
    .await
}

pub(super) async fn health_node(
    State(agent): Shared,
    Path(node): Path<String>,
    access: Access,
    RawQuery(q): RawQuery,
) -> Answer {
    let p = params(&q);
    let acl = access.authorizer()?;
    answer(&agent, &p, Resource::Checks, |state| {
        let Some(found) = node_named(&agent, state, &node)
            .filter(|n| acl.allows(Scope::Node(&n.name), Need::Read))
        else {
            return Ok(b"[]".to_vec());
        };
        let own = found.name == agent.node().name;
        let mut checks: Vec<HealthCheckJson> = state
            .dead_check(&found.name)
            .map(|serf| check_json(&agent, state, serf))
            .into_iter()
            .collect();
        checks.extend(
            state
                .checks
                .values()
                .filter(|c| c.value.node == found.name || (own && c.value.node.is_empty()))
                .filter(|c| check_readable(&agent, acl, state, &c.value))
                .map(|c| check_json(&agent, state, c)),
        );
        Ok(to_json(&checks, p.has("pretty")))
    })
    .await
}
