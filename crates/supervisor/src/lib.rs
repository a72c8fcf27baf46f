//! The supervisor: runs each service of a manifest as local processes and keeps them running.
//!
//! Per replica, one task does the whole life cycle ([`replica`]):
//! 1. pick a free port and start the command in its own process group ([`process`]), with
//!    `PORT`, `WHARF_SERVICE`, `WHARF_INSTANCE` and `WHARF_REGISTRY` in its environment, its
//!    output prefixed with its name ([`logs`]);
//! 2. once the port accepts connections, register the instance (id `<service>-<n>`) with its
//!    check;
//! 3. if the process exits, or its check stays critical past the grace (30 s), start it again
//!    after a backoff (100 ms doubling to 30 s, back to 100 ms after a minute of good running),
//!    re-registering with the new port and the restart count in its meta, so that a crash loop
//!    shows in `wharf instances`;
//! 4. on stop: deregister first (so no new traffic is sent), drain 500 ms, then SIGTERM to the
//!    process group, SIGKILL after 5 s; nothing is left behind.
//!
//! A controller per service ([`controller`]) keeps the number of replicas at the desired count
//! stored in the registry (`wharf scale`), and replaces them one at a time on `wharf restart`.
//! An autoscaled service also has a loop ([`scaler`]) that sets that count from its load each
//! second, by the rules of [`autoscale`].
//! Everything the supervisor asks of the registry goes through one small interface
//! ([`registry::Registry`]): over the HTTP API in `wharf up`, a fake in the tests below. Each
//! service's health is followed with one blocking query that all its replicas share.

pub mod autoscale;
mod canary;
pub mod companion;
mod controller;
mod logs;
pub mod plan;
mod process;
pub mod registry;
mod replica;
mod scaler;
mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use wharf_client::Client;

pub use companion::{Attached, Companion};
use controller::{Controller, Order};
pub use logs::LogStyle;
pub use plan::{Plan, Step};
pub use registry::{ApiRegistry, HealthView, Registry};
pub use spec::{Autoscale, CheckSpec, Rollout, ServiceSpec, Target, Timings};

/// Runs services until stopped, and changes what runs when told (`wharf apply`).
pub struct Supervisor {
    stop: watch::Sender<bool>,
    /// Starts a service's controller; the number picks its colour in the logs.
    launch: Box<dyn Fn(ServiceSpec, usize) -> Supervised + Send + Sync>,
    /// The services running, by name; one apply at a time holds it.
    services: tokio::sync::Mutex<BTreeMap<String, Supervised>>,
    launched: std::sync::atomic::AtomicUsize,
}

/// A running service: what it runs from, and its controller.
struct Supervised {
    spec: ServiceSpec,
    orders: mpsc::UnboundedSender<Order>,
    task: tokio::task::JoinHandle<()>,
}

/// How one service's step of a plan went: what was done, or why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub service: String,
    pub result: Result<String, String>,
}

impl Supervisor {
    /// Starts every service; `registry_url` is what the processes are told. Each service's
    /// replica count follows its desired state in the registry, so `wharf scale` changes it.
    pub fn start(
        client: Client,
        registry_url: String,
        specs: Vec<ServiceSpec>,
        style: LogStyle,
    ) -> Supervisor {
        let registry = Arc::new(ApiRegistry { client });
        Supervisor::start_with(
            registry,
            registry_url,
            specs,
            style,
            Timings::default(),
            None,
        )
    }

    /// [`Supervisor::start`] with any registry and timings.
    pub fn start_with<R: Registry>(
        registry: Arc<R>,
        registry_url: String,
        specs: Vec<ServiceSpec>,
        style: LogStyle,
        timings: Timings,
        companion: Option<Arc<dyn Companion>>,
    ) -> Supervisor {
        let (stop, stop_rx) = watch::channel(false);
        let launch = move |spec: ServiceSpec, color: usize| {
            let (orders, orders_rx) = mpsc::unbounded_channel();
            let controller = Controller::new(
                registry.clone(),
                registry_url.clone(),
                spec.clone(),
                timings,
                color,
                style,
                companion.clone(),
            );
            Supervised {
                spec,
                orders,
                task: tokio::spawn(controller.run(stop_rx.clone(), orders_rx)),
            }
        };
        let services = specs
            .into_iter()
            .enumerate()
            .map(|(color, spec)| (spec.name.clone(), launch(spec, color)))
            .collect::<BTreeMap<_, _>>();
        Supervisor {
            stop,
            launched: services.len().into(),
            launch: Box::new(launch),
            services: tokio::sync::Mutex::new(services),
        }
    }

    /// The specs the services run from now.
    pub async fn running(&self) -> Vec<ServiceSpec> {
        let services = self.services.lock().await;
        services.values().map(|s| s.spec.clone()).collect()
    }

    /// Carries out a plan made against [`Supervisor::running`]: new services started,
    /// removed ones drained and stopped, changed ones revised, all at once; answers when
    /// every step is done (a rollout once its last instance is replaced), one outcome per
    /// step. A service whose rollout failed keeps running from its old spec.
    pub async fn apply(&self, plan: Plan) -> Vec<Outcome> {
        /// What a step's answer brings up to date.
        enum After {
            Nothing,
            Revised(Box<ServiceSpec>),
            Removed,
        }
        let mut services = self.services.lock().await;
        let mut pending = Vec::new();
        for step in plan.steps {
            let service = step.service().to_owned();
            let (done, answer) = oneshot::channel();
            // An order a controller cannot take drops `done`: its answer is "stopped".
            let after = match step {
                Step::Start(spec) if services.contains_key(&service) => {
                    let _ = done.send(Err(format!("{} already runs", spec.name)));
                    After::Nothing
                }
                Step::Start(spec) => {
                    let color = self
                        .launched
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = done.send(Ok(format!(
                        "started with {}",
                        plan::instances(spec.replicas as usize)
                    )));
                    services.insert(service.clone(), (self.launch)(spec, color));
                    After::Nothing
                }
                Step::Stop(_) => {
                    if let Some(running) = services.get(&service) {
                        let _ = running.orders.send(Order::Remove(done));
                    }
                    After::Removed
                }
                Step::Change(change) => {
                    let spec = Box::new(change.spec.clone());
                    if let Some(running) = services.get(&service) {
                        let _ = running.orders.send(Order::Revise(Box::new(change), done));
                    }
                    After::Revised(spec)
                }
            };
            pending.push((service, after, answer));
        }
        let mut outcomes = Vec::new();
        for (service, after, answer) in pending {
            let result = answer
                .await
                .unwrap_or_else(|_| Err("not running".to_owned()));
            match after {
                After::Revised(spec) if result.is_ok() => {
                    if let Some(running) = services.get_mut(&service) {
                        running.spec = *spec;
                    }
                }
                After::Removed => {
                    if let Some(running) = services.remove(&service) {
                        let _ = running.task.await;
                    }
                }
                _ => {}
            }
            outcomes.push(Outcome { service, result });
        }
        outcomes
    }

    /// Deregisters every instance and stops every process.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut services = self.services.lock().await;
        for (_, service) in std::mem::take(&mut *services) {
            let _ = service.task.await;
        }
    }
}

#[cfg(test)]
mod tests;
