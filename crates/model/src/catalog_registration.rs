//! Decoding the bodies of `PUT /v1/catalog/register` and `/v1/catalog/deregister`: external
//! nodes and services, which no agent runs and no check probes (a database on a managed host,
//! a SaaS endpoint). Field names are matched as Consul matches them, case-insensitively and
//! with snake_case aliases (py-consul sends `Node`, `Address`, `Service`; the npm client
//! `node`, `address`, `service`), with the registration decoder's [`Fields`].

use std::collections::BTreeMap;

use crate::Status;
use crate::check::{Check, CheckKind};
use crate::registration::{
    Fields, InvalidRegistration, check_id_text, invalid, refuse_duplicate_ids, validate_meta,
};
use crate::service::ServiceInstance;

type Result<T> = std::result::Result<T, InvalidRegistration>;

/// A decoded catalog registration: a node, and optionally one of its services and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRegistration {
    pub node: String,
    /// The `Datacenter` named, if any (a registry answers for its own only).
    pub datacenter: Option<String>,
    /// The node's `ID`, when given (a UUID).
    pub node_id: Option<String>,
    pub address: String,
    pub node_meta: BTreeMap<String, String>,
    /// Leave an existing node's record as it is (`SkipNodeUpdate`).
    pub skip_node_update: bool,
    /// The service, its `node` set to the registration's node.
    pub service: Option<ServiceInstance>,
    /// `Check` and `Checks`, of kind [`CheckKind::External`], their `node` set.
    pub checks: Vec<Check>,
}

/// What a catalog deregistration removes: a check, a service (with its checks), or with
/// neither the whole node (with its services and checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogDeregistration {
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

pub fn decode_catalog_registration(body: &[u8]) -> Result<CatalogRegistration> {
    let fields = Fields::parse(body)?;
    let node = node_name(&fields)?;
    let address = fields.string("address")?.unwrap_or_default();
    check_id_text("node address", &address)?;
    let skip_node_update = fields.bool("skipnodeupdate")?;
    if address.is_empty() && !skip_node_update {
        return Err(invalid("Must provide address if SkipNodeUpdate is not set"));
    }
    let node_meta = node_meta(&fields, "nodemeta")?;
    let node_id = node_id(&fields)?;
    let service = match fields.get("service").filter(|s| !s.is_null()) {
        Some(service) => {
            let mut service = Fields::from_value(service, "Service")?.service("service")?;
            service.node = node.clone();
            Some(service)
        }
        None => None,
    };

    let definitions = fields.check_definitions()?;
    let mut checks = Vec::with_capacity(definitions.len());
    for definition in &definitions {
        checks.push(external_check(definition, &node)?);
    }
    refuse_duplicate_ids(&checks)?;
    Ok(CatalogRegistration {
        node,
        datacenter: fields.string("datacenter")?.filter(|dc| !dc.is_empty()),
        node_id,
        address,
        node_meta,
        skip_node_update,
        service,
        checks,
    })
}

pub fn decode_catalog_deregistration(body: &[u8]) -> Result<CatalogDeregistration> {
    let fields = Fields::parse(body)?;
    let non_empty = |key: &str| -> Result<Option<String>> {
        Ok(fields.string(key)?.filter(|value| !value.is_empty()))
    };
    Ok(CatalogDeregistration {
        node: node_name(&fields)?,
        service_id: non_empty("serviceid")?,
        check_id: non_empty("checkid")?,
    })
}

/// A node as a `/v1/txn` `Node` operation names it, with the `ModifyIndex` a `cas` compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnNode {
    pub node: String,
    pub node_id: Option<String>,
    pub address: String,
    pub meta: BTreeMap<String, String>,
    pub modify_index: u64,
}

/// The `Node` object of a `/v1/txn` node operation (`Node` required; the rest as
/// `/v1/catalog/register` takes them, `Meta` for `NodeMeta`).
pub fn decode_txn_node(value: &serde_json::Value) -> Result<TxnNode> {
    let fields = Fields::from_value(value, "Node")?;
    let node = node_name(&fields)?;
    let address = fields.string("address")?.unwrap_or_default();
    check_id_text("node address", &address)?;
    let meta = node_meta(&fields, "meta")?;
    let node_id = node_id(&fields)?;
    Ok(TxnNode {
        node,
        node_id,
        address,
        meta,
        modify_index: fields.u64("modifyindex")?,
    })
}

/// The `Service` object of a `/v1/txn` service operation on `node`, with its `ModifyIndex`.
pub fn decode_txn_service(node: &str, value: &serde_json::Value) -> Result<(ServiceInstance, u64)> {
    let fields = Fields::from_value(value, "Service")?;
    let mut service = fields.service("service")?;
    service.node = node.to_owned();
    Ok((service, fields.u64("modifyindex")?))
}

/// The `Check` object of a `/v1/txn` check operation (its `Node` required), with its
/// `ModifyIndex`.
pub fn decode_txn_check(value: &serde_json::Value) -> Result<(Check, u64)> {
    let fields = Fields::from_value(value, "Check")?;
    let node = node_name(&fields)?;
    Ok((external_check(&fields, &node)?, fields.u64("modifyindex")?))
}

/// A node's meta under `key`, checked as a service's is.
fn node_meta(fields: &Fields, key: &str) -> Result<BTreeMap<String, String>> {
    let meta = fields.string_map(key)?;
    validate_meta(&meta).map_err(|e| invalid(e.0.replace("Service Meta", "Node Meta")))?;
    Ok(meta)
}

/// A node's `ID`, if given: a UUID, as Consul requires.
fn node_id(fields: &Fields) -> Result<Option<String>> {
    let id = fields.string("id")?.filter(|id| !id.is_empty());
    if let Some(id) = &id
        && !is_uuid(id)
    {
        return Err(invalid(format!("Invalid node ID {id:?}: must be a UUID")));
    }
    Ok(id)
}

/// `Node`, required, with Consul's reason when it is missing.
fn node_name(fields: &Fields) -> Result<String> {
    let node = fields.string("node")?.unwrap_or_default();
    if node.is_empty() {
        return Err(invalid("Must provide node"));
    }
    check_id_text("node name", &node)?;
    if node.contains('/') {
        return Err(invalid(format!("Invalid node name {node:?}: contains '/'")));
    }
    Ok(node)
}

/// A check as the catalog takes it: `CheckID` defaulting to `Name`, `Status` to critical,
/// `Output` and `Notes` as given; a `Definition` (what Consul ESM probes) is kept by nothing.
fn external_check(fields: &Fields, node: &str) -> Result<Check> {
    let name = fields.string("name")?.unwrap_or_default();
    let id = fields
        .string("checkid")?
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    if id.is_empty() {
        return Err(invalid("Invalid check: CheckID or Name is required"));
    }
    check_id_text("check ID", &id)?;
    check_id_text("check name", &name)?;
    let status = match fields.string("status")?.filter(|s| !s.is_empty()) {
        None => Status::Critical,
        Some(s) => Status::parse(&s)
            .ok_or_else(|| invalid(format!("Invalid check: invalid status {s:?}")))?,
    };
    if let Some(other) = fields
        .string("node")?
        .filter(|n| !n.is_empty() && n != node)
    {
        return Err(invalid(format!(
            "Invalid check: its Node {other:?} is not the registration's node {node:?}"
        )));
    }
    Ok(Check {
        id,
        name,
        service_id: fields.string("serviceid")?.unwrap_or_default(),
        notes: fields.string("notes")?.unwrap_or_default(),
        kind: CheckKind::External,
        interval: None,
        timeout: None,
        deregister_critical_after: None,
        thresholds: Default::default(),
        status,
        output: crate::check::truncate_output(&fields.string("output")?.unwrap_or_default()),
        critical_since_ms: None,
        node: node.to_owned(),
    })
}

/// Whether `id` is a UUID in its 8-4-4-4-12 hex form, as Consul requires of node ids.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_py_consul_and_npm_spellings() {
        let py =
            br#"{"Node": "db-host", "Address": "10.0.0.5", "NodeMeta": {"external-node": "true"},
            "Service": {"Service": "postgres", "Port": 5432, "Tags": ["primary"]},
            "Check": {"Name": "pg alive", "Status": "passing", "ServiceID": "postgres"}}"#;
        let npm =
            br#"{"node": "db-host", "address": "10.0.0.5", "nodemeta": {"external-node": "true"},
            "service": {"service": "postgres", "port": 5432, "tags": ["primary"]},
            "check": {"name": "pg alive", "status": "passing", "serviceid": "postgres"}}"#;
        let (py, npm) = (
            decode_catalog_registration(py).unwrap(),
            decode_catalog_registration(npm).unwrap(),
        );
        assert_eq!(py, npm);
        let service = py.service.unwrap();
        assert_eq!(
            (service.id.as_str(), service.name.as_str()),
            ("postgres", "postgres")
        );
        assert_eq!((service.node.as_str(), service.port), ("db-host", 5432));
        assert_eq!(py.node_meta["external-node"], "true");
        let check = &py.checks[0];
        assert_eq!(
            (check.id.as_str(), check.status),
            ("pg alive", Status::Passing)
        );
        assert_eq!(
            (check.kind.type_name(), check.node.as_str()),
            ("", "db-host")
        );
    }

    #[test]
    fn a_check_without_status_is_critical() {
        let body =
            br#"{"Node": "n", "Address": "a", "Checks": [{"CheckID": "c1"}, {"Name": "c2"}]}"#;
        let registration = decode_catalog_registration(body).unwrap();
        let ids: Vec<_> = registration
            .checks
            .iter()
            .map(|c| (c.id.as_str(), c.status))
            .collect();
        assert_eq!(ids, [("c1", Status::Critical), ("c2", Status::Critical)]);
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason() {
        for (body, reason) in [
            (&br#"{"Address": "a"}"#[..], "Must provide node"),
            (br#"{"Node": "a/b", "Address": "a"}"#, "contains '/'"),
            (br#"{"Node": "n"}"#, "Must provide address"),
            (br#"{"Node": "n", "Address": "a", "ID": "nope"}"#, "must be a UUID"),
            (br#"{"Node": "n", "SkipNodeUpdate": true, "Service": {"Port": 1}}"#, "Missing service name"),
            (br#"{"Node": "n", "SkipNodeUpdate": true, "Check": {"Status": "passing"}}"#, "CheckID or Name"),
            (br#"{"Node": "n", "SkipNodeUpdate": true, "Check": {"Name": "c", "Status": "bad"}}"#, "invalid status"),
            (br#"{"Node": "n", "SkipNodeUpdate": true, "Check": {"Name": "c", "Node": "m"}}"#, "not the registration's node"),
            (br#"{"Node": "n", "SkipNodeUpdate": true, "Checks": [{"Name": "c"}, {"CheckID": "c"}]}"#, "duplicate check ID"),
            (br#"{"Node": "n", "Address": "a", "NodeMeta": {"consul-x": "1"}}"#, "Node Meta"),
            (br#"["Node"]"#, "expected a JSON object"),
        ] {
            let error = decode_catalog_registration(body).unwrap_err();
            assert!(error.0.contains(reason), "{}: {error}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            decode_catalog_deregistration(br#"{"Datacenter": "dc1"}"#)
                .unwrap_err()
                .0,
            "Must provide node"
        );
    }

    #[test]
    fn deregistration_names_what_goes() {
        let d = decode_catalog_deregistration(br#"{"node": "n", "ServiceID": "s", "CheckID": ""}"#)
            .unwrap();
        assert_eq!(
            d,
            CatalogDeregistration {
                node: "n".into(),
                service_id: Some("s".into()),
                check_id: None
            }
        );
    }
}
