//! `wharf proxy`: the gateway, and `wharf sidecar`, until Ctrl-C or SIGTERM.

use anyhow::Context;
use wharf_proxy::sidecar::{Sidecar, SidecarConfig};
use wharf_proxy::{Config, Proxy, Timeouts};

use crate::cli::{ProxyArgs, SidecarArgs};
use crate::registry_cmd::shutdown_signal;

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.listen);
    config.admin = Some(args.admin);
    config.registry = Some(args.registry);
    config.policy = args.balance;
    config.upstreams = args.upstreams;
    config.timeouts = Timeouts {
        overall: args.timeout,
        per_try: args.try_timeout.min(args.timeout),
    };
    config.max_concurrency = args.max_concurrency.max(1);
    config.header_timeout = args
        .header_timeout
        .max(std::time::Duration::from_millis(100));
    config.threads = args.threads;
    config.access_log = open_log(args.access_log.as_deref())?;
    config.routes = args.routes;
    let proxy = Proxy::start(config).await?;
    tracing::info!("proxy started");
    println!("wharf proxy: listening on http://{}", proxy.listen_addr);
    if let Some(admin) = proxy.admin_addr {
        println!("wharf proxy: admin on http://{admin}");
    }
    shutdown_signal().await;
    proxy.stop().await;
    Ok(())
}

fn open_log(path: Option<&str>) -> anyhow::Result<Option<wharf_proxy::access::AccessLog>> {
    path.map(|path| {
        wharf_proxy::access::AccessLog::open(path)
            .with_context(|| format!("cannot open the access log {path}"))
    })
    .transpose()
}

pub(crate) async fn sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    let outbound = match args.outbound.as_str() {
        "none" => None,
        addr => Some(
            addr.parse()
                .with_context(|| format!("--outbound {addr:?}: expected ADDR or none"))?,
        ),
    };
    let sidecar = Sidecar::start(SidecarConfig {
        instance_id: args.instance_id.unwrap_or_else(|| args.service.clone()),
        service: args.service,
        app: args.app,
        protocol: args.protocol,
        mode: args.mode,
        inbound: Some(args.inbound),
        outbound,
        admin: Some(args.admin),
        upstreams: args.upstreams,
        registry: args.registry,
        registry_credentials: Default::default(),
        access_log: open_log(args.access_log.as_deref())?,
        meta: Default::default(),
    })
    .await?;
    if let Some(inbound) = sidecar.inbound_addr {
        println!("wharf sidecar: inbound (mTLS) on {inbound}");
    }
    if let Some(outbound) = sidecar.outbound_addr {
        println!("wharf sidecar: outbound on http://{outbound}");
    }
    if let Some(admin) = sidecar.admin_addr {
        println!("wharf sidecar: admin on http://{admin}");
    }
    for (name, addr) in &sidecar.upstream_addrs {
        println!("wharf sidecar: upstream {name} (TCP) on {addr}");
    }
    shutdown_signal().await;
    sidecar.stop().await;
    Ok(())
}
