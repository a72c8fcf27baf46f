//! `wharf up`: the registry (HTTP and DNS), the gateway proxy and the supervisor in one
//! process, from one manifest, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wharf_registry::{Config, NodeInfo, Registry};
use wharf_store::EmbeddedStore;
use wharf_supervisor::{LogStyle, Supervisor};

use crate::BadInput;
use crate::manifest::Manifest;
use crate::registry_cmd::{node_id, shutdown_signal};

pub(crate) async fn run(file: PathBuf) -> anyhow::Result<()> {
    // Refuse a bad manifest before anything starts.
    let manifest = Manifest::load(&file).map_err(|e| BadInput(e.to_string()))?;

    std::fs::create_dir_all(&manifest.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            manifest.data_dir.display()
        )
    })?;
    let store =
        EmbeddedStore::open(manifest.data_dir.join("registry.redb")).with_context(|| {
            format!(
                "cannot open the store (is another registry using {}?)",
                manifest.data_dir.display()
            )
        })?;
    let mut config = Config::new(
        manifest.registry_http,
        NodeInfo::local(node_id(&manifest.data_dir)?),
    );
    config.dns = Some(manifest.registry_dns);
    config.domain = manifest.domain.clone();
    config.http_limits = manifest.http_limits.clone();
    let registry = Registry::start(Arc::new(store), config).await?;
    let registry_url = format!("http://{}", registry.http_addr);

    let mut gateway = wharf_proxy::Config::new(manifest.gateway_listen);
    gateway.admin = Some(manifest.gateway_admin);
    gateway.registry = Some(registry_url.clone());
    gateway.policy = manifest.balance;
    let proxy = wharf_proxy::Proxy::start(gateway).await?;

    println!("wharf up: registry on {registry_url}");
    if let Some(dns) = registry.dns_addr {
        println!("wharf up: DNS on {dns}");
    }
    println!("wharf up: gateway on http://{}", proxy.listen_addr);
    if let Some(admin) = proxy.admin_addr {
        println!("wharf up: admin on http://{admin}");
    }
    let replicas: u32 = manifest.services.iter().map(|s| s.replicas).sum();
    println!(
        "wharf up: starting {} services, {replicas} instances",
        manifest.services.len()
    );

    // Every instance can reach the others through the gateway, and keeps its data in a
    // folder of its service under the data directory.
    let mut services = manifest.services;
    for service in &mut services {
        let data = manifest.data_dir.join("services").join(&service.name);
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let data = std::fs::canonicalize(&data).unwrap_or(data);
        service
            .env
            .entry("WHARF_GATEWAY".into())
            .or_insert_with(|| format!("http://{}", proxy.listen_addr));
        service
            .env
            .entry("WHARF_DATA".into())
            .or_insert_with(|| data.display().to_string());
    }
    let client = wharf_client::Client::new(&registry_url)?;
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let supervisor = Supervisor::start(client.clone(), registry_url, services, LogStyle::detect());
    let progress = tokio::spawn(report_progress(client, names, replicas));
    shutdown_signal().await;
    progress.abort();
    println!("wharf up: stopping");
    // Stop taking requests, then deregister and stop every instance, then the registry.
    proxy.stop().await;
    supervisor.stop().await;
    registry.stop().await;
    println!("wharf up: stopped");
    Ok(())
}

/// Prints how many instances pass as the mesh comes up, until all do (or a minute passes).
async fn report_progress(client: wharf_client::Client, names: Vec<String>, expected: u32) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = u32::MAX;
    while tokio::time::Instant::now() < deadline {
        let mut passing = 0u32;
        for name in &names {
            if let Ok((entries, _)) = client.health_service(name, true, None).await {
                passing += u32::try_from(entries.len()).unwrap_or(0);
            }
        }
        if passing != last {
            println!("wharf up: {passing}/{expected} instances passing");
            last = passing;
        }
        if passing >= expected {
            println!("wharf up: ready");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    println!("wharf up: {last}/{expected} instances passing after a minute; see the lines above");
}
