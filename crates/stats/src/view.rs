//! The figures as `/stats` (a proxy's) and `/v1/wharf/stats` (the registry's) show them, the
//! same shape in both: a window's requests, failures, rate, success and percentiles in
//! milliseconds; the seed's three models over a service's instances.

use serde::Serialize;

use crate::Summary;

/// A percentile in milliseconds.
fn millis(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// One window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub requests: u64,
    pub failures: u64,
    pub seconds: u64,
    pub rps: f64,
    pub success_rate: f64,
    pub latency_ms: Percentiles,
}

impl From<&Summary> for WindowView {
    fn from(s: &Summary) -> WindowView {
        WindowView {
            requests: s.requests,
            failures: s.failures,
            seconds: s.seconds,
            rps: s.rps(),
            success_rate: s.success_rate(),
            latency_ms: Percentiles {
                p50: millis(s.p50),
                p95: millis(s.p95),
                p99: millis(s.p99),
            },
        }
    }
}

/// The mean load L = (1/n) Σ wᵢ (wᵢ: an instance's requests per second), the imbalance
/// max wᵢ / L, and the mean failure rate F = (1/n) Σ fᵢ, over a service's instances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Models {
    pub mean_load: Option<f64>,
    pub imbalance: Option<f64>,
    pub mean_failure_rate: Option<f64>,
}

impl Models {
    /// Over instances' (requests per second, failure rate).
    pub fn over(instances: &[(f64, f64)]) -> Models {
        if instances.is_empty() {
            return Models {
                mean_load: None,
                imbalance: None,
                mean_failure_rate: None,
            };
        }
        let n = instances.len() as f64;
        let mean_load = instances.iter().map(|(w, _)| w).sum::<f64>() / n;
        let max_load = instances.iter().map(|(w, _)| *w).fold(0.0, f64::max);
        Models {
            mean_load: Some(mean_load),
            imbalance: (mean_load > 0.0).then(|| max_load / mean_load),
            mean_failure_rate: Some(instances.iter().map(|(_, f)| f).sum::<f64>() / n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_models_over_instances() {
        let m = Models::over(&[(10.0, 0.0), (30.0, 0.2)]);
        assert_eq!(m.mean_load, Some(20.0));
        assert_eq!(m.imbalance, Some(1.5));
        assert!((m.mean_failure_rate.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(Models::over(&[]).mean_load, None);
        assert_eq!(Models::over(&[(0.0, 0.0)]).imbalance, None);
    }
}

/// One instance as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub address: String,
    pub in_flight: u64,
    /// fᵢ: the share of its attempts that failed in the last minute.
    pub failure_rate: f64,
    pub minute: WindowView,
}

/// One service as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub minute: WindowView,
    pub ten_minutes: WindowView,
    /// (requests, failures) per 10 s over ten minutes, oldest first.
    pub history: Vec<(u32, u32)>,
    pub models: Models,
    pub instances: Vec<InstanceView>,
    /// Retries sent and instances ejected in the last minute.
    pub retries: u64,
    pub ejections: u64,
    /// Bytes from and to its clients in the last minute.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Its route classes, busiest first.
    pub routes: Vec<RouteView>,
    /// Its subsets, when split between them, by name.
    pub subsets: Vec<SubsetView>,
}

/// One subset as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsetView {
    pub subset: String,
    pub minute: WindowView,
}

/// One route class as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteView {
    pub route: String,
    pub minute: WindowView,
}

impl From<&crate::ServiceReport> for ServiceView {
    fn from(service: &crate::ServiceReport) -> ServiceView {
        let instances: Vec<InstanceView> = service
            .instances
            .iter()
            .map(|instance| {
                let minute = instance.minute.summary();
                InstanceView {
                    id: instance.id.clone(),
                    address: instance.address.clone(),
                    in_flight: instance.in_flight,
                    failure_rate: minute.failure_rate(),
                    minute: WindowView::from(&minute),
                }
            })
            .collect();
        let loads: Vec<(f64, f64)> = instances
            .iter()
            .map(|i| (i.minute.rps, i.failure_rate))
            .collect();
        ServiceView {
            name: service.name.clone(),
            minute: WindowView::from(&service.minute.summary()),
            ten_minutes: WindowView::from(&service.ten_minutes.summary()),
            history: service.history.clone(),
            models: Models::over(&loads),
            instances,
            retries: service.retries,
            ejections: service.ejections,
            bytes_in: service.bytes_in,
            bytes_out: service.bytes_out,
            routes: {
                let mut routes: Vec<RouteView> = service
                    .routes
                    .iter()
                    .map(|r| RouteView {
                        route: r.route.clone(),
                        minute: WindowView::from(&r.minute.summary()),
                    })
                    .collect();
                routes.sort_by(|a, b| {
                    b.minute
                        .requests
                        .cmp(&a.minute.requests)
                        .then_with(|| a.route.cmp(&b.route))
                });
                routes
            },
            subsets: service
                .subsets
                .iter()
                .map(|s| SubsetView {
                    subset: s.subset.clone(),
                    minute: WindowView::from(&s.minute.summary()),
                })
                .collect(),
        }
    }
}
