//! Mutual TLS between sidecars, on rustls (ring provider, TLS 1.3 only, as Linkerd runs it):
//! a server configuration that requires a client certificate chaining to the mesh's roots,
//! a client configuration that verifies the server's certificate against the roots and the
//! DNS name of the service it means to reach, and the SPIFFE identity of a peer read from
//! its certificate, which must carry exactly one URI SAN (the X509-SVID rule) in this trust
//! domain. ALPN offers `h2` first so that sidecar-to-sidecar traffic is multiplexed.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::SpiffeId;

/// Protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("unreadable PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("the peer's certificate cannot be read")]
    Unreadable,
    #[error("the peer's certificate has {0} URI SANs; a SPIFFE identity has exactly one")]
    UriSans(usize),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("the peer is from trust domain {0}, not this mesh's")]
    ForeignDomain(String),
}

/// What a sidecar holds to speak mTLS: its leaf and key, and the roots it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub roots_pem: Vec<String>,
    pub identity: SpiffeId,
}

/// The DNS name a leaf carries for its service, and that clients verify it by.
pub fn dns_name(service: &str) -> String {
    format!("{}.svc.wharf", service.to_ascii_lowercase())
}

/// The server name to verify when connecting to `service`'s sidecars.
pub fn server_name(service: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(dns_name(service)).map_err(|e| TlsError::Pem(e.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or_else(|| TlsError::Pem("no private key".into()))
}

fn roots(credentials: &Credentials) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for pem in &credentials.roots_pem {
        for cert in certs(pem)? {
            store.add(cert)?;
        }
    }
    Ok(Arc::new(store))
}

/// A sidecar's inbound side: client certificates required and verified against the roots.
pub fn server_config(credentials: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(credentials)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&credentials.cert_pem)?, key(&credentials.key_pem)?)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A sidecar's outbound side: its own certificate offered, servers verified by the roots and
/// the destination service's DNS name.
pub fn client_config(credentials: &Credentials) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(credentials)?)
        .with_client_auth_cert(certs(&credentials.cert_pem)?, key(&credentials.key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The registry API's TLS (`--tls-cert`, `--tls-key`): the server's certificate chain and
/// key, no client certificate asked (tokens say who a caller is), TLS 1.2 and 1.3, HTTP/1.1.
pub fn api_server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    public_server_config(cert_pem, key_pem, b"http/1.1")
}

/// A server without client certificates, with `cert_pem`'s chain, offering `alpn`.
fn public_server_config(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert_pem)?, key(key_pem)?)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration for DNS over TLS (RFC 7858: ALPN `dot`) with `cert_pem`'s chain.
pub fn dot_server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    public_server_config(cert_pem, key_pem, b"dot")
}

/// When the (first) certificate in `pem` expires, in seconds since the epoch.
pub fn not_after(pem: &str) -> Option<u64> {
    let der = certs(pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

/// The SPIFFE identity of a verified peer: exactly one URI SAN, a service identity, in
/// `trust_domain`.
pub fn peer_identity(
    chain: Option<&[CertificateDer<'_>]>,
    trust_domain: &str,
) -> Result<SpiffeId, TlsError> {
    let leaf = chain
        .and_then(|chain| chain.first())
        .ok_or(TlsError::NoCertificate)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| TlsError::Unreadable)?;
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .map_err(|_| TlsError::Unreadable)?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [uri] = uris.as_slice() else {
        return Err(TlsError::UriSans(uris.len()));
    };
    let identity = SpiffeId::parse(uri)?;
    if identity.trust_domain != trust_domain {
        return Err(TlsError::ForeignDomain(identity.trust_domain));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ca::Root;

    fn credentials(root: &Root, service: &str) -> Credentials {
        let identity = SpiffeId::service(&root.trust_domain, "dc1", service).unwrap();
        let leaf = root
            .sign(&identity, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        Credentials {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            roots_pem: vec![root.cert_pem.clone()],
            identity,
        }
    }

    #[test]
    fn a_peer_is_known_by_its_one_uri_san_in_this_trust_domain() {
        let root = Root::generate("a.consul", 1, None, SystemTime::now()).unwrap();
        let web = credentials(&root, "web");
        let chain = certs(&web.cert_pem).unwrap();
        assert_eq!(
            peer_identity(Some(&chain), "a.consul").unwrap(),
            web.identity
        );
        assert!(matches!(
            peer_identity(Some(&chain), "b.consul"),
            Err(TlsError::ForeignDomain(_))
        ));
        assert!(matches!(
            peer_identity(None, "a.consul"),
            Err(TlsError::NoCertificate)
        ));
        assert!(server_config(&web).is_ok());
        let expires = not_after(&web.cert_pem).unwrap();
        let in_an_hour = crate::ca::unix(SystemTime::now()) + 3600;
        assert!(
            expires.abs_diff(in_an_hour) <= 1,
            "{expires} vs {in_an_hour}"
        );
        assert_eq!(not_after("junk"), None);
        assert!(client_config(&web).is_ok());
    }

    #[test]
    fn two_uri_sans_are_refused() {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::URI(
                "spiffe://a.consul/ns/default/dc/dc1/svc/web"
                    .try_into()
                    .unwrap(),
            ),
            rcgen::SanType::URI(
                "spiffe://a.consul/ns/default/dc/dc1/svc/db"
                    .try_into()
                    .unwrap(),
            ),
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let chain = vec![cert.der().clone()];
        assert!(matches!(
            peer_identity(Some(&chain), "a.consul"),
            Err(TlsError::UriSans(2))
        ));
    }
}
