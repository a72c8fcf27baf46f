//! The certificate authority: a root made once per cluster (EC P-256, 10 years), and leaves
//! signed by it for services, following the X509-SVID rules that SPIFFE validators check:
//! exactly one URI SAN (the service's identity), `cA=false`, a critical key usage with
//! `digitalSignature` and neither `keyCertSign` nor `cRLSign`, extended key usage for both
//! client and server authentication. A leaf also names its service as a DNS name
//! (`<service>.svc.wharf`, [`crate::tls::dns_name`]), which SPIFFE allows beside the URI, so
//! that ordinary TLS clients (curl, openssl) can verify a sidecar by name. Leaves are back-dated one minute for clock skew, as
//! Consul's are, and never outlive their root.
//!
//! Why rcgen: it writes exactly these extensions, on ring, with no OpenSSL. A root is kept
//! whole (certificate and key, PEM) so that every registry node sharing the store can sign.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

use crate::identity::SpiffeId;

/// How long a root is valid (Consul's default: 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf is valid unless configured (Consul's default: 72 hours).
pub const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
/// How far a leaf's validity starts before its signing, for clocks that disagree.
pub const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid CA private key: {0}")]
    BadKey(String),
    #[error("the root expired")]
    Expired,
}

/// A root of the mesh's trust, as the store keeps it (its key included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Colon-hex SHA-1 fingerprint of the certificate (Consul's root ID).
    pub id: String,
    pub name: String,
    pub serial: u64,
    /// Colon-hex key identifier of the signing key.
    pub signing_key_id: String,
    pub trust_domain: String,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
    pub cert_pem: String,
    /// PKCS#8 PEM. Never leaves the registry's answers except through the CA configuration.
    pub key_pem: String,
}

/// A certificate and key for one service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Colon-hex serial number.
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub identity: SpiffeId,
    /// Seconds since the Unix epoch.
    pub valid_after: u64,
    pub valid_before: u64,
}

impl Root {
    /// A new root for `trust_domain`, with a new key, or with `key_pem` (a PKCS#8 EC P-256
    /// key, when an operator brings one). `serial` numbers the roots of a cluster.
    pub fn generate(
        trust_domain: &str,
        serial: u64,
        key_pem: Option<&str>,
        now: SystemTime,
    ) -> Result<Root, CaError> {
        let key = match key_pem {
            Some(pem) => {
                let key = KeyPair::from_pem(pem).map_err(|e| CaError::BadKey(e.to_string()))?;
                if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                    return Err(CaError::BadKey("expected an EC P-256 key".into()));
                }
                key
            }
            None => KeyPair::generate()?,
        };
        let mut params = root_params(trust_domain, serial)?;
        params.not_before = now.into();
        params.not_after = (now + ROOT_TTL).into();
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.self_signed(&key)?;
        Ok(Root {
            id: colon_hex(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der()).as_ref(),
            ),
            name: root_name(serial),
            serial,
            signing_key_id: colon_hex(&params.key_identifier(&key)),
            trust_domain: trust_domain.to_owned(),
            not_before: unix(now),
            not_after: unix(now + ROOT_TTL),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a new leaf for `identity`, valid for `ttl` from a minute ago (never past the
    /// root's own end).
    pub fn sign(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Leaf, CaError> {
        let root_key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| CaError::BadKey(e.to_string()))?;
        let issuer = Issuer::new(root_params(&self.trust_domain, self.serial)?, root_key);
        let valid_after = now - BACKDATE;
        let root_end = UNIX_EPOCH + Duration::from_secs(self.not_after);
        let valid_before = (now + ttl).min(root_end);
        if valid_before <= now {
            return Err(CaError::Expired);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.service.as_str());
        params.subject_alt_names = vec![
            SanType::URI(identity.to_string().try_into()?),
            SanType::DnsName(crate::tls::dns_name(&identity.service).try_into()?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = valid_after.into();
        params.not_after = valid_before.into();
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf {
            serial: colon_hex(&serial),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            identity: identity.clone(),
            valid_after: unix(valid_after),
            valid_before: unix(valid_before),
        })
    }
}

/// The parameters a root is made from, rebuilt to sign: its name and usages, not its dates.
fn root_params(trust_domain: &str, serial: u64) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, root_name(serial));
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn root_name(serial: u64) -> String {
    format!("Wharf CA {serial}")
}

/// 16 random bytes, the first bit clear so that the DER integer stays positive.
fn random_serial() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .expect("the system's random source");
    serial[0] &= 0x7f;
    serial[0] |= 0x01; // never a leading zero byte
    serial
}

/// `ab:cd:…`, as Consul writes key ids, fingerprints and serials.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Seconds since the Unix epoch.
pub fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::*;

    fn der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }

    fn uris<'a>(cert: &'a X509Certificate<'a>) -> Vec<&'a str> {
        cert.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => Some(*uri),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_leaf_follows_the_x509_svid_rules_and_chains_to_its_root() {
        let now = SystemTime::now();
        let root = Root::generate("1234.consul", 1, None, now).unwrap();
        let web = SpiffeId::service("1234.consul", "dc1", "web").unwrap();
        let leaf = root.sign(&web, Duration::from_secs(3600), now).unwrap();

        let root_der = der(&root.cert_pem);
        let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();
        assert!(root_cert.is_ca());
        assert_eq!(
            uris(&root_cert),
            ["spiffe://1234.consul"],
            "a signing id has no path"
        );

        let leaf_der = der(&leaf.cert_pem);
        let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
        assert_eq!(
            uris(&cert),
            [web.to_string().as_str()],
            "exactly one URI SAN"
        );
        let basic = cert
            .basic_constraints()
            .unwrap()
            .expect("basic constraints");
        assert!(!basic.value.ca, "cA=false");
        let usage = cert.key_usage().unwrap().expect("key usage");
        assert!(usage.critical);
        assert!(usage.value.digital_signature());
        assert!(!usage.value.key_cert_sign() && !usage.value.crl_sign());
        let eku = cert.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(cert.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        let back = unix(now) - cert.validity().not_before.timestamp() as u64;
        assert_eq!(back, 60, "back-dated one minute");
        assert_eq!(
            cert.validity().not_after.timestamp() as u64,
            unix(now) + 3600
        );
        cert.verify_signature(Some(root_cert.public_key()))
            .expect("signed by the root");
        assert_eq!(cert.issuer(), root_cert.subject());
        assert_eq!(leaf.valid_before - leaf.valid_after, 3600 + 60);
    }

    #[test]
    fn a_leaf_never_outlives_its_root() {
        let long_ago = SystemTime::now() - ROOT_TTL + Duration::from_secs(10);
        let root = Root::generate("x.consul", 1, None, long_ago).unwrap();
        let web = SpiffeId::service("x.consul", "dc1", "web").unwrap();
        let leaf = root.sign(&web, LEAF_TTL, SystemTime::now()).unwrap();
        assert_eq!(leaf.valid_before, root.not_after);
        let expired = Root {
            not_after: unix(SystemTime::now()) - 1,
            ..root
        };
        assert!(matches!(
            expired.sign(&web, LEAF_TTL, SystemTime::now()),
            Err(CaError::Expired)
        ));
    }

    #[test]
    fn an_operator_key_is_used_and_a_bad_one_refused() {
        let key = KeyPair::generate().unwrap().serialize_pem();
        let root = Root::generate("x.consul", 2, Some(&key), SystemTime::now()).unwrap();
        assert_eq!(root.key_pem, key);
        assert_eq!(root.name, "Wharf CA 2");
        assert!(matches!(
            Root::generate("x.consul", 3, Some("not a key"), SystemTime::now()),
            Err(CaError::BadKey(_))
        ));
        let rsa_like =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIP8=\n-----END PRIVATE KEY-----\n";
        assert!(Root::generate("x.consul", 3, Some(rsa_like), SystemTime::now()).is_err());
    }
}
