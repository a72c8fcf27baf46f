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

/// What this proxy carried, as it reports it.
pub(crate) fn report(directory: &Directory, proxy: &str, caller: &str) -> Report {
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
        services,
    }
}

/// `/stats`: every service this proxy has routed to, by name.
pub(crate) fn stats(directory: &Directory) -> Value {
    let report = report(directory, "", "");
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
        let report = report(&directory, &proxy, &caller);
        if report.services.is_empty() {
            continue;
        }
        let body = serde_json::to_value(&report).expect("a report serialises");
        match client
            .call_json(
                wharf_client::Method::PUT,
                "/v1/wharf/stats/report",
                Some(&body),
            )
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
