//! A registered service instance, as the registry stores it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One instance of a service: what a client needs to reach it and to select it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Unique within the registry; defaults to the service name.
    pub id: String,
    /// The service this is an instance of; looked up case-insensitively.
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Empty means "the node's address", as in Consul.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    #[serde(default)]
    pub weights: Weights,
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Consul's service kind (`connect-proxy`, ...); empty for a plain service.
    #[serde(default)]
    pub kind: String,
    /// For a `connect-proxy`: the service it fronts (Consul's `Proxy.DestinationServiceName`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_destination: String,
    /// The registry node it was registered through, which runs its checks (Consul's agent
    /// model); empty in records written before registry nodes shared a store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl ServiceInstance {
    /// The (lower-cased) service this instance is a Connect proxy for, if it is one.
    pub fn proxy_for(&self) -> Option<String> {
        (self.kind == "connect-proxy" && !self.proxy_destination.is_empty())
            .then(|| self.proxy_destination.to_lowercase())
    }

    /// Whether the instance carries `tag`, compared case-insensitively as Consul does.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// An alternative address of a service (`lan`, `wan`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedAddress {
    pub address: String,
    pub port: u16,
}

/// Relative weights used by DNS SRV answers and the weighted balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}
