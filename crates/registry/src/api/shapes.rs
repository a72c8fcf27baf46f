//! The JSON shapes of Consul's API, field for field (consul-compat.md §3). Go clients decode
//! strictly, so types matter as much as names: durations are strings, `Tags` is `[]` and never
//! `null`, node `TaggedAddresses` map to strings while service ones map to objects.

use std::collections::BTreeMap;

use serde::Serialize;
use wharf_model::{Check, CheckKind, ServiceInstance, format_go_duration};

use crate::NodeInfo;
use crate::catalog::Stored;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeJson<'a> {
    #[serde(rename = "ID")]
    pub id: &'a str,
    pub node: &'a str,
    pub address: &'a str,
    pub datacenter: &'a str,
    pub tagged_addresses: BTreeMap<&'a str, &'a str>,
    pub meta: &'a BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl<'a> NodeJson<'a> {
    pub fn new(node: &'a NodeInfo) -> NodeJson<'a> {
        NodeJson {
            id: &node.id,
            node: &node.name,
            address: &node.address,
            datacenter: &node.datacenter,
            tagged_addresses: BTreeMap::from([
                ("lan", node.address.as_str()),
                ("wan", node.address.as_str()),
            ]),
            meta: &node.meta,
            create_index: 1,
            modify_index: 1,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressJson<'a> {
    pub address: &'a str,
    pub port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsJson {
    pub passing: u32,
    pub warning: u32,
}

/// Consul's `AgentService`, as in health entries and `/v1/agent/services`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceJson<'a> {
    #[serde(rename = "ID")]
    pub id: &'a str,
    pub service: &'a str,
    pub tags: &'a [String],
    pub meta: &'a BTreeMap<String, String>,
    pub port: u16,
    pub address: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<&'a str, AddressJson<'a>>,
    pub weights: WeightsJson,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub kind: &'a str,
    /// A Connect proxy's `{"DestinationServiceName": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyJson<'a> {
    pub destination_service_name: &'a str,
}

impl<'a> AgentServiceJson<'a> {
    pub fn new(stored: &'a Stored<ServiceInstance>) -> AgentServiceJson<'a> {
        let s = &stored.value;
        AgentServiceJson {
            id: &s.id,
            service: &s.name,
            tags: &s.tags,
            meta: &s.meta,
            port: s.port,
            address: &s.address,
            tagged_addresses: tagged(s),
            weights: WeightsJson {
                passing: s.weights.passing,
                warning: s.weights.warning,
            },
            enable_tag_override: s.enable_tag_override,
            kind: &s.kind,
            proxy: (!s.proxy_destination.is_empty()).then_some(ProxyJson {
                destination_service_name: &s.proxy_destination,
            }),
            datacenter: None,
            content_hash: None,
            create_index: stored.create_index,
            modify_index: stored.modify_index,
        }
    }
}

fn tagged(s: &ServiceInstance) -> BTreeMap<&str, AddressJson<'_>> {
    s.tagged_addresses
        .iter()
        .map(|(tag, a)| {
            (
                tag.as_str(),
                AddressJson {
                    address: &a.address,
                    port: a.port,
                },
            )
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DefinitionJson<'a> {
    #[serde(rename = "HTTP")]
    pub http: &'a str,
    pub header: Option<&'a BTreeMap<String, Vec<String>>>,
    pub method: &'a str,
    pub body: &'a str,
    #[serde(rename = "TLSServerName")]
    pub tls_server_name: &'a str,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    #[serde(rename = "TCP")]
    pub tcp: &'a str,
    #[serde(rename = "GRPC")]
    pub grpc: &'a str,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    pub interval: String,
    pub timeout: String,
    pub deregister_critical_service_after: String,
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
}

/// Consul's `HealthCheck`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckJson<'a> {
    pub node: &'a str,
    #[serde(rename = "CheckID")]
    pub check_id: &'a str,
    pub name: &'a str,
    pub status: &'static str,
    pub notes: &'a str,
    pub output: &'a str,
    #[serde(rename = "ServiceID")]
    pub service_id: &'a str,
    pub service_name: &'a str,
    pub service_tags: &'a [String],
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub interval: String,
    pub timeout: String,
    pub exposed_port: u16,
    pub definition: DefinitionJson<'a>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl<'a> HealthCheckJson<'a> {
    /// `service` is the instance the check belongs to, if any.
    pub fn new(
        node: &'a NodeInfo,
        stored: &'a Stored<Check>,
        service: Option<&'a ServiceInstance>,
    ) -> Self {
        let c = &stored.value;
        let duration =
            |d: Option<std::time::Duration>| d.map(format_go_duration).unwrap_or_default();
        let (mut http, mut header, mut method, mut body, mut tls_skip_verify) =
            ("", None, "", "", false);
        let (mut tcp, mut grpc, mut grpc_use_tls) = ("", "", false);
        match &c.kind {
            CheckKind::Http {
                url,
                method: m,
                header: h,
                body: b,
                tls_skip_verify: t,
            } => {
                (http, header, method, body, tls_skip_verify) =
                    (url, Some(h).filter(|h| !h.is_empty()), m, b, *t);
            }
            CheckKind::Tcp { address } => tcp = address,
            CheckKind::Grpc { target, use_tls } => (grpc, grpc_use_tls) = (target, *use_tls),
            CheckKind::Ttl { .. } | CheckKind::Maintenance | CheckKind::External => {}
        }
        let probed = !matches!(
            c.kind,
            CheckKind::Ttl { .. } | CheckKind::Maintenance | CheckKind::External
        );
        let interval = if probed {
            // As it is used: raised to the minimum (`"Interval": 10` is 10 ns to Consul).
            duration(c.interval.map(|_| c.effective_interval()))
        } else {
            String::new()
        };
        let timeout = if probed {
            duration(c.timeout)
        } else {
            String::new()
        };
        HealthCheckJson {
            node: &node.name,
            check_id: &c.id,
            name: &c.name,
            status: c.status.as_str(),
            notes: &c.notes,
            output: &c.output,
            service_id: &c.service_id,
            service_name: service.map_or("", |s| &s.name),
            service_tags: service.map_or(&[], |s| &s.tags),
            kind: c.type_name(),
            definition: DefinitionJson {
                http,
                header,
                method,
                body,
                tls_server_name: "",
                tls_skip_verify,
                tcp,
                grpc,
                grpc_use_tls,
                interval: go_or_zero(&interval),
                timeout: go_or_zero(&timeout),
                deregister_critical_service_after: c
                    .deregister_critical_after
                    .map_or_else(|| "0s".to_owned(), format_go_duration),
                success_before_passing: c.thresholds.success_before_passing,
                failures_before_warning: c.thresholds.effective_failures_before_warning(),
                failures_before_critical: c.thresholds.failures_before_critical,
            },
            interval,
            timeout,
            exposed_port: 0,
            create_index: stored.create_index,
            modify_index: stored.modify_index,
        }
    }
}

fn go_or_zero(duration: &str) -> String {
    if duration.is_empty() {
        "0s".to_owned()
    } else {
        duration.to_owned()
    }
}

/// One entry of `/v1/health/service/<name>`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntryJson<'a> {
    pub node: NodeJson<'a>,
    pub service: AgentServiceJson<'a>,
    pub checks: Vec<HealthCheckJson<'a>>,
}

/// One entry of `/v1/catalog/service/<name>`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogServiceJson<'a> {
    #[serde(rename = "ID")]
    pub id: &'a str,
    pub node: &'a str,
    pub address: &'a str,
    pub datacenter: &'a str,
    pub tagged_addresses: BTreeMap<&'a str, &'a str>,
    pub node_meta: &'a BTreeMap<String, String>,
    pub service_kind: &'a str,
    #[serde(rename = "ServiceID")]
    pub service_id: &'a str,
    pub service_name: &'a str,
    pub service_tags: &'a [String],
    pub service_address: &'a str,
    #[serde(
        rename = "ServiceTaggedAddresses",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub service_tagged_addresses: BTreeMap<&'a str, AddressJson<'a>>,
    pub service_weights: WeightsJson,
    pub service_meta: &'a BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    pub service_proxy: serde_json::Value,
    pub service_connect: serde_json::Value,
    pub create_index: u64,
    pub modify_index: u64,
}

impl<'a> CatalogServiceJson<'a> {
    pub fn new(node: &'a NodeInfo, stored: &'a Stored<ServiceInstance>) -> Self {
        let s = &stored.value;
        let node_json = NodeJson::new(node);
        CatalogServiceJson {
            id: &node.id,
            node: &node.name,
            address: &node.address,
            datacenter: &node.datacenter,
            tagged_addresses: node_json.tagged_addresses,
            node_meta: &node.meta,
            service_kind: &s.kind,
            service_id: &s.id,
            service_name: &s.name,
            service_tags: &s.tags,
            service_address: &s.address,
            service_tagged_addresses: tagged(s),
            service_weights: WeightsJson {
                passing: s.weights.passing,
                warning: s.weights.warning,
            },
            service_meta: &s.meta,
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            service_proxy: serde_json::json!({}),
            service_connect: serde_json::json!({}),
            create_index: stored.create_index,
            modify_index: stored.modify_index,
        }
    }
}
