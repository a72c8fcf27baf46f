//! `wharf registry`: the registry on its store (embedded, or etcd shared by a cluster of
//! registry nodes), until Ctrl-C or SIGTERM.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use wharf_registry::{Config, HttpLimits, NodeInfo, Registry, node};
use wharf_store::{EmbeddedStore, EtcdStore, Store};

use crate::BadInput;
use crate::cli::RegistryArgs;

/// The files of an `etcds://` store's TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EtcdTlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTlsFiles {
    fn load(&self) -> anyhow::Result<Option<wharf_store::etcd::EtcdTls>> {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let client = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(Some(wharf_store::etcd::EtcdTls {
            ca_pem: read(ca)?,
            client,
        }))
    }
}

/// Opens the store `spec` names: `embedded` (the file in `data_dir`, which is created) or
/// `etcd://HOST:PORT[,...]` (`etcds://` with `tls`) with its keys under `etcd_prefix`.
pub(crate) async fn open_store(
    spec: &str,
    data_dir: &Path,
    etcd_prefix: &str,
    tls: &EtcdTlsFiles,
) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    if spec == "embedded" {
        let path = data_dir.join("registry.redb");
        let store = EmbeddedStore::open(&path).with_context(|| {
            format!(
                "cannot open the store (is another registry using {}?)",
                data_dir.display()
            )
        })?;
        tracing::info!(data = %path.display(), "store: embedded");
        return Ok(Arc::new(store));
    }
    let endpoints = wharf_store::etcd::parse_url(spec)
        .map_err(|e| BadInput(format!("--store: {e}; or \"embedded\"")))?;
    if !etcd_prefix.starts_with('/') || !etcd_prefix.ends_with('/') {
        return Err(BadInput(format!(
            "--etcd-prefix {etcd_prefix:?}: a prefix starts and ends with /"
        ))
        .into());
    }
    let tls = tls.load()?;
    let store = EtcdStore::connect_with(&endpoints, etcd_prefix, tls.as_ref())
        .await
        .with_context(|| format!("cannot reach etcd at {spec}"))?;
    tracing::info!(endpoints = ?endpoints, prefix = etcd_prefix, "store: etcd");
    Ok(Arc::new(store))
}

pub(crate) async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let tls = EtcdTlsFiles {
        ca: args.etcd_ca.clone(),
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
    };
    let store = open_store(&args.store, &args.data_dir, &args.etcd_prefix, &tls).await?;

    let mut node = NodeInfo::local(node_id(&args.data_dir)?);
    if let Some(name) = args.node {
        node.name = name;
    }
    node.address = args.advertise;
    node.datacenter = args.datacenter;
    let mut config = Config::new(args.http, node);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        load_tls(&mut config, cert, key, args.dns_tls, "--tls-cert/--tls-key")?;
    }
    config.min_deregister_after = args.min_deregister_after;
    config.node_ttl = args.node_ttl;
    config.dns = Some(args.dns);
    config.domain = args.domain;
    config.http_limits = HttpLimits {
        max_conns_per_client: args.http_max_conns_per_client,
        read_timeout: args.http_read_timeout,
    };
    config.mesh.leaf_ttl = args.leaf_ttl;
    config.mesh.default_intention = args.default_intention;
    config.acl = wharf_registry::acl::AclConfig {
        enabled: args.acl,
        default_policy: args.acl_default_policy,
    };

    let registry = Registry::start(store, config).await?;
    tracing::info!("registry started");
    // One plain line on stdout, for people and for scripts that wait for the registry.
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let http = registry.http_addr;
    crate::announce(format_args!(
        "wharf registry: HTTP API on {scheme}://{http}"
    ));
    if let Some(dns) = registry.dns_addr {
        crate::announce(format_args!("wharf registry: DNS on {dns} (UDP and TCP)"));
    }
    crate::announce(format_args!(
        "wharf registry: dashboard on {scheme}://{http}/ui/"
    ));
    shutdown_signal().await;
    tracing::info!("stopping");
    registry.stop().await;
    Ok(())
}

/// TLS on the registry's API from the PEM files `cert` and `key`, and on DNS over TCP too
/// when `dns`; a bad file is bad input named by `what`.
pub(crate) fn load_tls(
    config: &mut Config,
    cert: &Path,
    key: &Path,
    dns: bool,
    what: &str,
) -> anyhow::Result<()> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let (cert, key) = (read(cert)?, read(key)?);
    let api = wharf_mesh::tls::api_server_config(&cert, &key)
        .map_err(|e| BadInput(format!("{what}: {e}")))?;
    config.api_tls = Some(api);
    if dns {
        let dot = wharf_mesh::tls::dot_server_config(&cert, &key)
            .map_err(|e| BadInput(format!("{what}: {e}")))?;
        config.dns_tls = Some(dot);
    }
    Ok(())
}

/// The node's id, made once and kept in the data directory.
pub(crate) fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = node::random_uuid();
            std::fs::write(&path, &id)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
