//! Passive outlier detection: eject an endpoint that keeps failing before the registry's
//! health check has noticed, as Envoy does.
//!
//! Envoy's defaults: five consecutive failures (connect errors or 5xx) eject an endpoint for
//! 30 s times the number of times it has been ejected, up to 300 s. An ejected endpoint is
//! simply not a candidate for the balancer; it comes back when its time is up. The balancer
//! never lets ejection take every endpoint out ([`super::balance`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// A fixed origin, so that instants fit in an atomic as nanoseconds since it.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*ORIGIN).as_nanos()).unwrap_or(u64::MAX)
}

pub const CONSECUTIVE_FAILURES: u32 = 5;
pub const BASE_EJECTION: Duration = Duration::from_secs(30);
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Outlier {
    consecutive_failures: AtomicU32,
    /// When the current ejection ends, in nanoseconds since [`ORIGIN`]; read on every pick
    /// without a lock.
    ejected_until: AtomicU64,
    state: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    times: u32,
}

impl Outlier {
    pub fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failure; returns true when this failure ejected the endpoint.
    pub fn failure(&self, now: Instant) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < CONSECUTIVE_FAILURES {
            return false;
        }
        let mut state = self.state.lock().expect("outlier lock");
        if state.until.is_some_and(|until| until > now) {
            return false;
        }
        state.times += 1;
        let duration = (BASE_EJECTION * state.times).min(MAX_EJECTION);
        state.until = Some(now + duration);
        self.ejected_until
            .store(nanos(now + duration), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }

    /// Whether the endpoint is ejected at `now`: one atomic load, no lock, as the balancer
    /// asks it of every candidate on every pick.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > nanos(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_does_not_wait_for_the_ejection_lock() {
        let outlier = std::sync::Arc::new(Outlier::default());
        let now = Instant::now();
        for _ in 0..CONSECUTIVE_FAILURES {
            outlier.failure(now);
        }
        // Another thread records a failure (and holds the lock) while the balancer asks.
        let held = outlier.state.lock().unwrap();
        let (answer, answered) = std::sync::mpsc::channel();
        let asking = outlier.clone();
        std::thread::spawn(move || answer.send(asking.is_ejected(now)).unwrap());
        let ejected = answered.recv_timeout(Duration::from_secs(10));
        drop(held);
        assert_eq!(ejected, Ok(true), "is_ejected blocked on the lock");
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let outlier = Outlier::default();
        let now = Instant::now();
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!outlier.failure(now));
        }
        outlier.success();
        for _ in 0..CONSECUTIVE_FAILURES - 1 {
            assert!(!outlier.failure(now), "a success resets the count");
        }
        assert!(outlier.failure(now));
        assert!(outlier.is_ejected(now + BASE_EJECTION - Duration::from_millis(1)));
        assert!(!outlier.is_ejected(now + BASE_EJECTION));
        let later = now + BASE_EJECTION;
        for _ in 0..CONSECUTIVE_FAILURES {
            outlier.failure(later);
        }
        assert!(
            outlier.is_ejected(later + 2 * BASE_EJECTION - Duration::from_millis(1)),
            "second ejection is longer"
        );
    }
}
