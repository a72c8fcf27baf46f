//! The registry: Wharf's control plane.
//!
//! - [`catalog`] — the in-memory read model of the store and the indexes of blocking queries;
//! - [`agent`] — the writes (register, deregister, check results), each a store transaction;
//! - [`checker`] and [`probe`] — the health checker and what it probes with;
//! - [`kv`] and [`session`] — Consul's KV store, and the sessions that hold its locks;
//! - [`api`] — the Consul-compatible HTTP API under `/v1`;
//! - [`server`] — the HTTP listener;
//! - [`deploy`] — `wharf apply`'s way to the supervisor of the `wharf up` it runs in.
//!
//! [`Registry::start`] composes them on a store chosen by the caller.

pub mod acl;
pub mod agent;
pub mod api;
pub mod catalog;
pub mod checker;
pub mod connect;
pub mod deploy;
pub mod dns;
pub mod event;
mod external;
mod keys;
pub mod kv;
mod liveness;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod server;
pub mod session;
pub mod stats;
pub mod traffic;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use agent::{Agent, RegistryError};
pub use catalog::{Catalog, CatalogState, Resource, Stored};
pub use keys::Desired;
pub use node::NodeInfo;
use tokio::sync::watch;
use wharf_store::Store;

/// How a registry runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: SocketAddr,
    /// Where DNS listens (UDP and TCP); `None` turns DNS off.
    pub dns: Option<SocketAddr>,
    /// The DNS domain answered besides `consul`.
    pub domain: String,
    pub node: NodeInfo,
    /// Floor for `DeregisterCriticalServiceAfter` (Consul: one minute).
    pub min_deregister_after: Duration,
    /// How often the reaper looks for instances critical for too long.
    pub reap_interval: Duration,
    /// Bounds on what one HTTP client may hold.
    pub http_limits: HttpLimits,
    /// The certificate authority and intentions.
    pub mesh: connect::MeshConfig,
    /// The TTL of this node's liveness lease: how long after it dies its instances turn
    /// critical on the other nodes.
    pub node_ttl: Duration,
    /// TLS on the HTTP API (`None`: plain HTTP).
    pub api_tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS on DNS over TCP, which makes it DNS over TLS (`None`: plain TCP).
    pub dns_tls: Option<Arc<rustls::ServerConfig>>,
    /// Tokens on the API.
    pub acl: acl::AclConfig,
}

/// What one HTTP client may hold of the registry, as Consul's `limits` bound it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections at once from one IP address (Consul's `http_max_conns_per_client`);
    /// more are answered 429 and closed. Held blocking queries count.
    pub max_conns_per_client: usize,
    /// How long a request head may take, a kept-alive connection may sit idle, and a
    /// request body may go without sending anything. A held blocking query is not idle.
    pub read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_conns_per_client: 200,
            read_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    pub fn new(http: SocketAddr, node: NodeInfo) -> Config {
        Config {
            http,
            dns: None,
            domain: "wharf".to_owned(),
            node,
            min_deregister_after: Duration::from_secs(60),
            reap_interval: Duration::from_secs(1),
            http_limits: HttpLimits::default(),
            mesh: connect::MeshConfig::default(),
            node_ttl: Duration::from_secs(10),
            api_tls: None,
            dns_tls: None,
            acl: acl::AclConfig::default(),
        }
    }
}

/// A running registry: its address and a handle to stop it.
pub struct Registry {
    pub http_addr: SocketAddr,
    /// The DNS port (UDP and TCP), when DNS is on.
    pub dns_addr: Option<SocketAddr>,
    pub agent: Arc<Agent>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    liveness: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// Loads the catalog from `store`, starts the checker and binds the HTTP API.
    pub async fn start(store: Arc<dyn Store>, config: Config) -> Result<Registry, StartError> {
        let catalog = Catalog::follow(store.clone()).await?;
        let agent = Agent::new(store, catalog, config.clone());
        agent.ensure_ca().await.map_err(StartError::Ca)?;
        let lease = liveness::announce(&agent)
            .await
            .map_err(StartError::Announce)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let liveness = tokio::spawn(liveness::keep(agent.clone(), lease, shutdown_rx.clone()));
        checker::spawn(agent.clone(), shutdown_rx.clone());
        tokio::spawn(session::reap(agent.clone(), shutdown_rx.clone()));
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|e| StartError::Bind(config.http, e))?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.http, e))?;
        let zone = dns::Zone::new(&config.domain, config.node.clone())
            .map_err(StartError::Config)?
            .with_acl(config.acl);
        let dns_addr = match config.dns {
            Some(addr) => {
                let (udp, tcp) = dns::bind(addr)
                    .await
                    .map_err(|e| StartError::Bind(addr, e))?;
                let bound = udp.local_addr().map_err(|e| StartError::Bind(addr, e))?;
                tokio::spawn(dns::serve(
                    udp,
                    tcp,
                    config.dns_tls.clone(),
                    zone,
                    agent.catalog.clone(),
                    shutdown_rx.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        let router = api::router(agent.clone());
        let server = tokio::spawn(server::serve(
            listener,
            router,
            config.http_limits.clone(),
            config.api_tls.clone(),
            shutdown_rx,
        ));
        Ok(Registry {
            http_addr,
            dns_addr,
            agent,
            shutdown,
            server,
            liveness,
        })
    }

    /// Stops accepting, lets requests in flight finish (held blocking queries are answered).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.liveness.await; // the lease revoked: the node is seen gone at once
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Store(#[from] wharf_store::StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot make the certificate authority: {0}")]
    Ca(RegistryError),
    #[error("cannot announce this node in the store: {0}")]
    Announce(RegistryError),
}

/// Milliseconds since the Unix epoch, for timestamps kept in the store.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
