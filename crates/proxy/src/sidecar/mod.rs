//! A sidecar: the proxy beside one service instance that makes it part of the mesh.
//!
//! - [`inbound`] — mTLS in, the caller known by its certificate, intentions enforced, then the
//!   app on loopback;
//! - [`outbound`] — plain HTTP in from the app on loopback, by `Host`, then HTTP/2 over mTLS to
//!   a sidecar of the destination, through the gateway's request plan;
//! - [`upstreams`] — one plain TCP listener on loopback per destination (for apps that speak
//!   something other than HTTP), each connection carried over mTLS to a sidecar of it;
//! - [`credentials`] and [`policy`] — the certificate, the roots and the intentions, followed
//!   from the registry with blocking queries and kept when it is gone (fail static).
//!
//! A sidecar registers itself as `<service>-sidecar-proxy` (Consul's naming), of kind
//! `connect-proxy` for `<service>`, its port the inbound one, TCP-checked on its app, so that
//! other sidecars' outbound sides find it (`/v1/health/connect/<service>`); it deregisters
//! when it stops.

pub mod admin;
pub mod credentials;
pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_client::{CheckRegistration, Client, ProxyRegistration, Registration};

use crate::plan::{Shared, Timeouts};
use crate::service::{Policy as Balancing, ServiceDefaults};
use crate::{discovery, h2, metrics};

/// The next accepted connection (no delay on its writes), or `None` once `shutdown` turns
/// true. A failed accept (out of descriptors, say) pauses a moment rather than spinning.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "sidecar: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The meta key of a sidecar's registration that holds its admin listener's address.
pub const ADMIN_META: &str = "wharf-admin";

/// Suffix of a sidecar's service name (Consul's).
pub const SIDECAR_SUFFIX: &str = "-sidecar-proxy";

/// What the service behind a sidecar speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, HTTP/2 or gRPC: decided and answered per request.
    Http,
    /// Anything over TCP (a database): decided per connection.
    Tcp,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Protocol, String> {
        match text {
            "http" | "http2" | "grpc" => Ok(Protocol::Http),
            "tcp" => Ok(Protocol::Tcp),
            other => Err(format!("unknown protocol {other:?}: expected http or tcp")),
        }
    }
}

/// Whether an inbound side also takes plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// mTLS only (the default).
    #[default]
    Strict,
    /// mTLS and plaintext on the same port, told apart by the first byte; plaintext comes
    /// from an unknown caller and is counted, for moving a service to strict safely.
    Permissive,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Permissive => "permissive",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "strict" => Ok(Mode::Strict),
            "permissive" => Ok(Mode::Permissive),
            other => Err(format!(
                "unknown mode {other:?}: expected strict or permissive"
            )),
        }
    }
}

/// How a sidecar runs.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub service: String,
    /// The instance it stands beside (its sidecar registers as `<id>-sidecar-proxy`).
    pub instance_id: String,
    /// Where the app listens.
    pub app: SocketAddr,
    pub protocol: Protocol,
    pub mode: Mode,
    /// mTLS from other sidecars (`None`: an ingress, such as the gateway of `wharf up` with
    /// mTLS on, which calls into the mesh with its own identity and takes no calls).
    pub inbound: Option<SocketAddr>,
    /// Where the app sends its calls (`None`: no outbound side).
    pub outbound: Option<SocketAddr>,
    /// `/ready` and `/metrics` (`None`: no admin listener).
    pub admin: Option<SocketAddr>,
    /// TCP upstreams: a local listener per destination service.
    pub upstreams: Vec<(String, SocketAddr)>,
    pub registry: String,
    /// The ACL token and CA for the registry; what they leave unset comes from the
    /// environment (`WHARF_TOKEN`, `WHARF_CACERT`, or Consul's variables).
    pub registry_credentials: wharf_client::Credentials,
    /// Where each request, in and out, is logged as a JSON line (`None`: no access log).
    pub access_log: Option<crate::access::AccessLog>,
    /// More meta to register with: the service's proxy settings (`wharf-routes`,
    /// `wharf-balance`), which its callers read from the sidecars they discover.
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Registry(#[from] wharf_client::ClientError),
    #[error(transparent)]
    Name(#[from] wharf_mesh::IdentityError),
}

/// A running sidecar.
pub struct Sidecar {
    pub inbound_addr: Option<SocketAddr>,
    pub outbound_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Each TCP upstream's name and where it listens.
    pub upstream_addrs: Vec<(String, SocketAddr)>,
    pub credentials: Arc<credentials::Published>,
    client: Client,
    registration_id: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sidecar {
    pub async fn start(config: SidecarConfig) -> Result<Sidecar, SidecarError> {
        wharf_mesh::identity::check_name(&config.service)?;
        let client =
            crate::discovery::registry_client(&config.registry, &config.registry_credentials)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let health = Arc::new(admin::Health::default());
        let published = Arc::new(credentials::Published {
            inbound: watch::Sender::new(None),
            outbound: watch::Sender::new(None),
            health: health.clone(),
        });
        credentials::follow(
            &client,
            &config.service,
            published.clone(),
            shutdown_rx.clone(),
        );
        let policy: policy::Policy = Arc::default();
        // Its calls out are made as its service; calls in name their caller.
        let observers = Arc::new(crate::access::Observers::new(
            "outbound",
            &config.service.to_ascii_lowercase(),
            config.access_log.clone(),
        ));
        policy::follow(&client, policy.clone(), health.clone(), shutdown_rx.clone());

        // A listener and the address it took (a port 0 resolved).
        let bind = |addr: SocketAddr| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| SidecarError::Bind(addr, e))?;
            let local = listener
                .local_addr()
                .map_err(|e| SidecarError::Bind(addr, e))?;
            Ok::<_, SidecarError>((listener, local))
        };
        let mut tasks = Vec::new();
        let mut inbound_addr = None;
        let callers = config
            .inbound
            .map(|_| Arc::new(crate::golden::CallerRows::default()));
        if let Some(addr) = config.inbound {
            let (listener, local) = bind(addr).await?;
            inbound_addr = Some(local);
            tasks.push(tokio::spawn(inbound::serve(
                listener,
                Arc::new(inbound::Inbound {
                    service: config.service.to_ascii_lowercase(),
                    app: config.app,
                    protocol: config.protocol,
                    tls: published.inbound.subscribe(),
                    policy,
                    health: health.clone(),
                    mode: config.mode,
                    observers: observers.clone(),
                    callers: callers.clone().unwrap_or_default(),
                }),
                shutdown_rx.clone(),
            )));
        }

        let mut admin_addr = None;
        if let Some(addr) = config.admin {
            let (listener, local) = bind(addr).await?;
            admin_addr = Some(local);
            let about = admin::About {
                service: config.service.clone(),
                mode: config.mode,
            };
            tasks.push(tokio::spawn(admin::serve(
                listener,
                health.clone(),
                about,
                observers.clone(),
                shutdown_rx.clone(),
            )));
        }

        let mut outbound_addr = None;
        let mut outbound_directory = None;
        let mut outbound_metrics = None;
        let mut upstream_addrs = Vec::new();
        if config.outbound.is_some() || !config.upstreams.is_empty() {
            let shared = Arc::new(Shared {
                directory: discovery::Directory::of_proxies(
                    client.clone(),
                    ServiceDefaults {
                        policy: Balancing::RoundRobin,
                        max_concurrency: 10_000,
                        routes: false,
                    },
                    metrics::Metrics::default(),
                    shutdown_rx.clone(),
                ),
                timeouts: Timeouts {
                    overall: Duration::from_secs(15),
                    per_try: Duration::from_secs(5),
                },
                metrics: metrics::Metrics::default(),
                observers: observers.clone(),
            });
            outbound_directory = Some(shared.directory.clone());
            outbound_metrics = Some(shared.metrics.clone());
            if let Some(addr) = config.outbound {
                let (listener, local) = bind(addr).await?;
                outbound_addr = Some(local);
                let upstream = h2::Upstream::Mesh(published.outbound.subscribe());
                tasks.push(tokio::spawn(outbound::serve(
                    listener,
                    shared.clone(),
                    upstream,
                    shutdown_rx.clone(),
                )));
            }
            for (name, addr) in &config.upstreams {
                let (listener, local) = bind(*addr).await?;
                upstream_addrs.push((name.clone(), local));
                tasks.push(tokio::spawn(upstreams::serve(
                    name.clone(),
                    listener,
                    shared.clone(),
                    published.outbound.subscribe(),
                    shutdown_rx.clone(),
                )));
            }
        }

        // What this instance calls, reported as the edges from its service (its mTLS
        // identity) to each destination, and who called it.
        if outbound_directory.is_some() || callers.is_some() {
            let reporter = crate::golden::Reporter {
                proxy: format!("{}@sidecar", config.instance_id),
                caller: config.service.to_ascii_lowercase(),
                mtls: true,
                directory: outbound_directory,
                callers,
                admin: admin_addr,
                connections: outbound_metrics,
            };
            tasks.push(tokio::spawn(crate::golden::push_reports(
                reporter,
                client.clone(),
                shutdown_rx.clone(),
            )));
        }

        let registration_id = format!("{}{SIDECAR_SUFFIX}", config.instance_id);
        if let Some(inbound) = inbound_addr {
            // Passing while the app accepts connections: traffic reaches a sidecar only when
            // there is an app behind it (Consul's alias check, simply).
            let registration = Registration {
                name: format!("{}{SIDECAR_SUFFIX}", config.service),
                id: Some(registration_id.clone()),
                address: Some(inbound.ip().to_string()),
                port: Some(inbound.port()),
                // The service's settings first, so that the sidecar's own keys win.
                meta: config
                    .meta
                    .clone()
                    .into_iter()
                    .chain([
                        ("wharf-sidecar-for".to_owned(), config.service.clone()),
                        ("wharf-instance".to_owned(), config.instance_id.clone()),
                        ("wharf-mode".to_owned(), config.mode.as_str().to_owned()),
                    ])
                    .chain(admin_addr.map(|admin| (ADMIN_META.to_owned(), admin.to_string())))
                    .collect(),
                check: Some(CheckRegistration {
                    tcp: Some(config.app.to_string()),
                    interval: Some("1s".into()),
                    ..CheckRegistration::default()
                }),
                kind: Some("connect-proxy".into()),
                proxy: Some(ProxyRegistration {
                    destination_service_name: config.service.clone(),
                    destination_service_id: Some(config.instance_id.clone()),
                    local_service_port: Some(config.app.port()),
                }),
                ..Registration::default()
            };
            client.register(&registration).await?;
        }
        Ok(Sidecar {
            inbound_addr,
            outbound_addr,
            admin_addr,
            upstream_addrs,
            credentials: published,
            client,
            registration_id,
            shutdown,
            tasks,
        })
    }

    /// Deregisters, then stops listening.
    pub async fn stop(self) {
        if self.inbound_addr.is_some()
            && let Err(e) = self.client.deregister(&self.registration_id).await
        {
            tracing::warn!(error = %e, "sidecar: cannot deregister");
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
