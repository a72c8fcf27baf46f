//! A Prometheus histogram whose observations are atomic adds.
//!
//! prometheus-client's `Histogram` takes a lock for every observation and finds its bucket by
//! a linear search. The proxy observes three histograms per request (its service's and its
//! endpoint's `*_duration_seconds`, and Linkerd's `response_latency_ms`), which made them the
//! largest metrics cost on the request path. This one finds the bucket by binary search and
//! adds to atomics, and is encoded by prometheus-client's own encoder, so the text a scraper
//! reads is the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Counts of observations at or below each bound, their sum, shared by its clones.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, finite; a last bucket above them all is `+Inf`.
    bounds: Box<[f64]>,
    /// One more than `bounds`: the observations of each bucket alone (not cumulative).
    counts: Box<[AtomicU64]>,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (those not finite are dropped; `+Inf` is always
    /// there).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            inner: Arc::new(Inner {
                bounds: bounds.into(),
                counts,
                sum: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        // The first bucket whose bound is at least the value; NaN in `+Inf`, as
        // prometheus-client does.
        let at = if value.is_nan() {
            inner.bounds.len()
        } else {
            inner.bounds.partition_point(|bound| *bound < value)
        };
        inner.counts[at].fetch_add(1, Ordering::Relaxed);
        let mut seen = inner.sum.load(Ordering::Relaxed);
        loop {
            let sum = (f64::from_bits(seen) + value).to_bits();
            match inner
                .sum
                .compare_exchange_weak(seen, sum, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
    }

    /// (upper bound, observations in that bucket alone), `+Inf` last; and the count.
    fn buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let inner = &*self.inner;
        let bounds = inner.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so `_count` always equals the `+Inf` bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        (buckets, count)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.buckets();
        let sum = f64::from_bits(self.inner.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn text(
        name: &str,
        histogram: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
    ) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", histogram);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn it_reads_as_prometheus_client_s_histogram_reads() {
        let bounds = [0.5, 1.0, 2.0, 5.0];
        let ours = Histogram::new(bounds);
        let theirs = prometheus_client::metrics::histogram::Histogram::new(bounds);
        // On a bound, between bounds, below all, above all, and not a number.
        for value in [0.1, 0.5, 0.7, 1.0, 3.0, 5.0, 9.0, f64::NAN, 2.0] {
            ours.observe(value);
            theirs.observe(value);
        }
        // NaN makes both sums NaN: compare with a histogram of numbers too.
        assert_eq!(text("latency", ours), text("latency", theirs));
        let ours = Histogram::new([1.0, f64::INFINITY, 10.0]);
        let theirs = prometheus_client::metrics::histogram::Histogram::new([1.0, 10.0]);
        for value in [0.25, 4.0, 4.0, 40.0] {
            ours.observe(value);
            theirs.observe(value);
        }
        let ours = text("latency", ours);
        assert_eq!(ours, text("latency", theirs));
        assert!(ours.contains("latency_sum 48.25\n"), "{ours}");
        assert!(ours.contains("latency_bucket{le=\"10.0\"} 3\n"), "{ours}");
        assert!(ours.contains("latency_bucket{le=\"+Inf\"} 4\n"), "{ours}");
    }

    #[test]
    fn clones_share_their_counts_across_threads() {
        let histogram = Histogram::new([1.0]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let histogram = histogram.clone();
                scope.spawn(move || (0..1_000).for_each(|_| histogram.observe(0.5)));
            }
        });
        let (buckets, count) = histogram.buckets();
        assert_eq!((buckets[0].1, count), (4_000, 4_000));
        assert_eq!(
            f64::from_bits(histogram.inner.sum.load(Ordering::Relaxed)),
            2_000.0
        );
    }
}
