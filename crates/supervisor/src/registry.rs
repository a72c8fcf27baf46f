//! What the supervisor needs from the registry, as a small interface: declare (and forget) a
//! service, register and deregister instances, and follow a service's desired state and its instances'
//! health. [`ApiRegistry`] does it over the HTTP API (the client crate's `Follower`s, so
//! each service costs one blocking query for its health, not one poll per replica); tests
//! put a fake behind it to drive the controller and the replicas in-process.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use wharf_client::{Client, ClientError, Desired, DesiredState, Health, Load, Registration};

use crate::autoscale::Decision;

/// Every instance of a service by id, with the worst status of its checks (`passing`,
/// `warning`, `critical`).
pub type HealthView = BTreeMap<String, String>;

/// A subset's last minute, as the proxies reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SubsetFigures {
    pub requests: u64,
    pub failures: u64,
    pub p99: Option<std::time::Duration>,
}

impl SubsetFigures {
    pub fn failure_rate(&self) -> f64 {
        match self.requests {
            0 => 0.0,
            n => self.failures as f64 / n as f64,
        }
    }
}

/// The meta key that marks a canary's instances with its version.
pub const VERSION_META: &str = "wharf-version";

/// The registry as the supervisor uses it.
pub trait Registry: Send + Sync + 'static {
    /// Declares a supervised service, its replica count, and its bounds (min, max) if it is
    /// autoscaled, with its target of requests in flight per instance if it has one (the
    /// proxies let a service's held requests through by it, as it scales from zero).
    fn declare(
        &self,
        service: &str,
        replicas: u32,
        bounds: Option<(u32, u32)>,
        target_concurrency: Option<f64>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Forgets a service no longer supervised: its desired state removed.
    fn forget(&self, service: &str) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// The service's load now, as the proxies last reported it.
    fn load(&self, service: &str) -> impl Future<Output = Result<Load, ClientError>> + Send;

    /// Sets the service's count as the autoscaler decided; the count set.
    fn autoscale(
        &self,
        service: &str,
        decision: &Decision,
    ) -> impl Future<Output = Result<u32, ClientError>> + Send;

    fn register(
        &self,
        registration: &Registration,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Splits the service between its `stable` instances and its `canary` ones (those whose
    /// [`VERSION_META`] is `version`), `weight` percent to the canary.
    fn split(
        &self,
        service: &str,
        version: &str,
        weight: f64,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Ends the service's split: every instance alike again.
    fn unsplit(&self, service: &str) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// The last minute of the service's `stable` and `canary` subsets.
    fn subsets(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<(SubsetFigures, SubsetFigures), ClientError>> + Send;

    fn deregister(&self, id: &str) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// The service's desired state as it changes (`None` until first heard), until `stop`.
    fn desired(
        &self,
        service: &str,
        stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Option<Desired>>;

    /// The health of the service's instances as it changes, until `stop`.
    fn health(
        &self,
        service: &str,
        stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Arc<HealthView>>;
}

/// The registry over its HTTP API.
#[derive(Debug, Clone)]
pub struct ApiRegistry {
    pub client: Client,
}

impl Registry for ApiRegistry {
    async fn declare(
        &self,
        service: &str,
        replicas: u32,
        bounds: Option<(u32, u32)>,
        target_concurrency: Option<f64>,
    ) -> Result<(), ClientError> {
        self.client
            .declare_service(service, replicas, bounds, target_concurrency)
            .await
    }

    async fn forget(&self, service: &str) -> Result<(), ClientError> {
        self.client.forget_service(service).await
    }

    async fn load(&self, service: &str) -> Result<Load, ClientError> {
        self.client.load(service).await
    }

    async fn autoscale(&self, service: &str, decision: &Decision) -> Result<u32, ClientError> {
        let reported = serde_json::json!({
            "From": decision.from,
            "To": decision.to,
            "Mode": decision.mode.as_str(),
            "Load": decision.load,
            "PerInstance": decision.per_instance,
            "Target": decision.target,
            "Ready": decision.ready,
        });
        self.client.autoscale(service, decision.to, reported).await
    }

    async fn register(&self, registration: &Registration) -> Result<(), ClientError> {
        self.client.register(registration).await
    }

    async fn split(&self, service: &str, version: &str, weight: f64) -> Result<(), ClientError> {
        let filter = |op: &str| format!("Service.Meta.{VERSION_META} {op} \"{version}\"");
        let resolver = serde_json::json!({
            "Kind": "service-resolver", "Name": service,
            "Subsets": {"stable": {"Filter": filter("!=")}, "canary": {"Filter": filter("==")}},
        });
        let splitter = serde_json::json!({
            "Kind": "service-splitter", "Name": service,
            "Splits": [
                {"Weight": 100.0 - weight, "ServiceSubset": "stable"},
                {"Weight": weight, "ServiceSubset": "canary"},
            ],
        });
        for entry in [resolver, splitter] {
            self.client
                .call_json(wharf_client::Method::PUT, "/v1/config", Some(&entry))
                .await?;
        }
        Ok(())
    }

    async fn unsplit(&self, service: &str) -> Result<(), ClientError> {
        for kind in ["service-splitter", "service-resolver"] {
            let path = format!("/v1/config/{kind}/{}", wharf_client::encode(service));
            self.client
                .call_json(wharf_client::Method::DELETE, &path, None)
                .await?;
        }
        Ok(())
    }

    async fn subsets(&self, service: &str) -> Result<(SubsetFigures, SubsetFigures), ClientError> {
        let stats = self
            .client
            .call_json(wharf_client::Method::GET, "/v1/wharf/stats", None)
            .await?;
        let subsets = stats["services"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == service))
            .and_then(|s| s["subsets"].as_array().cloned())
            .unwrap_or_default();
        let figures = |name: &str| {
            subsets
                .iter()
                .find(|s| s["subset"] == name)
                .map(|s| {
                    let minute = &s["minute"];
                    SubsetFigures {
                        requests: minute["requests"].as_u64().unwrap_or(0),
                        failures: minute["failures"].as_u64().unwrap_or(0),
                        p99: minute["latency_ms"]["p99"]
                            .as_f64()
                            .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0)),
                    }
                })
                .unwrap_or_default()
        };
        Ok((figures("stable"), figures("canary")))
    }

    async fn deregister(&self, id: &str) -> Result<(), ClientError> {
        self.client.deregister(id).await
    }

    fn desired(
        &self,
        service: &str,
        stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Option<Desired>> {
        let (publish, desired) = watch::channel(None);
        let mut follower = self.client.follow(DesiredState);
        let name = service.to_owned();
        tokio::spawn(until_stopped(stop, async move {
            loop {
                match follower.next().await {
                    Ok(all) => {
                        if let Some(wanted) = all.get(&name) {
                            publish.send_if_modified(|current| {
                                let changed = *current != Some(*wanted);
                                *current = Some(*wanted);
                                changed
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(service = %name, error = %e, "cannot read desired state");
                    }
                }
            }
        }));
        desired
    }

    fn health(
        &self,
        service: &str,
        stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Arc<HealthView>> {
        let (publish, health) = watch::channel(Arc::new(HealthView::new()));
        let mut follower = self.client.follow(Health::all(service));
        let name = service.to_owned();
        tokio::spawn(until_stopped(stop, async move {
            loop {
                match follower.next().await {
                    Ok(entries) => {
                        let view: HealthView = entries
                            .iter()
                            .map(|e| (e.service.id.clone(), e.aggregate_status().to_owned()))
                            .collect();
                        publish.send_if_modified(|current| {
                            let changed = **current != view;
                            if changed {
                                *current = Arc::new(view);
                            }
                            changed
                        });
                    }
                    // Unknown health counts as not critical: the last view stays.
                    Err(e) => tracing::warn!(service = %name, error = %e, "cannot watch health"),
                }
            }
        }));
        health
    }
}

/// Runs `work` until `stop` turns true.
async fn until_stopped(mut stop: watch::Receiver<bool>, work: impl Future<Output = ()>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        () = work => {}
    }
}
