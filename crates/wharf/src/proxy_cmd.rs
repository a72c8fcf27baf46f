//! `wharf proxy`: the gateway, until Ctrl-C or SIGTERM.

use wharf_proxy::{Config, Proxy, Timeouts};

use crate::cli::ProxyArgs;
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
