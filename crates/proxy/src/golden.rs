//! The proxy's golden metrics as JSON, at `/stats` on its admin listener: for each service
//! it routes to, the last minute and the last ten (requests, failures, rate, success, p50,
//! p95, p99 of the time to the answer's head), the requests per 10 s of the last ten minutes,
//! each instance's own last minute (its attempts, retries included) and requests in flight,
//! and the seed's three models over the instances: the mean load L = (1/n) Σ wᵢ with wᵢ an
//! instance's requests per second, the imbalance max wᵢ / L, and the mean failure rate
//! F = (1/n) Σ fᵢ.

use serde_json::{Value, json};
use wharf_stats::Summary;

use crate::discovery::Directory;
use crate::metrics::now_secs;

fn millis(d: Option<std::time::Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64() * 1000.0))
}

fn window(s: &Summary) -> Value {
    json!({
        "requests": s.requests,
        "failures": s.failures,
        "seconds": s.seconds,
        "rps": s.rps(),
        "success_rate": s.success_rate(),
        "latency_ms": {"p50": millis(s.p50), "p95": millis(s.p95), "p99": millis(s.p99)},
    })
}

/// L, max wᵢ / L and F over instances' (requests per second, failure rate).
fn models(instances: &[(f64, f64)]) -> Value {
    if instances.is_empty() {
        return json!({"mean_load": Value::Null, "imbalance": Value::Null, "mean_failure_rate": Value::Null});
    }
    let n = instances.len() as f64;
    let mean_load = instances.iter().map(|(w, _)| w).sum::<f64>() / n;
    let max_load = instances.iter().map(|(w, _)| *w).fold(0.0, f64::max);
    let mean_failure = instances.iter().map(|(_, f)| f).sum::<f64>() / n;
    json!({
        "mean_load": mean_load,
        "imbalance": if mean_load > 0.0 { json!(max_load / mean_load) } else { Value::Null },
        "mean_failure_rate": mean_failure,
    })
}

/// Every service the proxy has routed to, by name.
pub(crate) fn stats(directory: &Directory) -> Value {
    let now = now_secs();
    let services: Vec<Value> = directory
        .services()
        .iter()
        .map(|service| {
            let set = service.endpoints.load();
            let mut loads = Vec::new();
            let instances: Vec<Value> = set
                .endpoints
                .iter()
                .map(|endpoint| {
                    let minute = endpoint.golden.minute(now);
                    loads.push((minute.rps(), minute.failure_rate()));
                    json!({
                        "id": endpoint.id,
                        "address": endpoint.addr.to_string(),
                        "in_flight": endpoint.inflight(),
                        "failure_rate": minute.failure_rate(),
                        "minute": window(&minute),
                    })
                })
                .collect();
            json!({
                "name": service.name,
                "minute": window(&service.golden.minute(now)),
                "ten_minutes": window(&service.golden.ten_minutes(now)),
                "history": service.golden.history(now),
                "models": models(&loads),
                "instances": instances,
            })
        })
        .collect();
    json!({"services": services})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_models_over_instances() {
        let m = models(&[(10.0, 0.0), (30.0, 0.2)]);
        assert_eq!(m["mean_load"], 20.0);
        assert_eq!(m["imbalance"], 1.5);
        assert!((m["mean_failure_rate"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        assert!(models(&[]).get("mean_load").unwrap().is_null());
        assert!(models(&[(0.0, 0.0)])["imbalance"].is_null());
    }
}
