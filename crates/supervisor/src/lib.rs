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
pub mod companion;
mod controller;
mod logs;
mod process;
pub mod registry;
mod replica;
mod scaler;
mod spec;

use std::sync::Arc;

use tokio::sync::watch;
use wharf_client::Client;

pub use companion::{Attached, Companion};
use controller::Controller;
pub use logs::LogStyle;
pub use registry::{ApiRegistry, HealthView, Registry};
pub use spec::{Autoscale, CheckSpec, ServiceSpec, Target, Timings};

/// Runs services until stopped.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(color, spec)| {
                let controller = Controller::new(
                    registry.clone(),
                    registry_url.clone(),
                    spec,
                    timings,
                    color,
                    style,
                    companion.clone(),
                );
                tokio::spawn(controller.run(stop_rx.clone()))
            })
            .collect();
        Supervisor { stop, tasks }
    }

    /// Deregisters every instance and stops every process.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests;
