//! `PUT /v1/txn`: Consul's transactions over KV ([`crate::kv::plan`]): up to 64 operations,
//! all applied or none. A failed check answers 409 with each failing operation's index and
//! reason, and changes nothing; a body that does not decode is a 400 naming the operation.
//! Consul's `Node`, `Service`, `Check` and `Session` operations are refused with a 400
//! naming them (Wharf's transactions are KV only, for now).

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
use crate::kv::{Applied, MAX_VALUE, check_key, check_prefix};

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

/// Decodes the body into steps; the reason names the operation that does not decode.
pub fn decode(body: &[u8]) -> Result<Vec<Step>, ApiError> {
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
        .map(|(i, operation)| step(i, operation))
        .collect()
}

fn step(i: usize, operation: serde_json::Map<String, Value>) -> Result<Step, ApiError> {
    let bad = |reason: String| ApiError::bad_request(format!("operation {i}: {reason}"));
    let kinds = ["KV", "Node", "Service", "Check", "Session"];
    let mut operation = go_spelling(operation, &kinds);
    let Some(kv) = operation.remove("KV") else {
        let kind = operation.keys().next().cloned().unwrap_or_default();
        return Err(match kind.as_str() {
            "Node" | "Service" | "Check" | "Session" => bad(format!(
                "Wharf's transactions take KV operations only, not {kind} operations yet"
            )),
            "" => bad("an empty operation: expected {\"KV\": {...}}".into()),
            other => bad(format!("unknown operation type {other:?}")),
        });
    };
    if let Some(other) = operation.keys().next() {
        return Err(bad(format!("one type per operation: KV and {other}")));
    }
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

/// `PUT /v1/txn`.
pub(super) async fn apply(
    State(agent): State<Arc<Agent>>,
    access: Access,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let steps = decode(&body)?;
    for step in &steps {
        access.require(Scope::Key(&step.key), needs(step.verb))?;
    }
    let pretty = params.has("pretty");
    let answer = match agent.kv_apply(&steps).await? {
        Applied::Done { results, index } => {
            let results: Vec<Value> = results
                .iter()
                .map(|shown| json!({ "KV": super::kv::entry_json(shown) }))
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
        Applied::Failed(errors) => {
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
        assert!(reason(r#"[{"Node":{"Verb":"get"}}]"#).contains("not Node operations"));
        let many = format!(
            "[{}]",
            vec![r#"{"KV":{"Verb":"get","Key":"a"}}"#; 65].join(",")
        );
        assert!(reason(&many).contains("too many operations (65 > 64)"));
        let steps = decode(br#"[{"KV":{"Verb":"get-tree","Key":""}},{"KV":{"Verb":"cas","Key":"k","Value":"aGk=","Index":3,"Flags":7}}]"#).unwrap();
        assert_eq!(steps[1].value.as_deref(), Some(&b"hi"[..]));
        assert_eq!((steps[1].index, steps[1].flags), (3, 7));
    }
}
