//! A row of golden metrics: requests, failures and latency in rolling windows.
//!
//! The last minute is three slots of 20 s and the last ten minutes five slots of 2 min, each
//! slot its own counts and [`Sketch`]; a window's figures merge the slots it covers, so a
//! window is 40–60 s (8–10 min) of traffic as slots turn over, and its rate divides by the
//! time its slots actually cover. A latency goes into one sketch only, its minute slot's:
//! when a minute slot is reused its sketch is folded into the ten-minute slot it belongs to,
//! and the ten minutes' figures merge the minute slots not folded yet (one sketch per request,
//! not two, on the request path). Requests and failures are also kept per 10 s for the last
//! ten minutes (counts only), for sparklines. Time is given by the caller in whole seconds
//! of a monotonic clock, so that tests can drive it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Sketch;
use crate::sketch::Bucket;

/// How a request ended, as the golden metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx, a refusal by the proxy, or no answer.
    Failure,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Which slot of time this is (seconds / slot length); data of another epoch is stale.
    epoch: u64,
    requests: u64,
    failures: u64,
    latency: Sketch,
}

/// `N` slots of `SECS` seconds each, reused round the ring.
#[derive(Debug, Clone)]
struct Rolling<const N: usize, const SECS: u64> {
    slots: [Slot; N],
}

impl<const N: usize, const SECS: u64> Default for Rolling<N, SECS> {
    fn default() -> Self {
        Rolling {
            slots: std::array::from_fn(|_| Slot {
                epoch: UNUSED,
                ..Slot::default()
            }),
        }
    }
}

/// A slot never written.
const UNUSED: u64 = u64::MAX;

impl Slot {
    fn count(&mut self, outcome: Outcome) {
        self.requests += 1;
        if outcome == Outcome::Failure {
            self.failures += 1;
        }
    }

    fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.requests = 0;
        self.failures = 0;
        self.latency.clear();
    }
}

impl<const N: usize, const SECS: u64> Rolling<N, SECS> {
    /// The slot `now` falls in, whatever it holds.
    fn slot_mut(&mut self, now: u64) -> &mut Slot {
        &mut self.slots[((now / SECS) % N as u64) as usize]
    }

    /// The slot of `now`, emptied first if it held another epoch.
    fn current(&mut self, now: u64) -> &mut Slot {
        let slot = self.slot_mut(now);
        if slot.epoch != now / SECS {
            slot.reset(now / SECS);
        }
        slot
    }

    /// Whether the slot of epoch `epoch` is still in the window at `now`.
    fn covers(epoch: u64, now: u64) -> bool {
        let current = now / SECS;
        epoch != UNUSED && epoch <= current && current - epoch < N as u64
    }

    /// Adds a sketch of latencies at `at` (seconds) to its slot, if the slot still holds
    /// that epoch (otherwise they are older than the window, and so are its counts).
    fn fold(&mut self, at: u64, latency: &Sketch) {
        let slot = self.slot_mut(at);
        if slot.epoch == at / SECS {
            slot.latency.merge(latency);
        }
    }

    /// One more failure among the requests already counted (only if its slot still holds
    /// them: a failure never outnumbers its requests).
    fn fail_recorded(&mut self, now: u64) {
        let slot = self.slot_mut(now);
        if slot.epoch == now / SECS && slot.failures < slot.requests {
            slot.failures += 1;
        }
    }

    /// The window's figures at `now`, for a row that started at `born`, with the latencies
    /// of `pending` (not folded in yet) beside its own.
    fn summary<'a>(
        &self,
        now: u64,
        born: u64,
        pending: impl Iterator<Item = &'a Sketch>,
    ) -> Summary {
        let mut summary = Summary::default();
        let mut latency = Sketch::new();
        for pending in pending {
            latency.merge(pending);
        }
        for slot in &self.slots {
            if Self::covers(slot.epoch, now) {
                summary.requests += slot.requests;
                summary.failures += slot.failures;
                latency.merge(&slot.latency);
            }
        }
        // The current slot so far, and the whole slots before it, since the row started.
        let covered = (now % SECS + 1) + (N as u64 - 1) * SECS;
        summary.seconds = covered.min(now.saturating_sub(born) + 1);
        summary.p50 = latency.quantile(0.50);
        summary.p95 = latency.quantile(0.95);
        summary.p99 = latency.quantile(0.99);
        summary.latency = latency;
        summary
    }

    /// Bytes its sketches take beside it.
    fn heap(&self) -> usize {
        self.slots.iter().map(|s| s.latency.heap()).sum()
    }
}

/// A window's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub failures: u64,
    /// The seconds of traffic the window's slots cover.
    pub seconds: u64,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
    /// The merged sketch, for merging with other rows' (an instance's into its service's, a
    /// proxy's into the mesh's).
    pub latency: Sketch,
}

impl Summary {
    /// Requests per second over the window.
    pub fn rps(&self) -> f64 {
        if self.seconds == 0 {
            0.0
        } else {
            self.requests as f64 / self.seconds as f64
        }
    }

    /// The share of requests that did not fail (1 when there were none).
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            1.0 - self.failures as f64 / self.requests as f64
        }
    }

    /// The share of requests that failed (0 when there were none).
    pub fn failure_rate(&self) -> f64 {
        1.0 - self.success_rate()
    }
}

/// Counts per 10 s over the last ten minutes.
const HISTORY: usize = 60;
const HISTORY_SECS: u64 = 10;

const MINUTE_SLOT: u64 = 20;
const TEN_MINUTES_SLOT: u64 = 120;

#[derive(Debug)]
struct Windows {
    born: u64,
    minute: Rolling<3, MINUTE_SLOT>,
    /// Counts as they come; latencies folded in from `minute` as its slots are reused.
    ten_minutes: Rolling<5, TEN_MINUTES_SLOT>,
    /// (requests, failures) per 10 s, round a ring; `history_epoch` is the latest written.
    history: [(u32, u32); HISTORY],
    history_epoch: u64,
}

impl Windows {
    fn record(&mut self, now: u64, outcome: Outcome, latency: Option<Bucket>) {
        let slot = self.minute.slot_mut(now);
        if slot.epoch != now / MINUTE_SLOT {
            if slot.epoch != UNUSED {
                self.ten_minutes
                    .fold(slot.epoch * MINUTE_SLOT, &slot.latency);
            }
            slot.reset(now / MINUTE_SLOT);
        }
        slot.count(outcome);
        if let Some(bucket) = latency {
            slot.latency.record_in(bucket);
        }
        self.ten_minutes.current(now).count(outcome);
    }

    /// The ten minutes' figures: their slots, and the minute slots not folded into them yet
    /// (those whose ten-minute slot still holds their epoch).
    fn ten_minutes(&self, now: u64) -> Summary {
        let pending = self.minute.slots.iter().filter(|slot| {
            let at = slot.epoch.saturating_mul(MINUTE_SLOT);
            let home = &self.ten_minutes.slots[((at / TEN_MINUTES_SLOT) % 5) as usize];
            slot.epoch != UNUSED
                && home.epoch == at / TEN_MINUTES_SLOT
                && Rolling::<5, TEN_MINUTES_SLOT>::covers(home.epoch, now)
        });
        self.ten_minutes
            .summary(now, self.born, pending.map(|slot| &slot.latency))
    }

    /// The history point of `epoch`, the points skipped since the last one cleared.
    fn point(&mut self, epoch: u64) -> &mut (u32, u32) {
        if epoch > self.history_epoch {
            let skipped = (epoch - self.history_epoch).min(HISTORY as u64);
            for back in 0..skipped {
                self.history[((epoch - back) % HISTORY as u64) as usize] = (0, 0);
            }
            self.history_epoch = epoch;
        }
        &mut self.history[(epoch % HISTORY as u64) as usize]
    }
}

/// An instance's last minute, counts only (its latency shows in its service's row), kept
/// with atomics: it is written on every attempt, and a lock per attempt was a row lock more
/// than the service's. Two [`Volume`]s, so exact as they are.
#[derive(Debug)]
pub struct Counts {
    born: u64,
    requests: Volume,
    failures: Volume,
}

impl Counts {
    /// Counts whose first second is `now`.
    pub fn new(now: u64) -> Counts {
        Counts {
            born: now,
            requests: Volume::default(),
            failures: Volume::default(),
        }
    }

    pub fn record(&self, now: u64, outcome: Outcome) {
        self.requests.add(now, 1);
        if outcome == Outcome::Failure {
            self.failures.add(now, 1);
        }
    }

    /// As [`Row::fail_recorded`]: one more failure among the requests already counted.
    pub fn fail_recorded(&self, now: u64) {
        if self.failures.minute(now) < self.requests.minute(now) {
            self.failures.add(now, 1);
        }
    }

    /// The last minute (40–60 s), with no percentiles.
    pub fn minute(&self, now: u64) -> Summary {
        let covered = (now % Volume::SECS + 1) + 2 * Volume::SECS;
        Summary {
            requests: self.requests.minute(now),
            failures: self.failures.minute(now),
            seconds: covered.min(now.saturating_sub(self.born) + 1),
            ..Summary::default()
        }
    }
}

/// A sum over the last minute (bytes one way, retries, ejections): a sum per 20 s slot, kept
/// with atomics only (bytes are added to on every request). A slot turning over as another request adds to it can lose
/// that request's bytes: exact but for a race once per 20 s.
#[derive(Debug)]
pub struct Volume {
    slots: [(AtomicU64, AtomicU64); 3],
}

impl Default for Volume {
    fn default() -> Volume {
        Volume {
            slots: std::array::from_fn(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(0))),
        }
    }
}

impl Volume {
    const SECS: u64 = 20;

    pub fn add(&self, now: u64, amount: u64) {
        let epoch = now / Self::SECS;
        let (slot_epoch, sum) = &self.slots[(epoch % 3) as usize];
        let seen = slot_epoch.load(Ordering::Relaxed);
        if seen != epoch
            && slot_epoch
                .compare_exchange(seen, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            sum.store(0, Ordering::Relaxed);
        }
        sum.fetch_add(amount, Ordering::Relaxed);
    }

    /// The sum of the last minute (40–60 s, as the minute's window).
    pub fn minute(&self, now: u64) -> u64 {
        let current = now / Self::SECS;
        self.slots
            .iter()
            .filter(|(epoch, _)| {
                let epoch = epoch.load(Ordering::Relaxed);
                epoch != u64::MAX && epoch <= current && current - epoch < 3
            })
            .map(|(_, sum)| sum.load(Ordering::Relaxed))
            .sum()
    }
}

/// One row: a service, an instance or an edge, with its two windows and its history.
#[derive(Debug)]
pub struct Row {
    windows: Mutex<Windows>,
    /// Whether latencies are kept (rows of counts only cost less per request).
    latency: bool,
}

impl Row {
    /// A row whose first second is `now`.
    pub fn new(now: u64) -> Row {
        Row::with_latency(now, true)
    }

    /// A row of counts only (its summaries have no percentiles).
    pub fn counts_only(now: u64) -> Row {
        Row::with_latency(now, false)
    }

    fn with_latency(now: u64, latency: bool) -> Row {
        Row {
            latency,
            windows: Mutex::new(Windows {
                born: now,
                minute: Rolling::default(),
                ten_minutes: Rolling::default(),
                history: [(0, 0); HISTORY],
                history_epoch: now / HISTORY_SECS,
            }),
        }
    }

    pub fn record(&self, now: u64, outcome: Outcome, latency: Duration) {
        let bucket = self.latency.then(|| Bucket::of(latency)); // outside the lock
        let mut windows = self.windows.lock().expect("row lock");
        windows.record(now, outcome, bucket);
        let epoch = now / HISTORY_SECS;
        if epoch + (HISTORY as u64) <= windows.history_epoch {
            return; // older than the history (a clock that went back): not kept there
        }
        let point = windows.point(epoch);
        point.0 = point.0.saturating_add(1);
        if outcome == Outcome::Failure {
            point.1 = point.1.saturating_add(1);
        }
    }

    /// A request recorded as answered turned out to fail after its head (a gRPC status other
    /// than OK in its trailers): counted as a failure now, its request and latency already in.
    pub fn fail_recorded(&self, now: u64) {
        let mut windows = self.windows.lock().expect("row lock");
        windows.minute.fail_recorded(now);
        windows.ten_minutes.fail_recorded(now);
        let epoch = now / HISTORY_SECS;
        if epoch + (HISTORY as u64) <= windows.history_epoch {
            return;
        }
        let point = windows.point(epoch);
        if point.1 < point.0 {
            point.1 += 1;
        }
    }

    /// The last minute (40–60 s of traffic).
    pub fn minute(&self, now: u64) -> Summary {
        let windows = self.windows.lock().expect("row lock");
        windows
            .minute
            .summary(now, windows.born, std::iter::empty())
    }

    /// The last ten minutes (8–10 min of traffic).
    pub fn ten_minutes(&self, now: u64) -> Summary {
        let windows = self.windows.lock().expect("row lock");
        windows.ten_minutes(now)
    }

    /// (requests, failures) of each 10 s of the last ten minutes, oldest first; the current
    /// 10 s last.
    pub fn history(&self, now: u64) -> Vec<(u32, u32)> {
        let windows = self.windows.lock().expect("row lock");
        let current = now / HISTORY_SECS;
        (0..HISTORY as u64)
            .rev()
            .map(|back| {
                let Some(epoch) = current.checked_sub(back) else {
                    return (0, 0);
                };
                // Written, and not since overwritten round the ring.
                let kept = epoch <= windows.history_epoch
                    && windows.history_epoch - epoch < HISTORY as u64;
                if kept {
                    windows.history[(epoch % HISTORY as u64) as usize]
                } else {
                    (0, 0)
                }
            })
            .collect()
    }

    /// Bytes the row takes.
    pub fn memory(&self) -> usize {
        let windows = self.windows.lock().expect("row lock");
        std::mem::size_of::<Row>() + windows.minute.heap() + windows.ten_minutes.heap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_window_counts_its_requests_and_failures_and_their_rate() {
        let row = Row::new(1_000);
        for i in 0..200u64 {
            let outcome = if i % 10 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            row.record(1_000 + i / 20, outcome, MS * (1 + i as u32 % 5));
        }
        let minute = row.minute(1_009);
        assert_eq!((minute.requests, minute.failures), (200, 20));
        assert!((minute.success_rate() - 0.9).abs() < 1e-9);
        assert_eq!(minute.seconds, 10, "only the ten seconds the row has lived");
        assert!((minute.rps() - 20.0).abs() < 1e-9);
        let p99 = minute.p99.unwrap();
        assert!(
            p99 >= MS * 5 - MS / 10 && p99 <= MS * 5 + MS / 10,
            "{p99:?}"
        );
        assert_eq!(row.ten_minutes(1_009).requests, 200);
    }

    #[test]
    fn counts_keep_an_instance_s_minute_like_a_row_of_counts() {
        let counts = Counts::new(1_000);
        let row = Row::counts_only(1_000);
        for i in 0..200u64 {
            let outcome = if i % 10 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            counts.record(1_000 + i / 20, outcome);
            row.record(1_000 + i / 20, outcome, MS);
        }
        counts.fail_recorded(1_009);
        row.fail_recorded(1_009);
        for now in [1_009, 1_030, 1_065, 1_200] {
            let (a, b) = (counts.minute(now), row.minute(now));
            assert_eq!(
                (a.requests, a.failures, a.seconds),
                (b.requests, b.failures, b.seconds)
            );
        }
    }

    #[test]
    fn a_volume_sums_the_last_minute() {
        let volume = Volume::default();
        volume.add(10, 100);
        volume.add(30, 20);
        volume.add(31, 5);
        assert_eq!(volume.minute(31), 125);
        assert_eq!(volume.minute(65), 25, "the first slot has turned over");
        volume.add(70, 1); // reuses the first slot, emptied
        assert_eq!(volume.minute(70), 26);
        assert_eq!(volume.minute(300), 0);
    }

    #[test]
    fn a_success_found_to_fail_later_counts_as_a_failure_once() {
        let row = Row::new(0);
        row.record(5, Outcome::Success, MS);
        row.record(5, Outcome::Success, MS);
        row.fail_recorded(5);
        let minute = row.minute(5);
        assert_eq!((minute.requests, minute.failures), (2, 1));
        assert_eq!(row.history(5).last(), Some(&(2, 1)));
        // Never more failures than requests, even when told so too often.
        row.fail_recorded(5);
        row.fail_recorded(5);
        assert_eq!(row.minute(5).failures, 2);
        assert_eq!(row.ten_minutes(5).failures, 2);
    }

    #[test]
    fn old_traffic_leaves_the_minute_then_the_ten_minutes() {
        let row = Row::new(0);
        row.record(10, Outcome::Failure, MS);
        assert_eq!(row.minute(30).requests, 1);
        assert_eq!(row.minute(70).requests, 0, "more than a minute later");
        assert_eq!(row.ten_minutes(70).requests, 1);
        assert_eq!(row.ten_minutes(700).requests, 0);
        // A slot reused round the ring starts empty.
        row.record(70, Outcome::Success, MS);
        let minute = row.minute(70);
        assert_eq!((minute.requests, minute.failures), (1, 0));
        assert_eq!(minute.seconds, 51);
    }

    #[test]
    fn the_ten_minutes_hold_every_latency_once_folded_or_not() {
        fastrand::seed(5);
        let row = Row::new(0);
        let mut exact = Sketch::new();
        // Seven minutes, so that minute slots are folded, the last ones not yet, and the
        // first ten-minute slot (0–120 s) has left the window at 700 s.
        let mut latencies = Vec::new();
        for second in 0..420u64 {
            let latency = MS * (1 + fastrand::u32(0..200));
            row.record(second, Outcome::Success, latency);
            latencies.push((second, latency));
        }
        for now in [419u64, 500, 700] {
            let mut exact = Sketch::new();
            let first = (now / 120).saturating_sub(4) * 120;
            let kept: Vec<_> = latencies.iter().filter(|(at, _)| *at >= first).collect();
            for (_, latency) in &kept {
                exact.record(*latency);
            }
            let ten = row.ten_minutes(now);
            assert_eq!(ten.requests, kept.len() as u64, "at {now}");
            assert_eq!(
                ten.latency, exact,
                "at {now}: the same buckets, each counted once"
            );
        }
        // Traffic after a long pause: the stale minute slots count nowhere.
        row.record(5_000, Outcome::Success, MS);
        exact.record(MS);
        let ten = row.ten_minutes(5_000);
        assert_eq!((ten.requests, ten.latency), (1, exact));
    }

    #[test]
    fn a_row_of_counts_only_keeps_no_latency() {
        let row = Row::counts_only(0);
        row.record(1, Outcome::Failure, MS);
        let minute = row.minute(1);
        assert_eq!((minute.requests, minute.failures), (1, 1));
        assert!(minute.p99.is_none() && minute.latency.is_empty());
    }

    #[test]
    fn history_is_per_ten_seconds_oldest_first() {
        let row = Row::new(0);
        row.record(5, Outcome::Success, MS);
        row.record(15, Outcome::Failure, MS);
        row.record(15, Outcome::Success, MS);
        let history = row.history(19);
        assert_eq!(history.len(), 60);
        assert_eq!(&history[58..], &[(1, 0), (2, 1)]);
        assert!(row.history(700).iter().all(|p| *p == (0, 0)));
    }

    #[test]
    fn a_row_of_steady_traffic_stays_small() {
        fastrand::seed(11);
        let row = Row::new(0);
        // Ten minutes of 50 requests a second, latencies spread tenfold (2 to 20 ms).
        for second in 0..600u64 {
            for _ in 0..50 {
                let latency = Duration::from_secs_f64(0.002 * (fastrand::f64() * 2.3).exp());
                row.record(second, Outcome::Success, latency);
            }
        }
        assert!(row.memory() < 4_096, "{} bytes", row.memory());
    }
}
