//! `PUT /v1/txn`: Consul's transactions ([`crate::txn`]): up to 64 `KV`, `Node`, `Service`,
//! `Check` and `Session` operations, all applied or none. A failed check answers 409 with each
//! failing operation's index and reason, and changes nothing; a body that does not decode is
//! a 400 naming the operation. Catalog writes go to external nodes only (as
//! `/v1/catalog/register`); `Session` takes Consul's one verb, `delete`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Access;
use super::body::{RequestBody, go_fields, go_spelling};
use super::params::Params;
use super::{ApiError, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::kv::plan::{Step, Verb};
use crate::kv::{MAX_VALUE, check_key, check_prefix};
use crate::txn::{CatalogVerb, Operation, Shown, TxnApplied};

/// Most operations in one transaction, as Consul's `txn_max_req_len` default allows.
pub const MAX_OPERATIONS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvOperation {
    verb: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    session: String,
}

/// Decodes the body into operations; the reason names the operation that does not decode.
pub fn decode(body: &[u8]) -> Result<Vec<Operation>, ApiError> {
    let operations: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {MAX_OPERATIONS})",
                operations.len()
            ),
        ));
    }
    operations
        .into_iter()
        .enumerate()
        .map(|(i, operation)| decode_operation(i, operation))
        .collect()
}

const KINDS: [&str; 5] = ["KV", "Node", "Service", "Check", "Session"];

fn decode_operation(
    i: usize,
    operation: serde_json::Map<String, Value>,
) -> Result<Operation, ApiError> {
    let bad = |reason: String| ApiError::bad_request(format!("operation {i}: {reason}"));
    let operation = go_spelling(operation, &KINDS);
    let mut kinds = operation.into_iter();
    let (Some((kind, inner)), None) = (kinds.next(), kinds.next()) else {
        return Err(bad(
            "an operation is one object of one type: KV, Node, Service, Check or Session".into(),
        ));
    };
    match kind.as_str() {
        "KV" => step(i, inner).map(Operation::Kv),
        "Node" | "Service" | "Check" | "Session" => catalog_operation(&kind, inner).map_err(bad),
        other => Err(bad(format!("unknown operation type {other:?}"))),
    }
}

/// A `Node`, `Service`, `Check` or `Session` operation: `{"Verb": ..., "<Kind>": {...}}`
/// (and `"Node": NAME` beside a `Service`).
fn catalog_operation(kind: &str, inner: Value) -> Result<Operation, String> {
    let inner = go_fields(inner, &["Verb", "Node", "Service", "Check", "Session"]);
    let verb_name = inner
        .get("Verb")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = |name: &str| -> Result<&Value, String> {
        inner
            .get(name)
            .filter(|v| v.is_object())
            .ok_or_else(|| format!("{kind} operation without its {name} object"))
    };
    let decoded = |e: wharf_model::InvalidRegistration| e.0;
    if kind == "Session" {
        if verb_name != "delete" {
            return Err(format!(
                "unknown Session verb {verb_name:?}: Consul's only one is delete"
            ));
        }
        let session = go_fields(object("Session")?.clone(), &["ID"]);
        let id = session
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if id.is_empty() {
            return Err("Session operation without its session ID".into());
        }
        return Ok(Operation::SessionDelete { id: id.to_owned() });
    }
    let verb = CatalogVerb::parse(verb_name)
        .ok_or_else(|| format!("unknown {kind} verb {verb_name:?}"))?;
    Ok(match kind {
        "Node" => Operation::Node {
            verb,
            node: wharf_model::decode_txn_node(object("Node")?).map_err(decoded)?,
        },
        "Service" => {
            let node = inner
                .get("Node")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if node.is_empty() {
                return Err("Service operation without its Node".into());
            }
            let service = object("Service")?;
            let (service, index) = if verb == CatalogVerb::Set || verb == CatalogVerb::Cas {
                wharf_model::decode_txn_service(node, service).map_err(decoded)?
            } else {
                // Reads and deletions name the service by ID alone.
                let named = go_fields(service.clone(), &["ID", "Service", "ModifyIndex"]);
                let id = ["ID", "Service"]
                    .iter()
                    .find_map(|k| {
                        named
                            .get(*k)
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                    })
                    .ok_or("Service operation without its service ID")?;
                let index = named
                    .get("ModifyIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let service = wharf_model::ServiceInstance {
                    id: id.to_owned(),
                    name: id.to_owned(),
                    node: node.to_owned(),
                    ..Default::default()
                };
                (service, index)
            };
            Operation::Service {
                verb,
                service,
                index,
            }
        }
        _ => {
            let (check, index) =
                wharf_model::decode_txn_check(object("Check")?).map_err(decoded)?;
            Operation::Check { verb, check, index }
        }
    })
}

fn step(i: usize, kv: Value) -> Result<Step, ApiError> {
    let bad = |reason: String| ApiError::bad_request(format!("operation {i}: {reason}"));
    let fields = ["Verb", "Key", "Value", "Flags", "Index", "Session"];
    let kv: KvOperation = serde_json::from_value(go_fields(kv, &fields))
        .map_err(|e| bad(format!("Failed to parse body: {e}")))?;
    let verb =
        Verb::parse(&kv.verb).ok_or_else(|| bad(format!("unknown KV verb {:?}", kv.verb)))?;
    if verb.takes_prefix() {
        check_prefix(&kv.key).map_err(bad)?;
    } else {
        check_key(&kv.key).map_err(bad)?;
    }
    let value = kv
        .value
        .map(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| bad(format!("Value is not valid base64: {e}")))
        })
        .transpose()?;
    if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("operation {i}: the value is larger than {MAX_VALUE} bytes"),
        ));
    }
    Ok(Step {
        verb,
        key: kv.key,
        value,
        flags: kv.flags,
        index: kv.index,
        session: kv.session,
    })
}

fn needs(verb: Verb) -> Need {
    match verb {
        Verb::Get
        | Verb::GetTree
        | Verb::CheckIndex
        | Verb::CheckSession
        | Verb::CheckNotExists => Need::Read,
        _ => Need::Write,
    }
}

/// What operation `operation` needs of the token, and on what.
fn require(access: &Access, agent: &Agent, operation: &Operation) -> Result<(), ApiError> {
    let need = |writes: bool| if writes { Need::Write } else { Need::Read };
    match operation {
        Operation::Kv(step) => access.require(Scope::Key(&step.key), needs(step.verb)),
        Operation::Node { verb, node } => {
            access.require(Scope::Node(&node.node), need(verb.writes()))
        }
        Operation::Service { verb, service, .. } => {
            let name =
                if verb.writes() && !matches!(verb, CatalogVerb::Delete | CatalogVerb::DeleteCas) {
                    service.name.clone()
                } else {
                    // Reads and deletions name the instance; its service's name is the catalog's.
                    agent.catalog.read(|state| {
                        state
                            .instance(&service.node, &service.id)
                            .map_or_else(|| service.id.clone(), |i| i.value.name.clone())
                    })
                };
            access.require(Scope::Service(&name), need(verb.writes()))
        }
        Operation::Check { verb, check, .. } => {
            access.require(Scope::Node(&check.node), need(verb.writes()))
        }
        Operation::SessionDelete { id } => {
            let node = agent
                .catalog
                .read(|state| state.sessions.get(id).map(|s| s.value.node.clone()))
                .unwrap_or_default();
            access.require(Scope::Session(&node), Need::Write)
        }
    }
}

/// One operation's answer, in Consul's shape (`{"KV": ...}`, `{"Node": ...}`, ...).
fn result_json(agent: &Agent, shown: &Shown) -> Value {
    match shown {
        Shown::Kv(entry) => json!({ "KV": super::kv::entry_json(entry) }),
        Shown::Node(stored) => {
            let mut node = serde_json::to_value(super::shapes::NodeJson::new(&stored.value))
                .expect("a node serialises");
            node["CreateIndex"] = stored.create_index.into();
            node["ModifyIndex"] = stored.modify_index.into();
            json!({ "Node": node })
        }
        Shown::Service(stored) => {
            json!({ "Service": super::shapes::AgentServiceJson::new(stored) })
        }
        Shown::Check(stored) => agent.catalog.read(|state| {
            let node = state
                .nodes
                .get(&stored.value.node)
                .map_or_else(|| agent.node().clone(), |n| n.value.clone());
            let service = state
                .instance(&stored.value.node, &stored.value.service_id)
                .map(|i| i.value.clone());
            json!({ "Check": super::shapes::HealthCheckJson::new(&node, stored, service.as_ref()) })
        }),
    }
}

/// `PUT /v1/txn`.
pub(super) async fn apply(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let operations = decode(&body)?;
    for operation in &operations {
        require(&access, &agent, operation)?;
    }
    let pretty = params.has("pretty");
    let answer = match agent.txn_apply(&operations).await? {
        TxnApplied::Done { results, index } => {
            let results: Vec<Value> = results
                .iter()
                .map(|shown| result_json(&agent, shown))
                .collect();
            let results = (!results.is_empty()).then_some(results);
            let mut response = super::json(to_json(
                &json!({"Results": results, "Errors": null}),
                pretty,
            ));
            response
                .headers_mut()
                .insert("x-consul-index", http::HeaderValue::from(index.max(1)));
            response
        }
        TxnApplied::Failed(errors) => {
            let errors: Vec<Value> = errors
                .iter()
                .map(|(i, failure)| json!({"OpIndex": i, "What": failure.reason()}))
                .collect();
            let body = to_json(&json!({"Results": null, "Errors": errors}), pretty);
            let mut response = (StatusCode::CONFLICT, body).into_response();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    };
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_transactions_are_refused_with_the_operation_named() {
        let reason = |body: &str| format!("{:?}", decode(body.as_bytes()).unwrap_err());
        assert!(reason("{}").contains("Failed to parse body"));
        assert!(
            reason(r#"[{"KV":{"Verb":"set","Key":"a","Value":"@@@"}}]"#)
                .contains("operation 0: Value is not valid base64")
        );
        assert!(
            reason(r#"[{"KV":{"Verb":"set","Key":"a"}},{"KV":{"Verb":"fly","Key":"a"}}]"#)
                .contains("operation 1: unknown KV verb")
        );
        assert!(reason(r#"[{"KV":{"Verb":"set","Key":"a/../b"}}]"#).contains(".."));
        assert!(reason(r#"[{"Node":{"Verb":"get"}}]"#).contains("without its Node object"));
        assert!(
            reason(r#"[{"Node":{"Verb":"fly","Node":{"Node":"n"}}}]"#)
                .contains("unknown Node verb")
        );
        assert!(
            reason(r#"[{"Service":{"Verb":"set","Service":{"Service":"s"}}}]"#)
                .contains("without its Node")
        );
        assert!(
            reason(r#"[{"Check":{"Verb":"set","Check":{"CheckID":"c"}}}]"#)
                .contains("Must provide node")
        );
        assert!(
            reason(r#"[{"Session":{"Verb":"renew","Session":{"ID":"x"}}}]"#)
                .contains("only one is delete")
        );
        assert!(
            reason(r#"[{"KV":{"Verb":"get","Key":"a"},"Node":{}}]"#)
                .contains("one object of one type")
        );
        let many = format!(
            "[{}]",
            vec![r#"{"KV":{"Verb":"get","Key":"a"}}"#; 65].join(",")
        );
        assert!(reason(&many).contains("too many operations (65 > 64)"));
        let steps = decode(br#"[{"KV":{"Verb":"get-tree","Key":""}},{"KV":{"Verb":"cas","Key":"k","Value":"aGk=","Index":3,"Flags":7}}]"#).unwrap();
        let Operation::Kv(cas) = &steps[1] else {
            panic!("a KV step: {steps:?}");
        };
        assert_eq!(cas.value.as_deref(), Some(&b"hi"[..]));
        assert_eq!((cas.index, cas.flags), (3, 7));
        let catalog = decode(
            br#"[{"node":{"verb":"set","node":{"node":"db","address":"10.0.0.1"}}},
                 {"Service":{"Verb":"cas","Node":"db","Service":{"Service":"pg","Port":5432,"ModifyIndex":9}}},
                 {"Service":{"Verb":"delete","Node":"db","Service":{"ID":"pg"}}},
                 {"Check":{"Verb":"set","Check":{"Node":"db","Name":"up","Status":"passing"}}},
                 {"Session":{"Verb":"delete","Session":{"ID":"s1"}}}]"#,
        )
        .unwrap();
        assert!(
            matches!(&catalog[0], Operation::Node { verb: CatalogVerb::Set, node } if node.address == "10.0.0.1")
        );
        assert!(
            matches!(&catalog[1], Operation::Service { verb: CatalogVerb::Cas, service, index: 9 } if service.node == "db" && service.id == "pg")
        );
        assert!(
            matches!(&catalog[2], Operation::Service { verb: CatalogVerb::Delete, service, .. } if service.id == "pg")
        );
        assert!(
            matches!(&catalog[3], Operation::Check { check, .. } if check.id == "up" && check.node == "db")
        );
        assert!(matches!(&catalog[4], Operation::SessionDelete { id } if id == "s1"));
    }
}
