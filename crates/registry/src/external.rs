//! External nodes and services, registered through Consul's catalog (`/v1/catalog/register`,
//! `/v1/catalog/deregister`) rather than through a registry node: a database on a managed host,
//! a SaaS endpoint, anything no agent runs beside. Their node is kept under `wharf/nodes/` with
//! `external` set, so it has no liveness mark and no `serfHealth`; their services and checks
//! are keyed under that node like any other, answered by every read (catalog, health, DNS, the
//! gateway), and their checks are probed by nothing: a check's status is what the last
//! registration said, which is how Consul ESM and similar tools keep them current.
//!
//! The names of registry nodes are refused here: their records are the nodes' own (Consul's
//! anti-entropy would undo such a write; here it would fight the node's liveness).

use std::collections::BTreeSet;

use wharf_model::{CatalogDeregistration, CatalogRegistration, Check, Status};
use wharf_store::{Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::CatalogState;
use crate::{NodeInfo, keys, now_ms};

impl Agent {
    /// Registers (or updates) an external node, and optionally one of its services and its
    /// checks. What the registration leaves out stays as it is; records it does not change are
    /// not written, so an unchanged registration moves no index.
    pub async fn register_external(
        &self,
        registration: CatalogRegistration,
    ) -> Result<(), RegistryError> {
        let CatalogRegistration {
            node,
            node_id,
            address,
            node_meta,
            skip_node_update,
            service,
            checks,
            // The API answered for another datacenter already.
            datacenter: _,
        } = registration;
        let txn = self.catalog.read(|state| -> Result<Txn, RegistryError> {
            let existing = self.external_node(state, &node)?;
            let mut txn = Txn::new();
            match existing {
                Some(_) if skip_node_update => {}
                None if address.is_empty() => {
                    return Err(RegistryError::BadRequest(format!(
                        "node {node:?} is not registered: its Address is needed"
                    )));
                }
                _ => {
                    let record = external_record(
                        &node,
                        node_id,
                        existing,
                        address,
                        node_meta,
                        &self.node().datacenter,
                    );
                    if existing != Some(&record) {
                        let value = serde_json::to_vec(&record).expect("a node serialises");
                        txn = txn.op(Op::put(&format!("{}{node}", keys::NODES), value));
                    }
                }
            }
            if let Some(service) = &service
                && state
                    .instance(&node, &service.id)
                    .is_none_or(|old| old.value != *service)
            {
                txn = txn.op(Op::put(
                    &keys::service_key(&node, &service.id),
                    keys::encode_service(service),
                ));
            }
            for mut check in checks {
                let service_known = check.service_id.is_empty()
                    || service.as_ref().is_some_and(|s| s.id == check.service_id)
                    || state.instance(&node, &check.service_id).is_some();
                if !service_known {
                    return Err(RegistryError::BadRequest(format!(
                        "Unknown service ID {:?} for check ID {:?} on node {node:?}",
                        check.service_id, check.id
                    )));
                }
                let old = state.check(&node, &check.id).map(|c| &c.value);
                check.critical_since_ms = critical_since(old, &check, now_ms());
                if old != Some(&check) {
                    txn = txn.op(Op::put(
                        &keys::check_key(&node, &check.id),
                        keys::encode_check(&check),
                    ));
                }
            }
            Ok(txn)
        })?;
        if txn.ops.is_empty() {
            return Ok(());
        }
        self.commit(txn).await
    }

    /// Removes a check, a service with its checks, or (naming neither) an external node with
    /// every service and check on it. Removing what is not there succeeds, as in Consul.
    pub async fn deregister_external(
        &self,
        deregistration: CatalogDeregistration,
    ) -> Result<(), RegistryError> {
        let CatalogDeregistration {
            node,
            service_id,
            check_id,
        } = deregistration;
        let txn = self.catalog.read(|state| -> Result<Txn, RegistryError> {
            if self.external_node(state, &node)?.is_none() {
                return Ok(Txn::new());
            }
            let mut deleted: BTreeSet<String> = BTreeSet::new();
            if let Some(id) = &check_id {
                if state.check(&node, id).is_some() {
                    deleted.insert(keys::check_key(&node, id));
                }
            } else if let Some(id) = &service_id {
                if let Some(instance) = state.instance(&node, id) {
                    deleted.insert(keys::service_key(&node, id));
                    deleted.extend(
                        state
                            .own_checks(&instance.value)
                            .map(|c| keys::check_key(&node, &c.value.id)),
                    );
                }
            } else {
                deleted.insert(format!("{}{node}", keys::NODES));
                let (services, checks) = records_on_node(state, &node);
                deleted.extend(services);
                deleted.extend(checks);
            }
            Ok(deleted
                .iter()
                .fold(Txn::new(), |txn, key| txn.op(Op::delete(key))))
        })?;
        if txn.ops.is_empty() {
            return Ok(());
        }
        self.commit(txn).await
    }

    /// The record of external node `name`, if registered; an error if `name` is a registry
    /// node's.
    fn external_node<'s>(
        &self,
        state: &'s CatalogState,
        name: &str,
    ) -> Result<Option<&'s NodeInfo>, RegistryError> {
        let record = state.nodes.get(name).map(|n| &n.value);
        if name == self.node().name || record.is_some_and(|n| !n.external) {
            return Err(RegistryError::BadRequest(format!(
                "node {name:?} is a registry node: register its services through \
                 /v1/agent/service/register"
            )));
        }
        Ok(record)
    }
}

/// The record of external node `name`: its id as given, else the one it had, else a new one.
pub(crate) fn external_record(
    name: &str,
    id: Option<String>,
    existing: Option<&NodeInfo>,
    address: String,
    meta: std::collections::BTreeMap<String, String>,
    datacenter: &str,
) -> NodeInfo {
    NodeInfo {
        name: name.to_owned(),
        id: id
            .or_else(|| existing.map(|n| n.id.clone()))
            .unwrap_or_else(crate::node::random_uuid),
        address,
        datacenter: datacenter.to_owned(),
        meta,
        external: true,
    }
}

/// When an external check (written as `new` over `old`) turned critical: kept while it stays
/// critical, now when it turns so.
pub(crate) fn critical_since(old: Option<&Check>, new: &Check, now_ms: u64) -> Option<u64> {
    match old {
        Some(old) if old.status == Status::Critical => old.critical_since_ms,
        _ if new.status == Status::Critical => Some(now_ms),
        _ => None,
    }
}

/// The store keys of the instances and of the checks registered on `node`.
pub(crate) fn records_on_node(state: &CatalogState, node: &str) -> (Vec<String>, Vec<String>) {
    let services = state
        .instances
        .values()
        .filter(|i| i.value.node == node)
        .map(|i| keys::service_key(node, &i.value.id))
        .collect();
    let checks = state
        .checks
        .values()
        .filter(|c| c.value.node == node)
        .map(|c| keys::check_key(node, &c.value.id))
        .collect();
    (services, checks)
}
