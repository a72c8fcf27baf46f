//! Where the registry keeps its records in the store, and how they are encoded.
//!
//! Layout (JSON values, so that `etcdctl get --prefix wharf/` is readable):
//! - `wharf/services/<instance id>` → [`ServiceInstance`]
//! - `wharf/checks/<check id>` → [`Check`]
//! - `wharf/desired/<service name>` → [`Desired`] (what the supervisor should run)

use wharf_model::{Check, ServiceInstance};

pub const ROOT: &str = "wharf/";
pub const SERVICES: &str = "wharf/services/";
pub const CHECKS: &str = "wharf/checks/";
/// Desired state of supervised services (`wharf scale`), keyed by service name.
pub const DESIRED: &str = "wharf/desired/";

pub fn desired_key(name: &str) -> String {
    format!("{DESIRED}{name}")
}

pub fn service_key(id: &str) -> String {
    format!("{SERVICES}{id}")
}

pub fn check_key(id: &str) -> String {
    format!("{CHECKS}{id}")
}

pub fn encode_service(service: &ServiceInstance) -> Vec<u8> {
    serde_json::to_vec(service).expect("a service always serialises")
}

pub fn encode_check(check: &Check) -> Vec<u8> {
    serde_json::to_vec(check).expect("a check always serialises")
}

/// A record read from the store.
#[derive(Debug)]
pub enum Record {
    Service(ServiceInstance),
    Check(Check),
    Desired(Desired),
}

/// What the supervisor should run of one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    pub replicas: u32,
    /// Bumped by `wharf restart`: each new value asks for a rolling restart.
    #[serde(default)]
    pub restart: u64,
}

/// Decodes the record behind `key`; `None` for keys the registry does not own or cannot read
/// (logged: a bad record must not stop the registry from serving the rest).
pub fn decode(key: &str, value: &[u8]) -> Option<Record> {
    let decoded = if key.starts_with(SERVICES) {
        serde_json::from_slice(value).map(Record::Service)
    } else if key.starts_with(CHECKS) {
        serde_json::from_slice(value).map(Record::Check)
    } else if key.starts_with(DESIRED) {
        serde_json::from_slice(value).map(Record::Desired)
    } else {
        return None;
    };
    decoded
        .map_err(|e| tracing::warn!(key, error = %e, "skipping unreadable record"))
        .ok()
}
