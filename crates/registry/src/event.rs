//! Consul's user events (`/v1/event/fire/<name>`, `/v1/event/list`): a name and a small
//! payload that every agent whose node and services match the event's filters receives, and
//! that `consul watch -type=event` and deploy hooks wait on. Consul spreads them by gossip and
//! each agent keeps the last 256 it received; here they go through the store, so every
//! registry node sharing it sees every event: `wharf/events/<ltime>`, the last
//! [`KEPT`] kept (the oldest are deleted in the transaction that fires a new one). The Lamport
//! time is the event's sequence number in the store, so events list in the order fired.
//! Filters are regular expressions, matched anywhere in the name as Go's `MatchString` does.

use serde::{Deserialize, Serialize};
use wharf_store::{Compare, Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::CatalogState;

/// Where events are kept, keyed by their Lamport time (zero-padded, so keys sort by it).
pub(crate) const EVENTS: &str = "wharf/events/";
/// How many events are kept, as a Consul agent keeps in its buffer.
pub const KEPT: usize = 256;
/// The largest payload accepted (Consul's default `UserEventSizeLimit` is 512 bytes for the
/// whole message; the payload is most of it).
pub const MAX_PAYLOAD: usize = 512;
/// Attempts at taking the next Lamport time when other nodes fire at once.
const MOST_ATTEMPTS: usize = 16;

pub(crate) fn event_key(ltime: u64) -> String {
    format!("{EVENTS}{ltime:020}")
}

/// One user event, as stored and (with Consul's names) as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    /// `None` for an event fired without a body (Consul answers `"Payload": null`).
    #[serde(default, with = "crate::kv::base64_value")]
    pub payload: Option<Vec<u8>>,
    #[serde(default)]
    pub node_filter: String,
    #[serde(default)]
    pub service_filter: String,
    #[serde(default)]
    pub tag_filter: String,
    pub version: u8,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

/// What `fire` is asked: the event without its id and time.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub name: String,
    pub payload: Option<Vec<u8>>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
}

/// A compiled filter: absent (matches everything) or a regular expression.
fn filter(pattern: &str, what: &str) -> Result<Option<regex_automata::meta::Regex>, String> {
    if pattern.is_empty() {
        return Ok(None);
    }
    regex_automata::meta::Regex::new(pattern)
        .map(Some)
        .map_err(|e| format!("Invalid {what} filter {pattern:?}: {e}"))
}

impl NewEvent {
    /// Refuses what Consul refuses: an empty or reserved name, a filter that does not compile,
    /// a tag filter without a service filter (the payload's size is the API's to check).
    pub fn validate(&self) -> Result<(), RegistryError> {
        let bad = |reason: String| Err(RegistryError::BadRequest(reason));
        if self.name.is_empty() {
            return bad("Missing name".into());
        }
        if self.name.starts_with('_') {
            return bad(format!(
                "Invalid event name {:?}: names starting with '_' are reserved",
                self.name
            ));
        }
        if self.name.chars().any(char::is_control) {
            return bad("Invalid event name: contains control characters".into());
        }
        if !self.tag_filter.is_empty() && self.service_filter.is_empty() {
            return bad("Cannot provide tag filter without service filter.".into());
        }
        for (pattern, what) in [
            (&self.node_filter, "node"),
            (&self.service_filter, "service"),
            (&self.tag_filter, "tag"),
        ] {
            filter(pattern, what).map_err(RegistryError::BadRequest)?;
        }
        Ok(())
    }
}

impl Event {
    /// Whether this registry node receives the event: its name matches the node filter, and
    /// one of the instances registered through it matches the service (and tag) filter.
    pub fn reaches(&self, agent: &Agent, state: &CatalogState) -> bool {
        // Filters were checked when fired; one that no longer compiles reaches nobody.
        let (Ok(node), Ok(service), Ok(tag)) = (
            filter(&self.node_filter, "node"),
            filter(&self.service_filter, "service"),
            filter(&self.tag_filter, "tag"),
        ) else {
            return false;
        };
        if node.is_some_and(|node| !node.is_match(&agent.node().name)) {
            return false;
        }
        let Some(service) = service else {
            return true;
        };
        state
            .instances
            .values()
            .map(|i| &i.value)
            .filter(|i| agent.owns(&i.node))
            .any(|i| {
                service.is_match(&i.name)
                    && tag
                        .as_ref()
                        .is_none_or(|tag| i.tags.iter().any(|t| tag.is_match(t)))
            })
    }
}

impl Agent {
    /// Fires an event: takes the next Lamport time (conditionally, so two nodes firing at
    /// once get two), and drops the oldest events beyond [`KEPT`] in the same transaction.
    pub async fn fire_event(&self, new: NewEvent) -> Result<Event, RegistryError> {
        new.validate()?;
        let id = crate::node::random_uuid();
        for _ in 0..MOST_ATTEMPTS {
            let (ltime, expired) = self.catalog.read(|state| {
                let ltime = state.events.keys().next_back().map_or(1, |last| last + 1);
                let excess = (state.events.len() + 1).saturating_sub(KEPT);
                let expired: Vec<u64> = state.events.keys().take(excess).copied().collect();
                (ltime, expired)
            });
            let event = Event {
                id: id.clone(),
                name: new.name.clone(),
                payload: new.payload.clone(),
                node_filter: new.node_filter.clone(),
                service_filter: new.service_filter.clone(),
                tag_filter: new.tag_filter.clone(),
                version: 1,
                ltime,
            };
            let key = event_key(ltime);
            let value = serde_json::to_vec(&event).expect("an event serialises");
            let mut txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.clone(),
                    revision: 0,
                })
                .op(Op::put(&key, value));
            for old in expired {
                txn = txn.op(Op::delete(&event_key(old)));
            }
            if self.commit_when(txn).await? {
                return Ok(event);
            }
            // Another node took this time: read what is there now and take the next.
        }
        Err(RegistryError::Conflict(
            "other events kept taking the next time; this one was not fired".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> NewEvent {
        NewEvent {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_what_consul_refuses() {
        for (new, reason) in [
            (event(""), "Missing name"),
            (event("_internal"), "reserved"),
            (
                NewEvent {
                    tag_filter: "v1".into(),
                    ..event("deploy")
                },
                "without service filter",
            ),
            (
                NewEvent {
                    node_filter: "(".into(),
                    ..event("deploy")
                },
                "Invalid node filter",
            ),
        ] {
            let error = new.validate().unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
        assert!(event("deploy").validate().is_ok());
    }

    #[test]
    fn keys_sort_by_time() {
        assert!(event_key(9) < event_key(10));
        assert_eq!(event_key(10), "wharf/events/00000000000000000010");
    }
}
