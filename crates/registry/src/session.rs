//! Consul's sessions: what locks on KV entries are held by, invalidated when their TTL runs
//! out, when a check they are linked to turns critical, or when destroyed.
//!
//! A session is one store record (`wharf/sessions/<id>`). Its TTL is kept as the wall-clock
//! time of its last renewal, written by the renewal, so that every registry node on the store
//! sees the same deadline and any of them can enforce it: each runs the [`reap`] task, and
//! invalidation is one conditional store transaction (the session deleted, the keys it
//! holds released or deleted, each with its lock delay), so when several nodes race for it
//! one wins and the others find nothing left to do. As in Consul, a session is invalidated
//! once twice its TTL has passed without a renewal (clients renew at TTL/2), and the clock
//! starts again when a registry starts, as Consul's does when a leader is elected.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wharf_model::Status;
use wharf_store::{Compare, Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::{CatalogState, Resource, Stored};
use crate::keys;
use crate::kv::plan::Plan;
use crate::now_ms;

/// Consul's bounds on a session's TTL, and its default and longest lock delay.
pub const MIN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// The node check every session is linked to unless it names its own.
pub const SERF_HEALTH: &str = crate::node::SERF_HEALTH;

/// What invalidation does to the keys a session holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    #[default]
    Release,
    Delete,
}

impl Behavior {
    pub fn name(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A service check a session is linked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheck {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub namespace: String,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Session {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub node: String,
    #[serde(default)]
    pub node_checks: Vec<String>,
    #[serde(default)]
    pub service_checks: Vec<ServiceCheck>,
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
    /// 0: no TTL.
    #[serde(default)]
    pub ttl_ms: u64,
    /// When it was created or last renewed (Unix ms).
    pub renewed_at_ms: u64,
}

impl Session {
    /// When it is invalidated without a renewal: twice its TTL after the later of its last
    /// renewal and `clock_start` (when this registry started).
    pub fn deadline_ms(&self, clock_start_ms: u64) -> Option<u64> {
        (self.ttl_ms > 0).then(|| self.renewed_at_ms.max(clock_start_ms) + 2 * self.ttl_ms)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session serialises")
    }
}

/// A session to create, as the API decoded it.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub name: String,
    pub node: Option<String>,
    /// `None`: linked to `serfHealth` only.
    pub node_checks: Option<Vec<String>>,
    pub service_checks: Vec<ServiceCheck>,
    pub lock_delay: Option<Duration>,
    pub behavior: Behavior,
    pub ttl: Option<Duration>,
}

/// Why a session's linked checks do not hold (`None`: they do).
fn linked_checks_fail(state: &CatalogState, session: &Session) -> Option<String> {
    // Registry nodes stay listed for good; an external node deregistered takes its sessions
    // with it, as a node deregistered from Consul's catalog does.
    if !state.nodes.contains_key(&session.node) {
        return Some(format!("node {:?} is not registered", session.node));
    }
    for id in &session.node_checks {
        if id == SERF_HEALTH {
            if state.dead_check(&session.node).is_some() {
                return Some(format!("Check {SERF_HEALTH:?} is in critical state"));
            }
            continue;
        }
        match state
            .node_checks(&session.node)
            .find(|c| c.value.id == *id)
            .or_else(|| state.check(&session.node, id))
        {
            None => return Some(format!("Missing check {id:?} registration")),
            Some(c) if c.value.status == Status::Critical => {
                return Some(format!("Check {id:?} is in critical state"));
            }
            Some(_) => {}
        }
    }
    for linked in &session.service_checks {
        match state.check(&session.node, &linked.id) {
            None => return Some(format!("Missing check {:?} registration", linked.id)),
            Some(c) if c.value.status == Status::Critical => {
                return Some(format!("Check {:?} is in critical state", linked.id));
            }
            Some(_) => {}
        }
    }
    None
}

/// Sessions to invalidate now, and when the next TTL runs out.
fn due(state: &CatalogState, now: u64, clock_start: u64) -> (Vec<(String, String)>, Option<u64>) {
    let mut doomed = Vec::new();
    let mut next: Option<u64> = None;
    for (id, stored) in &state.sessions {
        let session = &stored.value;
        if let Some(reason) = linked_checks_fail(state, session) {
            doomed.push((id.clone(), reason));
            continue;
        }
        if let Some(deadline) = session.deadline_ms(clock_start) {
            if deadline <= now {
                doomed.push((id.clone(), "its TTL ran out".to_owned()));
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
    }
    (doomed, next)
}

impl Agent {
    /// Creates a session; its id.
    pub async fn create_session(&self, request: NewSession) -> Result<String, RegistryError> {
        let bad = RegistryError::BadRequest;
        if let Some(ttl) = request.ttl
            && !ttl.is_zero()
            && !(MIN_TTL..=MAX_TTL).contains(&ttl)
        {
            return Err(bad(format!(
                "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                wharf_model::format_go_duration(ttl)
            )));
        }
        let lock_delay = request.lock_delay.unwrap_or(DEFAULT_LOCK_DELAY);
        if lock_delay > MAX_LOCK_DELAY {
            return Err(bad(format!(
                "Invalid LockDelay '{}': at most 60s",
                wharf_model::format_go_duration(lock_delay)
            )));
        }
        let node = request.node.unwrap_or_else(|| self.node().name.clone());
        let session = Session {
            id: crate::node::random_uuid(),
            name: request.name,
            node_checks: request
                .node_checks
                .unwrap_or_else(|| vec![SERF_HEALTH.to_owned()]),
            service_checks: request.service_checks,
            lock_delay_ms: lock_delay.as_millis() as u64,
            behavior: request.behavior,
            ttl_ms: request.ttl.map_or(0, |t| t.as_millis() as u64),
            renewed_at_ms: now_ms(),
            node,
        };
        let known = self.catalog.read(|state| {
            if !state.nodes.contains_key(&session.node) {
                return Err(format!("Missing node registration {:?}", session.node));
            }
            linked_checks_fail(state, &session).map_or(Ok(()), Err)
        });
        known.map_err(bad)?;
        let key = keys::session_key(&session.id);
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: key.clone(),
                revision: 0,
            })
            .op(Op::put(&key, session.encode()));
        if !self.commit_when(txn).await? {
            return Err(RegistryError::BadRequest(
                "session id collision; retry".into(),
            ));
        }
        Ok(session.id)
    }

    /// Restarts a session's TTL; the session as it is now.
    pub async fn renew_session(&self, id: &str) -> Result<Stored<Session>, RegistryError> {
        loop {
            let Some(stored) = self.catalog.read(|state| state.sessions.get(id).cloned()) else {
                return Err(RegistryError::NotFound(format!(
                    "Session id '{id}' not found"
                )));
            };
            let mut session = stored.value.clone();
            session.renewed_at_ms = now_ms();
            let key = keys::session_key(id);
            let txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.clone(),
                    revision: stored.modify_index,
                })
                .op(Op::put(&key, session.encode()));
            if self.commit_when(txn).await? {
                let renewed = self.catalog.read(|state| state.sessions.get(id).cloned());
                return renewed.ok_or_else(|| {
                    RegistryError::NotFound(format!("Session id '{id}' not found"))
                });
            }
        }
    }

    /// Destroys (invalidates) a session: false when there was none.
    pub async fn destroy_session(&self, id: &str) -> Result<bool, RegistryError> {
        self.invalidate_session(id, "destroyed").await
    }

    /// Deletes a session and releases or deletes what it holds, in one transaction; false
    /// when it was already gone.
    pub(crate) async fn invalidate_session(
        &self,
        id: &str,
        why: &str,
    ) -> Result<bool, RegistryError> {
        for _ in 0..crate::kv::plan::MOST_ATTEMPTS {
            let txn = self.catalog.read(|state| {
                let stored = state.sessions.get(id)?;
                let mut plan = Plan::new(state, now_ms());
                plan.invalidate(&stored.value, stored.modify_index);
                Some(plan.txn())
            });
            let Some(txn) = txn else { return Ok(false) };
            let outcome = self.store.txn(self.with_tombstones(txn)).await?;
            if outcome.succeeded {
                self.catalog.wait_applied(outcome.revision).await;
                tracing::info!(session = id, why, "session invalidated");
                return Ok(true);
            }
            self.catalog.wait_applied(outcome.revision).await;
        }
        Err(RegistryError::Conflict(format!(
            "session {id:?}: its keys kept changing; not invalidated yet"
        )))
    }
}

/// Invalidates sessions whose TTL ran out or whose linked checks failed, on every registry
/// node (the first to commit wins).
pub(crate) async fn reap(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let clock_start = now_ms();
    let mut sessions = agent.catalog.subscribe(&Resource::Sessions);
    let mut checks = agent.catalog.subscribe(&Resource::Checks);
    // The list of nodes moves with the services' index: an external node deregistered.
    let mut nodes = agent.catalog.subscribe(&Resource::Services);
    loop {
        let now = now_ms();
        let (doomed, next) = agent.catalog.read(|state| due(state, now, clock_start));
        for (id, why) in doomed {
            if let Err(e) = agent.invalidate_session(&id, &why).await {
                tracing::warn!(session = %id, error = %e, "could not invalidate session");
            }
        }
        let wait = next.map_or(Duration::from_secs(60), |at| {
            Duration::from_millis(at.saturating_sub(now_ms()).max(1))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sessions.changed() => {}
            _ = checks.changed() => {}
            _ = nodes.changed() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_runs_out_at_twice_its_ttl_from_its_last_renewal() {
        let session = Session {
            id: "s".into(),
            name: String::new(),
            node: "n".into(),
            node_checks: vec![],
            service_checks: vec![],
            lock_delay_ms: 0,
            behavior: Behavior::Release,
            ttl_ms: 10_000,
            renewed_at_ms: 1_000,
        };
        assert_eq!(session.deadline_ms(0), Some(21_000));
        assert_eq!(
            session.deadline_ms(5_000),
            Some(25_000),
            "the clock starts again with the registry"
        );
        let untimed = Session {
            ttl_ms: 0,
            ..session
        };
        assert_eq!(untimed.deadline_ms(0), None);
    }
}
