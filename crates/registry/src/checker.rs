//! The health checker: one task per check, started and stopped as the catalog changes.
//!
//! Probed checks (HTTP, TCP, gRPC) run every interval after a random first delay, so that a
//! registry restart does not probe everything at once. Each result goes through
//! [`Agent::record_result`]: a status change is a write with a new index immediately, and so
//! is the first output of a check that has none yet (a new check starts critical with an
//! empty output, and must show why from its first probe); any other output-only change is
//! written at most every [`OUTPUT_REFRESH`], as Consul's `check_update_interval` does, so
//! that chatty outputs do not wake blocking queries.
//! A result changes the status only once the check's thresholds (Consul's
//! `SuccessBeforePassing`, `FailuresBeforeWarning`, `FailuresBeforeCritical`) are reached,
//! counted per running check ([`Streak`]); a changed definition starts the count again.
//! TTL checks wait for their deadline, which pass/warn/fail push back. A reaper removes
//! instances whose check has been critical longer than `DeregisterCriticalServiceAfter`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wharf_model::{Check, CheckKind, Status, Streak, Thresholds};

use crate::catalog::CheckChange;
use crate::{Agent, now_ms, probe};

/// Longest time an output-only change waits before it is written.
pub const OUTPUT_REFRESH: Duration = Duration::from_secs(300);

/// Starts the checker and the reaper; both end when `shutdown` turns true.
pub fn spawn(agent: Arc<Agent>, shutdown: watch::Receiver<bool>) {
    tokio::spawn(reconcile(agent.clone(), shutdown.clone()));
    tokio::spawn(reap(agent, shutdown));
}

/// What a running check task was started from; a change restarts the task.
#[derive(PartialEq)]
struct Definition {
    kind: CheckKind,
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
}

impl Definition {
    fn of(check: &Check) -> Definition {
        Definition {
            kind: check.kind.clone(),
            interval: check.effective_interval(),
            timeout: check.effective_timeout(),
            thresholds: check.thresholds,
        }
    }
}

async fn reconcile(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let mut running: HashMap<String, (Definition, JoinHandle<()>)> = HashMap::new();
    let mut changes = agent.catalog.check_changes();
    loop {
        let change = tokio::select! {
            change = changes.recv() => match change {
                Some(change) => change,
                None => break,
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let ids: Vec<String> = match change {
            CheckChange::Changed(id) => vec![id],
            CheckChange::Reload => {
                let mut ids: Vec<String> = running.keys().cloned().collect();
                ids.extend(
                    agent
                        .catalog
                        .read(|state| state.checks.keys().cloned().collect::<Vec<_>>()),
                );
                ids
            }
        };
        for id in ids {
            // Only this node's checks: each node runs those of the instances registered
            // through it.
            let wanted = agent.catalog.read(|state| {
                state
                    .checks
                    .get(&id)
                    .filter(|c| agent.owns(&c.value.node))
                    .map(|c| Definition::of(&c.value))
            });
            match wanted {
                Some(definition)
                    if running
                        .get(&id)
                        .is_some_and(|(current, _)| *current == definition) => {}
                Some(definition) => {
                    if let Some((_, old)) = running.remove(&id) {
                        old.abort();
                        agent.forget_ttl(&id);
                    }
                    let task = tokio::spawn(run_check(agent.clone(), id.clone()));
                    running.insert(id, (definition, task));
                }
                None => {
                    if let Some((_, old)) = running.remove(&id) {
                        old.abort();
                        agent.forget_ttl(&id);
                    }
                }
            }
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// Runs one check until aborted.
async fn run_check(agent: Arc<Agent>, id: String) {
    let Some(check) = agent
        .catalog
        .read(|state| state.checks.get(&id).map(|c| c.value.clone()))
    else {
        return;
    };
    match check.kind {
        CheckKind::Ttl { ttl } => return run_ttl(agent, id, ttl).await,
        // Critical while it exists, or set by whoever registers it: nothing to run.
        CheckKind::Maintenance | CheckKind::External => return,
        _ => {}
    }
    let interval = check.effective_interval();
    let timeout = check.effective_timeout();
    let stagger = interval
        .min(Duration::from_millis(500))
        .mul_f64(fastrand::f64());
    tokio::time::sleep(stagger).await;
    let mut last_write = Instant::now();
    let mut streak = Streak::default();
    loop {
        let (result, output) = probe::run(&check.kind, timeout).await;
        let Some(status) = streak.judge(&check.thresholds, result) else {
            tracing::debug!(check = %id, %result, "result has not reached its check's threshold");
            tokio::time::sleep(interval).await;
            continue;
        };
        let Some(stored) = agent.catalog.read(|state| state.checks.get(&id).cloned()) else {
            return;
        };
        // A check that has never shown why it is in its state (a new check starts critical
        // with no output) shows the first result at once, as Consul's agent does.
        let write_output = stored.value.output.is_empty() || last_write.elapsed() >= OUTPUT_REFRESH;
        let before = (stored.value.status, stored.modify_index);
        match agent
            .record_result(&stored, status, &output, write_output)
            .await
        {
            Ok(()) => {
                let after = agent
                    .catalog
                    .read(|state| state.checks.get(&id).map(|c| c.modify_index));
                if after != Some(before.1) {
                    last_write = Instant::now();
                }
                if before.0 != status {
                    tracing::info!(check = %id, from = %before.0, to = %status, "check status changed");
                }
            }
            Err(e) => tracing::warn!(check = %id, error = %e, "could not record check result"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Turns a TTL check critical when its deadline passes without an update.
async fn run_ttl(agent: Arc<Agent>, id: String, ttl: Duration) {
    let mut deadline = agent.ttl_timer(&id, ttl);
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            changed = deadline.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(at) => {
                let Some(stored) = agent.catalog.read(|state| state.checks.get(&id).cloned()) else {
                    return;
                };
                if stored.value.status != Status::Critical {
                    tracing::info!(check = %id, "TTL expired");
                }
                if let Err(e) = agent.record_result(&stored, Status::Critical, "TTL expired", true).await {
                    tracing::warn!(check = %id, error = %e, "could not record TTL expiry");
                }
                // Wait for the next pass/warn/fail before looking at the clock again.
                if deadline.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Deregisters instances whose check has been critical longer than its
/// `DeregisterCriticalServiceAfter` (raised to the configured floor).
async fn reap(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let floor = agent.config.min_deregister_after;
    loop {
        let now = now_ms();
        let doomed: Vec<(String, String)> = agent.catalog.read(|state| {
            state
                .checks
                .values()
                .filter_map(|c| {
                    let check = &c.value;
                    if !agent.owns(&check.node) {
                        return None; // its own node reaps it
                    }
                    let after = check.deregister_critical_after?.max(floor);
                    let since = check.critical_since_ms?;
                    let expired = check.status == Status::Critical
                        && !check.service_id.is_empty()
                        && now.saturating_sub(since)
                            >= u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
                    expired.then(|| (check.service_id.clone(), check.id.clone()))
                })
                .collect()
        });
        for (service_id, check_id) in doomed {
            tracing::info!(service = %service_id, check = %check_id, "deregistering instance critical for too long");
            match agent.deregister_service(&service_id).await {
                Ok(()) | Err(crate::RegistryError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(service = %service_id, error = %e, "reaper could not deregister")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(agent.config.reap_interval) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}
