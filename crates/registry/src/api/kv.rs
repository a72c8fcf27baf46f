//! `/v1/kv/<key>`: Consul's KV store over HTTP ([`crate::kv`]).
//!
//! Reads answer from the catalog, blocking on the key (or, with `?recurse` and `?keys`, on
//! the prefix), a 404 carrying the index as Consul's does. Writes answer `true` or `false`:
//! `false` when `?cas` is stale or `?acquire` finds the lock held (or in its lock delay),
//! never an error. ACLs: `key:read` to read (entries the token may not read are left out of
//! a listing), `key:write` to write, on the key or, for a `recurse` delete, the prefix.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::access::Access;
use super::blocking::hold;
use super::body::RequestBody;
use super::params::Params;
use super::{ApiError, json_with_index, to_json};
use crate::Agent;
use crate::acl::{Need, Scope};
use crate::catalog::Resource;
use crate::kv::plan::{Failure, ShownEntry, Step, Verb};
use crate::kv::{Applied, MAX_VALUE, check_key, check_prefix};

type Shared = State<Arc<Agent>>;
type Answer = Result<Response, ApiError>;

/// An entry in Consul's shape.
pub(super) fn entry_json(shown: &ShownEntry) -> Value {
    use base64::Engine;
    let mut object = json!({
        "LockIndex": shown.entry.lock_index,
        "Key": shown.key,
        "Flags": shown.entry.flags,
        "Value": shown.entry.value.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
        "CreateIndex": shown.create_index,
        "ModifyIndex": shown.modify_index,
    });
    if !shown.entry.session.is_empty() {
        object["Session"] = json!(shown.entry.session);
    }
    object
}

pub(super) async fn get_root(agent: Shared, access: Access, query: RawQuery) -> Answer {
    get(agent, access, Path(String::new()), query).await
}

pub(super) async fn put_root() -> Answer {
    Err(ApiError::bad_request("Missing key name"))
}

pub(super) async fn delete_root(agent: Shared, access: Access, query: RawQuery) -> Answer {
    delete(agent, access, Path(String::new()), query).await
}

/// `GET /v1/kv/<key>` (`?recurse`, `?keys` with `?separator`, `?raw`).
pub(super) async fn get(
    State(agent): Shared,
    access: Access,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let authorizer = access.authorizer()?;
    let listing = params.has("recurse") || params.has("keys");
    if listing {
        check_prefix(&key).map_err(ApiError::bad_request)?;
    } else {
        check_key(&key).map_err(ApiError::bad_request)?;
        access.require(Scope::Key(&key), Need::Read)?;
    }
    let resource = if listing {
        Resource::KvPrefix(key.clone())
    } else {
        Resource::Kv(key.clone())
    };
    hold(&agent, &params, &resource).await?;
    let readable = |k: &str| authorizer.allows(Scope::Key(k), Need::Read);
    let (entries, index) = agent.catalog.read(|state| {
        let entries: Vec<ShownEntry> = if listing {
            state
                .kv
                .under(&key)
                .filter(|(k, _)| readable(k))
                .map(|(k, stored)| ShownEntry::of(k, stored))
                .collect()
        } else {
            state
                .kv
                .entries
                .get(&key)
                .map(|stored| ShownEntry::of(&key, stored))
                .into_iter()
                .collect()
        };
        (entries, state.index(&resource))
    });
    if entries.is_empty() {
        let mut response = StatusCode::NOT_FOUND.into_response();
        response
            .headers_mut()
            .insert("x-consul-index", HeaderValue::from(index.max(1)));
        return Ok(response);
    }
    if params.has("keys") {
        let separator = params.get("separator").unwrap_or("");
        let keys = listed_keys(&key, separator, entries.iter().map(|e| e.key.as_str()));
        return Ok(json_with_index(to_json(&keys, params.has("pretty")), index));
    }
    if params.has("raw") && !listing {
        let value = entries[0].entry.value.clone().unwrap_or_default();
        let mut response = (StatusCode::OK, value).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
        return Ok(response);
    }
    let shown: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok(json_with_index(
        to_json(&shown, params.has("pretty")),
        index,
    ))
}

/// `?keys`: the keys under `prefix`, each cut after the first `separator` past the prefix
/// (so a folder is listed once), as Consul lists them.
fn listed_keys<'k>(
    prefix: &str,
    separator: &str,
    keys: impl Iterator<Item = &'k str>,
) -> Vec<String> {
    let mut listed: Vec<String> = Vec::new();
    for key in keys {
        let cut = match separator {
            "" => key,
            separator => match key[prefix.len()..].find(separator) {
                Some(at) => &key[..prefix.len() + at + separator.len()],
                None => key,
            },
        };
        if listed.last().map(String::as_str) != Some(cut) {
            listed.push(cut.to_owned());
        }
    }
    listed
}

fn parse_u64(params: &Params, name: &str, reason: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|text| {
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(reason))
        })
        .transpose()
}

/// `PUT /v1/kv/<key>` (`?flags`, `?cas`, `?acquire`, `?release`): `true` or `false`.
pub(super) async fn put(
    State(agent): Shared,
    access: Access,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    body: RequestBody,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    check_key(&key).map_err(ApiError::bad_request)?;
    access.require(Scope::Key(&key), Need::Write)?;
    if body.len() > MAX_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body too large: the value is {} bytes, at most {MAX_VALUE}",
                body.len()
            ),
        ));
    }
    let flags = parse_u64(&params, "flags", "Invalid flags")?.unwrap_or(0);
    let cas = parse_u64(&params, "cas", "Invalid cas")?;
    let mut steps = Vec::new();
    // A `cas` beside an acquire or a release must hold too (Consul would ignore it).
    let lock = params
        .get("release")
        .map(|s| (Verb::Unlock, s))
        .or_else(|| params.get("acquire").map(|s| (Verb::Lock, s)));
    if let (Some(cas), Some(_)) = (cas, lock) {
        let verb = if cas == 0 {
            Verb::CheckNotExists
        } else {
            Verb::CheckIndex
        };
        steps.push(Step {
            index: cas,
            ..Step::new(verb, &key)
        });
    }
    let (verb, session) = match lock {
        Some((verb, session)) => (verb, session.to_owned()),
        None if cas.is_some() => (Verb::Cas, String::new()),
        None => (Verb::Set, String::new()),
    };
    steps.push(Step {
        value: Some(body.0.to_vec()),
        flags,
        index: cas.unwrap_or(0),
        session,
        ..Step::new(verb, &key)
    });
    written(agent.kv_apply(&steps).await?)
}

/// A write's answer: `true`, `false` when a condition did not hold, 400 when it named
/// something that does not exist (a session).
fn written(applied: Applied) -> Answer {
    let done = match applied {
        Applied::Done { .. } => true,
        Applied::Failed(errors) => {
            if let Some((_, Failure::Invalid(reason))) = errors
                .iter()
                .find(|(_, failure)| matches!(failure, Failure::Invalid(_)))
            {
                return Err(ApiError::bad_request(reason.clone()));
            }
            false
        }
    };
    Ok(super::json(if done {
        b"true".to_vec()
    } else {
        b"false".to_vec()
    }))
}

/// `DELETE /v1/kv/<key>` (`?recurse`, `?cas`): `true`, or `false` for a stale `cas`.
pub(super) async fn delete(
    State(agent): Shared,
    access: Access,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = Params::parse(query.as_deref());
    params.check_common(&agent.node().datacenter)?;
    let step = if params.has("recurse") {
        check_prefix(&key).map_err(ApiError::bad_request)?;
        Step::new(Verb::DeleteTree, &key)
    } else {
        check_key(&key).map_err(ApiError::bad_request)?;
        match parse_u64(&params, "cas", "Invalid cas")? {
            Some(index) => Step {
                index,
                ..Step::new(Verb::DeleteCas, &key)
            },
            None => Step::new(Verb::Delete, &key),
        }
    };
    access.require(Scope::Key(&key), Need::Write)?;
    written(agent.kv_apply(&[step]).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cut_at_the_separator_after_the_prefix() {
        let keys = ["a/b", "a/c/d", "a/c/e", "a/f/", "ab"];
        assert_eq!(
            listed_keys("a/", "/", keys.iter().copied().take(4)),
            ["a/b", "a/c/", "a/f/"]
        );
        assert_eq!(listed_keys("", "/", keys.iter().copied()), ["a/", "ab"]);
        assert_eq!(
            listed_keys("a/", "", keys.iter().copied().take(2)),
            ["a/b", "a/c/d"]
        );
    }
}
