//! The Consul-compatible HTTP API (consul-compat.md §8), plus Wharf's own `/v1/wharf/...`.
//!
//! Answers are Consul's, byte for byte where clients care: writes answer 200 with an empty
//! body; reads answer `application/json` with `X-Consul-Index`, `X-Consul-Knownleader` and
//! `X-Consul-Lastcontact`; errors are a status and a one-line plain-text reason. Bodies are
//! read whatever their Content-Type (py-consul sends none) up to [`MAX_BODY`].
//!
//! Every refusal says why in its body, as Consul's do: 405 names the method (with `Allow`),
//! 413/414/431 name the limit, a path with a bad escape or an empty name is a 400, and the
//! families of Consul's API that Wharf does not answer yet are 501 ([`unimplemented`]).

mod access;
mod acl;
mod agent_health;
mod blocking;
mod body;
mod config;
mod connect;
mod event;
mod external;
mod filter;
mod guard;
mod handlers;
mod kv;
mod maintenance;
mod members;
pub mod params;
mod session;
pub mod shapes;
mod stats;
mod traffic;
pub mod txn;
mod ui;
pub mod unimplemented;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, put};
use http::{HeaderValue, StatusCode, header};

use crate::metrics::RequestLabels;
use crate::{Agent, RegistryError};

pub use body::MAX_BODY;
pub use guard::{MAX_HEAD_FIELDS, MAX_URI};

/// The API's routes. axum's `Router::layer` wraps what is above it (the fallback included),
/// so the guards and the request counter see every request.
pub fn router(agent: Arc<Agent>) -> Router {
    use handlers::*;
    let routes = Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route(
            "/v1/agent/services",
            get(agent_services).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route("/v1/agent/service/{*id}", get(agent_service))
        .route(
            "/v1/agent/checks",
            get(agent_checks).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route("/v1/agent/service/register", write(register_service))
        .route(
            "/v1/agent/service/deregister/{*id}",
            write(deregister_service),
        )
        .route("/v1/agent/check/register", write(register_check))
        .route("/v1/agent/check/deregister/{*id}", write(deregister_check))
        .route("/v1/agent/check/pass/{*id}", write(check_pass))
        .route("/v1/agent/check/warn/{*id}", write(check_warn))
        .route("/v1/agent/check/fail/{*id}", write(check_fail))
        .route("/v1/agent/check/update/{*id}", write(check_update))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/catalog/register", write(external::register))
        .route("/v1/catalog/deregister", write(external::deregister))
        .route(
            "/v1/agent/members",
            get(members::list).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route("/v1/event/fire/{name}", put(event::fire))
        .route("/v1/event/list", get(event::list))
        .route("/v1/agent/health/service/id/{id}", get(agent_health::by_id))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(agent_health::by_name),
        )
        .route("/v1/catalog/datacenters", get(catalog_datacenters))
        .route("/v1/catalog/services", get(catalog_services))
        .route(
            "/v1/catalog/service/{name}",
            get(catalog_service).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/catalog/connect/{name}",
            get(catalog_connect).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/catalog/nodes",
            get(catalog_nodes).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route(
            "/v1/catalog/node-services/{node}",
            get(handlers::catalog_node_services),
        )
        .route(
            "/v1/health/service/{name}",
            get(health_service).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/health/connect/{name}",
            get(health_connect).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/health/checks/{name}",
            get(health_checks).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/health/state/{state}",
            get(health_state).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route(
            "/v1/health/node/{node}",
            get(health_node).layer(axum::middleware::from_fn(filter::filtered)),
        )
        .route("/v1/wharf/services", get(wharf_services))
        .route(
            "/v1/wharf/services/{name}",
            write(declare_service).delete(forget_service),
        )
        .route("/v1/wharf/scale/{name}", write(scale_service))
        .route("/v1/wharf/restart/{name}", write(restart_service))
        .route("/v1/wharf/apply", write(apply_manifest))
        .route("/v1/wharf/rollout/{name}", write(rollout_order))
        .route("/v1/wharf/traffic", get(traffic::view))
        .route("/v1/wharf/mesh", get(connect::mesh_settings))
        .route("/v1/wharf/stats", get(stats::read))
        .route("/v1/wharf/load/{name}", get(stats::load))
        .route("/v1/wharf/stats/report", write(stats::report))
        .route("/v1/wharf/proxies", get(stats::proxies))
        .route("/v1/agent/connect/ca/roots", get(connect::ca_roots))
        .route("/v1/connect/ca/roots", get(connect::ca_roots))
        .route("/v1/agent/connect/ca/leaf/{service}", get(connect::ca_leaf))
        .route(
            "/v1/agent/connect/authorize",
            axum::routing::post(connect::authorize),
        )
        .route(
            "/v1/connect/ca/configuration",
            get(connect::ca_configuration).put(connect::set_ca_configuration),
        )
        .route(
            "/v1/connect/intentions",
            get(connect::list)
                .layer(axum::middleware::from_fn(filter::filtered))
                .post(connect::create_legacy),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(connect::get_exact)
                .put(connect::put_exact)
                .delete(connect::delete_exact),
        )
        .route("/v1/connect/intentions/check", get(connect::check))
        .route("/v1/connect/intentions/match", get(connect::matching))
        .route(
            "/v1/connect/intentions/{id}",
            get(connect::get_legacy)
                .put(connect::put_legacy)
                .delete(connect::delete_legacy),
        )
        .route("/v1/config", axum::routing::put(config::apply))
        .route("/v1/config/{kind}", get(config::list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config::read).delete(config::delete),
        )
        .route("/v1/acl/bootstrap", write(acl::bootstrap))
        .route("/v1/acl/policy", put(acl::create_policy))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::read_policy)
                .put(acl::update_policy)
                .delete(acl::delete_policy),
        )
        .route("/v1/acl/policy/name/{name}", get(acl::read_policy_by_name))
        .route("/v1/acl/policies", get(acl::list_policies))
        .route("/v1/acl/token", put(acl::create_token))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{accessor}",
            get(acl::read_token)
                .put(acl::update_token)
                .delete(acl::delete_token),
        )
        .route("/v1/acl/token/{accessor}/clone", put(acl::clone_token))
        .route("/v1/acl/tokens", get(acl::list_tokens))
        .route(
            "/v1/kv/",
            get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/txn", put(txn::apply))
        .route("/v1/agent/maintenance", put(maintenance::node))
        .route(
            "/v1/agent/service/maintenance/{*id}",
            put(maintenance::service),
        )
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/node/{node}", get(session::of_node))
        .route("/v1/session/list", get(session::list))
        .route("/metrics", get(handlers::metrics));
    missing_names(ui::routes(unimplemented::routes(routes)))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            answer_and_count,
        ))
        .with_state(agent)
}

/// A path whose name or id is empty (`/v1/catalog/service/`) is a 400 naming what is
/// missing, as Consul answers, rather than a 404 for an endpoint that does exist.
fn missing_names(router: Router<Arc<Agent>>) -> Router<Arc<Agent>> {
    const EMPTY: &[(&str, &str)] = &[
        ("/v1/agent/service/", "service ID"),
        ("/v1/agent/service/deregister/", "service ID"),
        ("/v1/agent/service/maintenance/", "service ID"),
        ("/v1/agent/health/service/id/", "service ID"),
        ("/v1/agent/health/service/name/", "service name"),
        ("/v1/agent/check/deregister/", "check ID"),
        ("/v1/agent/check/pass/", "check ID"),
        ("/v1/agent/check/warn/", "check ID"),
        ("/v1/agent/check/fail/", "check ID"),
        ("/v1/agent/check/update/", "check ID"),
        ("/v1/catalog/service/", "service name"),
        ("/v1/catalog/connect/", "service name"),
        ("/v1/catalog/node/", "node name"),
        ("/v1/catalog/node-services/", "node name"),
        ("/v1/health/service/", "service name"),
        ("/v1/health/connect/", "service name"),
        ("/v1/health/checks/", "service name"),
        ("/v1/health/state/", "check state"),
        ("/v1/health/node/", "node name"),
        ("/v1/session/destroy/", "session id"),
        ("/v1/session/renew/", "session id"),
        ("/v1/session/info/", "session id"),
        ("/v1/session/node/", "node name"),
        ("/v1/event/fire/", "name"),
        ("/v1/wharf/services/", "service name"),
        ("/v1/wharf/scale/", "service name"),
        ("/v1/wharf/load/", "service name"),
        ("/v1/wharf/restart/", "service name"),
    ];
    EMPTY.iter().fold(router, |router, (path, what)| {
        let reason = format!("Missing {what}");
        router.route(
            path,
            any(move || std::future::ready(ApiError::bad_request(reason.clone()))),
        )
    })
}

/// Writes answer `PUT` as Consul does, and `POST` too, which is harmless and saves a
/// confusing 405 for clients that use it.
fn write<H, T>(handler: H) -> MethodRouter<Arc<Agent>>
where
    H: Handler<T, Arc<Agent>> + Clone,
    T: 'static,
{
    put(handler.clone()).post(handler)
}

/// An error answer: a status and a one-line reason in plain text.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            reason: reason.into(),
        }
    }

    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: reason.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        match error {
            RegistryError::BadRequest(reason) => ApiError::bad_request(reason),
            RegistryError::NotFound(reason) => ApiError::not_found(reason),
            RegistryError::Forbidden(reason) => ApiError::new(StatusCode::FORBIDDEN, reason),
            RegistryError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, reason),
            e @ RegistryError::NotTtl(_) => ApiError::internal(e.to_string()),
            RegistryError::Store(e @ wharf_store::StoreError::Backend(_)) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the registry's store is unavailable ({e}); the write was not \
                         acknowledged, reads are served from what this node holds"
                    ),
                )
            }
            RegistryError::Store(e) => {
                tracing::error!(error = %e, "store error");
                ApiError::internal("the registry's store failed; the write was not acknowledged")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.reason)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// Refuses what [`guard`] refuses, gives a 405 its reason, and counts every answer by route
/// template and status code.
async fn answer_and_count(
    State(agent): State<Arc<Agent>>,
    matched: Option<MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    let mut response = match guard::refusal(&request) {
        Some(refusal) => refusal,
        None => guard::with_reason_if_405(&method, next.run(request).await),
    };
    if response.headers().contains_key("x-consul-index") {
        // How fresh a read is, as Consul says it: whether the store reaches a leader, and
        // since when it has not heard from it (milliseconds).
        let contact = agent.store.contact();
        let headers = response.headers_mut();
        headers.insert(
            "x-consul-knownleader",
            HeaderValue::from_static(if contact.known_leader {
                "true"
            } else {
                "false"
            }),
        );
        headers.insert(
            "x-consul-lastcontact",
            HeaderValue::from(contact.last_contact.as_millis() as u64),
        );
    }
    let labels = RequestLabels {
        endpoint,
        code: response.status().as_u16(),
    };
    agent.metrics.requests.get_or_create(&labels).inc();
    response
}

async fn not_found(uri: http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// A JSON answer with Consul's index header (the leader and contact headers are added on
/// the way out, from the store's link: [`answer_and_count`]).
pub(crate) fn json_with_index(body: Vec<u8>, index: u64) -> Response {
    let mut response = json(body);
    response
        .headers_mut()
        .insert("x-consul-index", HeaderValue::from(index.max(1)));
    response
}

pub(crate) fn json(body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serialises an answer, indented when the client asked for `?pretty`.
pub(crate) fn to_json(value: &impl serde::Serialize, pretty: bool) -> Vec<u8> {
    let result = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    result.expect("API shapes always serialise")
}
