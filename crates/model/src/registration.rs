//! Decoding the bodies of `PUT /v1/agent/service/register` and `/v1/agent/check/register`.
//!
//! Consul's decoder matches field names case-insensitively and accepts snake_case aliases, and
//! real clients rely on both: py-consul sends `name`, `id`, `checks`, `tagged_addresses` with no
//! Content-Type, npm `consul` sends `Name`, `ID`, `Check`. A derived serde struct can do one
//! spelling, not both, so keys are first normalised (lower case, underscores removed) outside
//! user-owned maps (`Meta`, `Header`, the keys of `TaggedAddresses`), and the fields are then
//! read by hand, which also lets every type error name the field at fault.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::Status;
use crate::check::{Check, CheckKind};
use crate::duration::parse_go_duration;
use crate::service::{ServiceInstance, TaggedAddress, Weights};

/// Why a registration body was refused; the message is Consul's one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRegistration(pub String);

type Result<T> = std::result::Result<T, InvalidRegistration>;

pub(crate) fn invalid(reason: impl Into<String>) -> InvalidRegistration {
    InvalidRegistration(reason.into())
}

/// Longest service name, id, tag or check id accepted (Consul's DNS-friendly limit is far
/// smaller for names, but ids are free-form).
pub const MAX_ID_LEN: usize = 256;
const MAX_META_KEYS: usize = 64;
const MAX_META_KEY_LEN: usize = 128;
const MAX_META_VALUE_LEN: usize = 512;

/// A decoded service registration: the instance and its checks, with ids and defaults filled
/// in as Consul fills them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistration {
    pub service: ServiceInstance,
    pub checks: Vec<Check>,
}

/// Decodes a service registration body in either key style.
pub fn decode_service_registration(body: &[u8]) -> Result<ServiceRegistration> {
    let fields = Fields::parse(body)?;
    let service = fields.service("name")?;

    let definitions = fields.check_definitions()?;
    let numbered = definitions.len() > 1;
    let mut checks = Vec::with_capacity(definitions.len());
    for (position, definition) in definitions.iter().enumerate() {
        let default_id = if numbered {
            format!("service:{}:{}", service.id, position + 1)
        } else {
            format!("service:{}", service.id)
        };
        let mut check = definition.check(&default_id, "checkid")?;
        if check.name.is_empty() {
            check.name = format!("Service '{}' check", service.name);
        }
        check.service_id = service.id.clone();
        checks.push(check);
    }
    refuse_duplicate_ids(&checks)?;
    Ok(ServiceRegistration { service, checks })
}

/// Decodes a standalone check registration (`/v1/agent/check/register`): `Name` is required,
/// `ID` defaults to it, `ServiceID` (optional) ties the check to an instance.
pub fn decode_check_registration(body: &[u8]) -> Result<Check> {
    let fields = Fields::parse(body)?;
    let name = fields.string("name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("Missing check name"));
    }
    let mut check = fields.check(&name, "id")?;
    if check.id.is_empty() {
        check.id = name;
    }
    check.service_id = fields.string("serviceid")?.unwrap_or_default();
    Ok(check)
}

/// Refuses two checks with one id in a registration.
pub(crate) fn refuse_duplicate_ids(checks: &[Check]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for check in checks {
        if !seen.insert(check.id.as_str()) {
            return Err(invalid(format!(
                "Invalid check: duplicate check ID {:?}",
                check.id
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_id_text(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "Invalid {what}: longer than {MAX_ID_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "Invalid {what}: contains control characters"
        )));
    }
    Ok(())
}

pub(crate) fn validate_meta(meta: &BTreeMap<String, String>) -> Result<()> {
    if meta.len() > MAX_META_KEYS {
        return Err(invalid(format!(
            "Invalid Service Meta: Node metadata cannot contain more than {MAX_META_KEYS} key/value pairs"
        )));
    }
    for (key, value) in meta {
        if key.is_empty()
            || key.len() > MAX_META_KEY_LEN
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(format!(
                "Invalid Service Meta: Key {key:?} is invalid"
            )));
        }
        if key.starts_with("consul-") {
            return Err(invalid(format!(
                "Invalid Service Meta: Key prefix 'consul-' is reserved for internal use ({key:?})"
            )));
        }
        if value.len() > MAX_META_VALUE_LEN {
            return Err(invalid(format!(
                "Invalid Service Meta: Value for key {key:?} is too long (limit: {MAX_META_VALUE_LEN} characters)"
            )));
        }
    }
    Ok(())
}

// === impl Fields ===

/// A JSON object whose keys have been normalised; getters check types and name the field.
pub(crate) struct Fields {
    map: Map<String, Value>,
    context: &'static str,
}

impl Fields {
    /// Reads a service definition whose name is under `name_key` (`Name` for the agent,
    /// `Service` in a catalog registration); the id defaults to the name.
    pub(crate) fn service(&self, name_key: &str) -> Result<ServiceInstance> {
        let fields = self;
        let name = fields.string(name_key)?.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid("Missing service name"));
        }
        check_id_text("service name", &name)?;
        let id = fields
            .string("id")?
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| name.clone());
        check_id_text("service ID", &id)?;
        let tags = fields.string_list("tags")?;
        for tag in &tags {
            check_id_text("tag", tag)?;
        }
        let meta = fields.string_map("meta")?;
        validate_meta(&meta)?;
        let service = ServiceInstance {
            tags,
            address: fields.string("address")?.unwrap_or_default(),
            port: fields.port("port")?,
            meta,
            tagged_addresses: fields.tagged_addresses()?,
            weights: fields.weights()?,
            enable_tag_override: fields.bool("enabletagoverride")?,
            kind: fields.string("kind")?.unwrap_or_default(),
            proxy_destination: match fields.get("proxy").filter(|p| !p.is_null()) {
                Some(proxy) => Fields::from_value(proxy, "Proxy")?
                    .string("destinationservicename")?
                    .unwrap_or_default(),
                None => String::new(),
            },
            // Set by the registry node the registration goes through.
            node: String::new(),
            id,
            name,
        };
        if service.kind == "connect-proxy" && service.proxy_destination.is_empty() {
            return Err(invalid(
                "Proxy.DestinationServiceName must be set for a connect-proxy",
            ));
        }
        Ok(service)
    }

    /// The definitions under `Check` and `Checks`, in that order.
    pub(crate) fn check_definitions(&self) -> Result<Vec<Fields>> {
        let mut definitions = Vec::new();
        if let Some(check) = self.get("check").filter(|c| !c.is_null()) {
            definitions.push(Fields::from_value(check, "Check")?);
        }
        match self.get("checks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    definitions.push(Fields::from_value(item, "Checks")?);
                }
            }
            Some(_) => return Err(invalid("Request decode failed: Checks: expected an array")),
        }
        Ok(definitions)
    }

    pub(crate) fn parse(body: &[u8]) -> Result<Fields> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("Request decode failed: {e}")))?;
        Fields::from_value(&value, "body")
    }

    pub(crate) fn from_value(value: &Value, context: &'static str) -> Result<Fields> {
        match normalize(value) {
            Value::Object(map) => Ok(Fields { map, context }),
            _ => Err(invalid(format!(
                "Request decode failed: {context}: expected a JSON object"
            ))),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    fn type_error(&self, key: &str, expected: &str) -> InvalidRegistration {
        invalid(format!(
            "Request decode failed: {}.{key}: expected {expected}",
            self.context
        ))
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.type_error(key, "a string")),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.type_error(key, "a boolean")),
        }
    }

    fn port(&self, key: &str) -> Result<u16> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) if n.is_f64() => {
                Err(invalid(format!("Invalid port {n}: must be an integer")))
            }
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid(format!("Invalid port {n}: must be within 0-65535"))),
            Some(_) => Err(self.type_error(key, "an integer")),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| self.type_error(key, "a non-negative integer")),
            Some(_) => Err(self.type_error(key, "an integer")),
        }
    }

    fn u32(&self, key: &str, default: u32) -> Result<u32> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| self.type_error(key, "a non-negative integer")),
            Some(_) => Err(self.type_error(key, "an integer")),
        }
    }

    fn string_list(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.type_error(key, "an array of strings")),
                })
                .collect(),
            Some(_) => Err(self.type_error(key, "an array of strings")),
        }
    }

    pub(crate) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(self.type_error(key, "an object of strings")),
                })
                .collect(),
            Some(_) => Err(self.type_error(key, "an object of strings")),
        }
    }

    fn header(&self) -> Result<BTreeMap<String, Vec<String>>> {
        match self.get("header") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => {
                let mut header = BTreeMap::new();
                for (name, values) in map {
                    let values = match values {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => items
                            .iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| {
                                self.type_error("Header", "an object of string arrays")
                            })?,
                        _ => return Err(self.type_error("Header", "an object of string arrays")),
                    };
                    header.insert(name.clone(), values);
                }
                Ok(header)
            }
            Some(_) => Err(self.type_error("Header", "an object of string arrays")),
        }
    }

    fn tagged_addresses(&self) -> Result<BTreeMap<String, TaggedAddress>> {
        let mut out = BTreeMap::new();
        match self.get("taggedaddresses") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (tag, value) in map {
                    let entry = Fields::from_value(value, "TaggedAddresses")?;
                    let address = entry.string("address")?.unwrap_or_default();
                    out.insert(
                        tag.clone(),
                        TaggedAddress {
                            address,
                            port: entry.port("port")?,
                        },
                    );
                }
            }
            Some(_) => return Err(self.type_error("TaggedAddresses", "an object")),
        }
        Ok(out)
    }

    fn weights(&self) -> Result<Weights> {
        match self.get("weights") {
            None | Some(Value::Null) => Ok(Weights::default()),
            Some(value) => {
                let w = Fields::from_value(value, "Weights")?;
                let passing = w.u32("passing", 1)?;
                if passing == 0 {
                    return Err(invalid("Passing must be greater than 0"));
                }
                Ok(Weights {
                    passing,
                    warning: w.u32("warning", 1)?,
                })
            }
        }
    }

    /// A Go duration string, or a number of nanoseconds (Consul's decoder takes both).
    fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => parse_go_duration(s).map(Some).map_err(|e| {
                invalid(format!(
                    "Request decode failed: {}.{key}: {e}",
                    self.context
                ))
            }),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|nanos| Some(Duration::from_nanos(nanos)))
                .or_else(|| n.as_i64().map(|_| Some(Duration::ZERO)))
                .ok_or_else(|| self.type_error(key, "a duration")),
            Some(_) => Err(self.type_error(key, "a duration string")),
        }
    }

    /// Reads a check definition. `id_key` is `checkid` inside a service and `id` standalone.
    pub(crate) fn check(&self, default_id: &str, id_key: &str) -> Result<Check> {
        let id = self
            .string(id_key)?
            .or(self.string("checkid")?)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| default_id.to_owned());
        check_id_text("check ID", &id)?;
        let interval = self.duration("interval")?;
        let kind = self.check_kind(interval)?;
        let status = match self.string("status")? {
            None => Status::Critical,
            Some(s) if s.is_empty() => Status::Critical,
            Some(s) => Status::parse(&s)
                .ok_or_else(|| invalid(format!("Invalid check: invalid status {s:?}")))?,
        };
        let mut deregister_critical_after = self.duration("deregistercriticalserviceafter")?;
        if deregister_critical_after == Some(Duration::ZERO) {
            deregister_critical_after = None;
        }
        let thresholds = crate::Thresholds {
            success_before_passing: self.u32("successbeforepassing", 0)?,
            failures_before_warning: self.u32("failuresbeforewarning", 0)?,
            failures_before_critical: self.u32("failuresbeforecritical", 0)?,
        };
        if thresholds.failures_before_warning > thresholds.failures_before_critical
            && thresholds.failures_before_critical > 0
        {
            return Err(invalid(
                "Invalid check: FailuresBeforeWarning can't be higher than FailuresBeforeCritical",
            ));
        }
        Ok(Check {
            id,
            name: self.string("name")?.unwrap_or_default(),
            service_id: String::new(),
            notes: self.string("notes")?.unwrap_or_default(),
            kind,
            interval,
            timeout: self.duration("timeout")?,
            deregister_critical_after,
            thresholds,
            status,
            output: String::new(),
            critical_since_ms: None,
            node: String::new(),
        })
    }

    fn check_kind(&self, interval: Option<Duration>) -> Result<CheckKind> {
        let needs_interval = |kind: &str| -> Result<()> {
            match interval {
                Some(i) if !i.is_zero() => Ok(()),
                _ => Err(invalid(format!(
                    "Invalid check: Interval must be > 0 for {kind} checks"
                ))),
            }
        };
        let unsupported = [
            "args",
            "scriptargs",
            "script",
            "dockercontainerid",
            "h2ping",
            "udp",
        ];
        if let Some(key) = unsupported
            .iter()
            .find(|k| self.get(k).is_some_and(|v| !v.is_null()))
        {
            return Err(invalid(format!(
                "Invalid check: {key} checks are not supported by Wharf; use HTTP, TCP, gRPC or TTL"
            )));
        }
        if let Some(alias) = ["aliasservice", "aliasnode"]
            .iter()
            .find(|k| self.get(k).is_some())
        {
            return Err(invalid(format!(
                "Invalid check: {alias} checks are not supported by Wharf"
            )));
        }
        if let Some(ttl) = self.duration("ttl")? {
            if interval.is_some_and(|i| !i.is_zero()) {
                return Err(invalid("Interval and TTL cannot both be specified"));
            }
            if ttl.is_zero() {
                return Err(invalid("Invalid check: TTL must be > 0 for TTL checks"));
            }
            return Ok(CheckKind::Ttl { ttl });
        }
        if let Some(url) = self.string("http")?.filter(|u| !u.is_empty()) {
            needs_interval("HTTP")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "Invalid check: HTTP URL {url:?} must start with http:// or https://"
                )));
            }
            return Ok(CheckKind::Http {
                url,
                method: self.string("method")?.unwrap_or_default(),
                header: self.header()?,
                body: self.string("body")?.unwrap_or_default(),
                tls_skip_verify: self.bool("tlsskipverify")?,
            });
        }
        if let Some(address) = self.string("tcp")?.filter(|a| !a.is_empty()) {
            needs_interval("TCP")?;
            return Ok(CheckKind::Tcp { address });
        }
        if let Some(target) = self.string("grpc")?.filter(|t| !t.is_empty()) {
            needs_interval("gRPC")?;
            return Ok(CheckKind::Grpc {
                target,
                use_tls: self.bool("grpcusetls")?,
            });
        }
        Err(invalid(
            "Invalid check: must define one of TTL, HTTP, TCP or GRPC",
        ))
    }
}

/// Keys compared as Consul compares them: lower case, underscores removed.
fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Normalises object keys recursively, leaving user-owned maps as they are.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, inner) in map {
                let key = normalize_key(key);
                let inner = match key.as_str() {
                    "meta" | "nodemeta" | "header" | "proxy" | "connect" => inner.clone(),
                    "taggedaddresses" => match inner {
                        Value::Object(tags) => Value::Object(
                            tags.iter()
                                .map(|(tag, v)| (tag.clone(), normalize(v)))
                                .collect(),
                        ),
                        other => other.clone(),
                    },
                    _ => normalize(inner),
                };
                out.insert(key, inner);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_py_consul_style() {
        let body = br#"{"name": "web", "id": "web-1", "address": "127.0.0.1", "port": 8080,
            "tags": ["a", "b"], "meta": {"Version": "1"},
            "checks": [{"http": "http://127.0.0.1:8080/health", "interval": "10s",
                        "timeout": "1s", "DeregisterCriticalServiceAfter": "1m"}]}"#;
        let reg = decode_service_registration(body).unwrap();
        assert_eq!(reg.service.id, "web-1");
        assert_eq!(reg.service.name, "web");
        assert_eq!(reg.service.port, 8080);
        assert_eq!(
            reg.service.meta.get("Version").map(String::as_str),
            Some("1")
        );
        assert_eq!(reg.checks.len(), 1);
        let check = &reg.checks[0];
        assert_eq!(check.id, "service:web-1");
        assert_eq!(check.name, "Service 'web' check");
        assert_eq!(check.service_id, "web-1");
        assert_eq!(check.status, Status::Critical);
        assert_eq!(check.interval, Some(Duration::from_secs(10)));
        assert_eq!(check.timeout, Some(Duration::from_secs(1)));
        assert_eq!(
            check.deregister_critical_after,
            Some(Duration::from_secs(60))
        );
        assert!(matches!(check.kind, CheckKind::Http { ref url, .. } if url.ends_with("/health")));
    }

    #[test]
    fn decodes_npm_style_with_numbered_checks() {
        let body = br#"{"Name": "api", "ID": "api-1", "Port": 9000,
            "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 9000}},
            "Weights": {"Passing": 3, "Warning": 1},
            "Checks": [{"TTL": "15s", "Status": "passing"}, {"TCP": "127.0.0.1:9000", "Interval": "5s"}]}"#;
        let reg = decode_service_registration(body).unwrap();
        assert_eq!(
            reg.service.weights,
            Weights {
                passing: 3,
                warning: 1
            }
        );
        assert_eq!(reg.service.tagged_addresses["lan"].address, "10.0.0.1");
        assert_eq!(reg.checks[0].id, "service:api-1:1");
        assert_eq!(reg.checks[0].status, Status::Passing);
        assert_eq!(reg.checks[1].id, "service:api-1:2");
        assert_eq!(
            reg.checks[1].kind,
            CheckKind::Tcp {
                address: "127.0.0.1:9000".into()
            }
        );
    }

    #[test]
    fn id_defaults_to_name_and_meta_keys_keep_their_case() {
        let reg = decode_service_registration(br#"{"Name":"db","Meta":{"Some_Key":"v"}}"#).unwrap();
        assert_eq!(reg.service.id, "db");
        assert!(reg.service.meta.contains_key("Some_Key"));
        assert!(reg.checks.is_empty());
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason() {
        let cases: [(&[u8], &str); 14] = [
            (b"{", "Request decode failed"),
            (b"[]", "expected a JSON object"),
            (b"{}", "Missing service name"),
            (br#"{"Name": ""}"#, "Missing service name"),
            (br#"{"Name": 5}"#, "expected a string"),
            (br#"{"Name": "a", "Port": 70000}"#, "Invalid port"),
            (br#"{"Name": "a", "Port": 80.5}"#, "must be an integer"),
            (br#"{"Name": "a", "Check": {"TTL": "10s", "Interval": "10s"}}"#, "Interval and TTL cannot both be specified"),
            (br#"{"Name": "a", "Check": {"HTTP": "http://x/", "Interval": "soon"}}"#, "invalid duration"),
            (br#"{"Name": "a", "Check": {"HTTP": "http://x/"}}"#, "Interval must be > 0"),
            (br#"{"Name": "a", "Check": {"Interval": "1s"}}"#, "must define one of"),
            (br#"{"Name": "a", "Check": {"Args": ["true"], "Interval": "1s"}}"#, "not supported"),
            (br#"{"Name": "a", "Meta": {"consul-x": "1"}}"#, "reserved"),
            (br#"{"Name": "a", "Checks": [{"TTL":"1s","CheckID":"x"},{"TTL":"1s","CheckID":"x"}]}"#, "duplicate"),
        ];
        for (body, reason) in cases {
            let err = decode_service_registration(body).unwrap_err();
            assert!(
                err.0.contains(reason),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn standalone_check_id_defaults_to_name() {
        let check = decode_check_registration(br#"{"Name":"mem","TTL":"30s","ServiceID":"web-1"}"#)
            .unwrap();
        assert_eq!(check.id, "mem");
        assert_eq!(check.service_id, "web-1");
        assert_eq!(
            decode_check_registration(br#"{"TTL":"30s"}"#)
                .unwrap_err()
                .0,
            "Missing check name"
        );
    }
}
