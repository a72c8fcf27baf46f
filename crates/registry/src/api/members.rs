//! `GET /v1/agent/members`: the registry nodes sharing the store, as Consul lists its gossip
//! pool's members. Membership here is the liveness lease ([`crate::liveness`]): a node holding
//! its lease is `alive` (status 1), a known node that lost it `failed` (4). External nodes
//! (`/v1/catalog/register`) run no agent and are not members. `?wan=1` lists the same nodes
//! under their WAN names (`<node>.<dc>`): every registry node serves the one datacenter.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde::Serialize;

use super::access::Access;
use super::params::Params;
use super::{ApiError, json, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};

/// Serf's member status codes.
const ALIVE: u8 = 1;
const FAILED: u8 = 4;

/// Consul's gossip port, which clients show but Wharf does not listen on.
const SERF_LAN_PORT: u16 = 8301;
const SERF_WAN_PORT: u16 = 8302;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MemberJson {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<&'static str, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

pub(super) async fn list(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let wan = params.has("wan") && params.get("wan") != Some("0");
    let acl = access.authorizer()?;
    let members: Vec<MemberJson> = agent.catalog.read(|state| {
        let mut nodes: Vec<&crate::NodeInfo> = state
            .nodes
            .values()
            .map(|n| &n.value)
            .filter(|n| !n.external)
            .collect();
        if !state.nodes.contains_key(&agent.node().name) {
            nodes.push(agent.node());
        }
        nodes
            .into_iter()
            .filter(|node| acl.allows(Scope::Node(&node.name), Need::Read))
            .map(|node| {
                let alive = node.name == agent.node().name || state.alive.contains_key(&node.name);
                MemberJson {
                    name: if wan {
                        format!("{}.{}", node.name, node.datacenter)
                    } else {
                        node.name.clone()
                    },
                    addr: node.address.clone(),
                    port: if wan { SERF_WAN_PORT } else { SERF_LAN_PORT },
                    tags: BTreeMap::from([
                        ("build", env!("CARGO_PKG_VERSION").to_owned()),
                        ("dc", node.datacenter.clone()),
                        ("id", node.id.clone()),
                        ("role", "consul".to_owned()),
                        ("segment", String::new()),
                        ("vsn", "2".to_owned()),
                    ]),
                    status: if alive { ALIVE } else { FAILED },
                    protocol_min: 1,
                    protocol_max: 5,
                    protocol_cur: 2,
                    delegate_min: 2,
                    delegate_max: 5,
                    delegate_cur: 4,
                }
            })
            .collect()
    });
    Ok(json(to_json(&members, params.has("pretty"))))
}
