//! One service's controller: keeps the number of replicas at the desired count the registry
//! holds (`wharf scale`, the autoscaler), replaces them one at a time on `wharf restart`, and
//! carries out `wharf apply`'s changes to the service (a new spec rolled out the same way, a
//! new count or new autoscale settings declared, the service removed). Every replacement
//! passes its check before an old instance is drained; a rollout whose new instance never
//! passes is rolled back, the instances already replaced put back on the old spec.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use wharf_client::Desired;

use crate::logs::LogStyle;
use crate::plan::{Change, instances};
use crate::registry::{HealthView, Registry};
use crate::replica::{Replica, stopped};
use crate::scaler::Scaler;
use crate::spec::{ServiceSpec, Timings};

/// What `wharf apply` asks of a running controller; each is answered once carried out.
pub(crate) enum Order {
    /// Run from a changed spec.
    Revise(Box<Change>, oneshot::Sender<Result<String, String>>),
    /// Drain and stop every instance, forget the service's desired state, and end.
    Remove(oneshot::Sender<Result<String, String>>),
}

pub(crate) struct Controller<R> {
    pub(crate) registry: Arc<R>,
    pub(crate) registry_url: String,
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) timings: Timings,
    pub(crate) color: usize,
    pub(crate) style: LogStyle,
    pub(crate) replicas: Vec<Running>,
    pub(crate) companion: Option<Arc<dyn crate::companion::Companion>>,
    /// Numbers the rollouts of new specs: their instances are `<name>-<n>-v<revision>`.
    pub(crate) revision: u64,
    scaler: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

/// A replica task, the spec it runs, and the handle that stops it.
pub(crate) struct Running {
    id: String,
    spec: Arc<ServiceSpec>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Which replicas a rolling replacement replaces.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    /// Every one (`wharf restart`).
    All,
    /// Those not running the controller's spec (a rollout, or a rollout's rollback).
    Outdated,
}

impl<R: Registry> Controller<R> {
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut orders: mpsc::UnboundedReceiver<Order>,
    ) {
        // Declare the service with the manifest's count; retry while the registry starts.
        if !self
            .declare(self.spec.replicas, self.spec.autoscale, &mut stop)
            .await
        {
            return;
        }
        let health = self.registry.health(&self.spec.name, stop.clone());
        let mut desired = self.registry.desired(&self.spec.name, stop.clone());
        self.start_scaler(&health, &desired);
        self.set_count(self.spec.replicas, &health).await;
        let mut generation: Option<u64> = None;
        let mut removed = None;
        loop {
            let current = *desired.borrow_and_update();
            if let Some(wanted) = current {
                self.set_count(wanted.replicas, &health).await;
                if generation.is_some_and(|g| wanted.restart > g) {
                    let suffix = format!("r{}", wanted.restart);
                    if let Err(e) = self
                        .replace(Which::All, &suffix, health.clone(), &mut stop)
                        .await
                    {
                        tracing::warn!(service = %self.spec.name, error = %e, "rolling restart stopped");
                    }
                }
                generation = Some(wanted.restart);
            }
            tokio::select! {
                changed = desired.changed() => if changed.is_err() { break },
                Some(order) = orders.recv() => match order {
                    Order::Revise(change, done) => {
                        let outcome = self.revise(*change, &health, &desired, &mut stop).await;
                        let _ = done.send(outcome);
                    }
                    Order::Remove(done) => {
                        removed = Some(done);
                        break;
                    }
                },
                _ = stopped(&mut stop) => break,
            }
        }
        self.stop_scaler().await;
        let count = self.replicas.len();
        self.set_count(0, &health).await;
        if let Some(done) = removed {
            let outcome = match self.registry.forget(&self.spec.name).await {
                Ok(()) => Ok(format!("stopped {}", instances(count))),
                Err(e) => Err(format!(
                    "stopped {}; cannot forget its desired state: {e}",
                    instances(count)
                )),
            };
            let _ = done.send(outcome);
        }
    }

    /// Declares the service's count, and its bounds and target concurrency if `autoscale`,
    /// retrying while the registry cannot be reached; false if stopped first.
    async fn declare(
        &self,
        replicas: u32,
        autoscale: Option<crate::spec::Autoscale>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let bounds = autoscale.map(|a| (a.min, a.max));
        let target = autoscale.and_then(|a| match a.target {
            crate::spec::Target::Concurrency(n) => Some(n),
            crate::spec::Target::Rps(_) => None,
        });
        let mut failures = 0;
        while let Err(e) = self
            .registry
            .declare(&self.spec.name, replicas, bounds, target)
            .await
        {
            tracing::warn!(service = %self.spec.name, error = %e, "cannot declare service; retrying");
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(wharf_client::backoff(failures)) => {}
                _ = stopped(stop) => return false,
            }
        }
        true
    }

    /// Starts the autoscaler of an autoscaled spec.
    fn start_scaler(
        &mut self,
        health: &watch::Receiver<Arc<HealthView>>,
        desired: &watch::Receiver<Option<Desired>>,
    ) {
        let Some(autoscale) = self.spec.autoscale else {
            return;
        };
        let scaler = Scaler {
            registry: self.registry.clone(),
            spec: self.spec.clone(),
            autoscale,
            health: health.clone(),
            desired: desired.clone(),
            style: self.style.for_service(self.color).named(&self.spec.name),
        };
        let (stop, stop_rx) = watch::channel(false);
        self.scaler = Some((stop, tokio::spawn(scaler.run(stop_rx))));
    }

    async fn stop_scaler(&mut self) {
        if let Some((stop, task)) = self.scaler.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Carries out one service's part of `wharf apply`: the new count and bounds declared
    /// (the count the service has kept unless the manifest's changed, clamped into new
    /// bounds), the autoscaler restarted on new settings, and the instances rolled onto the
    /// new spec if it changed what they run.
    async fn revise(
        &mut self,
        change: Change,
        health: &watch::Receiver<Arc<HealthView>>,
        desired: &watch::Receiver<Option<Desired>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<String, String> {
        let old = self.spec.clone();
        let new = Arc::new(change.spec);
        let mut done = Vec::new();
        let rescale = change.replicas.is_some() || change.autoscale.is_some();
        if rescale {
            let bounds = new.autoscale.map(|a| (a.min, a.max));
            let kept = desired.borrow().map_or(new.replicas, |d| d.replicas);
            let count = match (change.replicas, bounds) {
                (Some((_, to)), _) => to,
                (None, Some((min, max))) => kept.clamp(min, max),
                (None, None) => kept,
            };
            self.stop_scaler().await;
            if !self.declare(count, new.autoscale, stop).await {
                return Err("stopped".to_owned());
            }
            done.push(format!("{count} replicas declared"));
        }
        self.spec = new;
        if rescale {
            self.start_scaler(health, desired);
        }
        if change.replace.is_empty() {
            return Ok(done.join(", "));
        }
        if let Some(rollout) = self.spec.rollout.clone()
            && !self.replicas.is_empty()
        {
            // The old spec runs on as the stable version until the canary is promoted.
            let new = std::mem::replace(&mut self.spec, old);
            let outcome = self.canary(new, rollout, health, desired, stop).await;
            return outcome.map(|o| {
                done.push(o);
                done.join(", ")
            });
        }
        self.revision += 1;
        let suffix = format!("v{}", self.revision + 1);
        match self
            .replace(Which::Outdated, &suffix, health.clone(), stop)
            .await
        {
            Ok(replaced) => {
                done.push(format!("{} replaced", instances(replaced)));
                Ok(done.join(", "))
            }
            Err(e) => {
                // Back onto the spec that ran: the instances already replaced first.
                self.spec = old;
                self.revision += 1;
                let suffix = format!("v{}", self.revision + 1);
                let rolled_back = self
                    .replace(Which::Outdated, &suffix, health.clone(), stop)
                    .await;
                let back = match rolled_back {
                    Ok(n) => format!("rolled back ({} put back on the old spec)", instances(n)),
                    Err(e) => format!("and the rollback stopped too: {e}"),
                };
                Err(format!("{e}; {back}"))
            }
        }
    }

    fn spawn(&self, id: String, health: &watch::Receiver<Arc<HealthView>>) -> Running {
        self.spawn_with(self.spec.clone(), id, health)
    }

    /// A replica of `spec` (the controller's, or a canary's).
    pub(crate) fn spawn_with(
        &self,
        spec: Arc<ServiceSpec>,
        id: String,
        health: &watch::Receiver<Arc<HealthView>>,
    ) -> Running {
        let replica = Replica {
            registry: self.registry.clone(),
            registry_url: self.registry_url.clone(),
            spec: spec.clone(),
            timings: self.timings,
            style: self.style.for_service(self.color).named(&id),
            id: id.clone(),
            health: health.clone(),
            companion: self.companion.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        Running {
            id,
            spec,
            stop,
            task: tokio::spawn(replica.run(stop_rx)),
        }
    }

    /// Starts or stops replicas, the highest-numbered first, until `wanted` run.
    async fn set_count(&mut self, wanted: u32, health: &watch::Receiver<Arc<HealthView>>) {
        let wanted = wanted as usize;
        if wanted != self.replicas.len() {
            tracing::info!(service = %self.spec.name, from = self.replicas.len(), to = wanted, "scaling");
        }
        while self.replicas.len() < wanted {
            let id = format!("{}-{}", self.spec.name, self.replicas.len() + 1);
            let running = self.spawn(id, health);
            self.replicas.push(running);
        }
        while self.replicas.len() > wanted {
            let Some(running) = self.replicas.pop() else {
                break;
            };
            running.stop().await;
        }
    }

    /// Replaces replicas one at a time with instances of the current spec (id
    /// `<name>-<n>-<suffix>`): each new instance must pass its check before the old one is
    /// deregistered, drained and stopped, so that clients through the gateway see no
    /// failure. A replacement that never passes is stopped, the old instance kept, and the
    /// rest left as they are. Waits on the service's health as it changes. The count replaced.
    pub(crate) async fn replace(
        &mut self,
        which: Which,
        suffix: &str,
        mut health: watch::Receiver<Arc<HealthView>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<usize, String> {
        tracing::info!(service = %self.spec.name, suffix, "rolling replacement");
        let patience = self.timings.start_deadline + self.timings.critical_grace;
        let mut replaced = 0;
        for slot in 0..self.replicas.len() {
            if matches!(which, Which::Outdated)
                && Arc::ptr_eq(&self.replicas[slot].spec, &self.spec)
            {
                continue;
            }
            let id = format!("{}-{}-{suffix}", self.spec.name, slot + 1);
            let replacement = self.spawn(id.clone(), &health);
            let passing =
                health.wait_for(|view| view.get(&id).map(String::as_str) == Some("passing"));
            let passed = tokio::select! {
                passed = tokio::time::timeout(patience, passing) => Some(matches!(passed, Ok(Ok(_)))),
                _ = stopped(stop) => None,
            };
            let Some(passed) = passed else {
                replacement.stop().await;
                return Err("stopped".to_owned());
            };
            if !passed {
                tracing::warn!(service = %self.spec.name, instance = %id, "replacement never passed; keeping the old instance");
                replacement.stop().await;
                return Err(format!(
                    "{id} did not pass its check within {}s; {} kept",
                    patience.as_secs(),
                    self.replicas[slot].id
                ));
            }
            let old = std::mem::replace(&mut self.replicas[slot], replacement);
            tracing::info!(service = %self.spec.name, old = %old.id, new = %id, "replaced");
            old.stop().await;
            replaced += 1;
        }
        Ok(replaced)
    }
}

impl<R> Controller<R> {
    pub(crate) fn new(
        registry: Arc<R>,
        registry_url: String,
        spec: ServiceSpec,
        timings: Timings,
        color: usize,
        style: LogStyle,
        companion: Option<Arc<dyn crate::companion::Companion>>,
    ) -> Controller<R> {
        Controller {
            registry,
            registry_url,
            spec: Arc::new(spec),
            timings,
            color,
            style,
            replicas: Vec::new(),
            companion,
            revision: 0,
            scaler: None,
        }
    }
}
