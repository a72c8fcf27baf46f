//! An autoscaled service's loop: every second, its load from the registry (what the proxies
//! reported in the last second) and its passing instances go to its [`Autoscaler`]; a change
//! of count is written to the registry as the service's desired state, with what it was made
//! from, so that the controller, `wharf stat` and the dashboard all see it; and printed.
//! While it runs no instance (scaled to zero), the load is read five times a second, and the
//! first sign of any (a request held at a proxy, reported at once) goes to the autoscaler
//! without waiting for the second: that wait would be the first request's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use wharf_client::Desired;

use crate::autoscale::{Autoscaler, Decision, Observation};
use crate::logs::Prefix;
use crate::registry::{HealthView, Registry};
use crate::replica::stopped;
use crate::spec::{Autoscale, ServiceSpec, Target};

pub(crate) struct Scaler<R> {
    pub(crate) registry: Arc<R>,
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) autoscale: Autoscale,
    pub(crate) health: watch::Receiver<Arc<HealthView>>,
    pub(crate) desired: watch::Receiver<Option<Desired>>,
    pub(crate) style: Prefix,
}

impl<R: Registry> Scaler<R> {
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut scaler = Autoscaler::new(self.autoscale, self.spec.replicas);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut unreadable = false;
        let mut observed: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut stop) => return,
            }
            let Some(current) = *self.desired.borrow() else {
                continue;
            };
            let second_over = observed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if !second_over && current.replicas > 0 {
                continue;
            }
            let load = match self.registry.load(&self.spec.name).await {
                Ok(load) => {
                    unreadable = false;
                    load
                }
                Err(e) => {
                    if !unreadable {
                        tracing::warn!(service = %self.spec.name, error = %e, "cannot read the load; not scaling");
                    }
                    unreadable = true;
                    continue;
                }
            };
            let ready = self
                .health
                .borrow()
                .values()
                .filter(|status| *status == "passing")
                .count();
            let seen = Observation {
                load: match self.autoscale.target {
                    Target::Concurrency(_) => load.in_flight as f64,
                    Target::Rps(_) => load.rps,
                },
                ready: u32::try_from(ready).unwrap_or(u32::MAX),
                desired: current.replicas,
            };
            if !second_over && seen.load == 0.0 {
                continue; // scaled to zero, and still nothing
            }
            observed = Some(Instant::now());
            let Some(decision) = scaler.observe(started.elapsed(), seen) else {
                continue;
            };
            self.style.note(&describe(&decision, self.autoscale.target));
            tracing::info!(
                service = %self.spec.name,
                from = decision.from,
                to = decision.to,
                mode = decision.mode.as_str(),
                load = decision.load,
                per_instance = decision.per_instance,
                target = decision.target,
                ready = decision.ready,
                startup_ms = scaler.startup().map(|s| s.as_millis() as u64),
                "autoscale"
            );
            if let Err(e) = self.registry.autoscale(&self.spec.name, &decision).await {
                tracing::warn!(service = %self.spec.name, error = %e, "cannot set the count the autoscaler decided");
            }
        }
    }
}

/// `autoscale 2 -> 6 (panic): 60.0 in flight, 30.0 per passing instance (2), target 10`.
fn describe(decision: &Decision, target: Target) -> String {
    let unit = match target {
        Target::Concurrency(_) => "in flight",
        Target::Rps(_) => "requests/s",
    };
    format!(
        "autoscale {} -> {} ({}): {:.1} {unit}, {:.1} per passing instance ({}), target {}",
        decision.from,
        decision.to,
        decision.mode.as_str(),
        decision.load,
        decision.per_instance,
        decision.ready,
        decision.target
    )
}
