//! The proxy's golden metrics: as JSON at `/stats` on its admin listener, and as the report
//! it pushes to the registry every second (`wharf_stats::report` says why push). For each
//! service it routes to: the last minute and the last ten (requests, failures, rate, success,
//! p50/p95/p99 of the time to the answer's head), the requests per 10 s of the last ten
//! minutes, each instance's own last minute (its attempts, retries included) and requests in
//! flight, and the seed's three models over the instances (L, max wᵢ/L, F).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wharf_stats::{
    CallerReport, InstanceReport, Outcome, Report, RouteReport, Row, ServiceReport, ServiceView,
    SubsetReport, WindowReport,
};

use crate::clock::now_secs;
use crate::discovery::Directory;

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
            // The inbound rows (a few, one per caller) ride with the first part.
            inbound: if parts.is_empty() {
                report.inbound.clone()
            } else {
                Vec::new()
            },
            admin: report.admin.clone(),
            open_connections: report.open_connections,
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
    if parts.is_empty() && !report.inbound.is_empty() {
        parts.push(serde_json::to_vec(report).expect("a report serialises"));
    }
    parts
}

/// The most callers a sidecar keeps rows for; the rest are counted together as `other`.
const MAX_CALLERS: usize = 64;

/// A sidecar's inbound side, by caller: what each asked of its app. The registry takes an
/// edge from here when the caller has no proxy of its own that reports it (a plaintext
/// caller in permissive mode, say), so that every caller shows, and none twice.
#[derive(Debug, Default)]
pub(crate) struct CallerRows {
    rows: Mutex<HashMap<(String, bool), Arc<Row>>>,
}

impl CallerRows {
    /// Records one request of `caller` (`unknown` when it had no certificate).
    pub(crate) fn record(&self, caller: &str, mtls: bool, failed: bool, latency: Duration) {
        let now = now_secs();
        let row = {
            let mut rows = self.rows.lock().expect("caller rows");
            let key = (caller.to_owned(), mtls);
            match rows.get(&key) {
                Some(row) => row.clone(),
                None => {
                    let key = if rows.len() < MAX_CALLERS {
                        key
                    } else {
                        ("other".to_owned(), mtls)
                    };
                    rows.entry(key)
                        .or_insert_with(|| Arc::new(Row::new(now)))
                        .clone()
                }
            }
        };
        let outcome = if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        row.record(now, outcome, latency);
    }

    fn report(&self, now: u64) -> Vec<CallerReport> {
        let rows: Vec<((String, bool), Arc<Row>)> = self
            .rows
            .lock()
            .expect("caller rows")
            .iter()
            .map(|(key, row)| (key.clone(), row.clone()))
            .collect();
        rows.into_iter()
            .map(|((caller, mtls), row)| CallerReport {
                caller,
                mtls,
                minute: WindowReport::from(&row.minute(now)),
                ten_minutes: WindowReport::from(&row.ten_minutes(now)),
                history: row.history(now),
            })
            .filter(|r| r.ten_minutes.requests > 0)
            .collect()
    }
}

/// Who a proxy reports as, and what: the services it routes to, its callers, or both.
pub(crate) struct Reporter {
    /// Unique per proxy: `gateway@ADDR`, `<instance>@sidecar`.
    pub proxy: String,
    /// The edges' source for what it routes (`gateway`, or the sidecar's service).
    pub caller: String,
    pub mtls: bool,
    pub directory: Option<Arc<Directory>>,
    pub callers: Option<Arc<CallerRows>>,
    /// Its admin listener, for `wharf tap` to find.
    pub admin: Option<std::net::SocketAddr>,
    /// Its clients' connections open now.
    pub connections: Option<crate::metrics::Metrics>,
}

impl Reporter {
    fn report(&self) -> Report {
        let mut report = match &self.directory {
            Some(directory) => report(directory, &self.proxy, &self.caller, self.mtls),
            None => Report {
                proxy: self.proxy.clone(),
                caller: self.caller.clone(),
                mtls: self.mtls,
                ..Report::default()
            },
        };
        if let Some(callers) = &self.callers {
            report.inbound = callers.report(now_secs());
        }
        report.admin = self.admin.map(|a| a.to_string());
        report.open_connections = self
            .connections
            .as_ref()
            .map_or(0, |m| u64::try_from(m.open_connections.get()).unwrap_or(0));
        report
    }
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
                retries: service.retries.minute(now),
                ejections: service.ejections.minute(now),
                bytes_in: service.bytes_in.minute(now),
                bytes_out: service.bytes_out.minute(now),
                waiting: service.waiting.load(std::sync::atomic::Ordering::Relaxed),
                routes: service
                    .routes
                    .all()
                    .iter()
                    .map(|(route, row)| RouteReport {
                        route: route.clone(),
                        minute: WindowReport::from(&row.minute(now)),
                    })
                    .filter(|r| r.minute.requests > 0)
                    .collect(),
                subsets: service
                    .subsets
                    .lock()
                    .expect("subset rows")
                    .iter()
                    .map(|(subset, row)| SubsetReport {
                        subset: subset.clone(),
                        minute: WindowReport::from(&row.minute(now)),
                    })
                    .collect(),
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
        inbound: Vec::new(),
        admin: None,
        open_connections: 0,
    }
}

/// `/stats`: every service this proxy has routed to, by name.
pub(crate) fn stats(directory: &Directory) -> Value {
    let report = report(directory, "", "", false);
    let services: Vec<ServiceView> = report.services.iter().map(ServiceView::from).collect();
    json!({ "services": services })
}

/// Pushes this proxy's report to the registry every [`REPORT_EVERY`], and at once when a
/// request begins to wait for a service scaled to zero, until `shutdown`. A
/// registry that does not take reports (a real Consul answers 404 or 405 for Wharf's own
/// endpoints) is told once in the log and not asked again.
pub(crate) async fn push_reports(
    reporter: Reporter,
    client: wharf_client::Client,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let report_now = reporter.directory.as_ref().map(|d| d.report_now.clone());
    loop {
        let early = async {
            match &report_now {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            () = early => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let report = reporter.report();
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
            inbound: Vec::new(),
            admin: None,
            open_connections: 0,
            services: (0..2_000)
                .map(|i| ServiceReport {
                    name: format!("svc-{i}"),
                    minute: window.clone(),
                    ten_minutes: window.clone(),
                    history: vec![(1, 0); 60],
                    ..ServiceReport::default()
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
