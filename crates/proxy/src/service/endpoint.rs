//! One upstream instance and what the proxy knows about it: load (requests in flight),
//! latency (peak EWMA) and health as seen from traffic (outlier state). No transport: the
//! connections to it belong to the transports, kept by its address (`h1::pool`,
//! `h2::connections`).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::outlier::Outlier;

/// An instance the proxy can send requests to.
#[derive(Debug)]
pub struct Endpoint {
    /// The registry's instance id (or the address, for static upstreams).
    pub id: String,
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once.
    pub authority: http::uri::Authority,
    /// Consul `Weights.Passing`, at least 1.
    pub weight: u32,
    pub inflight: AtomicU32,
    ewma: Mutex<PeakEwma>,
    pub outlier: Outlier,
    /// This endpoint's latency histogram, looked up once.
    pub latency: std::sync::OnceLock<crate::metrics::Histogram>,
    /// Golden metrics of every attempt sent to it (its failure rate is its own, retries
    /// included): counts only, an instance's latency shows in its service's.
    pub golden: wharf_stats::Counts,
    /// The golden metrics of the subset whose share this endpoint serves, when its service
    /// is split (the requests it answered count there too).
    pub subset: arc_swap::ArcSwapOption<wharf_stats::Row>,
}

impl Endpoint {
    pub fn new(id: String, addr: SocketAddr, weight: u32) -> Endpoint {
        Endpoint {
            authority: http::uri::Authority::try_from(addr.to_string())
                .expect("a socket address is an authority"),
            id,
            addr,
            weight: weight.max(1),
            inflight: AtomicU32::new(0),
            ewma: Mutex::new(PeakEwma::new()),
            outlier: Outlier::default(),
            latency: std::sync::OnceLock::new(),
            golden: wharf_stats::Counts::new(crate::clock::now_secs()),
            subset: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Marks a request as started; the guard ends it and records its latency.
    pub fn start(&self) -> InFlight<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self,
            started: Instant::now(),
        }
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA cost: expected latency times the queue it would join (Finagle, Linkerd).
    pub fn cost(&self) -> f64 {
        let ewma = self.ewma.lock().expect("ewma lock").value(Instant::now());
        ewma * f64::from(self.inflight() + 1)
    }
}

/// A request in flight to an endpoint; [`InFlight::finish`] (or dropping it) ends it.
pub struct InFlight<'a> {
    endpoint: &'a Endpoint,
    started: Instant,
}

impl InFlight<'_> {
    /// Ends the request, records its latency in the EWMA and returns it.
    pub fn finish(self) -> Duration {
        let rtt = self.record();
        std::mem::forget(self);
        rtt
    }

    fn record(&self) -> Duration {
        self.endpoint.inflight.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.started);
        self.endpoint
            .ewma
            .lock()
            .expect("ewma lock")
            .observe(rtt, now);
        rtt
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.record();
    }
}

/// Peak EWMA of latency: jumps up to any slower observation at once, decays towards faster
/// ones with a time constant, so a slowing endpoint is avoided quickly and trusted again slowly.
#[derive(Debug)]
struct PeakEwma {
    value_secs: f64,
    updated: Instant,
}

/// Decay time constant (Linkerd's default).
const DECAY: Duration = Duration::from_secs(10);
/// Latency assumed before the first observation, so that new endpoints are tried.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

impl PeakEwma {
    fn new() -> PeakEwma {
        PeakEwma {
            value_secs: DEFAULT_RTT.as_secs_f64(),
            updated: Instant::now(),
        }
    }

    fn value(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.value_secs * (-elapsed / DECAY.as_secs_f64()).exp()
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let weight = (-elapsed / DECAY.as_secs_f64()).exp();
        // The stored estimate decayed to now, once (tower's `load/peak_ewma.rs`): the peak
        // is compared with it, and it is blended with the new sample by the same weight.
        let decayed = self.value_secs * weight;
        self.value_secs = if rtt > decayed {
            rtt
        } else {
            decayed + rtt * (1.0 - weight)
        };
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let start = Instant::now();
        let mut ewma = PeakEwma {
            value_secs: 0.001,
            updated: start,
        };
        ewma.observe(Duration::from_millis(100), start);
        assert!(
            (ewma.value(start) - 0.1).abs() < 1e-9,
            "a slow response counts at once"
        );
        // One time constant later a 1 ms response blends in with weight 1 - 1/e: the 100 ms
        // estimate is decayed once, not twice.
        let later = start + DECAY;
        ewma.observe(Duration::from_millis(1), later);
        let weight = (-1.0f64).exp();
        let expected = 0.1 * weight + 0.001 * (1.0 - weight);
        let value = ewma.value(later);
        assert!(
            (value - expected).abs() < 1e-9,
            "fast responses pull it down by the decay: {value}, expected {expected}"
        );
        // With no new sample it keeps decaying towards zero at the same rate.
        let value = ewma.value(later + DECAY);
        assert!((value - expected * weight).abs() < 1e-9, "{value}");
    }

    #[test]
    fn cost_grows_with_requests_in_flight() {
        let endpoint = Endpoint::new("a".into(), "127.0.0.1:1".parse().unwrap(), 1);
        let idle = endpoint.cost();
        let _one = endpoint.start();
        let _two = endpoint.start();
        assert!(endpoint.cost() > 2.5 * idle);
        assert_eq!(endpoint.inflight(), 2);
    }
}
