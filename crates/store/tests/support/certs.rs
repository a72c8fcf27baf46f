//! Certificates for tests of TLS: a CA made for the test, and a server and a client
//! certificate signed by it (rcgen), written as PEM files. Shared by the store's etcd tests
//! and the end-to-end tests (included by path).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// The PEM files [`issue`] writes.
pub(crate) struct Certs {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and `localhost`, and a client certificate, in
/// `dir`.
pub(crate) fn issue(dir: &Path) -> Certs {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer reads like its subject looks self-signed to OpenSSL.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wharf test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, sans: Vec<SanType>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        "wharf test server",
        vec![
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ],
    );
    let (client_cert, client_key) = leaf(
        "wharf test client",
        vec![SanType::DnsName("wharf".try_into().unwrap())],
    );
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server-key.pem", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client-key.pem", client_key),
    }
}
