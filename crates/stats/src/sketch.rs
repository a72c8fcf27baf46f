//! A latency sketch: DDSketch's logarithmic buckets (Masson, Rim, Lee, VLDB 2019), sparse.
//!
//! A duration `x` (in microseconds) falls in bucket `i = ceil(log_γ x)` with
//! `γ = (1 + α) / (1 - α)`; the bucket answers `2γ^i / (γ + 1)`, within a relative error `α`
//! of every value in it. A quantile is the bucket holding its rank, so every quantile is
//! within `α` of a value of the right rank: exact to a stated error, not interpolated between
//! coarse buckets. Buckets are kept sparse, sorted by index, so a sketch costs six bytes per
//! bucket in use; two sketches merge by adding counts.

use std::time::Duration;

/// The relative error of every quantile: 2 %.
pub const RELATIVE_ERROR: f64 = 0.02;

/// Durations below one microsecond count as one microsecond, and above about eleven days
/// as eleven days (so that every bucket answers a finite duration).
const MIN_MICROS: f64 = 1.0;
const MAX_MICROS: f64 = 1e12;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bucket of `micros` (at least 1 µs; the largest durations share the last bucket).
fn index_of(micros: f64) -> i16 {
    let micros = micros.clamp(MIN_MICROS, MAX_MICROS);
    (micros.ln() / gamma().ln()).ceil() as i16
}

/// The value a bucket answers: within [`RELATIVE_ERROR`] of everything in it.
fn value_of(index: i16) -> f64 {
    let gamma = gamma();
    2.0 * gamma.powi(i32::from(index)) / (gamma + 1.0)
}

/// The bucket a duration falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket(i16);

impl Bucket {
    pub fn of(duration: Duration) -> Bucket {
        Bucket(index_of(duration.as_secs_f64() * 1e6))
    }
}

/// Counts of durations by logarithmic bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sketch {
    /// Bucket indexes in use, ascending.
    indexes: Vec<i16>,
    /// The count of each bucket in `indexes`.
    counts: Vec<u32>,
    total: u64,
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// Adds one duration.
    pub fn record(&mut self, duration: Duration) {
        self.add(Bucket::of(duration).0, 1);
    }

    /// Adds one duration whose bucket is known (to record one duration in several sketches
    /// at the cost of one logarithm).
    pub fn record_in(&mut self, bucket: Bucket) {
        self.add(bucket.0, 1);
    }

    fn add(&mut self, index: i16, count: u32) {
        match self.indexes.binary_search(&index) {
            Ok(at) => self.counts[at] = self.counts[at].saturating_add(count),
            Err(at) => {
                // Grown one bucket at a time, not doubled: memory is the point.
                self.indexes.reserve_exact(1);
                self.counts.reserve_exact(1);
                self.indexes.insert(at, index);
                self.counts.insert(at, count);
            }
        }
        self.total += u64::from(count);
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &Sketch) {
        for (index, count) in other.indexes.iter().zip(&other.counts) {
            self.add(*index, *count);
        }
    }

    /// How many durations it holds.
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q`-quantile (0 to 1) of what it holds, within [`RELATIVE_ERROR`] of a value of
    /// that rank; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // The rank of the nearest-rank definition: the smallest value with at least
        // ceil(q·n) values at or below it.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, count) in self.indexes.iter().zip(&self.counts) {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(Duration::from_secs_f64(value_of(*index) / 1e6));
            }
        }
        self.indexes
            .last()
            .map(|i| Duration::from_secs_f64(value_of(*i) / 1e6))
    }

    /// Forgets everything, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.indexes.clear();
        self.counts.clear();
        self.total = 0;
    }

    /// Bytes it takes, its own size included.
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Sketch>() + self.heap()
    }

    /// Bytes its buckets take beside it.
    pub fn heap(&self) -> usize {
        self.indexes.capacity() * std::mem::size_of::<i16>()
            + self.counts.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest-rank quantile of sorted values.
    fn exact(sorted: &[Duration], q: f64) -> Duration {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    fn assert_within(estimate: Duration, exact: Duration) {
        let (e, x) = (estimate.as_secs_f64(), exact.as_secs_f64());
        assert!(
            (e - x).abs() <= RELATIVE_ERROR * x + 1e-9,
            "estimate {estimate:?} vs exact {exact:?}"
        );
    }

    #[test]
    fn quantiles_are_within_the_stated_error_of_exact_ones() {
        fastrand::seed(7);
        // Log-normal-ish latencies from 50 µs to about 2 s, and a bimodal mix.
        let shapes: [&dyn Fn() -> f64; 3] = [
            &|| (fastrand::f64() * 10.6).exp() * 50.0,
            &|| if fastrand::bool() { 5_000.0 } else { 20_000.0 } * (0.9 + 0.2 * fastrand::f64()),
            &|| 1.0 + fastrand::f64() * 999.0,
        ];
        for shape in shapes {
            let values: Vec<Duration> = (0..20_000)
                .map(|_| Duration::from_secs_f64(shape() / 1e6))
                .collect();
            let mut sketch = Sketch::new();
            values.iter().for_each(|v| sketch.record(*v));
            let mut sorted = values.clone();
            sorted.sort();
            for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                assert_within(sketch.quantile(q).unwrap(), exact(&sorted, q));
            }
            assert_eq!(sketch.count(), 20_000);
        }
    }

    #[test]
    fn merging_is_adding_the_same_durations() {
        let mut a = Sketch::new();
        let mut b = Sketch::new();
        let mut both = Sketch::new();
        for i in 1..=500u64 {
            let d = Duration::from_micros(i * 37 % 9_000 + 1);
            if i % 3 == 0 { &mut a } else { &mut b }.record(d);
            both.record(d);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert!(Sketch::new().quantile(0.5).is_none());
    }

    #[test]
    fn a_sketch_of_typical_latencies_is_small() {
        let mut sketch = Sketch::new();
        fastrand::seed(3);
        for _ in 0..100_000 {
            // 1 to 100 ms.
            sketch.record(Duration::from_secs_f64(
                (fastrand::f64() * 4.6).exp() / 1000.0,
            ));
        }
        assert!(sketch.memory() < 1_000, "{} bytes", sketch.memory());
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let mut sketch = Sketch::new();
        sketch.record(Duration::ZERO);
        sketch.record(Duration::MAX);
        sketch.record(Duration::from_nanos(1));
        assert_eq!(sketch.count(), 3);
        assert!(sketch.quantile(0.0).unwrap() <= Duration::from_micros(2));
        assert!(sketch.quantile(1.0).is_some());
    }
}
