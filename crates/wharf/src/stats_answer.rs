//! `/v1/wharf/stats` as the command line reads it (`wharf stat`, `wharf top`): the fields it
//! shows, typed, and how it prints them. Unknown fields are ignored, so a newer registry's
//! answer still reads.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StatsAnswer {
    pub(crate) services: Vec<Service>,
    #[serde(default)]
    pub(crate) edges: Vec<Edge>,
    #[serde(default)]
    pub(crate) proxies: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) minute: Window,
    #[serde(default)]
    pub(crate) models: Models,
    #[serde(default)]
    pub(crate) instances: Vec<Instance>,
    #[serde(default)]
    pub(crate) health: Health,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    /// Its subsets, when split between them.
    #[serde(default)]
    pub(crate) subsets: Vec<Subset>,
    /// For a service `wharf up` runs: the count it is asked for.
    #[serde(default)]
    pub(crate) desired: Option<Desired>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Desired {
    pub(crate) replicas: u32,
    pub(crate) min: Option<u32>,
    pub(crate) max: Option<u32>,
    pub(crate) last_decision: Option<Decision>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Decision {
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) mode: String,
    pub(crate) load: f64,
    pub(crate) per_instance: f64,
    pub(crate) target: f64,
    pub(crate) ready: u32,
}

impl Desired {
    /// `4`, or `4 (1-10)` for an autoscaled service.
    pub(crate) fn short(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("{} ({min}-{max})", self.replicas),
            _ => self.replicas.to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Subset {
    pub(crate) subset: String,
    pub(crate) minute: Window,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Route {
    pub(crate) route: String,
    pub(crate) minute: Window,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct Health {
    pub(crate) passing: u64,
    pub(crate) warning: u64,
    pub(crate) critical: u64,
    #[serde(default)]
    pub(crate) sidecars: u64,
}

impl Health {
    pub(crate) fn instances(&self) -> u64 {
        self.passing + self.warning + self.critical
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Window {
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) success_rate: f64,
    pub(crate) latency_ms: Percentiles,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Models {
    pub(crate) mean_load: Option<f64>,
    pub(crate) imbalance: Option<f64>,
    pub(crate) mean_failure_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) in_flight: u64,
    pub(crate) failure_rate: f64,
    pub(crate) minute: Window,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Edge {
    pub(crate) source: String,
    pub(crate) destination: String,
    #[serde(default)]
    pub(crate) mtls: bool,
    #[serde(default)]
    pub(crate) intention: String,
    pub(crate) minute: Window,
}

/// `x` with `digits` decimals, `-` when there is no figure.
pub(crate) fn number(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// A share as a percentage, `-` when there is no figure.
pub(crate) fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.2}%", v * 100.0))
}

impl Window {
    /// The success rate, or none when nothing was asked.
    pub(crate) fn success(&self) -> Option<f64> {
        (self.requests > 0).then_some(self.success_rate)
    }
}
