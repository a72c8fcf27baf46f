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

/// The registry as the supervisor uses it.
pub trait Registry: Send + Sync + 'static {
    /// Declares a supervised service, its replica count, and its bounds (min, max) if it is
    /// autoscaled.
    fn declare(
        &self,
        service: &str,
        replicas: u32,
        bounds: Option<(u32, u32)>,
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
    ) -> Result<(), ClientError> {
        self.client.declare_service(service, replicas, bounds).await
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
