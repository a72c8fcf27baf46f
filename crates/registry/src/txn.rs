//! Consul's `/v1/txn` over KV *and* the catalog: KV steps ([`crate::kv::plan`]), `Node`,
//! `Service` and `Check` operations on external nodes ([`crate::external`]), and `Session`
//! deletion, planned together against one catalog snapshot and committed as one store
//! transaction, conditional on every record they read or wrote being unchanged; planned again
//! when something moved in between. Each step sees what the earlier ones left (a service set
//! on a node set two operations before), and each record gets one store operation.
//!
//! Catalog writes go to external nodes only, as `/v1/catalog/register` does: a registry
//! node's records are its own. Reads (`get`) see every node.

use std::collections::BTreeMap;

use wharf_model::{Check, ServiceInstance, TxnNode};
use wharf_store::{Compare, Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::{CatalogState, Stored};
use crate::external::{critical_since, external_record, records_on_node};
use crate::kv::plan::{Failure, MOST_ATTEMPTS, Plan, Shown as KvShown, ShownEntry, Step};
use crate::{NodeInfo, keys, now_ms};

/// The verbs of Consul's `Node`, `Service` and `Check` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogVerb {
    Set,
    Cas,
    Get,
    Delete,
    DeleteCas,
}

impl CatalogVerb {
    pub fn parse(name: &str) -> Option<CatalogVerb> {
        Some(match name {
            "set" => CatalogVerb::Set,
            "cas" => CatalogVerb::Cas,
            "get" => CatalogVerb::Get,
            "delete" => CatalogVerb::Delete,
            "delete-cas" => CatalogVerb::DeleteCas,
            _ => return None,
        })
    }

    pub fn writes(self) -> bool {
        self != CatalogVerb::Get
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum Operation {
    Kv(Step),
    Node {
        verb: CatalogVerb,
        node: TxnNode,
    },
    Service {
        verb: CatalogVerb,
        service: ServiceInstance,
        index: u64,
    },
    Check {
        verb: CatalogVerb,
        check: Check,
        index: u64,
    },
    /// Consul's only session verb, `delete`: the session is invalidated as its TTL would.
    SessionDelete {
        id: String,
    },
}

/// What one operation answers, its indexes resolved at commit.
#[derive(Debug, Clone)]
pub enum Shown {
    Kv(ShownEntry),
    Node(Stored<NodeInfo>),
    Service(Stored<ServiceInstance>),
    Check(Stored<Check>),
}

/// The outcome of [`Agent::txn_apply`].
#[derive(Debug)]
pub enum TxnApplied {
    /// Every operation held and was committed: what each answers, and the index of the
    /// snapshot read (reads only) or of the commit.
    Done { results: Vec<Shown>, index: u64 },
    /// These operations failed; nothing was changed.
    Failed(Vec<(usize, Failure)>),
}

/// A catalog record as a step left it.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    Node(NodeInfo),
    Service(ServiceInstance),
    Check(Check),
}

/// A revision known, or the one this plan commits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revision {
    Known(u64),
    ThisCommit,
}

impl Revision {
    fn resolve(self, commit: u64) -> u64 {
        match self {
            Revision::Known(revision) => revision,
            Revision::ThisCommit => commit,
        }
    }
}

#[derive(Debug, Clone)]
struct Current {
    record: Record,
    create: Revision,
    modify: Revision,
}

/// A record the plan read or wrote, by its store key.
#[derive(Debug, Clone)]
struct Slot {
    /// The store revision as read (0: absent), which the commit requires.
    read: u64,
    now: Option<Current>,
    written: bool,
}

/// An answer waiting for the commit's revision.
#[derive(Debug, Clone)]
enum Pending {
    Kv(KvShown),
    Catalog(Box<Current>),
}

fn node_key(name: &str) -> String {
    format!("{}{name}", keys::NODES)
}

/// Catalog operations applied to a snapshot.
struct CatalogPlan<'s> {
    state: &'s CatalogState,
    /// This registry node's name: never an external node's.
    own_node: &'s str,
    datacenter: &'s str,
    now_ms: u64,
    slots: BTreeMap<String, Slot>,
}

impl<'s> CatalogPlan<'s> {
    fn slot(&mut self, key: &str) -> &mut Slot {
        let state = self.state;
        self.slots.entry(key.to_owned()).or_insert_with(|| {
            let stored: Option<(Record, u64, u64)> =
                if let Some(name) = key.strip_prefix(keys::NODES) {
                    state.nodes.get(name).map(|n| {
                        (
                            Record::Node(n.value.clone()),
                            n.create_index,
                            n.modify_index,
                        )
                    })
                } else if let Some(scoped) = key.strip_prefix(keys::SERVICES) {
                    state.instances.get(scoped).map(|i| {
                        (
                            Record::Service(i.value.clone()),
                            i.create_index,
                            i.modify_index,
                        )
                    })
                } else if let Some(scoped) = key.strip_prefix(keys::CHECKS) {
                    state.checks.get(scoped).map(|c| {
                        (
                            Record::Check(c.value.clone()),
                            c.create_index,
                            c.modify_index,
                        )
                    })
                } else {
                    None
                };
            Slot {
                read: stored.as_ref().map_or(0, |(_, _, modify)| *modify),
                now: stored.map(|(record, create, modify)| Current {
                    record,
                    create: Revision::Known(create),
                    modify: Revision::Known(modify),
                }),
                written: false,
            }
        })
    }

    fn current(&mut self, key: &str) -> Option<Current> {
        self.slot(key).now.clone()
    }

    /// Writes `record` under `key` (keeping its creation), and answers it.
    fn put(&mut self, key: &str, record: Record) -> Current {
        let slot = self.slot(key);
        let create = slot.now.as_ref().map_or(Revision::ThisCommit, |c| c.create);
        let current = Current {
            record,
            create,
            modify: Revision::ThisCommit,
        };
        slot.now = Some(current.clone());
        slot.written = true;
        current
    }

    fn delete(&mut self, key: &str) {
        let slot = self.slot(key);
        slot.now = None;
        slot.written = true;
    }

    /// The store keys under `prefix` that exist as the steps so far left them.
    fn keys_under(&mut self, prefix: &str, in_state: Vec<String>) -> Vec<String> {
        let mut found: std::collections::BTreeSet<String> = in_state.into_iter().collect();
        found.extend(
            self.slots
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, _)| key.clone()),
        );
        found
            .into_iter()
            .filter(|key| self.current(key).is_some())
            .collect()
    }

    /// The node `name` as the steps left it, refusing a registry node (which is not the
    /// catalog's to write).
    fn external_node(&mut self, name: &str) -> Result<Option<NodeInfo>, Failure> {
        let registry = || {
            Failure::Invalid(format!(
                "node {name:?} is a registry node: its records are its own"
            ))
        };
        if name == self.own_node {
            return Err(registry());
        }
        match self.current(&node_key(name)).map(|c| c.record) {
            Some(Record::Node(node)) if node.external => Ok(Some(node)),
            Some(_) => Err(registry()),
            None => Ok(None),
        }
    }

    fn require_external_node(&mut self, name: &str) -> Result<NodeInfo, Failure> {
        self.external_node(name)?
            .ok_or_else(|| Failure::Invalid(format!("node {name:?} is not registered")))
    }

    fn index_holds(&mut self, key: &str, index: u64) -> bool {
        match self.current(key) {
            None => index == 0,
            Some(current) => current.modify == Revision::Known(index),
        }
    }

    fn step(&mut self, operation: &Operation) -> Result<Option<Current>, Failure> {
        let (verb, key, index, what) = match operation {
            Operation::Node { verb, node } => (
                *verb,
                node_key(&node.node),
                node.modify_index,
                format!("node {:?}", node.node),
            ),
            Operation::Service {
                verb,
                service,
                index,
            } => (
                *verb,
                keys::service_key(&service.node, &service.id),
                *index,
                format!("service {:?} on node {:?}", service.id, service.node),
            ),
            Operation::Check { verb, check, index } => (
                *verb,
                keys::check_key(&check.node, &check.id),
                *index,
                format!("check {:?} on node {:?}", check.id, check.node),
            ),
            Operation::Kv(_) | Operation::SessionDelete { .. } => return Ok(None),
        };
        match verb {
            CatalogVerb::Get => {
                return self
                    .current(&key)
                    .map(Some)
                    .ok_or_else(|| Failure::Conflict(format!("{what} doesn't exist")));
            }
            CatalogVerb::Cas | CatalogVerb::DeleteCas if !self.index_holds(&key, index) => {
                return Err(Failure::Conflict(format!(
                    "failed to apply to {what}: its ModifyIndex does not match"
                )));
            }
            _ => {}
        }
        let deletes = matches!(verb, CatalogVerb::Delete | CatalogVerb::DeleteCas);
        match operation {
            Operation::Node { node, .. } => {
                let existing = self.external_node(&node.node)?;
                if deletes {
                    if existing.is_some() {
                        self.delete_node(&node.node);
                    }
                    return Ok(None);
                }
                if node.address.is_empty() {
                    return Err(Failure::Invalid(format!("{what}: Address is required")));
                }
                let record = external_record(
                    &node.node,
                    node.node_id.clone(),
                    existing.as_ref(),
                    node.address.clone(),
                    node.meta.clone(),
                    self.datacenter,
                );
                Ok(Some(self.put(&key, Record::Node(record))))
            }
            Operation::Service { service, .. } => {
                self.require_external_node(&service.node)?;
                if deletes {
                    self.delete_service(&service.node, &service.id);
                    return Ok(None);
                }
                Ok(Some(self.put(&key, Record::Service(service.clone()))))
            }
            Operation::Check { check, .. } => {
                self.require_external_node(&check.node)?;
                if deletes {
                    self.delete(&key);
                    return Ok(None);
                }
                if !check.service_id.is_empty()
                    && self
                        .current(&keys::service_key(&check.node, &check.service_id))
                        .is_none()
                {
                    return Err(Failure::Invalid(format!(
                        "Unknown service ID {:?} for check ID {:?} on node {:?}",
                        check.service_id, check.id, check.node
                    )));
                }
                let mut check = check.clone();
                let old = self.current(&key).and_then(|c| match c.record {
                    Record::Check(old) => Some(old),
                    _ => None,
                });
                check.critical_since_ms = critical_since(old.as_ref(), &check, self.now_ms);
                Ok(Some(self.put(&key, Record::Check(check))))
            }
            Operation::Kv(_) | Operation::SessionDelete { .. } => Ok(None),
        }
    }

    /// Deletes an external node with every service and check on it.
    fn delete_node(&mut self, node: &str) {
        let (services, checks) = records_on_node(self.state, node);
        let mut gone = self.keys_under(&keys::service_key(node, ""), services);
        gone.extend(self.keys_under(&keys::check_key(node, ""), checks));
        for key in gone {
            self.delete(&key);
        }
        self.delete(&node_key(node));
    }

    /// Deletes a service of an external node with its checks.
    fn delete_service(&mut self, node: &str, id: &str) {
        let (_, in_state) = records_on_node(self.state, node);
        for key in self.keys_under(&keys::check_key(node, ""), in_state) {
            let of_service = matches!(
                self.current(&key).map(|c| c.record),
                Some(Record::Check(check)) if check.service_id == id
            );
            if of_service {
                self.delete(&key);
            }
        }
        self.delete(&keys::service_key(node, id));
    }

    /// Adds the plan's comparisons and writes to `txn`: every record read or written is
    /// required unchanged since it was read.
    fn commit_into(&self, mut txn: Txn) -> Txn {
        for (key, slot) in &self.slots {
            txn = txn.when(Compare::ModRevision {
                key: key.clone(),
                revision: slot.read,
            });
            if !slot.written {
                continue;
            }
            match &slot.now {
                Some(current) => {
                    let value = match &current.record {
                        Record::Node(node) => serde_json::to_vec(node).expect("a node serialises"),
                        Record::Service(service) => keys::encode_service(service),
                        Record::Check(check) => keys::encode_check(check),
                    };
                    txn = txn.op(Op::put(key, value));
                }
                None if slot.read == 0 => {}
                None => txn = txn.op(Op::delete(key)),
            }
        }
        txn
    }

    fn writes(&self) -> bool {
        self.slots.values().any(|s| s.written)
    }
}

fn resolve(pending: Pending, commit: u64) -> Shown {
    match pending {
        // KV answers carry Consul's indexes (revision + 1), resolved by the KV plan.
        Pending::Kv(shown) => Shown::Kv(shown.resolve(commit)),
        Pending::Catalog(current) => {
            let current = *current;
            let (create_index, modify_index) = (
                current.create.resolve(commit),
                current.modify.resolve(commit),
            );
            match current.record {
                Record::Node(value) => Shown::Node(Stored {
                    value,
                    create_index,
                    modify_index,
                }),
                Record::Service(value) => Shown::Service(Stored {
                    value,
                    create_index,
                    modify_index,
                }),
                Record::Check(value) => Shown::Check(Stored {
                    value,
                    create_index,
                    modify_index,
                }),
            }
        }
    }
}

/// A transaction planned against a snapshot: the store transaction that commits it (none
/// for reads alone) and the answers waiting for its revision.
#[derive(Debug)]
pub struct Planned {
    pub txn: Option<Txn>,
    pending: Vec<Pending>,
}

/// Plans `operations` against `state` as registry node `node` would: every failing
/// operation with its reason, or what committing them takes.
pub fn plan(
    state: &CatalogState,
    node: &NodeInfo,
    operations: &[Operation],
    now_ms: u64,
) -> Result<Planned, Vec<(usize, Failure)>> {
    let mut kv = Plan::new(state, now_ms);
    let mut catalog = CatalogPlan {
        state,
        own_node: &node.name,
        datacenter: &node.datacenter,
        now_ms,
        slots: BTreeMap::new(),
    };
    let mut pending = Vec::new();
    let mut errors = Vec::new();
    for (i, operation) in operations.iter().enumerate() {
        match operation {
            Operation::Kv(step) => {
                kv.step(i, step);
                pending.extend(kv.results.drain(..).map(Pending::Kv));
            }
            Operation::SessionDelete { id } => match state.sessions.get(id) {
                Some(session) => kv.invalidate(&session.value, session.modify_index),
                None => errors.push((
                    i,
                    Failure::Conflict(format!("session {id:?} doesn't exist")),
                )),
            },
            _ => match catalog.step(operation) {
                Ok(shown) => pending.extend(shown.map(|c| Pending::Catalog(Box::new(c)))),
                Err(failure) => errors.push((i, failure)),
            },
        }
    }
    errors.append(&mut kv.errors);
    if !errors.is_empty() {
        errors.sort_by_key(|(i, _)| *i);
        return Err(errors);
    }
    let txn = (kv.writes() || catalog.writes()).then(|| catalog.commit_into(kv.txn()));
    Ok(Planned { txn, pending })
}

impl Agent {
    /// Applies `operations` as one transaction: all of them or none.
    pub async fn txn_apply(&self, operations: &[Operation]) -> Result<TxnApplied, RegistryError> {
        for _ in 0..MOST_ATTEMPTS {
            let planned = self.catalog.read(|state| {
                plan(state, self.node(), operations, now_ms()).map(|p| (p, state.revision()))
            });
            let (Planned { txn, pending }, read_at) = match planned {
                Err(errors) => return Ok(TxnApplied::Failed(errors)),
                Ok(planned) => planned,
            };
            let Some(txn) = txn else {
                let results = pending.into_iter().map(|p| resolve(p, read_at)).collect();
                return Ok(TxnApplied::Done {
                    results,
                    index: read_at + 1,
                });
            };
            let outcome = self.store.txn(self.with_tombstones(txn)).await?;
            self.catalog.wait_applied(outcome.revision).await;
            if outcome.succeeded {
                let revision = outcome.revision;
                let results = pending.into_iter().map(|p| resolve(p, revision)).collect();
                return Ok(TxnApplied::Done {
                    results,
                    index: revision + 1,
                });
            }
            // A record moved between the read and the commit: plan again on what is there now.
        }
        Err(RegistryError::Conflict(
            "the records kept changing under this transaction; it was not applied".into(),
        ))
    }
}
