//! The registry's writes, with Consul's agent semantics.
//!
//! Every write is one store transaction, acknowledged only once durable *and* applied to the
//! catalog, so a client that registers and then reads sees its registration. Check results
//! are written conditionally on the check's last revision, so a late probe result can neither
//! resurrect a deregistered check nor overwrite a newer definition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wharf_model::registration::ServiceRegistration;
use wharf_model::{Check, CheckKind, Status};
use wharf_store::{Compare, Op, Store, StoreError, Txn};

use crate::catalog::{Catalog, Stored};
use crate::keys;
use crate::{Config, NodeInfo, now_ms};

/// Why a write was refused; each maps to the status and reason Consul gives.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 400: the request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the id in the path names nothing.
    #[error("{0}")]
    NotFound(String),
    /// 500 in Consul: a TTL update on a check that has no TTL.
    #[error("CheckID {0:?} does not have associated TTL")]
    NotTtl(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The write side of the registry, shared by the API and the checker.
pub struct Agent {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub config: Config,
    pub metrics: crate::metrics::Metrics,
    /// TTL deadlines of TTL checks, reset by pass/warn/fail.
    ttl_resets: std::sync::Mutex<HashMap<String, watch::Sender<Instant>>>,
    /// The leaves this agent issued, by service.
    pub(crate) leaves: crate::connect::LeafCache,
}

impl Agent {
    pub fn new(store: Arc<dyn Store>, catalog: Arc<Catalog>, config: Config) -> Arc<Agent> {
        Arc::new(Agent {
            store,
            catalog,
            config,
            metrics: Default::default(),
            ttl_resets: Default::default(),
            leaves: Default::default(),
        })
    }

    pub fn node(&self) -> &NodeInfo {
        &self.config.node
    }

    /// Whether a record of `node` is this node's to act on (its checks to run, its TTLs to
    /// reset): this node's own, or a record from before nodes shared a store (no node).
    pub fn owns(&self, node: &str) -> bool {
        node.is_empty() || node == self.config.node.name
    }

    /// Registers (or updates) an instance and its checks. Checks that already exist keep
    /// their status and output; with `replace_existing_checks`, checks of the instance that
    /// the new registration does not name are removed.
    pub async fn register_service(
        &self,
        registration: ServiceRegistration,
        replace_existing_checks: bool,
    ) -> Result<(), RegistryError> {
        let ServiceRegistration {
            mut service,
            mut checks,
        } = registration;
        // The instance and its checks belong to this node: it runs the checks.
        service.node = self.node().name.clone();
        for check in &mut checks {
            check.node = self.node().name.clone();
        }
        let now = now_ms();
        let existing: HashMap<String, Check> = self.catalog.read(|state| {
            state
                .own_checks(&service.id)
                .map(|c| (c.value.id.clone(), c.value.clone()))
                .collect()
        });
        let mut txn = Txn::new().op(Op::put(
            &keys::service_key(&service.id),
            keys::encode_service(&service),
        ));
        for check in &mut checks {
            if let Some(old) = existing.get(&check.id) {
                check.status = old.status;
                check.output = old.output.clone();
                check.critical_since_ms = old.critical_since_ms;
            } else if check.status == Status::Critical {
                check.critical_since_ms = Some(now);
            }
            txn = txn.op(Op::put(
                &keys::check_key(&check.id),
                keys::encode_check(check),
            ));
        }
        if replace_existing_checks {
            for id in existing
                .keys()
                .filter(|id| !checks.iter().any(|c| &c.id == *id))
            {
                txn = txn.op(Op::delete(&keys::check_key(id)));
            }
        }
        self.commit(txn).await
    }

    /// Removes an instance and all of its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), RegistryError> {
        let check_ids: Option<Vec<String>> = self.catalog.read(|state| {
            state
                .instances
                .contains_key(id)
                .then(|| state.own_checks(id).map(|c| c.value.id.clone()).collect())
        });
        let Some(check_ids) = check_ids else {
            return Err(RegistryError::NotFound(format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            )));
        };
        let mut txn = Txn::new().op(Op::delete(&keys::service_key(id)));
        for check in check_ids {
            txn = txn.op(Op::delete(&keys::check_key(&check)));
        }
        self.commit(txn).await
    }

    /// Registers a standalone check, on an instance or (without a service id) on the node.
    pub async fn register_check(&self, mut check: Check) -> Result<(), RegistryError> {
        check.node = self.node().name.clone();
        let (service_known, old) = self.catalog.read(|state| {
            (
                check.service_id.is_empty() || state.instances.contains_key(&check.service_id),
                state.checks.get(&check.id).map(|c| c.value.clone()),
            )
        });
        if !service_known {
            return Err(RegistryError::BadRequest(format!(
                "ServiceID {:?} does not exist",
                check.service_id
            )));
        }
        match old {
            Some(old) => {
                check.status = old.status;
                check.output = old.output;
                check.critical_since_ms = old.critical_since_ms;
            }
            None if check.status == Status::Critical => check.critical_since_ms = Some(now_ms()),
            None => {}
        }
        self.commit(Txn::new().op(Op::put(
            &keys::check_key(&check.id),
            keys::encode_check(&check),
        )))
        .await
    }

    pub async fn deregister_check(&self, id: &str) -> Result<(), RegistryError> {
        if !self.catalog.read(|state| state.checks.contains_key(id)) {
            return Err(RegistryError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        }
        self.commit(Txn::new().op(Op::delete(&keys::check_key(id))))
            .await
    }

    /// Declares a supervised service and how many replicas to run (the supervisor, at start).
    pub async fn declare_service(&self, name: &str, replicas: u32) -> Result<(), RegistryError> {
        let restart = self
            .catalog
            .read(|state| state.desired.get(name).map_or(0, |d| d.restart));
        self.write_desired(name, keys::Desired { replicas, restart })
            .await
    }

    async fn write_desired(&self, name: &str, desired: keys::Desired) -> Result<(), RegistryError> {
        let value = serde_json::to_vec(&desired).expect("desired state serialises");
        self.commit(Txn::new().op(Op::put(&keys::desired_key(name), value)))
            .await
    }

    /// `wharf scale NAME=N`: changes the replicas of a service the supervisor runs.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<(), RegistryError> {
        let known = self.catalog.read(|state| state.desired.contains_key(name));
        if !known {
            return Err(RegistryError::NotFound(format!(
                "no supervised service named {name:?} (is `wharf up` running it?)"
            )));
        }
        self.declare_service(name, replicas).await
    }

    /// `wharf restart NAME`: asks the supervisor for a rolling restart of a service.
    pub async fn restart(&self, name: &str) -> Result<(), RegistryError> {
        let Some(current) = self.catalog.read(|state| state.desired.get(name).cloned()) else {
            return Err(RegistryError::NotFound(format!(
                "no supervised service named {name:?} (is `wharf up` running it?)"
            )));
        };
        self.write_desired(
            name,
            keys::Desired {
                replicas: current.replicas,
                restart: current.restart + 1,
            },
        )
        .await
    }

    /// A TTL check's pass/warn/fail: sets the status and output and restarts its TTL.
    pub async fn update_ttl(
        &self,
        id: &str,
        status: Status,
        output: &str,
    ) -> Result<(), RegistryError> {
        let stored = self.catalog.read(|state| state.checks.get(id).cloned());
        let Some(stored) = stored else {
            return Err(RegistryError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        };
        if !self.owns(&stored.value.node) {
            // Its TTL runs on the node that owns it: an update here would not reach it.
            return Err(RegistryError::NotFound(format!(
                "Unknown check ID {id:?} on this node: it belongs to node {:?}; update it through that node",
                stored.value.node
            )));
        }
        let CheckKind::Ttl { ttl } = stored.value.kind else {
            return Err(RegistryError::NotTtl(id.to_owned()));
        };
        self.reset_ttl(id, ttl);
        self.record_result(&stored, status, output, true).await
    }

    /// Writes a check result if it changes the status, or changes the output and
    /// `write_output` allows it. Output-only changes are otherwise kept back: a check whose
    /// output carries a timestamp must not wake every watcher of its service (consul#1244).
    pub async fn record_result(
        &self,
        stored: &Stored<Check>,
        status: Status,
        output: &str,
        write_output: bool,
    ) -> Result<(), RegistryError> {
        let mut check = stored.value.clone();
        let status_changed = check.status != status;
        if !check.record(status, output, now_ms()) || !(status_changed || write_output) {
            return Ok(());
        }
        let key = keys::check_key(&check.id);
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: key.clone(),
                revision: stored.modify_index,
            })
            .op(Op::put(&key, keys::encode_check(&check)));
        let outcome = self.store.txn(txn).await?;
        if outcome.succeeded {
            self.catalog.wait_applied(outcome.revision).await;
            Ok(())
        } else {
            // The check changed underneath (re-registered, updated, removed): retry once on
            // what is there now, so that an API update is never silently lost.
            let current = self
                .catalog
                .read(|state| state.checks.get(&check.id).cloned());
            match current {
                Some(current) if current.modify_index != stored.modify_index => {
                    Box::pin(self.record_result(&current, status, output, write_output)).await
                }
                Some(_) => Ok(()),
                None => Err(RegistryError::NotFound(format!(
                    "Unknown check ID {:?}",
                    check.id
                ))),
            }
        }
    }

    /// Restarts a TTL check's timer.
    pub fn reset_ttl(&self, id: &str, ttl: Duration) {
        let resets = self.ttl_resets.lock().expect("ttl lock");
        if let Some(reset) = resets.get(id) {
            reset.send_replace(Instant::now() + ttl);
        }
    }

    /// The TTL timer of a check, created by the checker when it starts watching it.
    pub(crate) fn ttl_timer(&self, id: &str, ttl: Duration) -> watch::Receiver<Instant> {
        let mut resets = self.ttl_resets.lock().expect("ttl lock");
        resets
            .entry(id.to_owned())
            .or_insert_with(|| watch::Sender::new(Instant::now() + ttl))
            .subscribe()
    }

    pub(crate) fn forget_ttl(&self, id: &str) {
        self.ttl_resets.lock().expect("ttl lock").remove(id);
    }

    /// Commits `txn`, if its comparisons hold, with the tombstones of what it deletes, and
    /// waits until the catalog has applied it; `Ok(false)` when the comparisons do not hold.
    pub(crate) async fn commit_when(&self, mut txn: Txn) -> Result<bool, RegistryError> {
        let tombstones = self.catalog.read(|state| state.tombstones(&txn.ops));
        txn.ops.extend(
            tombstones
                .into_iter()
                .map(|tombstone| Op::put(&tombstone.key(), Vec::new())),
        );
        let outcome = self.store.txn(txn).await?;
        if outcome.succeeded {
            self.catalog.wait_applied(outcome.revision).await;
        }
        Ok(outcome.succeeded)
    }

    /// [`Agent::commit_when`] for a transaction without comparisons.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<(), RegistryError> {
        self.commit_when(txn).await.map(|_| ())
    }
}
