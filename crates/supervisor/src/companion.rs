//! Something that runs beside each instance, started before its process and stopped with it:
//! in `wharf up` with mTLS on, the instance's sidecar. The supervisor knows only this
//! interface, so that it stays free of the proxy.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What was started beside one instance.
pub struct Attached {
    /// Added to the instance's environment (the sidecar's outbound address, say).
    pub env: Vec<(String, String)>,
    /// Stops it; called once, before the instance is drained and stopped.
    pub stop: Box<dyn FnOnce() -> BoxFuture<()> + Send>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// Starts what goes beside an instance of `service` (id `instance`, registering with `meta`)
/// whose process is about to listen on `port`.
pub trait Companion: Send + Sync + 'static {
    fn attach(
        &self,
        service: &str,
        instance: &str,
        port: u16,
        meta: &std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<Result<Attached, String>>;
}
