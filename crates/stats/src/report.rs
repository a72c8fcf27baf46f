//! What a proxy reports of its golden metrics, and what the registry makes of the reports.
//!
//! Proxies push: each sends its report to the registry every second (`PUT
//! /v1/wharf/stats/report`). They already follow the registry, know its address and carry
//! its token; the registry need not know where every gateway and sidecar listens (a gateway
//! is not in the catalog, and a proxy behind NAT or in another namespace could not be
//! reached), and a proxy that stops reporting simply ages out. A report holds each window's
//! counts and merged sketch, so the registry's figures are the merge of the proxies', exact to
//! the same 2 %.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Sketch, Summary};

/// A window as reported: counts, the seconds they cover, the merged latency sketch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    pub requests: u64,
    pub failures: u64,
    pub seconds: u64,
    #[serde(default)]
    pub latency: Sketch,
}

impl From<&Summary> for WindowReport {
    fn from(s: &Summary) -> WindowReport {
        WindowReport {
            requests: s.requests,
            failures: s.failures,
            seconds: s.seconds,
            latency: s.latency.clone(),
        }
    }
}

impl WindowReport {
    /// Adds another proxy's figures for the same window: counts add, sketches merge, and the
    /// window covers the longer of the two spans.
    pub fn merge(&mut self, other: &WindowReport) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.seconds = self.seconds.max(other.seconds);
        self.latency.merge(&other.latency);
    }

    pub fn summary(&self) -> Summary {
        Summary {
            requests: self.requests,
            failures: self.failures,
            seconds: self.seconds,
            p50: self.latency.quantile(0.50),
            p95: self.latency.quantile(0.95),
            p99: self.latency.quantile(0.99),
            latency: self.latency.clone(),
        }
    }
}

/// One instance as a proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub id: String,
    pub address: String,
    pub in_flight: u64,
    pub minute: WindowReport,
}

/// One service as a proxy sees it (the traffic it carried to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    pub minute: WindowReport,
    pub ten_minutes: WindowReport,
    /// (requests, failures) per 10 s over ten minutes, oldest first.
    #[serde(default)]
    pub history: Vec<(u32, u32)>,
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
    /// Retries sent and instances ejected in the last minute.
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub ejections: u64,
    /// Bytes from the clients (requests) and to them (answers) in the last minute.
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// Its route classes' last minute (a bounded set, `other` for the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteReport>,
    /// Its subsets' last minute, when it is split between them (versions, canaries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<SubsetReport>,
    /// Requests held now for a service scaled to zero, until an instance passes: load the
    /// autoscaler must see although no instance has it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One route class of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    pub route: String,
    pub minute: WindowReport,
}

/// One subset of a service split between subsets (`service-splitter`): the requests its
/// share drew, as answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubsetReport {
    pub subset: String,
    pub minute: WindowReport,
}

/// What one caller asked of a sidecar's service, as its inbound side saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerReport {
    /// The caller's mTLS identity (a service), or `unknown` for a plaintext caller.
    pub caller: String,
    pub mtls: bool,
    pub minute: WindowReport,
    pub ten_minutes: WindowReport,
    #[serde(default)]
    pub history: Vec<(u32, u32)>,
}

/// A proxy's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Who reports (unique per proxy: `gateway@ADDR`, a sidecar's instance id).
    pub proxy: String,
    /// Who the callers are, as the edges name them: `gateway` for a gateway's clients; a
    /// sidecar's own service, which is also the destination of its `inbound` rows.
    pub caller: String,
    /// Whether its calls went over mutual TLS with `caller` as the identity (a sidecar, or the
    /// ingress of a mesh with mTLS on), or in plaintext (a gateway outside the mesh).
    #[serde(default)]
    pub mtls: bool,
    pub services: Vec<ServiceReport>,
    /// A sidecar's inbound side, by caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<CallerReport>,
    /// Where its admin listener is (`/tap`, `/stats`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Its clients' connections open now (a gateway's, a sidecar's app's).
    #[serde(default)]
    pub open_connections: u64,
}

impl Report {
    /// The proxy that sent it: a report in parts (`NAME#N`, see the proxy's `golden.rs`) is
    /// one proxy's.
    pub fn proxy_name(&self) -> &str {
        self.proxy
            .rsplit_once('#')
            .map_or(&self.proxy, |(name, _)| name)
    }
}

/// One edge: a caller's traffic to a service in the last minute, and whether all of it went
/// over mTLS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeReport {
    pub minute: WindowReport,
    pub mtls: bool,
    /// Bytes of the last minute, caller to service and back (the callers' own reports only).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The edges (caller → service). Each is counted once: from the callers' own proxies where
/// they report it (their outbound rows), else from the sidecars that were called (their
/// inbound rows: a caller without a proxy of its own, or a plaintext one).
pub fn edges<'r>(
    reports: impl IntoIterator<Item = &'r Report> + Clone,
) -> BTreeMap<(String, String), EdgeReport> {
    let mut edges: BTreeMap<(String, String), EdgeReport> = BTreeMap::new();
    for report in reports.clone() {
        for service in &report.services {
            let edge = edges
                .entry((report.caller.clone(), service.name.clone()))
                .or_insert(EdgeReport {
                    mtls: true,
                    ..EdgeReport::default()
                });
            edge.minute.merge(&service.minute);
            edge.bytes_in += service.bytes_in;
            edge.bytes_out += service.bytes_out;
            // One plaintext part makes the edge plaintext: it is what to fix.
            edge.mtls &= report.mtls;
        }
    }
    for (report, row) in inbound_only(reports, &edges) {
        let edge = edges
            .entry((row.caller.clone(), report.caller.clone()))
            .or_insert(EdgeReport {
                mtls: true,
                ..EdgeReport::default()
            });
        edge.minute.merge(&row.minute);
        edge.mtls &= row.mtls;
    }
    edges
}

/// The inbound rows whose edge no caller's own proxy reports.
fn inbound_only<'r>(
    reports: impl IntoIterator<Item = &'r Report>,
    outbound: &BTreeMap<(String, String), EdgeReport>,
) -> Vec<(&'r Report, &'r CallerReport)> {
    let mut rows = Vec::new();
    for report in reports {
        for row in &report.inbound {
            if !outbound.contains_key(&(row.caller.clone(), report.caller.clone())) {
                rows.push((report, row));
            }
        }
    }
    rows
}

/// Adds `history` to `into`, aligned on the newest point (both end now).
fn add_history(into: &mut Vec<(u32, u32)>, history: &[(u32, u32)]) {
    if into.len() < history.len() {
        into.resize(history.len(), (0, 0));
    }
    let offset = into.len() - history.len();
    for (i, (requests, failures)) in history.iter().enumerate() {
        let point = &mut into[offset + i];
        point.0 = point.0.saturating_add(*requests);
        point.1 = point.1.saturating_add(*failures);
    }
}

/// Every service's figures merged over the reports given: what the callers' proxies carried
/// to it, and what sidecars saw come in from callers that no proxy of theirs reports (so that
/// nothing is counted twice).
pub fn merge<'r>(
    reports: impl IntoIterator<Item = &'r Report> + Clone,
) -> BTreeMap<String, ServiceReport> {
    let mut merged: BTreeMap<String, ServiceReport> = BTreeMap::new();
    let mut outbound: BTreeMap<(String, String), EdgeReport> = BTreeMap::new();
    for report in reports.clone() {
        for service in &report.services {
            outbound.insert(
                (report.caller.clone(), service.name.clone()),
                EdgeReport::default(),
            );
            let into = merged
                .entry(service.name.clone())
                .or_insert_with(|| ServiceReport {
                    name: service.name.clone(),
                    ..ServiceReport::default()
                });
            into.minute.merge(&service.minute);
            into.ten_minutes.merge(&service.ten_minutes);
            into.retries += service.retries;
            into.ejections += service.ejections;
            into.bytes_in += service.bytes_in;
            into.bytes_out += service.bytes_out;
            into.waiting += service.waiting;
            for route in &service.routes {
                match into.routes.iter_mut().find(|r| r.route == route.route) {
                    Some(known) => known.minute.merge(&route.minute),
                    None => into.routes.push(route.clone()),
                }
            }
            for subset in &service.subsets {
                match into.subsets.iter_mut().find(|s| s.subset == subset.subset) {
                    Some(known) => known.minute.merge(&subset.minute),
                    None => into.subsets.push(subset.clone()),
                }
            }
            add_history(&mut into.history, &service.history);
            for instance in &service.instances {
                match into.instances.iter_mut().find(|i| i.id == instance.id) {
                    Some(known) => {
                        known.in_flight += instance.in_flight;
                        known.minute.merge(&instance.minute);
                    }
                    None => into.instances.push(instance.clone()),
                }
            }
        }
    }
    for (report, row) in inbound_only(reports, &outbound) {
        let into = merged
            .entry(report.caller.clone())
            .or_insert_with(|| ServiceReport {
                name: report.caller.clone(),
                ..ServiceReport::default()
            });
        into.minute.merge(&row.minute);
        into.ten_minutes.merge(&row.ten_minutes);
        add_history(&mut into.history, &row.history);
    }
    for service in merged.values_mut() {
        service.instances.sort_by(|a, b| a.id.cmp(&b.id));
        service.subsets.sort_by(|a, b| a.subset.cmp(&b.subset));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window(requests: u64, failures: u64, latency_ms: u64) -> WindowReport {
        let mut latency = Sketch::new();
        for _ in 0..requests {
            latency.record(Duration::from_millis(latency_ms));
        }
        WindowReport {
            requests,
            failures,
            seconds: 60,
            latency,
        }
    }

    #[test]
    fn reports_of_two_proxies_merge_into_one_view() {
        let report = |proxy: &str, requests, failures, ms, instance: &str| Report {
            proxy: proxy.into(),
            caller: "gateway".into(),
            mtls: false,
            inbound: Vec::new(),
            admin: None,
            open_connections: 0,
            services: vec![ServiceReport {
                name: "web".into(),
                minute: window(requests, failures, ms),
                ten_minutes: window(requests, failures, ms),
                history: vec![(1, 0), (requests as u32, failures as u32)],
                instances: vec![InstanceReport {
                    id: instance.into(),
                    address: "127.0.0.1:1".into(),
                    in_flight: 1,
                    minute: window(requests, failures, ms),
                }],
                retries: 2,
                ejections: 1,
                bytes_in: 100,
                bytes_out: 1000,
                waiting: 0,
                routes: vec![RouteReport {
                    route: "GET /".into(),
                    minute: window(requests, failures, ms),
                }],
                subsets: vec![SubsetReport {
                    subset: "v2".into(),
                    minute: window(requests, failures, ms),
                }],
            }],
        };
        let a = report("a", 90, 9, 10, "web-1");
        let b = report("b", 10, 1, 100, "web-1");
        let merged = merge([&a, &b]);
        let web = &merged["web"];
        assert_eq!((web.minute.requests, web.minute.failures), (100, 10));
        let summary = web.minute.summary();
        assert!(summary.p50.unwrap() < Duration::from_millis(11));
        assert!(summary.p95.unwrap() > Duration::from_millis(95));
        assert_eq!(web.history, vec![(2, 0), (100, 10)]);
        assert_eq!(web.instances.len(), 1);
        assert_eq!(web.instances[0].in_flight, 2);
        assert_eq!(web.instances[0].minute.requests, 100);
        assert_eq!((web.retries, web.ejections), (4, 2));
        assert_eq!((web.bytes_in, web.bytes_out), (200, 2000));
        let edge = &edges([&a, &b])[&("gateway".to_owned(), "web".to_owned())];
        assert_eq!((edge.bytes_in, edge.bytes_out), (200, 2000));
        assert_eq!(web.routes.len(), 1, "one route class, merged");
        assert_eq!(web.routes[0].minute.requests, 100);
        assert_eq!(web.subsets.len(), 1, "one subset, merged");
        assert_eq!(
            (
                web.subsets[0].minute.requests,
                web.subsets[0].minute.failures
            ),
            (100, 10)
        );
    }

    #[test]
    fn a_caller_seen_only_by_the_called_sidecar_is_an_edge_counted_once() {
        let row = |caller: &str, mtls, requests| CallerReport {
            caller: caller.into(),
            mtls,
            minute: window(requests, 0, 5),
            ten_minutes: window(requests, 0, 5),
            history: vec![(requests as u32, 0)],
        };
        // web's sidecar saw api (which reports its own calls) and a plaintext stranger.
        let web = Report {
            proxy: "web-1@sidecar".into(),
            caller: "web".into(),
            mtls: true,
            inbound: vec![row("api", true, 40), row("unknown", false, 7)],
            ..Report::default()
        };
        let api = Report {
            proxy: "api-1@sidecar".into(),
            caller: "api".into(),
            mtls: true,
            services: vec![ServiceReport {
                name: "web".into(),
                minute: window(40, 2, 5),
                ten_minutes: window(40, 2, 5),
                history: vec![(40, 2)],
                ..ServiceReport::default()
            }],
            ..Report::default()
        };
        let edges = edges([&web, &api]);
        let from_api = &edges[&("api".to_owned(), "web".to_owned())];
        assert_eq!(
            (from_api.minute.requests, from_api.minute.failures),
            (40, 2)
        );
        assert!(from_api.mtls);
        let stranger = &edges[&("unknown".to_owned(), "web".to_owned())];
        assert_eq!(stranger.minute.requests, 7);
        assert!(!stranger.mtls);
        let merged = merge([&web, &api]);
        assert_eq!(
            merged["web"].minute.requests, 47,
            "api's 40 once, the stranger's 7"
        );
        assert_eq!(merged["web"].history, vec![(47, 2)]);
    }
}
