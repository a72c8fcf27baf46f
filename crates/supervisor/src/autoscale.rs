//! The autoscaler: a service's replica count from its live load, evaluated every second.
//!
//! The rule is the Kubernetes HPA's: `desired = ceil(current × observed / target)`, nothing
//! changes while `observed / target` is within the tolerance of 1, and a scale-down goes only
//! to the highest count recommended over the scale-down delay (the HPA's stabilization window),
//! so a dip in load does not take instances away that the next second needs. `current` is the
//! instances that pass (they carry the load), so `current × observed` is the service's whole
//! load: in-flight requests summed over its instances at the proxies, or its requests per
//! second.
//!
//! Two things the HPA cannot know, because its metrics arrive 15 s late and it does not start
//! the pods itself, are used here:
//! - **Panic mode** (Knative's): when the load of the last second alone needs twice the
//!   passing instances, the count goes straight to what that burst needs, and does not come
//!   down for a minute (or the scale-down delay, if that is shorter).
//! - **Instances already starting.** A count is a total, not an increment, so instances still
//!   starting are counted already. While the ones the last scale-up started are within the
//!   service's measured startup time (how long the last scale-up took to pass, measured here),
//!   the count does not rise further unless the need doubles: requests queued at the instances
//!   that pass make their in-flight figure rise until the new ones take traffic, and reading
//!   that as new load would flood; once they pass, the load is measured afresh. Past that
//!   time the count may rise again, so a slow start does not become a lag.
//!
//! The decisions are pure functions of the observations and the time given, so that the tests
//! below drive them second by second.

use std::collections::VecDeque;
use std::time::Duration;

use crate::spec::{Autoscale, Target};

/// The load is averaged over this long for the stable rule.
const STABLE_WINDOW: Duration = Duration::from_secs(6);
/// And over this long for panic mode: the last sample alone.
const PANIC_WINDOW: Duration = Duration::from_secs(1);
/// Panic when a burst needs this many times the passing instances.
const PANIC_THRESHOLD: f64 = 2.0;
/// Panic mode lasts this long after the last burst that called for it.
const PANIC_HOLD: Duration = Duration::from_secs(60);
/// The startup time assumed until one is measured.
const ASSUMED_STARTUP: Duration = Duration::from_secs(10);

/// What the autoscaler sees each second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The service's whole load: in-flight requests over its instances, or requests per second.
    pub load: f64,
    /// Its instances that pass their checks.
    pub ready: u32,
    /// The count it runs now (passing, starting or failing).
    pub desired: u32,
}

/// Why a count changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stable,
    Panic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stable => "stable",
            Mode::Panic => "panic",
        }
    }
}

/// A change of count and what it was made from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub mode: Mode,
    /// The load it was made from (averaged over the mode's window), and per passing instance.
    pub load: f64,
    pub per_instance: f64,
    pub target: f64,
    pub ready: u32,
}

pub struct Autoscaler {
    spec: Autoscale,
    /// The load each second, newest last, over the stable window.
    samples: VecDeque<(Duration, f64)>,
    /// The count recommended each second, over the scale-down delay.
    recommendations: VecDeque<(Duration, u32)>,
    panic_until: Option<Duration>,
    /// The last scale-up not yet passing: when, and to how many.
    rising: Option<(Duration, u32)>,
    /// How long the last scale-up took from the decision to all of it passing.
    startup: Option<Duration>,
}

impl Autoscaler {
    /// An autoscaler whose service starts now (at time zero) with `replicas`: their start is
    /// the first startup time it measures.
    pub fn new(spec: Autoscale, replicas: u32) -> Autoscaler {
        Autoscaler {
            spec,
            samples: VecDeque::new(),
            recommendations: VecDeque::new(),
            panic_until: None,
            rising: (replicas > 0).then_some((Duration::ZERO, replicas)),
            startup: None,
        }
    }

    /// The measured startup time, once there is one.
    pub fn startup(&self) -> Option<Duration> {
        self.startup
    }

    /// The second `now` (since [`Autoscaler::new`]): the change of count to make, if any.
    pub fn observe(&mut self, now: Duration, seen: Observation) -> Option<Decision> {
        let spec = self.spec;
        let target = match spec.target {
            Target::Concurrency(t) | Target::Rps(t) => t,
        };
        if let Some((since, count)) = self.rising
            && seen.ready >= count
        {
            self.startup = Some(now.saturating_sub(since));
            self.rising = None;
            // What was measured while they started was the load queued at fewer instances:
            // the window starts again with them all taking traffic.
            self.samples.clear();
        }
        keep_since(&mut self.samples, now, STABLE_WINDOW);
        self.samples.push_back((now, seen.load.max(0.0)));

        let stable = mean_since(&self.samples, now, STABLE_WINDOW);
        let burst = mean_since(&self.samples, now, PANIC_WINDOW);
        let passing = f64::from(seen.ready.max(1));
        let burst_need = need(burst, target);
        // (With none passing yet there is nothing to compare a burst with.)
        if seen.ready > 0
            && f64::from(burst_need) >= PANIC_THRESHOLD * passing
            && burst_need > seen.desired
        {
            self.panic_until = Some(now + PANIC_HOLD.min(spec.scale_down_delay));
        }
        let panicking = self.panic_until.is_some_and(|until| now < until);

        // The HPA's rule on the stable load: nothing within the tolerance.
        let ratio = stable / (target * passing);
        // (With none passing and no load, there is nothing to go by.)
        let within = if seen.ready > 0 {
            (ratio - 1.0).abs() <= spec.tolerance
        } else {
            stable == 0.0
        };
        // The window of the scale-down delay keeps what the load asked for; panic mode holds
        // the count above it while it lasts, and is not remembered after.
        let asked = if within {
            seen.desired
        } else {
            need(stable, target)
        }
        .clamp(spec.min, spec.max);
        keep_since(&mut self.recommendations, now, spec.scale_down_delay);
        self.recommendations.push_back((now, asked));
        let (recommended, mode) = if panicking && burst_need.max(seen.desired) >= asked {
            (
                burst_need.max(seen.desired).clamp(spec.min, spec.max),
                Mode::Panic,
            )
        } else {
            (asked, Mode::Stable)
        };

        let to = if recommended > seen.desired {
            if self.held_while_starting(now, recommended, seen.desired) {
                return None;
            }
            recommended
        } else {
            // Down only to the highest count of the whole delay, once the delay has passed.
            let highest = self.recommendations.iter().map(|(_, n)| *n).max()?;
            if panicking || now < spec.scale_down_delay || highest >= seen.desired {
                return None;
            }
            highest
        };
        if to > seen.desired {
            self.rising = Some((now, to));
        }
        let load = if mode == Mode::Panic { burst } else { stable };
        Some(Decision {
            from: seen.desired,
            to,
            mode,
            load,
            per_instance: load / passing,
            target,
            ready: seen.ready,
        })
    }

    /// Whether a rise to `wanted` waits for the instances the last one started: it does while
    /// they are within the startup time (1.5 times the measured one) and the need has not
    /// doubled.
    fn held_while_starting(&self, now: Duration, wanted: u32, desired: u32) -> bool {
        let Some((since, _)) = self.rising else {
            return false;
        };
        let expected = self.startup.map_or(ASSUMED_STARTUP, |s| s + s / 2);
        now.saturating_sub(since) < expected && wanted < desired.saturating_mul(2)
    }
}

/// Instances that carry `load` at `target` each.
fn need(load: f64, target: f64) -> u32 {
    let need = (load / target).ceil();
    if need.is_finite() && need > 0.0 {
        need.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Drops what is older than `window` before `now`.
fn keep_since<T>(values: &mut VecDeque<(Duration, T)>, now: Duration, window: Duration) {
    while values
        .front()
        .is_some_and(|(at, _)| now.saturating_sub(*at) >= window)
    {
        values.pop_front();
    }
}

/// The mean of the samples of the last `window` (`now` included).
fn mean_since(samples: &VecDeque<(Duration, f64)>, now: Duration, window: Duration) -> f64 {
    let recent: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| now.saturating_sub(*at) < window)
        .map(|(_, load)| *load)
        .collect();
    if recent.is_empty() {
        0.0
    } else {
        recent.iter().sum::<f64>() / recent.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u32, max: u32, concurrency: f64) -> Autoscale {
        Autoscale {
            min,
            max,
            target: Target::Concurrency(concurrency),
            scale_down_delay: Duration::from_secs(30),
            tolerance: 0.1,
        }
    }

    /// Runs one second at a time from `from` to `to` (exclusive) with the same load, the
    /// instances passing as soon as they are asked for after `startup` seconds; the decisions
    /// and the count at the end.
    struct Run {
        scaler: Autoscaler,
        desired: u32,
        ready: u32,
        second: u64,
        /// (second asked, count) of rises not passing yet.
        pending: Vec<(u64, u32)>,
        startup: u64,
        decisions: Vec<(u64, Decision)>,
    }

    impl Run {
        fn new(spec: Autoscale, replicas: u32, startup: u64) -> Run {
            Run {
                scaler: Autoscaler::new(spec, replicas),
                desired: replicas,
                ready: 0,
                second: 0,
                pending: vec![(0, replicas)],
                startup,
                decisions: Vec::new(),
            }
        }

        fn seconds(&mut self, count: u64, load: f64) {
            for _ in 0..count {
                if let Some(&(asked, n)) = self.pending.last()
                    && self.second >= asked + self.startup
                {
                    self.ready = n.min(self.desired);
                    self.pending.clear();
                }
                self.ready = self.ready.min(self.desired);
                let seen = Observation {
                    load,
                    ready: self.ready,
                    desired: self.desired,
                };
                if let Some(decision) = self.scaler.observe(Duration::from_secs(self.second), seen)
                {
                    self.decisions.push((self.second, decision));
                    if decision.to > self.desired {
                        self.pending.push((self.second, decision.to));
                    }
                    self.desired = decision.to;
                }
                self.second += 1;
            }
        }
    }

    #[test]
    fn a_step_in_load_is_met_at_once_and_not_flooded() {
        // Two instances at 10 in flight each; the load triples.
        let mut run = Run::new(spec(1, 10, 10.0), 2, 3);
        run.seconds(20, 20.0);
        assert!(
            run.decisions.is_empty(),
            "steady at the target: {:?}",
            run.decisions
        );
        run.seconds(1, 60.0);
        let (second, first) = run.decisions[0];
        assert_eq!(
            (second, first.to, first.mode),
            (20, 6, Mode::Panic),
            "{first:?}"
        );
        // The queue at the two passing instances makes their in-flight figure climb while
        // the new ones start: no further rise within the startup time.
        run.seconds(2, 100.0);
        assert_eq!(run.desired, 6, "{:?}", run.decisions);
        run.seconds(30, 60.0);
        assert_eq!(run.desired, 6, "{:?}", run.decisions);
    }

    #[test]
    fn within_the_tolerance_nothing_changes() {
        let mut run = Run::new(spec(1, 10, 10.0), 4, 1);
        for second in 0..120 {
            // 36 to 44 in flight over four instances: within 10 % of the target.
            let load = 40.0 + if second % 2 == 0 { 4.0 } else { -4.0 };
            run.seconds(1, load);
        }
        assert!(run.decisions.is_empty(), "{:?}", run.decisions);
    }

    #[test]
    fn a_moderate_rise_scales_by_the_hpa_rule() {
        let mut run = Run::new(spec(1, 10, 10.0), 4, 1);
        run.seconds(10, 40.0);
        run.seconds(10, 58.0); // 1.45x: not a panic, more than the tolerance
        assert_eq!(run.desired, 6, "ceil(4 × 1.45): {:?}", run.decisions);
        assert!(run.decisions.iter().all(|(_, d)| d.mode == Mode::Stable));
    }

    #[test]
    fn scale_down_waits_for_the_delay_and_takes_the_highest_recommendation() {
        let mut run = Run::new(spec(1, 10, 10.0), 2, 1);
        run.seconds(40, 60.0);
        assert_eq!(run.desired, 6);
        let before = run.decisions.len();
        // The load falls to a third, then to nothing.
        run.seconds(29, 20.0);
        assert_eq!(run.decisions.len(), before, "nothing within the delay");
        run.seconds(10, 20.0);
        assert_eq!(run.desired, 2, "{:?}", run.decisions);
        run.seconds(60, 0.0);
        assert_eq!(run.desired, 1, "down to min: {:?}", run.decisions);
        // A dip of a second within the delay does not take instances away.
        let mut run = Run::new(spec(1, 10, 10.0), 4, 1);
        run.seconds(40, 40.0);
        run.seconds(1, 0.0);
        run.seconds(40, 40.0);
        assert_eq!(run.desired, 4, "{:?}", run.decisions);
    }

    #[test]
    fn after_a_burst_the_scale_down_comes_the_delay_after_the_load_not_after_the_panic() {
        let mut run = Run::new(spec(1, 10, 10.0), 2, 1);
        run.seconds(10, 20.0);
        run.seconds(5, 60.0);
        assert_eq!(run.desired, 6);
        assert_eq!(run.decisions[0].1.mode, Mode::Panic);
        // The panic lasts 30 s (the delay, shorter than a minute) from second 10; the load
        // asked for 6 until about second 16, so the count may come down from second 46.
        run.seconds(25, 0.0);
        assert_eq!(run.desired, 6, "not within the panic: {:?}", run.decisions);
        run.seconds(15, 0.0);
        assert!(run.desired < 6, "{:?}", run.decisions);
        run.seconds(30, 0.0);
        assert_eq!(run.desired, 1, "{:?}", run.decisions);
    }

    #[test]
    fn the_count_stays_within_its_bounds() {
        let mut run = Run::new(spec(2, 5, 10.0), 2, 1);
        run.seconds(10, 500.0);
        assert_eq!(run.desired, 5);
        run.seconds(200, 0.0);
        assert_eq!(run.desired, 2);
    }

    #[test]
    fn startup_time_is_measured_and_a_slow_start_does_not_lag_for_ever() {
        let mut run = Run::new(spec(1, 20, 10.0), 1, 4);
        run.seconds(10, 10.0);
        assert_eq!(run.scaler.startup(), Some(Duration::from_secs(4)));
        // The burst needs 3; the next one (more than double) may go past the hold.
        run.seconds(1, 30.0);
        assert_eq!(run.desired, 3);
        run.seconds(1, 80.0);
        assert_eq!(run.desired, 8, "the need doubled: {:?}", run.decisions);
        // Instances that never pass: after 1.5 times the startup, the count may rise again.
        run.startup = 1_000;
        run.seconds(2, 100.0);
        assert_eq!(run.desired, 8, "held while they start");
        run.seconds(6, 100.0);
        assert_eq!(run.desired, 10, "{:?}", run.decisions);
    }

    #[test]
    fn from_zero_the_first_waiting_request_starts_an_instance_and_none_stay_idle() {
        let mut run = Run::new(spec(0, 4, 2.0), 0, 2);
        run.seconds(60, 0.0);
        assert!(run.decisions.is_empty(), "{:?}", run.decisions);
        // One request held at the gateway: load with no instance at all.
        run.seconds(1, 1.0);
        assert_eq!(run.desired, 1, "{:?}", run.decisions);
        run.seconds(20, 1.0);
        assert_eq!(run.desired, 1, "{:?}", run.decisions);
        assert_eq!(run.scaler.startup(), Some(Duration::from_secs(2)));
        run.seconds(40, 0.0);
        assert_eq!(run.desired, 0, "idle past the delay: {:?}", run.decisions);
    }

    #[test]
    fn requests_per_second_scale_the_same_way() {
        let mut spec = spec(1, 10, 1.0);
        spec.target = Target::Rps(100.0);
        let mut run = Run::new(spec, 1, 1);
        run.seconds(5, 100.0);
        assert!(run.decisions.is_empty());
        run.seconds(10, 350.0);
        assert_eq!(run.desired, 4);
    }
}
