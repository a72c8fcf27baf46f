//! The sidecar's certificate and trust, followed from the registry: the roots
//! (`/v1/agent/connect/ca/roots`) and this service's leaf (`/v1/agent/connect/ca/leaf/NAME`),
//! each a blocking query, so that a renewal or a root rotation arrives at once. Every change
//! builds new rustls configurations and publishes them: new handshakes use them, connections
//! already open keep running (Linkerd's way). With the registry gone, the last ones stay in
//! use (fail static) until the leaf expires.

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::watch;
use wharf_client::{Client, Read};
use wharf_mesh::SpiffeId;
use wharf_mesh::tls::{Credentials, client_config, server_config};

use crate::h2::mesh::MeshClient;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct RootsAnswer {
    trust_domain: String,
    roots: Vec<RootAnswer>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct RootAnswer {
    root_cert: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct LeafAnswer {
    #[serde(rename = "CertPEM")]
    cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    key_pem: String,
    #[serde(rename = "ServiceURI")]
    service_uri: String,
    #[serde(rename = "ValidBefore")]
    valid_before: String,
}

/// The inbound side's configuration and whom it is.
#[derive(Debug, Clone)]
pub struct InboundTls {
    pub config: Arc<rustls::ServerConfig>,
    pub trust_domain: String,
    pub identity: SpiffeId,
    /// RFC 3339, as the registry said.
    pub valid_before: String,
}

/// Where the current configurations are published.
#[derive(Debug)]
pub struct Published {
    pub inbound: watch::Sender<Option<InboundTls>>,
    pub outbound: watch::Sender<Option<MeshClient>>,
    pub health: Arc<super::admin::Health>,
}

#[derive(Default)]
struct Latest {
    roots: Option<RootsAnswer>,
    leaf: Option<LeafAnswer>,
}

/// Follows the roots and the leaf of `service` until `shutdown`.
pub fn follow(
    client: &Client,
    service: &str,
    published: Arc<Published>,
    shutdown: watch::Receiver<bool>,
) {
    let latest = Arc::new(Mutex::new(Latest::default()));
    let mut roots = client.follow(Read::<RootsAnswer>::new("/v1/agent/connect/ca/roots"));
    let mut leaf = client.follow(Read::<LeafAnswer>::new(format!(
        "/v1/agent/connect/ca/leaf/{service}"
    )));
    let (l, p, mut stop) = (latest.clone(), published.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                answer = roots.next() => match answer {
                    Ok(answer) => {
                        p.health.registry_answered(Ok(()));
                        l.lock().expect("latest").roots = Some(answer);
                        publish(&l, &p);
                    }
                    Err(e) => p.health.registry_answered(Err(e.to_string())),
                },
            }
        }
    });
    let mut stop = shutdown;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                answer = leaf.next() => match answer {
                    Ok(answer) => {
                        published.health.registry_answered(Ok(()));
                        latest.lock().expect("latest").leaf = Some(answer);
                        publish(&latest, &published);
                    }
                    Err(e) => published.health.registry_answered(Err(e.to_string())),
                },
            }
        }
    });
}

fn publish(latest: &Mutex<Latest>, published: &Published) {
    let latest = latest.lock().expect("latest");
    let (Some(roots), Some(leaf)) = (&latest.roots, &latest.leaf) else {
        return;
    };
    let identity = match SpiffeId::parse(&leaf.service_uri) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::error!(error = %e, "sidecar: the registry's leaf has no service identity");
            return;
        }
    };
    let credentials = Credentials {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
        roots_pem: roots.roots.iter().map(|r| r.root_cert.clone()).collect(),
        identity: identity.clone(),
    };
    let (server, client) = match (server_config(&credentials), client_config(&credentials)) {
        (Ok(server), Ok(client)) => (server, client),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "sidecar: cannot use the registry's certificate");
            return;
        }
    };
    published.inbound.send_replace(Some(InboundTls {
        config: server,
        trust_domain: roots.trust_domain.clone(),
        identity,
        valid_before: leaf.valid_before.clone(),
    }));
    published.outbound.send_replace(Some(MeshClient {
        config: client,
        trust_domain: roots.trust_domain.clone(),
        identity: leaf.service_uri.clone(),
    }));
    let health = &published.health;
    let order = std::sync::atomic::Ordering::Relaxed;
    health.leaf_not_after.store(
        wharf_mesh::tls::not_after(&leaf.cert_pem).unwrap_or(0),
        order,
    );
    let roots_end = roots
        .roots
        .iter()
        .filter_map(|r| wharf_mesh::tls::not_after(&r.root_cert))
        .min()
        .unwrap_or(0);
    health.roots_not_after.store(roots_end, order);
    health.certificates.inc();
    tracing::info!(valid_before = %leaf.valid_before, certificates = health.certificates.get(), "sidecar: certificate in use");
}
