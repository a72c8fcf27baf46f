//! Any bytes as the first bytes of a connection to a sidecar's inbound side: told apart as
//! TLS or plaintext the way a permissive inbound does (`looks_like_tls`), then fed to the
//! inbound's own TLS server configuration (`wharf_mesh::tls::server_config`, client
//! certificates required) as a peer's records; the same bytes as the leaf certificate a peer
//! presents (`peer_identity`) and as a PEM the registry hands out (`not_after`). Nothing
//! panics; a first handshake record that rustls answers with a ServerHello, the sniff calls
//! TLS.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection};
use wharf_mesh::tls::{Credentials, not_after, peer_identity, server_config};
use wharf_mesh::{Root, SpiffeId};
use wharf_proxy::sidecar::inbound::looks_like_tls;

const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";

fn inbound() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let now = SystemTime::now();
        let root = Root::generate(TRUST_DOMAIN, 1, None, now).expect("root");
        let identity = SpiffeId::service(TRUST_DOMAIN, "dc1", "api").expect("identity");
        let leaf = root
            .sign(&identity, Duration::from_secs(3600), now)
            .expect("leaf");
        server_config(&Credentials {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            roots_pem: vec![root.cert_pem],
            identity,
        })
        .expect("server configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let tls = looks_like_tls(&data[..data.len().min(2)]);
    let mut connection = ServerConnection::new(inbound().clone()).expect("server connection");
    let mut rest = data;
    let mut refused = false;
    while !rest.is_empty() && !refused {
        match connection.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => refused = connection.process_new_packets().is_err(),
            Err(_) => refused = true,
        }
    }
    if !refused && connection.wants_write() && data.first() == Some(&0x16) {
        // A ServerHello is ready for a connection whose first record is a handshake record,
        // as a TLS client's first record is (RFC 8446 §5.1): rustls took it for a ClientHello,
        // and so must the sniff, or a permissive inbound would serve a TLS client as
        // plaintext. (rustls also skips a warning alert sent before the ClientHello, which no
        // TLS client sends; to the sniff that is plaintext, which its HTTP parser then refuses.)
        assert!(
            tls,
            "a ClientHello the sniff calls plaintext: {:02x?}",
            data.get(..2)
        );
    }
    // Junk never completes a handshake that requires a verified client certificate.
    assert!(connection.is_handshaking() || connection.peer_certificates().is_none());

    let chain = [CertificateDer::from(data)];
    let _ = peer_identity(Some(&chain), TRUST_DOMAIN);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = not_after(text);
    }
});
