//! Consul's KV store and sessions, as the CLI (`wharf kv`, `wharf lock`) and services use
//! them: entries read (blocking too), written with their conditions, and the sessions that
//! hold locks.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::{Blocking, Client, ClientError, encode};

/// A KV entry, its value decoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    pub key: String,
    #[serde(default, deserialize_with = "base64_value")]
    pub value: Option<Vec<u8>>,
    #[serde(default)]
    pub flags: u64,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

fn base64_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
        .transpose()
}

/// The conditions of a KV write.
#[derive(Debug, Clone, Default)]
pub struct KvWrite {
    pub flags: u64,
    /// Only over this `ModifyIndex` (0: only if absent).
    pub cas: Option<u64>,
    /// Take the key's lock for this session.
    pub acquire: Option<String>,
    /// Let go of the key's lock held by this session.
    pub release: Option<String>,
}

/// A new session's settings.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub name: String,
    pub ttl: Duration,
    pub lock_delay: Duration,
    /// `release` or `delete`.
    pub behavior: &'static str,
}

/// A key as a path: each segment percent-encoded, the slashes kept.
fn key_path(key: &str) -> String {
    let segments: Vec<String> = key.split('/').map(encode).collect();
    format!("/v1/kv/{}", segments.join("/"))
}

fn is_not_found(error: &ClientError) -> bool {
    matches!(error, ClientError::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
}

impl Client {
    /// One entry (`None`: absent) and the index to block on next.
    pub async fn kv_get(
        &self,
        key: &str,
        blocking: Option<Blocking>,
    ) -> Result<(Option<KvPair>, u64), ClientError> {
        let path = crate::with_blocking(&key_path(key), blocking);
        let (headers, body) = self.call_allowing_404(&path).await?;
        let index = crate::index_of(&headers);
        if body.is_empty() {
            return Ok((None, index));
        }
        let entries: Vec<KvPair> =
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((entries.into_iter().next(), index))
    }

    /// Every entry under `prefix`, in key order.
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>, ClientError> {
        let path = format!("{}?recurse", key_path(prefix));
        match self.get_json::<Vec<KvPair>>(&path, None).await {
            Ok((entries, _)) => Ok(entries),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Writes `value` under `key`: false when a condition did not hold (a stale `cas`, a
    /// lock held by another session).
    pub async fn kv_put(
        &self,
        key: &str,
        value: Vec<u8>,
        write: &KvWrite,
    ) -> Result<bool, ClientError> {
        let mut query = vec![];
        if write.flags != 0 {
            query.push(format!("flags={}", write.flags));
        }
        if let Some(cas) = write.cas {
            query.push(format!("cas={cas}"));
        }
        if let Some(session) = &write.acquire {
            query.push(format!("acquire={}", encode(session)));
        }
        if let Some(session) = &write.release {
            query.push(format!("release={}", encode(session)));
        }
        let mut path = key_path(key);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let answer = self.call(Method::PUT, &path, value).await?.1;
        Ok(answer.as_ref() == b"true")
    }

    /// Deletes `key` (or, with `recurse`, every key under it): false for a stale `cas`.
    pub async fn kv_delete(
        &self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> Result<bool, ClientError> {
        let mut path = key_path(key);
        if recurse {
            path.push_str("?recurse");
        } else if let Some(cas) = cas {
            path.push_str(&format!("?cas={cas}"));
        }
        let answer = self.call(Method::DELETE, &path, Vec::new()).await?.1;
        Ok(answer.as_ref() == b"true")
    }

    /// Creates a session; its id.
    pub async fn session_create(&self, spec: &SessionSpec) -> Result<String, ClientError> {
        let body = serde_json::json!({
            "Name": spec.name,
            "TTL": format!("{}s", spec.ttl.as_secs()),
            "LockDelay": format!("{}ms", spec.lock_delay.as_millis()),
            "Behavior": spec.behavior,
        });
        let answer = self
            .call_json(Method::PUT, "/v1/session/create", Some(&body))
            .await?;
        answer["ID"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode(format!("no session ID in {answer}")))
    }

    /// Restarts a session's TTL: false when the session is gone.
    pub async fn session_renew(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/v1/session/renew/{}", encode(id));
        match self.call(Method::PUT, &path, Vec::new()).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts an instance (`Some(service id)`) or the registry's node into maintenance mode,
    /// or takes it out.
    pub async fn maintenance(
        &self,
        service: Option<&str>,
        enable: bool,
        reason: &str,
    ) -> Result<(), ClientError> {
        let path = match service {
            Some(id) => format!("/v1/agent/service/maintenance/{}", encode(id)),
            None => "/v1/agent/maintenance".to_owned(),
        };
        let path = format!("{path}?enable={enable}&reason={}", encode(reason));
        self.call(Method::PUT, &path, Vec::new()).await.map(|_| ())
    }

    /// Destroys a session, releasing what it holds.
    pub async fn session_destroy(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/session/destroy/{}", encode(id));
        self.call(Method::PUT, &path, Vec::new()).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_slashes_and_escape_the_rest() {
        assert_eq!(key_path("app/config db"), "/v1/kv/app/config%20db");
        assert_eq!(key_path("folder/"), "/v1/kv/folder/");
    }

    #[test]
    fn entries_decode_their_values() {
        let pair: KvPair = serde_json::from_str(
            r#"{"Key":"k","Value":"aGk=","Flags":3,"LockIndex":1,"Session":"s","CreateIndex":4,"ModifyIndex":5}"#,
        )
        .unwrap();
        assert_eq!(pair.value.as_deref(), Some(&b"hi"[..]));
        let empty: KvPair =
            serde_json::from_str(r#"{"Key":"k","Value":null,"CreateIndex":4,"ModifyIndex":5}"#)
                .unwrap();
        assert_eq!(empty.value, None);
    }
}
