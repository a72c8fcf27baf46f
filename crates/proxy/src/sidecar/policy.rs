//! The intentions, cached in the sidecar and followed from the registry with a blocking
//! query, so that every decision is local (microseconds, and it keeps working when the
//! registry is gone) and a change arrives within the query's round trip.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::Deserialize;
use tokio::sync::watch;
use wharf_client::{Client, Read};
use wharf_mesh::intentions::{DefaultAction, Intention, Intentions};

#[derive(Debug, Deserialize)]
struct MeshSettings {
    #[serde(rename = "DefaultIntention")]
    default_intention: DefaultAction,
}

/// The sidecar's intentions; `None` until first heard (everything is refused until then).
pub type Policy = Arc<ArcSwapOption<Intentions>>;

/// Follows the intentions until `shutdown`.
pub fn follow(
    client: &Client,
    policy: Policy,
    health: Arc<super::admin::Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = client.clone();
    tokio::spawn(async move {
        let mut intentions = client.follow(Read::<Vec<Intention>>::new("/v1/connect/intentions"));
        let mut default = None;
        loop {
            if default.is_none() {
                match client.read::<MeshSettings>("/v1/wharf/mesh", None).await {
                    Ok((settings, _)) => default = Some(settings.default_intention),
                    Err(e) => health.registry_answered(Err(e.to_string())),
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                answer = intentions.next() => match (answer, default) {
                    (Ok(all), Some(default)) => {
                        health.registry_answered(Ok(()));
                        policy.store(Some(Arc::new(Intentions::new(all, default))));
                        health.has_intentions.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => health.registry_answered(Err(e.to_string())),
                },
            }
        }
    });
}
