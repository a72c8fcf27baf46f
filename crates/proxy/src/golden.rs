//! The proxy's golden metrics: as JSON at `/stats` on its admin listener, and as the report
//! it pushes to the registry every second (`wharf_stats::report` says why push). For each
//! service it routes to: the last minute and the last ten (requests, failures, rate, success,
//! p50/p95/p99 of the time to the answer's head), the requests per 10 s of the last ten
//! minutes, each instance's own last minute (its attempts, retries included) and requests in
//! flight, and the seed's three models over the instances (L, max wᵢ/L, F).

use std::time::Duration;

use serde_json::{Value, json};
use wharf_stats::{InstanceReport, Report, ServiceReport, ServiceView, WindowReport};

use crate::discovery::Directory;
use crate::metrics::now_secs;

/// How often the report goes to the registry.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The most a report's body may be (the registry takes bodies up to 1 MiB): a proxy routing
/// to many services sends its report in parts.
const PART_BYTES: usize = 512 * 1024;

/// `report` as bodies of at most [`PART_BYTES`] each (a service larger than that alone goes
/// in a part of its own), each part named `PROXY#N` so the registry keeps them side by side.
fn parts(report: &Report) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current: Vec<&ServiceReport> = Vec::new();
    let mut size = 0;
    let mut flush = |services: &mut Vec<&ServiceReport>| {
        if services.is_empty() {
            return;
        }
        let part = Report {
            proxy: format!("{}#{}", report.proxy, parts.len()),
            caller: report.caller.clone(),
            mtls: report.mtls,
            services: services.drain(..).cloned().collect(),
        };
        parts.push(serde_json::to_vec(&part).expect("a report serialises"));
    };
    for service in &report.services {
        let bytes = serde_json::to_vec(service).map_or(0, |b| b.len());
        if size + bytes > PART_BYTES && !current.is_empty() {
            flush(&mut current);
            size = 0;
        }
        current.push(service);
        size += bytes;
    }
    flush(&mut current);
    parts
}

/// What this proxy carried, as it reports it.
pub(crate) fn report(directory: &Directory, proxy: &str, caller: &str, mtls: bool) -> Report {
    let now = now_secs();
    let services = directory
        .services()
        .iter()
        .map(|service| {
            let set = service.endpoints.load();
            ServiceReport {
                name: service.name.clone(),
                minute: WindowReport::from(&service.golden.minute(now)),
                ten_minutes: WindowReport::from(&service.golden.ten_minutes(now)),
                history: service.golden.history(now),
                instances: set
                    .endpoints
                    .iter()
                    .map(|endpoint| InstanceReport {
                        id: endpoint.id.clone(),
                        address: endpoint.addr.to_string(),
                        in_flight: u64::from(endpoint.inflight()),
                        minute: WindowReport::from(&endpoint.golden.minute(now)),
                    })
                    .collect(),
            }
        })
        .collect();
    Report {
        proxy: proxy.to_owned(),
        caller: caller.to_owned(),
        mtls,
        services,
    }
}

/// `/stats`: every service this proxy has routed to, by name.
pub(crate) fn stats(directory: &Directory) -> Value {
    let report = report(directory, "", "", false);
    let services: Vec<ServiceView> = report.services.iter().map(ServiceView::from).collect();
    json!({ "services": services })
}

/// Pushes this proxy's report to the registry every [`REPORT_EVERY`] until `shutdown`. A
/// registry that does not take reports (a real Consul answers 404 or 405 for Wharf's own
/// endpoints) is told once in the log and not asked again.
pub(crate) async fn push_reports(
    directory: std::sync::Arc<Directory>,
    client: wharf_client::Client,
    proxy: String,
    caller: String,
    mtls: bool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let report = report(&directory, &proxy, &caller, mtls);
        for body in parts(&report) {
            match client
                .call_bytes(wharf_client::Method::PUT, "/v1/wharf/stats/report", body)
                .await
            {
                Ok(_) => {}
                Err(wharf_client::ClientError::Refused { status, reason })
                    if matches!(status.as_u16(), 404 | 405 | 501) =>
                {
                    tracing::info!(%status, reason, "the registry takes no golden-metrics reports; not sending more");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "golden metrics: report not taken"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_report_goes_in_parts_under_the_limit_holding_every_service() {
        let mut latency = wharf_stats::Sketch::new();
        for ms in 1..200u64 {
            latency.record(Duration::from_micros(ms * 137));
        }
        let window = WindowReport {
            requests: 1,
            failures: 0,
            seconds: 60,
            latency,
        };
        let report = Report {
            proxy: "gateway@x".into(),
            caller: "gateway".into(),
            mtls: false,
            services: (0..2_000)
                .map(|i| ServiceReport {
                    name: format!("svc-{i}"),
                    minute: window.clone(),
                    ten_minutes: window.clone(),
                    history: vec![(1, 0); 60],
                    instances: Vec::new(),
                })
                .collect(),
        };
        let bodies = parts(&report);
        assert!(bodies.len() > 1);
        let mut names = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            assert!(
                body.len() <= PART_BYTES + 8 * 1024,
                "part {i}: {} bytes",
                body.len()
            );
            let part: Report = serde_json::from_slice(body).unwrap();
            assert_eq!(part.proxy, format!("gateway@x#{i}"));
            names.extend(part.services.into_iter().map(|s| s.name));
        }
        assert_eq!(names.len(), 2_000);
        assert!(parts(&Report::default()).is_empty());
    }
}
