//! `wharf up`: the registry (HTTP and DNS), the gateway proxy and the supervisor in one
//! process, from one manifest, until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use wharf_proxy::access::AccessLog;
use wharf_proxy::sidecar::{Mode, Protocol, Sidecar, SidecarConfig};
use wharf_registry::{Config, NodeInfo, Registry};
use wharf_supervisor::{ApiRegistry, Attached, Companion, LogStyle, Supervisor, Timings};

use crate::manifest::{Manifest, SidecarSpec};
use crate::registry_cmd::{node_id, open_store, shutdown_signal};
use crate::{BadInput, deployer};

pub(crate) async fn run(file: PathBuf, watch: bool) -> anyhow::Result<()> {
    // Refuse a bad manifest before anything starts.
    let (manifest, source) = Manifest::load(&file).map_err(|e| BadInput(e.to_string()))?;

    let store = open_store(
        &manifest.store,
        &manifest.data_dir,
        &manifest.etcd_prefix,
        &manifest.etcd_tls,
    )
    .await?;
    let mut node = NodeInfo::local(node_id(&manifest.data_dir)?);
    if let Some(name) = &manifest.node {
        node.name = name.clone();
    }
    if let Some(advertise) = manifest.advertise {
        node.address = advertise.to_string();
    }
    let mut config = Config::new(manifest.registry_http, node);
    config.dns = Some(manifest.registry_dns);
    config.domain = manifest.domain.clone();
    config.http_limits = manifest.http_limits.clone();
    config.mesh = manifest.mesh.clone();
    config.acl = manifest.acl;
    if let Some(tls) = &manifest.tls {
        crate::registry_cmd::load_tls(&mut config, &tls.cert, &tls.key, tls.dns, "registry.tls")?;
    }
    let registry = Registry::start(store, config).await?;
    let scheme = if manifest.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let registry_url = format!("{scheme}://{}", registry.http_addr);
    deployer::apply_intentions(&registry.agent, &manifest.intentions).await?;
    // With ACLs on, this process's own parts (supervisor, gateway, sidecars) call the API
    // with this node's management token; the instances get none.
    let credentials = wharf_client::Credentials {
        token: match manifest.acl.enabled {
            true => Some(registry.agent.acl_node_token().await?),
            false => None,
        },
        ca_file: manifest.tls.as_ref().map(|tls| tls.ca.clone()),
    };

    let logs = AccessLogs::open(&manifest)?;
    let gateway = Gateway::start(
        &manifest,
        &registry_url,
        credentials.clone(),
        logs.gateway.clone(),
    )
    .await?;
    println!("wharf up: registry on {registry_url}");
    if let Some(dns) = registry.dns_addr {
        println!("wharf up: DNS on {dns}");
    }
    println!("wharf up: gateway on http://{}", gateway.listen_addr());
    if let Some(admin) = gateway.admin_addr() {
        println!("wharf up: admin on http://{admin}");
    }
    println!("wharf up: dashboard on {registry_url}/ui/");
    if manifest.mtls {
        println!(
            "wharf up: mTLS on: every instance has a sidecar; intentions decide who calls whom"
        );
    }
    let replicas: u32 = manifest.services.iter().map(|s| s.replicas).sum();
    println!(
        "wharf up: starting {} services, {replicas} instances",
        manifest.services.len()
    );

    // Every instance can reach the others through the gateway, and keeps its data in a
    // folder of its service under the data directory.
    deployer::create_data_dirs(&manifest)?;
    let services = deployer::prepare(&manifest, gateway.listen_addr())?;
    let client = wharf_client::Client::connect(&registry_url, &credentials)?;
    let sidecar_specs: deployer::SidecarSpecs = Arc::new(RwLock::new(manifest.sidecars.clone()));
    let companion: Option<Arc<dyn Companion>> = manifest.mtls.then(|| {
        Arc::new(Sidecars {
            registry: registry_url.clone(),
            credentials: credentials.clone(),
            services: sidecar_specs.clone(),
            inbound_ip: manifest
                .advertise
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            access_log: logs.mesh.clone(),
        }) as Arc<dyn Companion>
    });
    let style = LogStyle::detect();
    let supervisor = Supervisor::start_with(
        Arc::new(ApiRegistry {
            client: client.clone(),
        }),
        registry_url,
        services,
        style,
        Timings::default(),
        companion,
    );
    let listed = Arc::new(RwLock::new(
        manifest
            .services
            .iter()
            .map(|s| (s.name.clone(), s.replicas))
            .collect(),
    ));
    let live = Arc::new(deployer::Live {
        supervisor,
        agent: registry.agent.clone(),
        gateway: gateway.listen_addr(),
        sidecars: manifest.mtls.then_some(sidecar_specs),
        listed: listed.clone(),
        running: tokio::sync::Mutex::new(manifest),
    });
    registry
        .agent
        .attach_deployer(Arc::new(deployer::Attach(live.clone())));
    let watching = watch.then(|| {
        println!(
            "wharf up: watching {}: each change is applied as `wharf apply` would",
            source.path.display()
        );
        tokio::spawn(deployer::watch_file(live.clone(), source))
    });
    let progress = tokio::spawn(report_progress(client, listed, style));
    shutdown_signal().await;
    progress.abort();
    if let Some(watching) = watching {
        watching.abort();
    }
    println!("wharf up: stopping");
    // Stop taking requests, then deregister and stop every instance, then the registry.
    gateway.stop().await;
    live.supervisor.stop().await;
    registry.stop().await;
    println!("wharf up: stopped");
    Ok(())
}

/// The access logs the manifest asks for; one file named by both is opened once.
struct AccessLogs {
    gateway: Option<AccessLog>,
    mesh: Option<AccessLog>,
}

impl AccessLogs {
    fn open(manifest: &Manifest) -> anyhow::Result<AccessLogs> {
        let open = |path: &std::path::Path| {
            AccessLog::open(&path.to_string_lossy())
                .with_context(|| format!("cannot open the access log {}", path.display()))
        };
        let gateway = manifest
            .gateway_access_log
            .as_deref()
            .map(open)
            .transpose()?;
        let mesh = match (&manifest.mesh_access_log, &manifest.gateway_access_log) {
            (Some(mesh), Some(gateway_path)) if mesh == gateway_path => gateway.clone(),
            (Some(mesh), _) => Some(open(mesh)?),
            (None, _) => None,
        };
        Ok(AccessLogs { gateway, mesh })
    }
}

/// The way into the mesh: the gateway proxy, or with mTLS on an ingress that calls the
/// services' sidecars with its own identity (`gateway`), subject to intentions like any caller.
enum Gateway {
    Plain(wharf_proxy::Proxy),
    Mesh(Box<Sidecar>),
}

impl Gateway {
    async fn start(
        manifest: &Manifest,
        registry_url: &str,
        credentials: wharf_client::Credentials,
        access_log: Option<AccessLog>,
    ) -> anyhow::Result<Gateway> {
        if manifest.mtls {
            let ingress = Sidecar::start(SidecarConfig {
                service: "gateway".into(),
                instance_id: "gateway".into(),
                app: ([127, 0, 0, 1], 0).into(),
                protocol: Protocol::Http,
                mode: Mode::Strict,
                inbound: None,
                outbound: Some(manifest.gateway_listen),
                admin: Some(manifest.gateway_admin),
                upstreams: Vec::new(),
                registry: registry_url.to_owned(),
                registry_credentials: credentials,
                access_log,
                meta: Default::default(),
            })
            .await?;
            return Ok(Gateway::Mesh(Box::new(ingress)));
        }
        let mut gateway = wharf_proxy::Config::new(manifest.gateway_listen);
        gateway.access_log = access_log;
        gateway.admin = Some(manifest.gateway_admin);
        gateway.registry = Some(registry_url.to_owned());
        gateway.registry_credentials = credentials;
        gateway.policy = manifest.balance;
        Ok(Gateway::Plain(wharf_proxy::Proxy::start(gateway).await?))
    }

    fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Gateway::Plain(proxy) => proxy.admin_addr,
            Gateway::Mesh(ingress) => ingress.admin_addr,
        }
    }

    fn listen_addr(&self) -> std::net::SocketAddr {
        match self {
            Gateway::Plain(proxy) => proxy.listen_addr,
            Gateway::Mesh(ingress) => ingress.outbound_addr.expect("an ingress listens"),
        }
    }

    async fn stop(self) {
        match self {
            Gateway::Plain(proxy) => proxy.stop().await,
            Gateway::Mesh(ingress) => ingress.stop().await,
        }
    }
}

/// Starts each instance's sidecar: mTLS in (the instance's identity, intentions enforced),
/// and an outbound side the instance reaches the mesh through (`WHARF_GATEWAY`).
struct Sidecars {
    registry: String,
    /// The node's token when ACLs are on, and the API's CA when it speaks TLS.
    credentials: wharf_client::Credentials,
    /// Per service: what its sidecars need to know (changed by `wharf apply`).
    services: deployer::SidecarSpecs,
    /// Where inbound sides listen: this host's advertised address, so that the sidecars of
    /// other hosts reach them (the apps themselves stay on loopback).
    inbound_ip: std::net::IpAddr,
    /// `[mesh] access_log`, shared by every sidecar.
    access_log: Option<AccessLog>,
}

impl Companion for Sidecars {
    fn attach(
        &self,
        service: &str,
        instance: &str,
        port: u16,
        meta: &BTreeMap<String, String>,
    ) -> wharf_supervisor::companion::BoxFuture<Result<Attached, String>> {
        let spec = self
            .services
            .read()
            .expect("sidecar settings")
            .get(service)
            .cloned()
            .unwrap_or(SidecarSpec {
                protocol: Protocol::Http,
                mode: Mode::Strict,
                upstreams: Vec::new(),
                meta: Default::default(),
            });
        // A canary's sidecar carries its version, which its subset is chosen by.
        let mut spec = spec;
        if let Some(version) = meta.get(wharf_supervisor::registry::VERSION_META) {
            spec.meta.insert(
                wharf_supervisor::registry::VERSION_META.to_owned(),
                version.clone(),
            );
        }
        let config = SidecarConfig {
            service: service.to_owned(),
            instance_id: instance.to_owned(),
            app: ([127, 0, 0, 1], port).into(),
            protocol: spec.protocol,
            mode: spec.mode,
            inbound: Some((self.inbound_ip, 0).into()),
            outbound: Some(([127, 0, 0, 1], 0).into()),
            // For `wharf mesh status` (found through the registration's meta).
            admin: Some(([127, 0, 0, 1], 0).into()),
            upstreams: spec
                .upstreams
                .iter()
                .map(|name| (name.clone(), ([127, 0, 0, 1], 0).into()))
                .collect(),
            registry: self.registry.clone(),
            registry_credentials: self.credentials.clone(),
            access_log: self.access_log.clone(),
            meta: spec.meta.clone(),
        };
        Box::pin(async move {
            let sidecar = Sidecar::start(config)
                .await
                .map_err(|e| format!("cannot start the sidecar: {e}"))?;
            let outbound = format!(
                "http://{}",
                sidecar.outbound_addr.expect("an outbound side")
            );
            let mut env = vec![
                ("WHARF_GATEWAY".to_owned(), outbound.clone()),
                ("WHARF_OUTBOUND".to_owned(), outbound),
            ];
            env.extend(
                sidecar
                    .upstream_addrs
                    .iter()
                    .map(|(name, addr)| (upstream_variable(name), addr.to_string())),
            );
            Ok(Attached {
                env,
                stop: Box::new(move || Box::pin(sidecar.stop())),
            })
        })
    }
}

/// The mesh's one-line status: how many instances pass (of those the services want now,
/// after `wharf scale` too) and which do not, printed as the mesh comes up and whenever it
/// changes after, green when all pass and yellow when not on a terminal that takes colour.
async fn report_progress(
    client: wharf_client::Client,
    listed: Arc<RwLock<BTreeMap<String, u32>>>,
    style: LogStyle,
) {
    let started = tokio::time::Instant::now();
    let mut ready = false;
    let mut warned = false;
    let mut last = String::new();
    loop {
        // What each service wants now, once the supervisor has declared it; the manifest's
        // count until then.
        let listed = listed.read().expect("listed services").clone();
        let names: Vec<&String> = listed.keys().collect();
        let desired = client
            .desired(None)
            .await
            .map(|(d, _)| d)
            .unwrap_or_default();
        let wanted: u32 = listed
            .iter()
            .map(|(name, count)| desired.get(name).map_or(*count, |d| d.replicas))
            .sum();
        let mut passing = 0u32;
        let mut failing = Vec::new();
        for name in names {
            let Ok((entries, _)) = client.health_service(name, false, None).await else {
                continue;
            };
            for entry in &entries {
                match entry.aggregate_status() {
                    "passing" => passing += 1,
                    status => failing.push(format!("{} {status}", entry.service.id)),
                }
            }
        }
        let status = status_line(passing, wanted, &failing);
        if status != last {
            paint(style, passing >= wanted && failing.is_empty(), &status);
            last = status;
        }
        if !ready && passing >= wanted {
            println!("wharf up: ready");
            ready = true;
        }
        if !ready && !warned && started.elapsed() > std::time::Duration::from_secs(60) {
            println!(
                "wharf up: {passing}/{wanted} instances passing after a minute; see the lines above"
            );
            warned = true;
        }
        let pause = if ready { 1000 } else { 250 };
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
}

/// `wharf up: 7/8 instances passing; not passing: hello-2 critical` (three named at most).
fn status_line(passing: u32, wanted: u32, failing: &[String]) -> String {
    let mut line = format!("wharf up: {passing}/{wanted} instances passing");
    if !failing.is_empty() {
        let named: Vec<&str> = failing.iter().take(3).map(String::as_str).collect();
        line.push_str(&format!("; not passing: {}", named.join(", ")));
        if failing.len() > 3 {
            line.push_str(&format!(" and {} more", failing.len() - 3));
        }
    }
    line
}

fn paint(style: LogStyle, healthy: bool, line: &str) {
    match style {
        LogStyle::Color => {
            let colour = if healthy { 32 } else { 33 };
            println!("\x1b[{colour}m{line}\x1b[0m");
        }
        LogStyle::Plain => println!("{line}"),
    }
}

/// The environment variable that gives an instance the local address of its TCP upstream
/// `name`: `WHARF_UPSTREAM_` and the name in capitals, `-` as `_` (`billing-db` →
/// `WHARF_UPSTREAM_BILLING_DB`).
fn upstream_variable(name: &str) -> String {
    format!(
        "WHARF_UPSTREAM_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_what_does_not_pass() {
        assert_eq!(status_line(8, 8, &[]), "wharf up: 8/8 instances passing");
        let failing: Vec<String> = (1..=5).map(|i| format!("hello-{i} critical")).collect();
        assert_eq!(
            status_line(3, 8, &failing),
            "wharf up: 3/8 instances passing; not passing: hello-1 critical, hello-2 critical, \
             hello-3 critical and 2 more"
        );
    }
}
