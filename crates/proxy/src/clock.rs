//! The golden metrics' clock: whole seconds of a monotonic clock, read several times per
//! request (an instance's counts, its service's row, the bytes moved).
//!
//! A clock reading (`Instant::now`, then the seconds since the start) was about 1 % of a
//! proxied request's instructions, paid three times. The windows only need the second, so a
//! thread of its own advances an atomic once a second and a request reads it with one load, as
//! nginx reads its cached time. The second shown lags the true one by at most the thread's
//! wake-up delay; every reader sees the same clock, so windows stay consistent.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Seconds since the clock first was read.
static SECONDS: LazyLock<&'static AtomicU64> = LazyLock::new(|| {
    let seconds: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let start = Instant::now();
    std::thread::Builder::new()
        .name("wharf-clock".into())
        .spawn(move || tick(start, seconds))
        // Without it the windows would stand still: better to stop at start-up.
        .expect("the golden metrics' clock thread starts");
    seconds
});

fn tick(start: Instant, seconds: &AtomicU64) {
    loop {
        let next = Duration::from_secs(seconds.load(Ordering::Relaxed) + 1);
        std::thread::sleep(next.saturating_sub(start.elapsed()));
        seconds.store(start.elapsed().as_secs(), Ordering::Relaxed);
    }
}

/// Whole seconds of a monotonic clock, the time of the golden metrics' windows.
#[inline]
pub(crate) fn now_secs() -> u64 {
    SECONDS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_follows_real_seconds() {
        let first = now_secs();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        while now_secs() < first + 2 {
            assert!(Instant::now() < deadline, "the clock stood still");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Two ticks seen: more than one real second went by.
        assert!(
            started.elapsed() > Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
