//! The catalog: an in-memory read model of the store, and the indexes of blocking queries.
//!
//! Every read of the HTTP API (and later DNS) is answered from here, never from the store, so
//! reads cost a lock and a copy. The catalog follows the store's watch; a write through the
//! registry waits until the catalog has applied its revision, so a client reads its own writes.
//!
//! Blocking queries need an index per *resource* (one service name, the list of services, the
//! table of checks): a global index would wake every watcher on every write, the herd that
//! Consul took years to remove (consul#1244, #2616, #3890). Each resource has a `watch`
//! channel carrying its index, created when first asked for, so a held query is one parked
//! task and one receiver, and a write wakes only the queries that watch what it changed.
//! Indexes are store revisions: monotonic across restarts because the store's revision is.
//! A resource's index is the revision of its last change, read from its records' revisions
//! and, for deletions, from the tombstones written with them ([`keys::Tombstone`]), so that
//! loading the catalog again (a restart) gives every resource the index it had: watchers
//! wake when what they watch changes, not because the registry restarted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, watch};
use wharf_model::{Check, ServiceInstance, Status};
use wharf_store::{EventKind, Revision, Store, StoreError, WatchBatch};

use crate::keys::{self, Record, Tombstone};

/// A record with the revisions that created and last changed it (Consul's CreateIndex and
/// ModifyIndex).
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub value: T,
    pub create_index: u64,
    pub modify_index: u64,
}

/// What a blocking query watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// One service name, lower-cased: its instances and their checks, deletions included.
    Service(String),
    /// The set of services and their tags (`/v1/catalog/services`, nodes).
    Services,
    /// Every check (`/v1/health/state`, node health).
    Checks,
    /// The desired state of supervised services (`/v1/wharf/services`).
    Desired,
    /// The certificate authority: its roots and configuration.
    ConnectCa,
    /// Every intention.
    Intentions,
    /// The Connect proxies of one (lower-cased) service and their checks.
    Connect(String),
    /// ACL policies and tokens.
    Acl,
    /// Services' subsets and splits (`service-resolver`, `service-splitter`).
    Traffic,
    /// One KV key.
    Kv(String),
    /// Every KV key under a prefix.
    KvPrefix(String),
    /// Every session.
    Sessions,
    /// The user events kept (`/v1/event/list`).
    Events,
}

/// The catalog's contents at one revision.
#[derive(Debug, Default)]
pub struct CatalogState {
    /// Instances by their key (`keys::scoped(node, id)`).
    pub instances: BTreeMap<String, Stored<ServiceInstance>>,
    /// Checks by their key (`keys::scoped(node, id)`).
    pub checks: BTreeMap<String, Stored<Check>>,
    /// Instance ids by lower-cased service name.
    by_name: HashMap<String, BTreeSet<String>>,
    /// Check keys by the key of the instance they belong to (`keys::scoped(node, service
    /// id)`); a node's node-level checks are under `<node>/` (`""` before nodes shared a store).
    checks_by_owner: HashMap<String, BTreeSet<String>>,
    /// Last change per lower-cased service name, tombstones included.
    name_index: HashMap<String, u64>,
    services_index: u64,
    checks_index: u64,
    /// Last change of a node-level check, which counts for every service.
    node_checks_index: u64,
    /// Desired replicas of supervised services, by name.
    pub desired: BTreeMap<String, keys::Desired>,
    desired_index: u64,
    /// The certificate authority, once made.
    pub ca: Option<Stored<crate::connect::CaState>>,
    /// Connect proxies by the (lower-cased) service they front: their instance ids.
    proxies_by_destination: HashMap<String, BTreeSet<String>>,
    /// Last change per fronted service of its proxies or their checks.
    connect_index: HashMap<String, u64>,
    /// Intentions by `<source>/<destination>`.
    pub intentions: BTreeMap<String, Stored<wharf_mesh::intentions::Intention>>,
    intentions_index: u64,
    /// `service-resolver` and `service-splitter` entries by (lower-cased) service name.
    pub resolvers: BTreeMap<String, Stored<wharf_model::traffic::Resolver>>,
    pub splitters: BTreeMap<String, Stored<wharf_model::traffic::Splitter>>,
    traffic_index: u64,
    /// Consul's KV entries.
    pub kv: crate::kv::KvState,
    /// Sessions by id.
    pub sessions: BTreeMap<String, Stored<crate::session::Session>>,
    sessions_index: u64,
    /// User events kept, by Lamport time.
    pub events: BTreeMap<u64, Stored<crate::event::Event>>,
    events_index: u64,
    /// Registry nodes by name.
    pub nodes: BTreeMap<String, Stored<crate::NodeInfo>>,
    /// The nodes holding their liveness lease now, with the revision they took it at.
    pub alive: BTreeMap<String, u64>,
    /// The critical `serfHealth` check of each known node that is not alive.
    dead: BTreeMap<String, Stored<Check>>,
    /// ACL policies and tokens.
    pub acl: crate::acl::AclState,
    /// The last revision applied.
    revision: Revision,
}

impl CatalogState {
    /// The index of a resource: the revision of its last change, plus one, so that it is never
    /// 0 (clients busy-loop on 0) and an empty store (revision 0) and its first write
    /// (revision 1) do not share an index. A name that never had an instance is at 1.
    pub fn index(&self, resource: &Resource) -> u64 {
        let index = match resource {
            Resource::Service(name) => self.name_index.get(name).copied().unwrap_or(0),
            Resource::Services => self.services_index,
            Resource::Checks => self.checks_index,
            Resource::Desired => self.desired_index,
            Resource::ConnectCa => self.ca.as_ref().map_or(0, |ca| ca.modify_index),
            Resource::Intentions => self.intentions_index,
            Resource::Connect(name) => self.connect_index.get(name).copied().unwrap_or(0),
            Resource::Acl => self.acl.index,
            Resource::Traffic => self.traffic_index,
            Resource::Kv(key) => self.kv.key_revision(key),
            Resource::KvPrefix(prefix) => self.kv.prefix_revision(prefix),
            Resource::Sessions => self.sessions_index,
            Resource::Events => self.events_index,
        };
        index + 1
    }

    /// The tombstones that `ops` must write beside them: what each deletion (or a put that
    /// moves an instance to another name, or a check to another owner) takes away from.
    pub fn tombstones(&self, ops: &[wharf_store::Op]) -> BTreeSet<Tombstone> {
        let mut tombstones = BTreeSet::new();
        let name_of = |instance_id: &str| {
            self.instances
                .get(instance_id)
                .map(|s| s.value.name.to_lowercase())
        };
        let check_owner_lost = |tombstones: &mut BTreeSet<Tombstone>, owner: &str| {
            if is_node_level(owner) {
                tombstones.insert(Tombstone::NodeChecks);
            } else if let Some(name) = name_of(owner) {
                tombstones.insert(Tombstone::Service(name));
            }
        };
        for op in ops {
            let (key, put) = match op {
                wharf_store::Op::Put { key, value, .. } => (key, Some(value)),
                wharf_store::Op::Delete { key } => (key, None),
                wharf_store::Op::DeletePrefix { .. } => continue,
            };
            if key.starts_with(keys::INTENTIONS) {
                if put.is_none() {
                    tombstones.insert(Tombstone::Intentions);
                }
                continue;
            }
            if key.starts_with(keys::ACL) {
                if put.is_none() {
                    tombstones.insert(Tombstone::Acl);
                }
                continue;
            }
            if key.starts_with(keys::SESSIONS) {
                if put.is_none() {
                    tombstones.insert(Tombstone::Sessions);
                }
                continue;
            }
            if key.starts_with(keys::NODES) {
                // The list of nodes follows the services' index.
                if put.is_none() {
                    tombstones.insert(Tombstone::Services);
                }
                continue;
            }
            if key.starts_with(keys::RESOLVERS) || key.starts_with(keys::SPLITTERS) {
                if put.is_none() {
                    tombstones.insert(Tombstone::Traffic);
                }
                continue;
            }
            if let Some(id) = key.strip_prefix(keys::SERVICES) {
                let Some(old) = name_of(id) else { continue };
                let new = put
                    .and_then(|value| keys::decode(key, value))
                    .and_then(|record| match record {
                        Record::Service(service) => Some(service.name.to_lowercase()),
                        _ => None,
                    });
                if new.as_deref() != Some(old.as_str()) {
                    tombstones.insert(Tombstone::Service(old));
                    tombstones.insert(Tombstone::Services);
                }
            } else if let Some(id) = key.strip_prefix(keys::CHECKS) {
                let Some(old) = self.checks.get(id) else {
                    continue;
                };
                let new_owner = put
                    .and_then(|value| keys::decode(key, value))
                    .and_then(|record| match record {
                        Record::Check(check) => Some(owner_of(&check)),
                        _ => None,
                    });
                let old_owner = owner_of(&old.value);
                if new_owner.as_deref() != Some(old_owner.as_str()) {
                    tombstones.insert(Tombstone::Checks);
                    check_owner_lost(&mut tombstones, &old_owner);
                }
            }
        }
        tombstones
    }

    /// Instances of `name` (case-insensitive), in id order.
    pub fn instances_of(&self, name: &str) -> impl Iterator<Item = &Stored<ServiceInstance>> {
        self.by_name
            .get(&name.to_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id))
    }

    /// The instance `id` of `node`, or a record of that id from before nodes shared a store.
    pub fn instance(&self, node: &str, id: &str) -> Option<&Stored<ServiceInstance>> {
        self.instances
            .get(&keys::scoped(node, id))
            .or_else(|| self.instances.get(id).filter(|i| i.value.node.is_empty()))
    }

    /// The check `id` of `node`, or a record of that id from before nodes shared a store.
    pub fn check(&self, node: &str, id: &str) -> Option<&Stored<Check>> {
        self.checks
            .get(&keys::scoped(node, id))
            .or_else(|| self.checks.get(id).filter(|c| c.value.node.is_empty()))
    }

    /// The instance a check belongs to, if any.
    pub fn instance_of(&self, check: &Check) -> Option<&Stored<ServiceInstance>> {
        if check.service_id.is_empty() {
            return None;
        }
        self.instances.get(&owner_of(check))
    }

    /// The checks of one instance, node-level checks first, as Consul lists them: its
    /// node's `serfHealth` when that node is not alive, then its node's checks.
    pub fn checks_of(&self, instance: &ServiceInstance) -> Vec<&Stored<Check>> {
        let mut checks: Vec<_> = self.dead.get(&instance.node).into_iter().collect();
        checks.extend(self.node_checks(&instance.node));
        checks.extend(self.own_checks(instance));
        checks
    }

    /// The checks registered on one instance, without the node's.
    pub fn own_checks<'s>(
        &'s self,
        instance: &ServiceInstance,
    ) -> impl Iterator<Item = &'s Stored<Check>> + use<'s> {
        self.checks_owned_by(&keys::scoped(&instance.node, &instance.id))
    }

    fn checks_owned_by<'s>(
        &'s self,
        owner: &str,
    ) -> impl Iterator<Item = &'s Stored<Check>> + use<'s> {
        self.checks_by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|id| self.checks.get(id))
    }

    /// Node-level checks of `node`: they count for every instance of the node (and those
    /// from before nodes shared a store, for every instance).
    pub fn node_checks<'s>(
        &'s self,
        node: &str,
    ) -> impl Iterator<Item = &'s Stored<Check>> + use<'s> {
        let scoped = (!node.is_empty()).then(|| self.checks_owned_by(&keys::scoped(node, "")));
        self.checks_owned_by("").chain(scoped.into_iter().flatten())
    }

    /// The aggregate status of an instance: the worst of its checks and its node's.
    pub fn status_of(&self, instance: &ServiceInstance) -> Status {
        Status::aggregate(self.checks_of(instance).iter().map(|c| c.value.status))
    }

    /// Service names (as first registered) with the union of their tags.
    pub fn service_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for instance in self.instances.values() {
            names
                .entry(instance.value.name.clone())
                .or_default()
                .extend(instance.value.tags.iter().cloned());
        }
        names
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A state built from records directly, at revision 1, for fuzzers and tools that need a
    /// catalog without a store.
    pub fn from_records(instances: Vec<ServiceInstance>, checks: Vec<Check>) -> CatalogState {
        let mut state = CatalogState::default();
        state.clear_to(1);
        let mut changes = Changes::default();
        for instance in instances {
            let key = keys::service_key(&instance.node, &instance.id);
            state.apply(&key, Some(Record::Service(instance)), 1, 1, &mut changes);
        }
        for check in checks {
            let key = keys::check_key(&check.node, &check.id);
            state.apply(&key, Some(Record::Check(check)), 1, 1, &mut changes);
        }
        state
    }

    /// A state holding KV entries and sessions, at revision 1, for fuzzers and tools.
    pub fn from_kv(
        entries: Vec<(String, crate::kv::Entry)>,
        sessions: Vec<crate::session::Session>,
    ) -> CatalogState {
        let mut state = CatalogState::default();
        state.clear_to(1);
        for (key, entry) in entries {
            state.kv.apply_entry(&key, Some(entry), 1, 1);
        }
        for session in sessions {
            let stored = Stored {
                value: session,
                create_index: 1,
                modify_index: 1,
            };
            state.sessions.insert(stored.value.id.clone(), stored);
        }
        state
    }

    fn clear_to(&mut self, revision: Revision) {
        *self = CatalogState {
            revision,
            ..CatalogState::default()
        };
    }

    /// Gives each service name the last change of its instances, their checks and the
    /// node's checks, after a load: records are loaded in key order (checks before the
    /// instances they belong to), so [`CatalogState::apply`] could not do it on the way.
    fn reindex_names(&mut self) {
        let node_checks = self.node_checks_index;
        for (name, ids) in &self.by_name {
            let mut last = node_checks;
            for id in ids {
                if let Some(instance) = self.instances.get(id) {
                    last = last.max(instance.modify_index);
                    if let Some(serf) = self.dead.get(&instance.value.node) {
                        last = last.max(serf.modify_index);
                    }
                }
                for check in self.checks_owned_by(id) {
                    last = last.max(check.modify_index);
                }
            }
            let index = self.name_index.entry(name.clone()).or_default();
            *index = (*index).max(last);
        }
        for (destination, ids) in &self.proxies_by_destination {
            let last = ids
                .iter()
                .filter_map(|id| self.instances.get(id))
                .filter_map(|i| self.name_index.get(&i.value.name.to_lowercase()))
                .max()
                .copied()
                .unwrap_or(0);
            let index = self.connect_index.entry(destination.clone()).or_default();
            *index = (*index).max(last);
        }
    }

    /// The Connect proxies of `service` (case-insensitive), in id order.
    pub fn proxies_for(&self, service: &str) -> impl Iterator<Item = &Stored<ServiceInstance>> {
        self.proxies_by_destination
            .get(&service.to_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id))
    }

    fn touch_connect(&mut self, destination: String, revision: u64, touched: &mut Vec<Resource>) {
        let index = self.connect_index.entry(destination.clone()).or_default();
        *index = (*index).max(revision);
        touched.push(Resource::Connect(destination));
    }

    /// Applies one record change and returns the resources it touched.
    fn apply(
        &mut self,
        key: &str,
        record: Option<Record>,
        create: u64,
        revision: u64,
        changes: &mut Changes,
    ) {
        let touched = &mut changes.resources;
        if let Some(kv_key) = key.strip_prefix(crate::kv::ENTRIES) {
            let entry = match record {
                Some(Record::KvEntry(entry)) => Some(entry),
                _ => None,
            };
            self.kv.apply_entry(kv_key, entry, create, revision);
            changes.kv_keys.push(kv_key.to_owned());
            return;
        }
        if let Some(kv_key) = key.strip_prefix(crate::kv::DELETED) {
            let deletion = match record {
                Some(Record::KvDeleted(deletion)) => Some(deletion),
                _ => None,
            };
            self.kv.apply_deletion(kv_key, deletion, revision);
            changes.kv_keys.push(kv_key.to_owned());
            return;
        }
        if let Some(ltime) = key.strip_prefix(crate::event::EVENTS) {
            match (record, ltime.parse::<u64>()) {
                (Some(Record::Event(event)), Ok(ltime)) => {
                    let stored = Stored {
                        value: event,
                        create_index: create,
                        modify_index: revision,
                    };
                    self.events.insert(ltime, stored);
                }
                (_, Ok(ltime)) => {
                    self.events.remove(&ltime);
                }
                (_, Err(_)) => return,
            }
            // Events are only deleted beside a newer one: no tombstone is needed for the
            // index to survive a restart.
            self.events_index = self.events_index.max(revision);
            touched.push(Resource::Events);
            return;
        }
        if let Some(id) = key.strip_prefix(keys::SESSIONS) {
            match record {
                Some(Record::Session(session)) => {
                    let stored = Stored {
                        value: session,
                        create_index: create,
                        modify_index: revision,
                    };
                    self.sessions.insert(id.to_owned(), stored);
                }
                _ => {
                    self.sessions.remove(id);
                }
            }
            self.sessions_index = self.sessions_index.max(revision);
            touched.push(Resource::Sessions);
            return;
        }
        if let Some(id) = key.strip_prefix(keys::SERVICES) {
            let old = self.instances.remove(id);
            if let Some(destination) = old.as_ref().and_then(|o| o.value.proxy_for()) {
                if let Some(ids) = self.proxies_by_destination.get_mut(&destination) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.proxies_by_destination.remove(&destination);
                    }
                }
                self.touch_connect(destination, revision, touched);
            }
            if let Some(old) = &old {
                let name = old.value.name.to_lowercase();
                if let Some(ids) = self.by_name.get_mut(&name) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.by_name.remove(&name);
                    }
                }
                self.touch_name(name, revision, touched);
            }
            if let Some(Record::Service(service)) = record {
                if let Some(destination) = service.proxy_for() {
                    self.proxies_by_destination
                        .entry(destination.clone())
                        .or_default()
                        .insert(id.to_owned());
                    self.touch_connect(destination, revision, touched);
                }
                let name = service.name.to_lowercase();
                self.by_name
                    .entry(name.clone())
                    .or_default()
                    .insert(id.to_owned());
                self.instances.insert(
                    id.to_owned(),
                    Stored {
                        value: service,
                        create_index: create,
                        modify_index: revision,
                    },
                );
                self.touch_name(name, revision, touched);
            }
            self.services_index = self.services_index.max(revision);
            touched.push(Resource::Services);
        } else if let Some(Record::Tombstone(tombstone)) = record {
            match tombstone {
                Tombstone::Service(name) => self.touch_name(name, revision, touched),
                Tombstone::Services => {
                    self.services_index = self.services_index.max(revision);
                    touched.push(Resource::Services);
                }
                Tombstone::Checks => {
                    self.checks_index = self.checks_index.max(revision);
                    touched.push(Resource::Checks);
                }
                Tombstone::NodeChecks => {
                    self.node_checks_index = self.node_checks_index.max(revision);
                }
                Tombstone::Intentions => {
                    self.intentions_index = self.intentions_index.max(revision);
                    touched.push(Resource::Intentions);
                }
                Tombstone::Acl => {
                    self.acl.index = self.acl.index.max(revision);
                    touched.push(Resource::Acl);
                }
                Tombstone::Traffic => {
                    self.traffic_index = self.traffic_index.max(revision);
                    touched.push(Resource::Traffic);
                }
                Tombstone::Sessions => {
                    self.sessions_index = self.sessions_index.max(revision);
                    touched.push(Resource::Sessions);
                }
            }
        } else if key.starts_with(keys::ACL) {
            let record = match record {
                Some(Record::Acl(record)) => Some(record),
                _ => None,
            };
            self.acl.apply(key, record, create, revision);
            touched.push(Resource::Acl);
        } else if key == keys::CONNECT_CA {
            self.ca = match record {
                Some(Record::Ca(ca)) => Some(Stored {
                    value: *ca,
                    create_index: create,
                    modify_index: revision,
                }),
                _ => None,
            };
            touched.push(Resource::ConnectCa);
        } else if let Some(pair) = key.strip_prefix(keys::INTENTIONS) {
            match record {
                Some(Record::Intention(intention)) => {
                    self.intentions.insert(
                        pair.to_owned(),
                        Stored {
                            value: *intention,
                            create_index: create,
                            modify_index: revision,
                        },
                    );
                }
                _ => {
                    self.intentions.remove(pair);
                }
            }
            self.intentions_index = self.intentions_index.max(revision);
            touched.push(Resource::Intentions);
        } else if let Some(name) = key.strip_prefix(keys::RESOLVERS) {
            match record {
                Some(Record::Resolver(resolver)) => {
                    let stored = Stored {
                        value: resolver,
                        create_index: create,
                        modify_index: revision,
                    };
                    self.resolvers.insert(name.to_owned(), stored);
                }
                _ => {
                    self.resolvers.remove(name);
                }
            }
            self.traffic_index = self.traffic_index.max(revision);
            touched.push(Resource::Traffic);
        } else if let Some(name) = key.strip_prefix(keys::SPLITTERS) {
            match record {
                Some(Record::Splitter(splitter)) => {
                    let stored = Stored {
                        value: splitter,
                        create_index: create,
                        modify_index: revision,
                    };
                    self.splitters.insert(name.to_owned(), stored);
                }
                _ => {
                    self.splitters.remove(name);
                }
            }
            self.traffic_index = self.traffic_index.max(revision);
            touched.push(Resource::Traffic);
        } else if let Some(name) = key.strip_prefix(keys::NODES) {
            match record {
                Some(Record::Node(node)) => {
                    self.nodes.insert(
                        name.to_owned(),
                        Stored {
                            value: node,
                            create_index: create,
                            modify_index: revision,
                        },
                    );
                }
                _ => {
                    self.nodes.remove(name);
                }
            }
            self.refresh_liveness(name, true, revision, touched);
        } else if let Some(name) = key.strip_prefix(keys::ALIVE) {
            match record {
                Some(Record::Alive) => {
                    self.alive.insert(name.to_owned(), create);
                }
                _ => {
                    self.alive.remove(name);
                }
            }
            self.refresh_liveness(name, false, revision, touched);
        } else if let Some(name) = key.strip_prefix(keys::DESIRED) {
            match record {
                Some(Record::Desired(desired)) => {
                    self.desired.insert(name.to_owned(), desired);
                }
                _ => {
                    self.desired.remove(name);
                }
            }
            self.desired_index = self.desired_index.max(revision);
            touched.push(Resource::Desired);
        } else if let Some(id) = key.strip_prefix(keys::CHECKS) {
            changes.checks.push(id.to_owned());
            let old = self.checks.remove(id);
            let mut owners: Vec<String> = old.iter().map(|c| owner_of(&c.value)).collect();
            if let Some(owner) = owners.first()
                && let Some(ids) = self.checks_by_owner.get_mut(owner)
            {
                ids.remove(id);
                if ids.is_empty() {
                    self.checks_by_owner.remove(owner);
                }
            }
            if let Some(Record::Check(check)) = record {
                owners.push(owner_of(&check));
                self.checks_by_owner
                    .entry(owner_of(&check))
                    .or_default()
                    .insert(id.to_owned());
                self.checks.insert(
                    id.to_owned(),
                    Stored {
                        value: check,
                        create_index: create,
                        modify_index: revision,
                    },
                );
            }
            for owner in owners {
                if is_node_level(&owner) {
                    self.node_checks_index = self.node_checks_index.max(revision);
                    // A node-level check counts for every instance on the node.
                    let names: Vec<String> = self.by_name.keys().cloned().collect();
                    for name in names {
                        self.touch_name(name, revision, touched);
                    }
                    let fronted: Vec<String> =
                        self.proxies_by_destination.keys().cloned().collect();
                    for destination in fronted {
                        self.touch_connect(destination, revision, touched);
                    }
                } else if let Some(instance) = self.instances.get(&owner) {
                    let name = instance.value.name.to_lowercase();
                    let destination = instance.value.proxy_for();
                    self.touch_name(name, revision, touched);
                    if let Some(destination) = destination {
                        self.touch_connect(destination, revision, touched);
                    }
                }
            }
            self.checks_index = self.checks_index.max(revision);
            touched.push(Resource::Checks);
        }
    }

    /// After a node's record or liveness mark changed: its `serfHealth` turns critical (or
    /// goes) when it stops (or starts again) being alive, and every service with an instance
    /// on it is touched, so that their blocking queries and DNS see it at once. The list of
    /// nodes moves when a record changed or a node's liveness did.
    fn refresh_liveness(
        &mut self,
        node: &str,
        record_changed: bool,
        revision: u64,
        touched: &mut Vec<Resource>,
    ) {
        let dead = self.nodes.get(node).is_some_and(|n| !n.value.external)
            && !self.alive.contains_key(node);
        let was = self.dead.contains_key(node);
        if dead && !was {
            let check = Check {
                id: crate::node::SERF_HEALTH.to_owned(),
                name: "Serf Health Status".to_owned(),
                service_id: String::new(),
                notes: String::new(),
                kind: wharf_model::CheckKind::Ttl {
                    ttl: std::time::Duration::ZERO,
                },
                interval: None,
                timeout: None,
                deregister_critical_after: None,
                thresholds: Default::default(),
                status: Status::Critical,
                output: "Agent not live or unreachable".to_owned(),
                critical_since_ms: None,
                node: node.to_owned(),
            };
            let stored = Stored {
                value: check,
                create_index: revision,
                modify_index: revision,
            };
            self.dead.insert(node.to_owned(), stored);
        } else if !dead && was {
            self.dead.remove(node);
        }
        if dead != was {
            let on_node: Vec<(String, Option<String>)> = self
                .instances
                .values()
                .filter(|i| i.value.node == node)
                .map(|i| (i.value.name.to_lowercase(), i.value.proxy_for()))
                .collect();
            for (name, destination) in on_node {
                self.touch_name(name, revision, touched);
                if let Some(destination) = destination {
                    self.touch_connect(destination, revision, touched);
                }
            }
            self.checks_index = self.checks_index.max(revision);
            touched.push(Resource::Checks);
        }
        if record_changed || dead != was {
            // The list of nodes (`/v1/catalog/nodes`) follows the services' index.
            self.services_index = self.services_index.max(revision);
            touched.push(Resource::Services);
        }
    }

    /// The critical `serfHealth` check of `node`, when it is known and not alive.
    pub fn dead_check(&self, node: &str) -> Option<&Stored<Check>> {
        self.dead.get(node)
    }

    /// The node an instance was registered through, when its record is known.
    pub fn node_of(&self, instance: &ServiceInstance) -> Option<&crate::NodeInfo> {
        self.nodes.get(&instance.node).map(|n| &n.value)
    }

    fn touch_name(&mut self, name: String, revision: u64, touched: &mut Vec<Resource>) {
        let index = self.name_index.entry(name.clone()).or_default();
        *index = (*index).max(revision);
        touched.push(Resource::Service(name));
    }
}

/// The key of the instance a check belongs to (`<node>/` for a node-level check of `node`).
fn owner_of(check: &Check) -> String {
    keys::scoped(&check.node, &check.service_id)
}

/// Whether a check owner key stands for a node rather than an instance.
fn is_node_level(owner: &str) -> bool {
    owner.is_empty() || owner.ends_with('/')
}

/// The catalog shared by the API, the checker and the DNS server.
pub struct Catalog {
    state: RwLock<CatalogState>,
    applied: watch::Sender<Revision>,
    notifiers: RwLock<HashMap<Resource, watch::Sender<u64>>>,
    /// Watchers of KV keys and prefixes, apart so that a changed key finds its own and its
    /// prefixes' by `&str` lookups (one per prefix length), without allocating.
    kv_watchers: RwLock<KvWatchers>,
    /// Where changed check ids go (the health checker), so that it never rescans them all.
    check_feed: Mutex<Option<mpsc::UnboundedSender<CheckChange>>>,
    /// When the catalog last applied a change or loaded the store.
    last_change: Mutex<std::time::Instant>,
    /// Loads of the whole store after the first (a broken or compacted watch).
    reloads: std::sync::atomic::AtomicU64,
    /// How long the last reload took, from the broken watch to the new one, in microseconds.
    last_reload_us: std::sync::atomic::AtomicU64,
}

/// The notifiers of KV blocking reads.
#[derive(Debug, Default)]
struct KvWatchers {
    keys: HashMap<String, watch::Sender<u64>>,
    prefixes: HashMap<String, watch::Sender<u64>>,
}

impl KvWatchers {
    /// Wakes the watchers of `key` and of every prefix of it.
    fn wake(&self, key: &str, revision: Revision) {
        if let Some(sender) = self.keys.get(key) {
            sender.send_replace(revision);
        }
        if self.prefixes.is_empty() {
            return;
        }
        for end in (0..=key.len()).filter(|end| key.is_char_boundary(*end)) {
            if let Some(sender) = self.prefixes.get(&key[..end]) {
                sender.send_replace(revision);
            }
        }
    }

    fn resources(&self) -> impl Iterator<Item = Resource> + '_ {
        let keys = self.keys.keys().cloned().map(Resource::Kv);
        keys.chain(self.prefixes.keys().cloned().map(Resource::KvPrefix))
    }

    fn sender(&self, resource: &Resource) -> Option<&watch::Sender<u64>> {
        match resource {
            Resource::Kv(key) => self.keys.get(key),
            Resource::KvPrefix(prefix) => self.prefixes.get(prefix),
            _ => None,
        }
    }
}

/// A change the health checker must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckChange {
    /// This check was added, changed or removed.
    Changed(String),
    /// The catalog was reloaded: look at every check again.
    Reload,
}

/// What applying records touched.
#[derive(Debug, Default)]
struct Changes {
    resources: Vec<Resource>,
    checks: Vec<String>,
    /// KV keys put or deleted (their watchers, and their prefixes', are woken).
    kv_keys: Vec<String>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

impl Catalog {
    /// Loads the catalog from the store and keeps following it in a background task.
    pub async fn follow(store: Arc<dyn Store>) -> Result<Arc<Catalog>, StoreError> {
        let catalog = Arc::new(Catalog {
            state: RwLock::new(CatalogState::default()),
            applied: watch::Sender::new(0),
            notifiers: RwLock::new(HashMap::new()),
            kv_watchers: Default::default(),
            check_feed: Mutex::new(None),
            last_change: Mutex::new(std::time::Instant::now()),
            reloads: Default::default(),
            last_reload_us: Default::default(),
        });
        let watch = catalog.load(&*store).await?;
        tokio::spawn(run_follower(Arc::downgrade(&catalog), store, watch));
        Ok(catalog)
    }

    /// Reads the whole registry and starts a watch right after it. A reload (after a broken
    /// or compacted watch) wakes only the queries whose resource it changed: the state is
    /// read anew, so keys that vanished meanwhile are gone, and an index moves only where a
    /// record or a tombstone did.
    async fn load(&self, store: &dyn Store) -> Result<wharf_store::Watch, StoreError> {
        let range = store.range(keys::ROOT).await?;
        let watch = store.watch(keys::ROOT, range.revision + 1).await?;
        let mut changes = Changes::default();
        let mut watched: Vec<Resource> = self
            .notifiers
            .read()
            .expect("notifier lock")
            .keys()
            .cloned()
            .collect();
        watched.extend(
            self.kv_watchers
                .read()
                .expect("kv watchers lock")
                .resources(),
        );
        let before: Vec<u64> = self.read(|state| watched.iter().map(|r| state.index(r)).collect());
        {
            let mut state = self.state.write().expect("catalog lock");
            state.clear_to(range.revision);
            for kv in range.kvs {
                let record = keys::decode(&kv.key, &kv.value);
                state.apply(
                    &kv.key,
                    record,
                    kv.create_revision,
                    kv.mod_revision,
                    &mut changes,
                );
            }
            state.reindex_names();
        }
        self.feed_checks(std::iter::once(CheckChange::Reload));
        let after: Vec<u64> = self.read(|state| watched.iter().map(|r| state.index(r)).collect());
        {
            let notifiers = self.notifiers.read().expect("notifier lock");
            let kv_watchers = self.kv_watchers.read().expect("kv watchers lock");
            for ((resource, before), after) in watched.iter().zip(before).zip(after) {
                if before != after
                    && let Some(sender) = notifiers
                        .get(resource)
                        .or_else(|| kv_watchers.sender(resource))
                {
                    sender.send_replace(range.revision);
                }
            }
        }
        self.applied.send_replace(range.revision);
        *self.last_change.lock().expect("last change lock") = std::time::Instant::now();
        Ok(watch)
    }

    /// Loads of the whole store after the first.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the last reload took (zero before any).
    pub fn last_reload(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.last_reload_us
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn apply_batch(&self, batch: WatchBatch) {
        let mut changes = Changes::default();
        {
            let mut state = self.state.write().expect("catalog lock");
            for event in batch.events {
                let record = match event.kind {
                    EventKind::Put => keys::decode(&event.kv.key, &event.kv.value),
                    EventKind::Delete => None,
                };
                state.apply(
                    &event.kv.key,
                    record,
                    event.kv.create_revision,
                    batch.revision,
                    &mut changes,
                );
            }
            state.revision = batch.revision;
        }
        self.feed_checks(changes.checks.into_iter().map(CheckChange::Changed));
        let touched: HashSet<Resource> = changes.resources.into_iter().collect();
        let notifiers = self.notifiers.read().expect("notifier lock");
        for resource in touched {
            if let Some(sender) = notifiers.get(&resource) {
                sender.send_replace(batch.revision);
            }
        }
        drop(notifiers);
        if !changes.kv_keys.is_empty() {
            let kv_watchers = self.kv_watchers.read().expect("kv watchers lock");
            for key in &changes.kv_keys {
                kv_watchers.wake(key, batch.revision);
            }
        }
        self.applied.send_replace(batch.revision);
        *self.last_change.lock().expect("last change lock") = std::time::Instant::now();
    }

    /// Since the catalog last applied a change (or loaded the store).
    pub fn since_last_change(&self) -> std::time::Duration {
        self.last_change.lock().expect("last change lock").elapsed()
    }

    fn feed_checks(&self, changes: impl Iterator<Item = CheckChange>) {
        let mut feed = self.check_feed.lock().expect("check feed lock");
        if let Some(sender) = feed.as_ref() {
            for change in changes {
                if sender.send(change).is_err() {
                    *feed = None;
                    return;
                }
            }
        }
    }

    /// The stream of check changes, for the one health checker. It starts with a
    /// [`CheckChange::Reload`]; a second call replaces the first stream.
    pub fn check_changes(&self) -> mpsc::UnboundedReceiver<CheckChange> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(CheckChange::Reload);
        *self.check_feed.lock().expect("check feed lock") = Some(sender);
        receiver
    }

    /// Runs `f` on the current state under a read lock.
    pub fn read<T>(&self, f: impl FnOnce(&CatalogState) -> T) -> T {
        f(&self.state.read().expect("catalog lock"))
    }

    /// Waits until the catalog has applied `revision` (a write's own revision).
    pub async fn wait_applied(&self, revision: Revision) {
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|r| *r >= revision).await;
    }

    /// A receiver that changes whenever `resource` may have changed.
    pub fn subscribe(&self, resource: &Resource) -> watch::Receiver<u64> {
        if let Resource::Kv(key) | Resource::KvPrefix(key) = resource {
            return self.subscribe_kv(key, matches!(resource, Resource::KvPrefix(_)));
        }
        if let Some(sender) = self.notifiers.read().expect("notifier lock").get(resource) {
            return sender.subscribe();
        }
        let mut notifiers = self.notifiers.write().expect("notifier lock");
        // Drop notifiers nobody holds any more, so that queries for arbitrary names cannot
        // grow the map without bound.
        if notifiers.len() > 1024 {
            notifiers.retain(|_, sender| sender.receiver_count() > 0);
        }
        notifiers
            .entry(resource.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }
}

impl Catalog {
    fn subscribe_kv(&self, key: &str, prefix: bool) -> watch::Receiver<u64> {
        let pick = |watchers: &KvWatchers| -> Option<watch::Receiver<u64>> {
            let map = if prefix {
                &watchers.prefixes
            } else {
                &watchers.keys
            };
            map.get(key).map(watch::Sender::subscribe)
        };
        if let Some(receiver) = pick(&self.kv_watchers.read().expect("kv watchers lock")) {
            return receiver;
        }
        let mut watchers = self.kv_watchers.write().expect("kv watchers lock");
        let map = if prefix {
            &mut watchers.prefixes
        } else {
            &mut watchers.keys
        };
        // As for the other notifiers: drop those nobody holds before growing the map.
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, sender| sender.receiver_count() > 0);
        }
        map.entry(key.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }
}

async fn run_follower(
    catalog: std::sync::Weak<Catalog>,
    store: Arc<dyn Store>,
    mut watch: wharf_store::Watch,
) {
    loop {
        let next = watch.next().await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        match next {
            Some(Ok(batch)) => catalog.apply_batch(batch),
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "catalog watch interrupted; reloading");
                let started = std::time::Instant::now();
                loop {
                    match catalog.load(&*store).await {
                        Ok(fresh) => {
                            watch = fresh;
                            let took = u64::try_from(started.elapsed().as_micros());
                            catalog.last_reload_us.store(
                                took.unwrap_or(u64::MAX),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            catalog
                                .reloads
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        Err(StoreError::Closed) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "catalog reload failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wharf_model::registration::decode_service_registration;
    use wharf_store::EmbeddedStore;

    use super::*;
    use crate::{Agent, Config, NodeInfo};

    async fn agent() -> (Arc<Agent>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let catalog = Catalog::follow(store.clone()).await.unwrap();
        let config = Config::new("127.0.0.1:0".parse().unwrap(), NodeInfo::local("id".into()));
        (Agent::new(store, catalog, config), dir)
    }

    async fn register(agent: &Agent, body: &str) {
        agent
            .register_service(decode_service_registration(body.as_bytes()).unwrap(), false)
            .await
            .unwrap();
    }

    fn index(agent: &Agent, name: &str) -> u64 {
        agent
            .catalog
            .read(|s| s.index(&Resource::Service(name.into())))
    }

    #[tokio::test]
    async fn the_first_write_to_an_empty_store_moves_every_index() {
        let (agent, _dir) = agent().await;
        let services = agent.catalog.read(|s| s.index(&Resource::Services));
        let hello = index(&agent, "hello");
        assert!(services >= 1 && hello >= 1);
        register(&agent, r#"{"Name":"hello"}"#).await;
        assert!(agent.catalog.read(|s| s.index(&Resource::Services)) > services);
        assert!(index(&agent, "hello") > hello);
    }

    #[tokio::test]
    async fn indexes_are_per_service_and_count_deletions() {
        let (agent, _dir) = agent().await;
        register(&agent, r#"{"Name":"a"}"#).await;
        register(&agent, r#"{"Name":"b"}"#).await;
        let (a, b) = (index(&agent, "a"), index(&agent, "b"));
        assert!(b > a);
        register(&agent, r#"{"Name":"A","ID":"a-2"}"#).await;
        assert!(index(&agent, "a") > a, "names are case-insensitive");
        assert_eq!(index(&agent, "b"), b, "a change to a does not move b");
        let before = index(&agent, "a");
        agent.deregister_service("a-2").await.unwrap();
        assert!(index(&agent, "a") > before, "a deletion moves the index");
        assert!(index(&agent, "unknown") >= 1, "never 0");
    }

    #[tokio::test]
    async fn a_reload_wakes_only_the_queries_whose_index_it_moves() {
        let (agent, _dir) = agent().await;
        register(&agent, r#"{"Name":"a"}"#).await;
        register(&agent, r#"{"Name":"b"}"#).await;
        let mut a = agent.catalog.subscribe(&Resource::Service("a".into()));
        let mut b = agent.catalog.subscribe(&Resource::Service("b".into()));
        a.mark_unchanged();
        b.mark_unchanged();
        // What a broken or compacted watch does: read the whole store again. Nothing
        // changed, so nothing wakes (it used to wake every query).
        let _watch = agent.catalog.load(&*agent.store).await.unwrap();
        assert!(!a.has_changed().unwrap() && !b.has_changed().unwrap());
        // A change to a, then a reload (the live watch applies the change too): b's queries
        // stay asleep through both.
        let node = agent.node().name.clone();
        let (key, mut instance) = agent.catalog.read(|s| {
            let stored = s.instance(&node, "a").unwrap();
            (keys::service_key(&node, "a"), stored.value.clone())
        });
        instance.port = 9999;
        agent
            .store
            .put(&key, keys::encode_service(&instance))
            .await
            .unwrap();
        let _watch = agent.catalog.load(&*agent.store).await.unwrap();
        assert!(a.has_changed().unwrap(), "a's query wakes");
        assert!(!b.has_changed().unwrap(), "b's does not");
    }

    #[tokio::test]
    async fn node_checks_touch_every_service_and_feed_the_checker() {
        let (agent, _dir) = agent().await;
        let mut feed = agent.catalog.check_changes();
        assert_eq!(feed.recv().await, Some(CheckChange::Reload));
        register(&agent, r#"{"Name":"a","Check":{"TTL":"1m"}}"#).await;
        let node = agent.node().name.clone();
        assert_eq!(
            feed.recv().await,
            Some(CheckChange::Changed(format!("{node}/service:a")))
        );
        register(&agent, r#"{"Name":"b"}"#).await;
        let (a, b) = (index(&agent, "a"), index(&agent, "b"));
        let check =
            wharf_model::decode_check_registration(br#"{"Name":"disk","TTL":"1m"}"#).unwrap();
        agent.register_check(check).await.unwrap();
        assert!(index(&agent, "a") > a && index(&agent, "b") > b);
        assert_eq!(
            feed.recv().await,
            Some(CheckChange::Changed(format!("{node}/disk")))
        );
        let status = agent
            .catalog
            .read(|s| s.status_of(&s.instance(&node, "b").unwrap().value));
        assert_eq!(
            status,
            Status::Critical,
            "a critical node check makes every instance critical"
        );
    }

    #[tokio::test]
    async fn a_reload_gives_every_resource_the_index_it_had() {
        let (agent, _dir) = agent().await;
        register(&agent, r#"{"Name":"a","Check":{"TTL":"1m"}}"#).await;
        register(&agent, r#"{"Name":"b"}"#).await;
        register(&agent, r#"{"Name":"c","ID":"c-1"}"#).await;
        register(&agent, r#"{"Name":"c","ID":"c-2","Check":{"TTL":"1m"}}"#).await;
        let disk = wharf_model::decode_check_registration(br#"{"Name":"disk","TTL":"1m"}"#);
        agent.register_check(disk.unwrap()).await.unwrap();
        let mem = wharf_model::decode_check_registration(br#"{"Name":"mem","TTL":"1m"}"#);
        agent.register_check(mem.unwrap()).await.unwrap();
        agent.deregister_service("c-2").await.unwrap();
        agent.deregister_service("c-1").await.unwrap();
        agent.deregister_check("mem").await.unwrap();
        register(&agent, r#"{"Name":"e","ID":"moving"}"#).await;
        register(&agent, r#"{"Name":"f","ID":"moving"}"#).await;
        agent.declare_service("a", 2, None, None).await.unwrap();
        register(&agent, r#"{"Name":"b","ID":"b-2"}"#).await;
        let resources = [
            Resource::Service("a".into()),
            Resource::Service("b".into()),
            Resource::Service("c".into()),
            Resource::Service("e".into()),
            Resource::Service("f".into()),
            Resource::Service("never".into()),
            Resource::Services,
            Resource::Checks,
            Resource::Desired,
        ];
        let indexes = |catalog: &Catalog| -> Vec<u64> {
            resources
                .iter()
                .map(|r| catalog.read(|s| s.index(r)))
                .collect()
        };
        let before = indexes(&agent.catalog);
        let reloaded = Catalog::follow(agent.store.clone()).await.unwrap();
        assert_eq!(indexes(&reloaded), before, "{resources:?}");
        assert!(
            before[1] > before[0],
            "b changed last, and only b: a keeps its own index"
        );
    }

    #[tokio::test]
    async fn held_subscribers_wake_only_for_their_resource() {
        let (agent, _dir) = agent().await;
        let a = agent.catalog.subscribe(&Resource::Service("a".into()));
        let mut services = agent.catalog.subscribe(&Resource::Services);
        register(&agent, r#"{"Name":"b"}"#).await;
        assert!(
            !a.has_changed().unwrap(),
            "b's registration does not wake a's watchers"
        );
        assert!(services.has_changed().unwrap());
        services.mark_unchanged();
        register(&agent, r#"{"Name":"a"}"#).await;
        assert!(a.has_changed().unwrap());
    }
}
