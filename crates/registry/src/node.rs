//! The node the registry speaks for: Consul's agent model, where every service registered
//! through an agent lives on that agent's node.

use std::collections::BTreeMap;

/// Identity of a registry node: this one's, and (kept in the store under `wharf/nodes/`) every
/// other node's on a shared store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    pub name: String,
    /// A UUID, kept in the data directory so that it survives restarts.
    #[serde(rename = "ID")]
    pub id: String,
    /// The address instances without their own address are reached at.
    pub address: String,
    pub datacenter: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// A node registered through `/v1/catalog/register` (a host no registry node runs on):
    /// it has no liveness mark and no `serfHealth`, and its checks are probed by nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// The check Consul gives every node: passing while its agent is alive (here: while the
/// registry node holds its liveness lease), critical once it is not.
pub const SERF_HEALTH: &str = "serfHealth";

impl NodeInfo {
    /// A node named after this host, on loopback, in `dc1`.
    pub fn local(id: String) -> NodeInfo {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "wharf".to_owned());
        NodeInfo {
            name,
            id,
            address: "127.0.0.1".to_owned(),
            datacenter: "dc1".to_owned(),
            meta: BTreeMap::new(),
            external: false,
        }
    }
}

/// A random version-4 UUID in its usual text form.
pub fn random_uuid() -> String {
    uuid_from(std::array::from_fn(|_| fastrand::u8(..)))
}

/// `bytes` as a version-4 UUID (the version and variant bits set), 8-4-4-4-12 hex digits.
pub fn uuid_from(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
