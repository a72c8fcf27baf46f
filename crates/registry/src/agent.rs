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
    /// 403: not permitted whatever the token (bootstrap twice, deleting one's own token).
    #[error("{0}")]
    Forbidden(String),
    /// 404: the id in the path names nothing.
    #[error("{0}")]
    NotFound(String),
    /// 409: what the write depended on kept changing under it.
    #[error("{0}")]
    Conflict(String),
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
    /// The golden metrics the proxies report.
    pub stats: crate::stats::Board,
    /// What carries out `wharf apply` (`wharf up`'s supervisor), if attached.
    pub(crate) deployer: std::sync::RwLock<Option<Arc<dyn crate::deploy::Deployer>>>,
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
            stats: Default::default(),
            deployer: Default::default(),
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
    /// the new registration does not name are removed. The instance and its checks are this
    /// node's (keyed under its name); a record of the same id from before nodes shared a
    /// store is replaced by it.
    pub async fn register_service(
        &self,
        registration: ServiceRegistration,
        replace_existing_checks: bool,
    ) -> Result<(), RegistryError> {
        let ServiceRegistration {
            mut service,
            mut checks,
        } = registration;
        let node = self.node().name.clone();
        service.node = node.clone();
        for check in &mut checks {
            check.node = node.clone();
        }
        let now = now_ms();
        let (existing, legacy): (HashMap<String, Check>, Option<Vec<Check>>) =
            self.catalog.read(|state| {
                let existing = state
                    .instance(&node, &service.id)
                    .map_or_else(HashMap::new, |i| {
                        state
                            .own_checks(&i.value)
                            .map(|c| (c.value.id.clone(), c.value.clone()))
                            .collect()
                    });
                let legacy = state
                    .instances
                    .get(&service.id)
                    .filter(|i| i.value.node.is_empty())
                    .map(|i| {
                        state
                            .own_checks(&i.value)
                            .map(|c| c.value.clone())
                            .collect()
                    });
                (existing, legacy)
            });
        let mut txn = Txn::new().op(Op::put(
            &keys::service_key(&node, &service.id),
            keys::encode_service(&service),
        ));
        if let Some(legacy_checks) = &legacy {
            txn = txn.op(Op::delete(&keys::service_key("", &service.id)));
            for check in legacy_checks {
                txn = txn.op(Op::delete(&keys::check_key("", &check.id)));
            }
        }
        for check in &mut checks {
            if let Some(old) = existing.get(&check.id) {
                check.status = old.status;
                check.output = old.output.clone();
                check.critical_since_ms = old.critical_since_ms;
            } else if check.status == Status::Critical {
                check.critical_since_ms = Some(now);
            }
            txn = txn.op(Op::put(
                &keys::check_key(&node, &check.id),
                keys::encode_check(check),
            ));
        }
        if replace_existing_checks {
            for old in existing
                .values()
                .filter(|old| !checks.iter().any(|c| c.id == old.id))
            {
                txn = txn.op(Op::delete(&keys::check_key(&old.node, &old.id)));
            }
        }
        self.commit(txn).await
    }

    /// Removes one of this node's instances and all of its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), RegistryError> {
        let found: Option<(wharf_model::ServiceInstance, Vec<Check>)> =
            self.catalog.read(|state| {
                let instance = state.instance(&self.node().name, id)?;
                let checks = state
                    .own_checks(&instance.value)
                    .map(|c| c.value.clone())
                    .collect();
                Some((instance.value.clone(), checks))
            });
        let Some((instance, checks)) = found else {
            return Err(RegistryError::NotFound(format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            )));
        };
        let mut txn = Txn::new().op(Op::delete(&keys::service_key(&instance.node, &instance.id)));
        for check in checks {
            txn = txn.op(Op::delete(&keys::check_key(&check.node, &check.id)));
        }
        self.commit(txn).await
    }

    /// Registers a standalone check, on one of this node's instances or (without a service
    /// id) on the node.
    pub async fn register_check(&self, mut check: Check) -> Result<(), RegistryError> {
        let node = self.node().name.clone();
        check.node = node.clone();
        let (service_known, old) = self.catalog.read(|state| {
            (
                check.service_id.is_empty() || state.instance(&node, &check.service_id).is_some(),
                state.check(&node, &check.id).map(|c| c.value.clone()),
            )
        });
        if !service_known {
            return Err(RegistryError::BadRequest(format!(
                "ServiceID {:?} does not exist",
                check.service_id
            )));
        }
        let mut txn = Txn::new();
        match old {
            Some(old) => {
                check.status = old.status;
                check.output = old.output;
                check.critical_since_ms = old.critical_since_ms;
                if old.node.is_empty() {
                    txn = txn.op(Op::delete(&keys::check_key("", &old.id)));
                }
            }
            None if check.status == Status::Critical => check.critical_since_ms = Some(now_ms()),
            None => {}
        }
        self.commit(txn.op(Op::put(
            &keys::check_key(&node, &check.id),
            keys::encode_check(&check),
        )))
        .await
    }

    pub async fn deregister_check(&self, id: &str) -> Result<(), RegistryError> {
        let found = self
            .catalog
            .read(|state| state.check(&self.node().name, id).map(|c| c.value.clone()));
        let Some(check) = found else {
            return Err(RegistryError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        };
        self.commit(Txn::new().op(Op::delete(&keys::check_key(&check.node, &check.id))))
            .await
    }

    /// Declares a supervised service and how many replicas to run (the supervisor, at start).
    pub async fn declare_service(
        &self,
        name: &str,
        replicas: u32,
        bounds: Option<keys::Bounds>,
        target_concurrency: Option<f64>,
    ) -> Result<(), RegistryError> {
        let current = self.catalog.read(|state| state.desired.get(name).cloned());
        let current = current.unwrap_or(keys::Desired {
            replicas,
            restart: 0,
            bounds: None,
            decision: None,
            promote: 0,
            abort: 0,
            target_concurrency: None,
        });
        self.write_desired(
            name,
            keys::Desired {
                replicas,
                bounds,
                target_concurrency,
                ..current
            },
        )
        .await
    }

    async fn write_desired(&self, name: &str, desired: keys::Desired) -> Result<(), RegistryError> {
        let value = serde_json::to_vec(&desired).expect("desired state serialises");
        self.commit(Txn::new().op(Op::put(&keys::desired_key(name), value)))
            .await
    }

    /// `wharf scale NAME=N`, or an autoscaler's `decision`: changes the replicas of a service
    /// the supervisor runs, within its bounds if it has them. Answers the count set.
    pub async fn scale(
        &self,
        name: &str,
        replicas: u32,
        decision: Option<keys::ScaleDecision>,
    ) -> Result<u32, RegistryError> {
        let mut desired = self.supervised(name)?;
        desired.replicas = match desired.bounds {
            Some(bounds) => replicas.clamp(bounds.min, bounds.max),
            None => replicas,
        };
        if let Some(mut decision) = decision {
            decision.at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.metrics
                .autoscale_decision(name, decision.to > decision.from, &decision.mode);
            desired.decision = Some(decision);
        }
        let set = desired.replicas;
        self.write_desired(name, desired).await?;
        Ok(set)
    }

    /// `wharf restart NAME`: asks the supervisor for a rolling restart of a service.
    pub async fn restart(&self, name: &str) -> Result<(), RegistryError> {
        let mut desired = self.supervised(name)?;
        desired.restart += 1;
        self.write_desired(name, desired).await
    }

    /// `wharf rollout promote|abort NAME`: an order to the canary of a service being rolled
    /// out (each bumps its counter, which the supervisor follows).
    pub async fn rollout_order(&self, name: &str, order: &str) -> Result<(), RegistryError> {
        let mut desired = self.supervised(name)?;
        match order {
            "promote" => desired.promote += 1,
            "abort" => desired.abort += 1,
            other => {
                return Err(RegistryError::BadRequest(format!(
                    "order={other:?}: expected promote or abort"
                )));
            }
        }
        self.write_desired(name, desired).await
    }

    /// The supervisor no longer runs `name` (`wharf apply` removed it): its desired state goes.
    pub async fn forget_service(&self, name: &str) -> Result<(), RegistryError> {
        self.supervised(name)?;
        self.commit(Txn::new().op(Op::delete(&keys::desired_key(name))))
            .await
    }

    /// The desired state of a service the supervisor runs; not found if none does.
    fn supervised(&self, name: &str) -> Result<keys::Desired, RegistryError> {
        self.catalog
            .read(|state| state.desired.get(name).cloned())
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "no supervised service named {name:?} (is `wharf up` running it?)"
                ))
            })
    }

    /// A TTL check's pass/warn/fail: sets the status and output and restarts its TTL.
    pub async fn update_ttl(
        &self,
        id: &str,
        status: Status,
        output: &str,
    ) -> Result<(), RegistryError> {
        let (stored, elsewhere) = self.catalog.read(|state| {
            let own = state.check(&self.node().name, id).cloned();
            let elsewhere = state
                .checks
                .values()
                .find(|c| c.value.id == id && !self.owns(&c.value.node))
                .map(|c| c.value.node.clone());
            (own, elsewhere)
        });
        let Some(stored) = stored else {
            return Err(RegistryError::NotFound(match elsewhere {
                // Its TTL runs on the node that owns it: an update here would not reach it.
                Some(node) => format!(
                    "Unknown check ID {id:?} on this node: it belongs to node {node:?}; update it through that node"
                ),
                None => format!(
                    "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
                ),
            }));
        };
        let CheckKind::Ttl { ttl } = stored.value.kind else {
            return Err(RegistryError::NotTtl(id.to_owned()));
        };
        self.reset_ttl(&keys::scoped(&stored.value.node, id), ttl);
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
        let key = keys::check_key(&check.node, &check.id);
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
            let current = self.catalog.read(|state| {
                state
                    .checks
                    .get(&keys::scoped(&check.node, &check.id))
                    .cloned()
            });
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
    pub(crate) async fn commit_when(&self, txn: Txn) -> Result<bool, RegistryError> {
        let outcome = self.store.txn(self.with_tombstones(txn)).await?;
        if outcome.succeeded {
            self.catalog.wait_applied(outcome.revision).await;
        }
        Ok(outcome.succeeded)
    }

    /// `txn` with the tombstones of what it deletes.
    pub(crate) fn with_tombstones(&self, mut txn: Txn) -> Txn {
        let tombstones = self.catalog.read(|state| state.tombstones(&txn.ops));
        txn.ops.extend(
            tombstones
                .into_iter()
                .map(|tombstone| Op::put(&tombstone.key(), Vec::new())),
        );
        txn
    }

    /// [`Agent::commit_when`] for a transaction without comparisons.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<(), RegistryError> {
        self.commit_when(txn).await.map(|_| ())
    }
}
