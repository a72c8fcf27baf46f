//! The data plane: a gateway that routes by `Host` to a service's healthy instances,
//! balances across them, and routes around failures.
//!
//! - [`plan`] — **the life of a request**, in order, for every transport: route, admit,
//!   attempts (pick, per-try limit, outlier recording, retry within the budget), answer;
//! - [`service`] — the domain below the transports: service, endpoint, balancer, outliers;
//! - [`discovery`] — endpoints from the registry's HTTP API (blocking queries);
//! - [`answers`] — every answer the proxy makes itself, rendered for each transport;
//! - [`hop`] — the hop rules: hop-by-hop fields, `x-forwarded-*`, `traceparent`, idempotency;
//! - the transports: [`h1`] — HTTP/1.x, by hand for speed; [`h2`] — HTTP/2 (h2c, gRPC) on
//!   hyper, and HTTP/2 over mTLS to sidecars; each owns its connections to endpoints;
//! - [`sidecar`] — the proxy beside one instance: mTLS in with intentions, mTLS out;
//! - [`metrics`] — Prometheus; this file — the listeners (proxy and admin) and their lifecycle.
//!
//! Imports go one way: transports → plan → discovery → service → metrics, with answers and
//! hop beside the plan; nothing below imports what is above it.

pub mod access;
pub mod answers;
mod clock;
pub mod discovery;
pub(crate) mod fast_hash;
mod golden;
pub mod h1;
pub mod h2;
pub mod hop;
pub mod metrics;
pub mod plan;
pub mod service;
pub mod sidecar;
pub mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use plan::Timeouts;
pub use service::Policy;

/// How a proxy runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `/ready` and `/metrics`; `None` turns the admin listener off.
    pub admin: Option<SocketAddr>,
    /// The registry's URL; `None` routes to static upstreams only.
    pub registry: Option<String>,
    /// The ACL token and CA for the registry; what they leave unset comes from the
    /// environment (`WHARF_TOKEN`, `WHARF_CACERT`, or Consul's variables).
    pub registry_credentials: wharf_client::Credentials,
    pub policy: Policy,
    /// Services with fixed addresses: `NAME=ADDR` on the command line.
    pub upstreams: Vec<(String, Vec<SocketAddr>)>,
    pub timeouts: Timeouts,
    /// Requests in flight per service before new ones get 503.
    pub max_concurrency: usize,
    /// A client must send a complete request head within this long (slowloris: 408).
    pub header_timeout: Duration,
    /// Threads serving clients, each with its own event loop (0: one per available core).
    pub threads: usize,
    /// Where each request is logged as a JSON line (`None`: no access log).
    pub access_log: Option<access::AccessLog>,
    /// Golden metrics by route class for every service (else only where the service's meta
    /// says `wharf-routes = "on"`).
    pub routes: bool,
}

impl Config {
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            admin: None,
            registry: None,
            registry_credentials: Default::default(),
            policy: Policy::RoundRobin,
            upstreams: Vec::new(),
            timeouts: Timeouts {
                overall: Duration::from_secs(15),
                per_try: Duration::from_secs(5),
            },
            max_concurrency: 10_000,
            header_timeout: Duration::from_secs(10),
            threads: 0,
            access_log: None,
            routes: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Registry(#[from] wharf_client::ClientError),
    #[error("cannot start a proxy thread: {0}")]
    Thread(std::io::Error),
}

/// A running proxy.
pub struct Proxy {
    pub listen_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        let client = config
            .registry
            .as_deref()
            .map(|url| discovery::registry_client(url, &config.registry_credentials))
            .transpose()?;
        let metrics = metrics::Metrics::default();
        let defaults = service::ServiceDefaults {
            policy: config.policy,
            max_concurrency: config.max_concurrency,
            routes: config.routes,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let reporter = client.clone();
        let directory = discovery::Directory::new(
            client,
            config.upstreams.clone(),
            defaults,
            metrics.clone(),
            shutdown_rx.clone(),
        );
        let shared = Arc::new(plan::Shared {
            directory: directory.clone(),
            timeouts: config.timeouts,
            metrics: metrics.clone(),
            observers: Arc::new(access::Observers::new(
                "outbound",
                "gateway",
                config.access_log.clone(),
            )),
        });
        let listener = std::net::TcpListener::bind(config.listen)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(threads);
        for worker in 0..threads {
            let listener = listener.try_clone().map_err(StartError::Thread)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Thread)?;
            let (shared, shutdown) = (shared.clone(), shutdown_rx.clone());
            let header_timeout = config.header_timeout;
            let handle = std::thread::Builder::new()
                .name(format!("wharf-proxy-{worker}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                serve_proxy(listener, shared, header_timeout, shutdown).await;
                            }
                            Err(e) => tracing::error!(error = %e, "proxy: cannot listen"),
                        }
                    });
                })
                .map_err(StartError::Thread)?;
            workers.push(handle);
        }
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        if let Some(addr) = config.admin {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Bind(addr, e))?;
            admin_addr = Some(
                listener
                    .local_addr()
                    .map_err(|e| StartError::Bind(addr, e))?,
            );
            tasks.push(tokio::spawn(serve_admin(
                listener,
                directory.clone(),
                metrics.clone(),
                shared.observers.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(client) = reporter {
            let reporter = golden::Reporter {
                proxy: format!("gateway@{listen_addr}"),
                caller: "gateway".to_owned(),
                mtls: false,
                directory: Some(directory.clone()),
                callers: None,
                admin: admin_addr,
                connections: Some(metrics.clone()),
            };
            tasks.push(tokio::spawn(golden::push_reports(
                reporter,
                client,
                shutdown_rx.clone(),
            )));
        }
        Ok(Proxy {
            listen_addr,
            admin_addr,
            shutdown,
            tasks,
            workers,
        })
    }

    /// Stops accepting and lets requests in flight finish (a few seconds at most).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

fn server_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    builder
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts client connections until the proxy stops, then gives those still busy a few
/// seconds to finish (idle ones close at once).
async fn serve_proxy(
    listener: TcpListener,
    shared: Arc<plan::Shared>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each connection holds a sender; when all are gone, `recv` returns `None`.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let (shared, shutdown, alive) = (shared.clone(), shutdown.clone(), alive.clone());
        tokio::spawn(async move {
            let gauge = shared.metrics.open_connections.clone();
            gauge.inc();
            h1::serve(
                stream,
                peer,
                shared,
                (header_timeout, header_timeout),
                &h2::Upstream::Origin,
                shutdown,
            )
            .await;
            gauge.dec();
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    let _ = tokio::time::timeout(Duration::from_secs(5), all_closed.recv()).await;
}

async fn serve_admin(
    listener: TcpListener,
    directory: Arc<discovery::Directory>,
    metrics: metrics::Metrics,
    observers: Arc<access::Observers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = server_builder(Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let (directory, metrics, observers) =
            (directory.clone(), metrics.clone(), observers.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let response = match request.uri().path() {
                "/tap" => observers.tap(request.uri().query()),
                path => admin(&directory, &metrics, path),
            };
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

fn admin(
    directory: &discovery::Directory,
    metrics: &metrics::Metrics,
    path: &str,
) -> Response<access::AdminBody> {
    let (status, content_type, body) = match path {
        "/ready" if directory.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "waiting for the registry\n".to_owned(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/stats" => (
            StatusCode::OK,
            "application/json",
            golden::stats(directory).to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /ready, /metrics, /stats or /tap\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    /// The modules in layers, lowest first: a module imports only from layers below its own,
    /// so the import graph has no cycle and the domain knows no transport.
    const LAYERS: [&[&str]; 8] = [
        &["clock", "fast_hash", "metrics", "answers", "hop"],
        &["wire"],
        &["service"],
        &["discovery", "access"],
        &["plan", "golden"],
        &["h2"],
        &["h1"],
        &["sidecar"],
    ];

    fn layer(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|layer| layer.contains(&module))
            .unwrap_or_else(|| panic!("module {module} has no layer in LAYERS"))
    }

    #[test]
    fn imports_go_down_the_layers_only() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let module = relative.iter().next().unwrap().to_str().unwrap();
            let module = module.trim_end_matches(".rs");
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    // `crate::{a, b::c}` names several modules at once.
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(list) => list.split('}').next().unwrap_or("").split(',').collect(),
                        None => vec![rest],
                    };
                    for name in names {
                        let used: String = name
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if used.is_empty() || used == module {
                            continue;
                        }
                        assert!(
                            layer(&used) < layer(module),
                            "{} imports crate::{used}, a layer above or beside it",
                            relative.display()
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10, "found the imports ({checked})");
    }
}
