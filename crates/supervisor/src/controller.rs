//! One service's controller: keeps the number of replicas at the desired count the registry
//! holds (`wharf scale`), and replaces them one at a time on `wharf restart`, each new
//! instance passing its check before an old one is drained.

use std::sync::Arc;

use tokio::sync::watch;

use crate::logs::LogStyle;
use crate::registry::{HealthView, Registry};
use crate::replica::{Replica, stopped};
use crate::scaler::Scaler;
use crate::spec::{ServiceSpec, Timings};

pub(crate) struct Controller<R> {
    pub(crate) registry: Arc<R>,
    pub(crate) registry_url: String,
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) timings: Timings,
    pub(crate) color: usize,
    pub(crate) style: LogStyle,
    pub(crate) replicas: Vec<Running>,
    pub(crate) companion: Option<Arc<dyn crate::companion::Companion>>,
}

/// A replica task and the handle that stops it.
pub(crate) struct Running {
    id: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl<R: Registry> Controller<R> {
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Declare the service with the manifest's count; retry while the registry starts.
        let mut failures = 0;
        let bounds = self.spec.autoscale.map(|a| (a.min, a.max));
        while let Err(e) = self
            .registry
            .declare(&self.spec.name, self.spec.replicas, bounds)
            .await
        {
            tracing::warn!(service = %self.spec.name, error = %e, "cannot declare service; retrying");
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(wharf_client::backoff(failures)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        let health = self.registry.health(&self.spec.name, stop.clone());
        let mut desired = self.registry.desired(&self.spec.name, stop.clone());
        let scaler = self.spec.autoscale.map(|autoscale| {
            let scaler = Scaler {
                registry: self.registry.clone(),
                spec: self.spec.clone(),
                autoscale,
                health: health.clone(),
                desired: desired.clone(),
                style: self.style.for_service(self.color).named(&self.spec.name),
            };
            tokio::spawn(scaler.run(stop.clone()))
        });
        self.set_count(self.spec.replicas, &health).await;
        let mut generation: Option<u64> = None;
        loop {
            let current = *desired.borrow_and_update();
            if let Some(wanted) = current {
                self.set_count(wanted.replicas, &health).await;
                if generation.is_some_and(|g| wanted.restart > g) {
                    self.rolling_restart(wanted.restart, health.clone(), &mut stop)
                        .await;
                }
                generation = Some(wanted.restart);
            }
            tokio::select! {
                changed = desired.changed() => if changed.is_err() { break },
                _ = stopped(&mut stop) => break,
            }
        }
        if let Some(scaler) = scaler {
            let _ = scaler.await;
        }
        self.set_count(0, &health).await;
    }

    fn spawn(&self, id: String, health: &watch::Receiver<Arc<HealthView>>) -> Running {
        let replica = Replica {
            registry: self.registry.clone(),
            registry_url: self.registry_url.clone(),
            spec: self.spec.clone(),
            timings: self.timings,
            style: self.style.for_service(self.color).named(&id),
            id: id.clone(),
            health: health.clone(),
            companion: self.companion.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        Running {
            id,
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

    /// Replaces the replicas one at a time: the new instance (id `<name>-<n>-r<generation>`)
    /// must pass its check before the old one is deregistered, drained and stopped, so that
    /// clients through the gateway see no failure. A replacement that never passes is
    /// stopped and the old instance kept. Waits on the service's health as it changes.
    async fn rolling_restart(
        &mut self,
        generation: u64,
        mut health: watch::Receiver<Arc<HealthView>>,
        stop: &mut watch::Receiver<bool>,
    ) {
        tracing::info!(service = %self.spec.name, generation, "rolling restart");
        let patience = self.timings.start_deadline + self.timings.critical_grace;
        for slot in 0..self.replicas.len() {
            let id = format!("{}-{}-r{generation}", self.spec.name, slot + 1);
            let replacement = self.spawn(id.clone(), &health);
            let passing =
                health.wait_for(|view| view.get(&id).map(String::as_str) == Some("passing"));
            let passed = tokio::select! {
                passed = tokio::time::timeout(patience, passing) => matches!(passed, Ok(Ok(_))),
                _ = stopped(stop) => false,
            };
            if !passed {
                tracing::warn!(service = %self.spec.name, instance = %id, "replacement never passed; keeping the old instance");
                replacement.stop().await;
                return;
            }
            let old = std::mem::replace(&mut self.replicas[slot], replacement);
            tracing::info!(service = %self.spec.name, old = %old.id, new = %id, "replaced");
            old.stop().await;
        }
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
        }
    }
}
