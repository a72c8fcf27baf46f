//! Where the registry keeps its records in the store, and how they are encoded.
//!
//! Layout (JSON values, so that `etcdctl get --prefix wharf/` is readable):
//! - `wharf/services/<node>/<instance id>` → [`ServiceInstance`], registered through `<node>`
//!   (ids are the node's own, as a Consul agent's are; `wharf/services/<id>` in records from
//!   before nodes shared a store)
//! - `wharf/checks/<node>/<check id>` → [`Check`] (likewise)
//! - `wharf/desired/<service name>` → [`Desired`] (what the supervisor should run)
//! - `wharf/connect/ca` → [`crate::connect::CaState`] (the CA: cluster id, roots with keys)
//! - `wharf/intentions/<source>/<destination>` → [`wharf_mesh::intentions::Intention`]
//! - `wharf/traffic/resolver/<service>`, `wharf/traffic/splitter/<service>` → Consul's
//!   `service-resolver` and `service-splitter` entries ([`wharf_model::traffic`])
//! - `wharf/kv/<key>` → [`crate::kv::Entry`] (Consul's KV), `wharf/kv-deleted/<key>` →
//!   [`crate::kv::Deletion`] (what a deletion left: its revision, a lock delay)
//! - `wharf/sessions/<id>` → [`crate::session::Session`]
//! - `wharf/events/<Lamport time>` → [`crate::event::Event`] (the last 256 user events)
//! - `wharf/nodes/<name>` → [`crate::NodeInfo`] (every registry node that has run on the store,
//!   and the external nodes of `/v1/catalog/register`)
//! - `wharf/acl/policies/<id>`, `wharf/acl/tokens/<accessor id>` → ACL policies and tokens,
//!   `wharf/acl/bootstrap` → the record that bootstrap happened ([`crate::acl`])
//! - `wharf/alive/<name>` → empty, attached to the node's liveness lease: present while the
//!   node is alive
//! - `wharf/tombstones/...` → empty: written with every deletion, so that the revision of
//!   the last change of what was deleted survives a restart (see [`Tombstone`])

use wharf_model::{Check, ServiceInstance};

pub(crate) const ROOT: &str = "wharf/";
pub(crate) const SERVICES: &str = "wharf/services/";
pub(crate) const CHECKS: &str = "wharf/checks/";
/// Desired state of supervised services (`wharf scale`), keyed by service name.
pub(crate) const DESIRED: &str = "wharf/desired/";

/// The certificate authority, one record.
pub(crate) const CONNECT_CA: &str = "wharf/connect/ca";
/// Intentions, keyed by `<source>/<destination>` (lower case, `*` for any).
pub(crate) const INTENTIONS: &str = "wharf/intentions/";

pub(crate) fn intention_key(source: &str, destination: &str) -> String {
    format!("{INTENTIONS}{source}/{destination}")
}

/// Subsets and splits of services (`service-resolver`, `service-splitter` entries).
pub(crate) const RESOLVERS: &str = "wharf/traffic/resolver/";
pub(crate) const SPLITTERS: &str = "wharf/traffic/splitter/";

pub(crate) fn resolver_key(service: &str) -> String {
    format!("{RESOLVERS}{service}")
}

pub(crate) fn splitter_key(service: &str) -> String {
    format!("{SPLITTERS}{service}")
}

/// Sessions, keyed by id.
pub(crate) const SESSIONS: &str = "wharf/sessions/";

pub(crate) fn session_key(id: &str) -> String {
    format!("{SESSIONS}{id}")
}

/// Registry nodes, keyed by name.
pub(crate) const NODES: &str = "wharf/nodes/";
/// Liveness marks of registry nodes, each under its node's lease.
pub(crate) const ALIVE: &str = "wharf/alive/";

/// ACL records.
pub(crate) const ACL: &str = "wharf/acl/";
pub(crate) const ACL_POLICIES: &str = "wharf/acl/policies/";
pub(crate) const ACL_TOKENS: &str = "wharf/acl/tokens/";
pub(crate) const ACL_BOOTSTRAP: &str = "wharf/acl/bootstrap";

pub(crate) fn acl_policy_key(id: &str) -> String {
    format!("{ACL_POLICIES}{id}")
}

pub(crate) fn acl_token_key(accessor: &str) -> String {
    format!("{ACL_TOKENS}{accessor}")
}

/// Marks of deletions, one per thing a blocking query watches.
pub(crate) const TOMBSTONES: &str = "wharf/tombstones/";

/// What a deletion changed. A blocking query's index is the revision of the last change of
/// what it watches; a record's own revision says that for puts, but a deleted record takes
/// its revision with it. Each deletion therefore also writes the tombstone of what it
/// changed, in the same transaction, and the tombstone's revision stands in for it when the
/// catalog is loaded again, so that a restart neither moves an index nor sends one back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tombstone {
    /// An instance of this (lower-cased) service name, or one of its checks, was removed.
    Service(String),
    /// An instance was removed: the list of services may have changed.
    Services,
    /// A check was removed.
    Checks,
    /// A node-level check was removed: it counted for every service.
    NodeChecks,
    /// An intention was removed.
    Intentions,
    /// An ACL policy or token was removed.
    Acl,
    /// A service-resolver or service-splitter entry was removed.
    Traffic,
    /// A session was removed.
    Sessions,
}

impl Tombstone {
    pub fn key(&self) -> String {
        match self {
            Tombstone::Service(name) => format!("{TOMBSTONES}service/{name}"),
            Tombstone::Services => format!("{TOMBSTONES}services"),
            Tombstone::Checks => format!("{TOMBSTONES}checks"),
            Tombstone::NodeChecks => format!("{TOMBSTONES}node-checks"),
            Tombstone::Intentions => format!("{TOMBSTONES}intentions"),
            Tombstone::Acl => format!("{TOMBSTONES}acl"),
            Tombstone::Traffic => format!("{TOMBSTONES}traffic"),
            Tombstone::Sessions => format!("{TOMBSTONES}sessions"),
        }
    }

    pub fn from_key(key: &str) -> Option<Tombstone> {
        match key.strip_prefix(TOMBSTONES)? {
            "services" => Some(Tombstone::Services),
            "checks" => Some(Tombstone::Checks),
            "node-checks" => Some(Tombstone::NodeChecks),
            "intentions" => Some(Tombstone::Intentions),
            "acl" => Some(Tombstone::Acl),
            "traffic" => Some(Tombstone::Traffic),
            "sessions" => Some(Tombstone::Sessions),
            other => other
                .strip_prefix("service/")
                .map(|name| Tombstone::Service(name.to_owned())),
        }
    }
}

pub(crate) fn desired_key(name: &str) -> String {
    format!("{DESIRED}{name}")
}

/// Where an instance (or a check) of `node` with `id` lives, after its prefix: `<node>/<id>`,
/// or the bare id for a record from before nodes shared a store (no node). The catalog's maps
/// are keyed by it too.
pub(crate) fn scoped(node: &str, id: &str) -> String {
    if node.is_empty() {
        id.to_owned()
    } else {
        format!("{node}/{id}")
    }
}

pub(crate) fn service_key(node: &str, id: &str) -> String {
    format!("{SERVICES}{}", scoped(node, id))
}

pub(crate) fn check_key(node: &str, id: &str) -> String {
    format!("{CHECKS}{}", scoped(node, id))
}

pub(crate) fn encode_service(service: &ServiceInstance) -> Vec<u8> {
    serde_json::to_vec(service).expect("a service always serialises")
}

pub(crate) fn encode_check(check: &Check) -> Vec<u8> {
    serde_json::to_vec(check).expect("a check always serialises")
}

/// A record read from the store.
#[derive(Debug)]
pub(crate) enum Record {
    Service(ServiceInstance),
    Check(Check),
    Desired(Desired),
    Ca(Box<crate::connect::CaState>),
    Intention(Box<wharf_mesh::intentions::Intention>),
    Resolver(wharf_model::traffic::Resolver),
    Splitter(wharf_model::traffic::Splitter),
    Node(crate::NodeInfo),
    KvEntry(crate::kv::Entry),
    KvDeleted(crate::kv::Deletion),
    Session(crate::session::Session),
    Event(crate::event::Event),
    Acl(crate::acl::AclRecord),
    Alive,
    Tombstone(Tombstone),
}

/// What the supervisor should run of one service.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    pub replicas: u32,
    /// Bumped by `wharf restart`: each new value asks for a rolling restart.
    #[serde(default)]
    pub restart: u64,
    /// The bounds of an autoscaled service (`wharf scale` stays within them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Bounds>,
    /// The autoscaler's last change of count, and what it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ScaleDecision>,
    /// Bumped by `wharf rollout promote` and `wharf rollout abort`: each new value is an
    /// order to a canary running then.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub promote: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub abort: u64,
    /// An autoscaled service's target of requests in flight per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An autoscaled service's least and most replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// An autoscaler's decision as the supervisor reports it (`/v1/wharf/services` shows it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScaleDecision {
    pub from: u32,
    pub to: u32,
    /// `stable` or `panic`.
    pub mode: String,
    /// The service's load (in flight, or requests per second), per passing instance, and the
    /// target per instance.
    pub load: f64,
    pub per_instance: f64,
    pub target: f64,
    pub ready: u32,
    /// Unix seconds, as the registry received it.
    #[serde(default)]
    pub at: u64,
}

/// Decodes the record behind `key`; `None` for keys the registry does not own or cannot read
/// (logged: a bad record must not stop the registry from serving the rest).
pub(crate) fn decode(key: &str, value: &[u8]) -> Option<Record> {
    let decoded = if key.starts_with(crate::kv::ENTRIES) {
        serde_json::from_slice(value).map(Record::KvEntry)
    } else if key.starts_with(crate::kv::DELETED) {
        if value.is_empty() {
            return Some(Record::KvDeleted(Default::default()));
        }
        serde_json::from_slice(value).map(Record::KvDeleted)
    } else if key.starts_with(SESSIONS) {
        serde_json::from_slice(value).map(Record::Session)
    } else if key.starts_with(crate::event::EVENTS) {
        serde_json::from_slice(value).map(Record::Event)
    } else if key.starts_with(SERVICES) {
        serde_json::from_slice(value).map(Record::Service)
    } else if key.starts_with(CHECKS) {
        serde_json::from_slice(value).map(Record::Check)
    } else if key.starts_with(DESIRED) {
        serde_json::from_slice(value).map(Record::Desired)
    } else if key == CONNECT_CA {
        serde_json::from_slice(value).map(|ca| Record::Ca(Box::new(ca)))
    } else if key.starts_with(INTENTIONS) {
        serde_json::from_slice(value).map(|i| Record::Intention(Box::new(i)))
    } else if key.starts_with(RESOLVERS) {
        serde_json::from_slice(value).map(Record::Resolver)
    } else if key.starts_with(SPLITTERS) {
        serde_json::from_slice(value).map(Record::Splitter)
    } else if key.starts_with(NODES) {
        serde_json::from_slice(value).map(Record::Node)
    } else if key.starts_with(ACL) {
        crate::acl::decode(key, value).map(Record::Acl)
    } else if key.starts_with(ALIVE) {
        return Some(Record::Alive);
    } else if let Some(tombstone) = Tombstone::from_key(key) {
        return Some(Record::Tombstone(tombstone));
    } else {
        return None;
    };
    decoded
        .map_err(|e| tracing::warn!(key, error = %e, "skipping unreadable record"))
        .ok()
}
