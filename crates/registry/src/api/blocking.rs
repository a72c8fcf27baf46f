//! Blocking queries: hold a read until the resource's index moves past the client's.
//!
//! Consul's rules (consul-compat.md §4): no `index` (or 0) answers at once; otherwise the
//! request is held until the resource's index differs from the one sent, or until `wait`
//! plus up to `wait/16` of jitter has passed (so that many watchers do not come back in the
//! same instant), and then answers with the current data and index either way. An index
//! *lower* than the client's (the store was restored) answers at once, so that clients
//! resynchronise instead of hanging for the whole wait. An error (a 404 for something not
//! there yet) carries the index too, as Consul's do.

use axum::response::Response;
use tokio::time::Instant;

use super::params::Params;
use super::{ApiError, json_with_index};
use crate::Agent;
use crate::catalog::{CatalogState, Resource};

/// Answers a read of `resource` rendered by `render`, blocking if the client asked to.
pub(super) async fn answer(
    agent: &Agent,
    params: &Params,
    resource: Resource,
    render: impl Fn(&CatalogState) -> Result<Vec<u8>, ApiError>,
) -> Result<Response, ApiError> {
    params.check_common(&agent.node().datacenter)?;
    hold(agent, params, &resource).await?;
    let (rendered, index) = agent
        .catalog
        .read(|state| (render(state), state.index(&resource)));
    match rendered {
        Ok(body) => Ok(json_with_index(body, index)),
        // A 404 carries the index too, so that a client can block until the thing appears.
        Err(error) => {
            use axum::response::IntoResponse;
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert("x-consul-index", http::HeaderValue::from(index.max(1)));
            Ok(response)
        }
    }
}

/// Holds a blocking read (if the client asked for one) until `resource`'s index moves past
/// the client's or the wait runs out.
pub(super) async fn hold(
    agent: &Agent,
    params: &Params,
    resource: &Resource,
) -> Result<(), ApiError> {
    let Some((client_index, wait)) = params.blocking()? else {
        return Ok(());
    };
    let jitter = wait.mul_f64(fastrand::f64() / 16.0);
    let deadline = Instant::now() + wait + jitter;
    // Subscribe before reading the index, so that a change in between is not missed.
    let mut changes = agent.catalog.subscribe(resource);
    let _held = crate::metrics::HeldQuery::new(&agent.metrics.blocking_held);
    while agent.catalog.read(|state| state.index(resource)) == client_index {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(())
}
