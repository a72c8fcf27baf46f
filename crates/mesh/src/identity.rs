//! SPIFFE identities, in Consul Connect's form: a service's identity is
//! `spiffe://<trust domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`, and the trust domain
//! is `<cluster id>.consul`, the cluster id made once when the CA is (so that two clusters'
//! certificates never pass for each other). The signing certificates' identity is the trust
//! domain alone, with no path (the SPIFFE rule).

use std::fmt;

/// The namespace of every service (Consul OSS has only `default`).
pub const NAMESPACE: &str = "default";

/// A service's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub datacenter: String,
    pub service: String,
}

/// Why a string is not a service identity, or a name cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a spiffe:// URI: {0:?}")]
    NotSpiffe(String),
    #[error(
        "not a service identity (expected spiffe://<domain>/ns/<ns>/dc/<dc>/svc/<name>): {0:?}"
    )]
    NotService(String),
    #[error(
        "invalid service name {0:?}: 1 to 63 letters, digits and dashes, starting and ending with a letter or digit"
    )]
    BadName(String),
}

impl SpiffeId {
    /// The identity of `service` in `datacenter` of the trust domain, its name checked.
    pub fn service(
        trust_domain: &str,
        datacenter: &str,
        service: &str,
    ) -> Result<SpiffeId, IdentityError> {
        check_name(service)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: NAMESPACE.to_owned(),
            datacenter: datacenter.to_owned(),
            service: service.to_owned(),
        })
    }

    /// Parses a service identity; anything else (a signing identity, extra path segments,
    /// another scheme) is refused.
    pub fn parse(uri: &str) -> Result<SpiffeId, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(uri.to_owned()))?;
        let not_service = || IdentityError::NotService(uri.to_owned());
        let (domain, path) = rest.split_once('/').ok_or_else(not_service)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "dc", dc, "svc", service]
                if !domain.is_empty() && !ns.is_empty() && !dc.is_empty() =>
            {
                check_name(service).map_err(|_| not_service())?;
                Ok(SpiffeId {
                    trust_domain: domain.to_owned(),
                    namespace: (*ns).to_owned(),
                    datacenter: (*dc).to_owned(),
                    service: (*service).to_owned(),
                })
            }
            _ => Err(not_service()),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/dc/{}/svc/{}",
            self.trust_domain, self.namespace, self.datacenter, self.service
        )
    }
}

/// The trust domain of a cluster: `<cluster id>.consul`, as Consul names it.
pub fn trust_domain(cluster_id: &str) -> String {
    format!("{cluster_id}.consul")
}

/// A service name that can be an identity and a DNS label: 1 to 63 of `[a-z0-9-]` (any case),
/// not starting or ending with a dash.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_identities_round_trip() {
        let id = SpiffeId::service("11111111-2222.consul", "dc1", "web").unwrap();
        let uri = id.to_string();
        assert_eq!(
            uri,
            "spiffe://11111111-2222.consul/ns/default/dc/dc1/svc/web"
        );
        assert_eq!(SpiffeId::parse(&uri).unwrap(), id);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "https://x.consul/ns/default/dc/dc1/svc/web",
            "spiffe://x.consul",
            "spiffe://x.consul/",
            "spiffe://x.consul/ns/default/dc/dc1/svc/web/extra",
            "spiffe://x.consul/ns/default/dc/dc1/svc/",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "spiffe://x.consul/ns/default/dc/dc1/svc/we_b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert!(SpiffeId::service("x.consul", "dc1", "-web").is_err());
        assert!(SpiffeId::service("x.consul", "dc1", &"a".repeat(64)).is_err());
        assert!(SpiffeId::service("x.consul", "dc1", "Web-2").is_ok());
    }
}
