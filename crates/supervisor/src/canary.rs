//! A change rolled out as a canary (a service's `rollout`): the new spec runs beside the old
//! as the `canary` subset of a traffic split (instances marked with their version,
//! [`VERSION_META`]), taking each of the strategy's weights in turn for a step, with as many
//! instances as its share of the stable count (at least one). At the end of each step its
//! golden metrics, as the proxies reported them, are judged against the limits and against
//! the `stable` subset: it fails if more of its requests failed than `max_failure_rate` and
//! than the stable version's, or its p99 is above `max_p99` and above the stable version's (a
//! failure both versions share is not the canary's). Too little traffic to judge extends the
//! step, up to ten times. The first failure rolls it back: all traffic to the stable
//! version, the canary's instances drained and stopped, the split removed, the old spec kept.
//! After the last step the canary is promoted: all traffic to it while the stable instances
//! are replaced one at a time by the new spec, then the split removed and the canary stopped.
//! `wharf rollout promote` and `abort` (the desired state's counters) end it at once either way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use wharf_client::Desired;

use crate::controller::{Controller, Running, Which};
use crate::registry::{HealthView, Registry, SubsetFigures, VERSION_META};
use crate::replica::stopped;
use crate::spec::{Rollout, ServiceSpec};

/// Requests the canary must have answered in the last minute to be judged.
const ENOUGH_TO_JUDGE: u64 = 10;
/// Steps a judgement may wait for traffic before the canary is rolled back.
const MOST_EXTENSIONS: u32 = 10;

/// How a step ended.
enum Verdict {
    Passed(String),
    Failed(String),
    Promote,
    Abort(String),
}

impl<R: Registry> Controller<R> {
    /// Rolls `new` out as a canary by `rollout`; the outcome as `wharf apply` reports it.
    pub(crate) async fn canary(
        &mut self,
        new: Arc<ServiceSpec>,
        rollout: Rollout,
        health: &watch::Receiver<Arc<HealthView>>,
        desired: &watch::Receiver<Option<Desired>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<String, String> {
        self.revision += 1;
        let version = format!("v{}", self.revision + 1);
        let mut marked = (*new).clone();
        marked.meta.insert(VERSION_META.to_owned(), version.clone());
        let marked = Arc::new(marked);
        let orders = desired.borrow().map(|d| (d.promote, d.abort));
        let mut canaries: Vec<Running> = Vec::new();
        let mut reached = 0.0;
        // Split first, nothing to the canary: from its first instance on, it takes only the
        // share it is given (the registry refuses a share to a subset with no instance).
        let mut verdict = match self.registry.split(&self.spec.name, &version, 0.0).await {
            Ok(()) => Verdict::Promote,
            Err(e) => Verdict::Failed(format!("cannot split the traffic: {e}")),
        };
        for &weight in &rollout.weights {
            if matches!(verdict, Verdict::Failed(_)) {
                break;
            }
            reached = weight;
            let wanted = ((self.replicas.len() as f64 * weight / 100.0).ceil() as usize).max(1);
            if let Err(e) = self
                .grow_canaries(&mut canaries, wanted, &marked, &version, health, stop)
                .await
            {
                verdict = Verdict::Failed(e);
                break;
            }
            if let Err(e) = self.registry.split(&self.spec.name, &version, weight).await {
                verdict = Verdict::Failed(format!("cannot split the traffic: {e}"));
                break;
            }
            self.note(&format!(
                "canary {version} at {weight}% ({} instances)",
                canaries.len()
            ));
            verdict = self
                .judge_step(&rollout, orders, desired.clone(), stop)
                .await;
            match &verdict {
                Verdict::Passed(figures) => {
                    self.note(&format!("canary {version} passed {weight}%: {figures}"));
                }
                _ => break,
            }
        }
        match verdict {
            Verdict::Passed(_) | Verdict::Promote => {
                self.promote(new, &version, canaries, health, stop).await
            }
            Verdict::Failed(why) | Verdict::Abort(why) => {
                let _ = self.registry.split(&self.spec.name, &version, 0.0).await;
                for canary in canaries {
                    canary.stop().await;
                }
                let _ = self.registry.unsplit(&self.spec.name).await;
                let outcome = format!("canary {version} rolled back at {reached}%: {why}");
                self.note(&outcome);
                Err(outcome)
            }
        }
    }

    /// Starts canaries until `wanted` run, each passing before the next.
    async fn grow_canaries(
        &self,
        canaries: &mut Vec<Running>,
        wanted: usize,
        marked: &Arc<ServiceSpec>,
        version: &str,
        health: &watch::Receiver<Arc<HealthView>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let patience = self.timings.start_deadline + self.timings.critical_grace;
        while canaries.len() < wanted {
            let id = format!("{}-canary-{}-{version}", self.spec.name, canaries.len() + 1);
            let canary = self.spawn_with(marked.clone(), id.clone(), health);
            let mut watching = health.clone();
            let passing =
                watching.wait_for(|view| view.get(&id).map(String::as_str) == Some("passing"));
            let passed = tokio::select! {
                passed = tokio::time::timeout(patience, passing) => matches!(passed, Ok(Ok(_))),
                _ = stopped(stop) => false,
            };
            canaries.push(canary);
            if !passed {
                return Err(format!("{id} did not pass its check"));
            }
        }
        Ok(())
    }

    /// Waits out one step (longer while there is too little traffic to judge) and judges it.
    async fn judge_step(
        &self,
        rollout: &Rollout,
        orders: Option<(u64, u64)>,
        mut desired: watch::Receiver<Option<Desired>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Verdict {
        for _ in 0..=MOST_EXTENSIONS {
            let waited = tokio::time::sleep(rollout.step);
            tokio::pin!(waited);
            loop {
                tokio::select! {
                    _ = &mut waited => break,
                    changed = desired.changed() => {
                        if changed.is_err() {
                            return Verdict::Abort("the registry went away".into());
                        }
                        let now = desired.borrow().map(|d| (d.promote, d.abort));
                        match (orders, now) {
                            (Some((promote, _)), Some((p, _))) if p > promote => return Verdict::Promote,
                            (Some((_, abort)), Some((_, a))) if a > abort => {
                                return Verdict::Abort("aborted by wharf rollout abort".into());
                            }
                            _ => {}
                        }
                    }
                    _ = stopped(stop) => return Verdict::Abort("wharf up is stopping".into()),
                }
            }
            let (stable, canary) = match self.registry.subsets(&self.spec.name).await {
                Ok(figures) => figures,
                Err(e) => return Verdict::Failed(format!("cannot read its golden metrics: {e}")),
            };
            if canary.requests < ENOUGH_TO_JUDGE {
                self.note(&format!(
                    "canary has answered {} requests in the last minute; waiting for {ENOUGH_TO_JUDGE} to judge it",
                    canary.requests
                ));
                continue;
            }
            return judge(rollout, &stable, &canary);
        }
        Verdict::Failed(format!(
            "fewer than {ENOUGH_TO_JUDGE} requests to judge it by after {} steps",
            MOST_EXTENSIONS + 1
        ))
    }

    /// All traffic to the canary, the stable instances replaced by the new spec one at a
    /// time, then the split removed and the canaries stopped.
    async fn promote(
        &mut self,
        new: Arc<ServiceSpec>,
        version: &str,
        canaries: Vec<Running>,
        health: &watch::Receiver<Arc<HealthView>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<String, String> {
        if let Err(e) = self.registry.split(&self.spec.name, version, 100.0).await {
            tracing::warn!(service = %self.spec.name, error = %e, "cannot send all traffic to the canary; promoting anyway");
        }
        let old = self.spec.clone();
        self.spec = new;
        let suffix = version.to_owned();
        let replaced = self
            .replace(Which::Outdated, &suffix, health.clone(), stop)
            .await;
        let _ = self.registry.unsplit(&self.spec.name).await;
        for canary in canaries {
            canary.stop().await;
        }
        match replaced {
            Ok(n) => {
                let outcome = format!(
                    "canary {version} promoted: {}",
                    crate::plan::instances(n) + " replaced"
                );
                self.note(&outcome);
                Ok(outcome)
            }
            Err(e) => {
                self.spec = old;
                Err(format!(
                    "canary {version} passed but its promotion stopped: {e}"
                ))
            }
        }
    }

    fn note(&self, line: &str) {
        self.style
            .for_service(self.color)
            .named(&self.spec.name)
            .note(line);
        tracing::info!(service = %self.spec.name, "{line}");
    }
}

/// A step's verdict from the subsets' last minute.
fn judge(rollout: &Rollout, stable: &SubsetFigures, canary: &SubsetFigures) -> Verdict {
    let (rate, stable_rate) = (canary.failure_rate(), stable.failure_rate());
    if rate > rollout.max_failure_rate && rate > stable_rate {
        return Verdict::Failed(format!(
            "{:.1}% of its requests failed (limit {:.1}%, stable {:.1}%)",
            rate * 100.0,
            rollout.max_failure_rate * 100.0,
            stable_rate * 100.0
        ));
    }
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    if let (Some(limit), Some(p99)) = (rollout.max_p99, canary.p99)
        && p99 > limit
        && stable.p99.is_none_or(|s| p99 > s)
    {
        return Verdict::Failed(format!(
            "its p99 is {} (limit {}, stable {})",
            ms(Some(p99)),
            ms(Some(limit)),
            ms(stable.p99)
        ));
    }
    Verdict::Passed(format!(
        "{} requests, {:.1}% failed (stable {:.1}%), p99 {} (stable {})",
        canary.requests,
        rate * 100.0,
        stable_rate * 100.0,
        ms(canary.p99),
        ms(stable.p99)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, failures: u64, p99_ms: u64) -> SubsetFigures {
        SubsetFigures {
            requests,
            failures,
            p99: Some(Duration::from_millis(p99_ms)),
        }
    }

    fn rollout() -> Rollout {
        Rollout {
            weights: vec![10.0, 100.0],
            step: Duration::from_secs(1),
            max_failure_rate: 0.01,
            max_p99: Some(Duration::from_millis(500)),
        }
    }

    #[test]
    fn a_canary_fails_on_what_only_it_breaks() {
        let fails =
            |stable, canary| matches!(judge(&rollout(), &stable, &canary), Verdict::Failed(_));
        assert!(
            fails(figures(1000, 0, 10), figures(100, 20, 10)),
            "20 % errors"
        );
        assert!(
            !fails(figures(1000, 0, 10), figures(100, 1, 10)),
            "1 %: at the limit"
        );
        assert!(
            !fails(figures(1000, 300, 10), figures(100, 30, 10)),
            "both fail alike: not the canary's doing"
        );
        assert!(fails(figures(1000, 0, 10), figures(100, 0, 800)), "slow");
        assert!(
            !fails(figures(1000, 0, 900), figures(100, 0, 800)),
            "slow, but faster than the stable version"
        );
    }
}
