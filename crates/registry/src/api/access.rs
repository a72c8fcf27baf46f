//! The token a request carries and what it may do, as every handler asks it.
//!
//! The token is read as Consul reads it: the `X-Consul-Token` header, else `Authorization:
//! Bearer`, else `?token=`; none (or an empty one) is the anonymous token. Resolving never
//! rejects the request by itself: a handler asks once it has read the body, so that a
//! refused write still leaves its connection usable for the client's next request.

use std::sync::{Arc, LazyLock};

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;

use super::ApiError;
use crate::Agent;
use crate::acl::{AclError, Authorizer, Need, Scope};

static ALLOW_ALL: LazyLock<Arc<Authorizer>> = LazyLock::new(|| Arc::new(Authorizer::allow_all()));

/// What the request's token may do (everything when ACLs are off).
pub(crate) struct Access(Result<Arc<Authorizer>, AclError>);

impl Access {
    /// The token's authorizer, or 403 `ACL not found` for an unknown or expired token.
    pub(super) fn authorizer(&self) -> Result<&Authorizer, ApiError> {
        self.0
            .as_deref()
            .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))
    }

    /// Ok when the token may do `need` on `scope`; otherwise 403 with Consul's reason.
    pub(super) fn require(&self, scope: Scope<'_>, need: Need) -> Result<(), ApiError> {
        self.authorizer()?
            .require(scope, need)
            .map_err(|denied| ApiError::new(StatusCode::FORBIDDEN, denied.to_string()))
    }
}

impl FromRequestParts<Arc<Agent>> for Access {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        agent: &Arc<Agent>,
    ) -> Result<Access, Self::Rejection> {
        let acl = agent.config.acl;
        if !acl.enabled {
            return Ok(Access(Ok(ALLOW_ALL.clone())));
        }
        let secret = secret_of(parts);
        let now = crate::now_ms();
        Ok(Access(agent.catalog.read(|state| {
            state
                .acl
                .authorizer(secret.as_deref(), acl.default_policy, now)
        })))
    }
}

/// The secret a request carries, if any.
pub(crate) fn secret_of(parts: &Parts) -> Option<String> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = header(http::HeaderName::from_static("x-consul-token")) {
        return Some(token.to_owned());
    }
    if let Some(bearer) = header(http::header::AUTHORIZATION).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) {
        return Some(bearer.trim().to_owned());
    }
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_token_is_read_where_consul_reads_it() {
        let get = || http::Request::get("/v1/agent/self");
        assert_eq!(
            secret_of(&parts(get().header("X-Consul-Token", "s1"))),
            Some("s1".into())
        );
        assert_eq!(
            secret_of(&parts(get().header("Authorization", "Bearer s2"))),
            Some("s2".into())
        );
        assert_eq!(
            secret_of(&parts(http::Request::get("/v1/agent/self?token=s%203"))),
            Some("s 3".into())
        );
        // The header wins over the query; an empty one is none.
        assert_eq!(
            secret_of(&parts(
                http::Request::get("/x?token=q").header("X-Consul-Token", "h")
            )),
            Some("h".into())
        );
        assert_eq!(secret_of(&parts(get().header("X-Consul-Token", ""))), None);
        assert_eq!(
            secret_of(&parts(get().header("Authorization", "Basic abc"))),
            None
        );
    }
}
