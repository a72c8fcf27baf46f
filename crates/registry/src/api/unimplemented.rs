//! Consul's endpoints that Wharf does not answer yet, answered `501 Not Implemented`.
//!
//! A `404` is not a safe answer for them: clients read a 404 as "absent" (the npm client's
//! `kv.get` resolves `undefined`, py-consul's returns `None`) and some turn a bodiless failure
//! into success (python-consul2's `kv.put(..., acquire=session)` returns a truthy tuple, so a
//! lock looks acquired). Every client raises on a 5xx, and a 501 with the family named says
//! exactly what is missing. A path that is not Consul's at all stays 404.
//!
//! The table is Consul's own route list (`agent/http_register.go`, plus Enterprise's
//! namespaces and partitions), less what Wharf answers. When an issue implements a family,
//! its rows leave [`FAMILIES`] and `docs/consul-compat.md`.

use axum::Router;
use axum::routing::any;
use http::{HeaderValue, StatusCode, header};

use super::ApiError;

/// One family of Consul endpoints that Wharf does not answer yet.
#[derive(Debug)]
pub struct Family {
    /// The family as the reason names it, e.g. `/v1/kv`.
    pub name: &'static str,
    /// Paths answered 501: exact paths, or prefixes when they end in `/`.
    pub paths: &'static [&'static str],
    /// Where to look instead, when Wharf has something close.
    pub hint: Option<&'static str>,
}

/// Every Consul endpoint family Wharf does not answer yet.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "/v1/acl legacy API",
        paths: &[
            "/v1/acl/create",
            "/v1/acl/update",
            "/v1/acl/destroy/",
            "/v1/acl/info/",
            "/v1/acl/clone/",
            "/v1/acl/list",
            "/v1/acl/rules/",
        ],
        hint: Some("removed in Consul 1.11; use /v1/acl/token and /v1/acl/policy"),
    },
    Family {
        name: "/v1/acl/replication",
        paths: &["/v1/acl/replication"],
        hint: Some("this registry has one datacenter"),
    },
    Family {
        name: "/v1/acl roles",
        paths: &["/v1/acl/role", "/v1/acl/role/", "/v1/acl/roles"],
        hint: Some("link tokens to policies, or use ServiceIdentities"),
    },
    Family {
        name: "/v1/acl auth methods",
        paths: &[
            "/v1/acl/auth-method",
            "/v1/acl/auth-method/",
            "/v1/acl/auth-methods",
            "/v1/acl/binding-rule",
            "/v1/acl/binding-rule/",
            "/v1/acl/binding-rules",
            "/v1/acl/login",
            "/v1/acl/logout",
            "/v1/acl/templated-policy/",
            "/v1/acl/templated-policies",
        ],
        hint: None,
    },
    Family {
        name: "/v1/agent/token",
        paths: &["/v1/agent/token/"],
        hint: None,
    },
    Family {
        name: "/v1/agent/join",
        paths: &[
            "/v1/agent/join/",
            "/v1/agent/leave",
            "/v1/agent/force-leave/",
        ],
        hint: None,
    },
    Family {
        name: "/v1/agent/reload",
        paths: &["/v1/agent/reload"],
        hint: None,
    },
    Family {
        name: "/v1/agent/host",
        paths: &["/v1/agent/host", "/v1/agent/version"],
        hint: Some("see /v1/agent/self"),
    },
    Family {
        name: "/v1/agent/monitor",
        paths: &["/v1/agent/monitor"],
        hint: None,
    },
    Family {
        name: "/v1/agent/metrics",
        paths: &["/v1/agent/metrics", "/v1/agent/metrics/"],
        hint: Some("Prometheus metrics are at /metrics"),
    },
    Family {
        name: "/v1/catalog/gateway-services",
        paths: &["/v1/catalog/gateway-services/"],
        hint: None,
    },
    Family {
        name: "/v1/health/ingress",
        paths: &["/v1/health/ingress/"],
        hint: None,
    },
    Family {
        name: "/v1/coordinate",
        paths: &["/v1/coordinate/"],
        hint: None,
    },
    Family {
        name: "/v1/discovery-chain",
        paths: &["/v1/discovery-chain/"],
        hint: None,
    },
    Family {
        name: "/v1/query",
        paths: &["/v1/query", "/v1/query/"],
        hint: None,
    },
    Family {
        name: "/v1/snapshot",
        paths: &["/v1/snapshot"],
        hint: None,
    },
    Family {
        name: "/v1/operator",
        paths: &["/v1/operator/"],
        hint: None,
    },
    Family {
        name: "/v1/peering",
        paths: &["/v1/peering/", "/v1/peerings"],
        hint: None,
    },
    Family {
        name: "/v1/exported-services",
        paths: &["/v1/exported-services", "/v1/imported-services"],
        hint: None,
    },
    Family {
        name: "/v1/internal",
        paths: &["/v1/internal/"],
        hint: None,
    },
    Family {
        name: "/v1/namespace",
        paths: &[
            "/v1/namespace",
            "/v1/namespace/",
            "/v1/namespaces",
            "/v1/partition",
            "/v1/partition/",
            "/v1/partitions",
        ],
        hint: Some("Consul Enterprise; Wharf has the default namespace and partition only"),
    },
];

impl Family {
    /// The one-line reason of the 501.
    pub fn reason(&self) -> String {
        match self.hint {
            Some(hint) => format!("Wharf does not implement {} yet ({hint})", self.name),
            None => format!("Wharf does not implement {} yet", self.name),
        }
    }
}

/// Adds a route answering 501 for every path of every family, whatever the method.
pub fn routes<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    for family in FAMILIES {
        let reason = family.reason();
        for path in family.paths {
            let reason = reason.clone();
            // The body is read first (axum's limit applies): an answer that leaves a body
            // unread makes hyper close the connection, and a client that reuses it for its
            // next call (python-consul2 after a 501 on a PUT) races that close.
            let answer =
                any(move |_body: axum::body::Bytes| std::future::ready(not_implemented(&reason)));
            router = match path.strip_suffix('/') {
                Some(prefix) => router
                    .route(&format!("{prefix}/"), answer.clone())
                    .route(&format!("{prefix}/{{*rest}}"), answer),
                None => router.route(path, answer),
            };
        }
    }
    router
}

fn not_implemented(reason: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = ApiError::new(StatusCode::NOT_IMPLEMENTED, reason).into_response();
    // Nothing to cache or retry on: say so, as a 501 is cacheable by default (RFC 9110).
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_path_is_listed_twice_and_every_path_is_consuls_form() {
        let mut seen = std::collections::HashSet::new();
        for family in FAMILIES {
            assert!(family.name.starts_with("/v1/"), "{}", family.name);
            for path in family.paths {
                assert!(path.starts_with("/v1/"), "{path}");
                assert!(seen.insert(*path), "{path} listed twice");
            }
        }
    }

    #[test]
    fn reasons_name_the_family() {
        let join = FAMILIES
            .iter()
            .find(|f| f.name == "/v1/agent/join")
            .unwrap();
        assert!(
            join.reason()
                .starts_with("Wharf does not implement /v1/agent/join yet"),
            "{}",
            join.reason()
        );
    }
}
