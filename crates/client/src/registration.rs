//! A typed instance registration, as `PUT /v1/agent/service/register` takes it (Consul's
//! field names), so that callers build a struct the compiler checks instead of JSON by hand.

use std::collections::BTreeMap;

use serde::Serialize;

/// An instance to register.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    pub name: String,
    /// Defaults to the name on the registry's side.
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Relative weights for balancers that use them (Consul's `Weights`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<crate::Weights>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckRegistration>,
    /// Consul's service kind: `connect-proxy` for a sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For a `connect-proxy`: what it fronts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRegistration>,
}

/// A Connect proxy's `Proxy` block.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyRegistration {
    pub destination_service_name: String,
    #[serde(
        rename = "DestinationServiceID",
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_service_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_service_port: Option<u16>,
}

/// The instance's check: one of `http`, `tcp`, `ttl`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRegistration {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// A Consul duration (`10s`); not with a TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// The status before the first result (Consul's default: critical).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_consuls_field_names_and_nothing_unset() {
        let registration = Registration {
            name: "web".into(),
            id: Some("web-1".into()),
            address: Some("127.0.0.1".into()),
            port: Some(8080),
            meta: [("wharf-pid".to_owned(), "42".to_owned())].into(),
            check: Some(CheckRegistration {
                http: Some("http://127.0.0.1:8080/health".into()),
                interval: Some("1s".into()),
                ..CheckRegistration::default()
            }),
            ..Registration::default()
        };
        assert_eq!(
            serde_json::to_value(&registration).unwrap(),
            serde_json::json!({
                "Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 8080,
                "Meta": {"wharf-pid": "42"},
                "Check": {"HTTP": "http://127.0.0.1:8080/health", "Interval": "1s"},
            })
        );
    }
}
