//! The command line, as DESIGN.md fixes it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wharf",
    version,
    about = "A service mesh in one binary: registry, discovery and health checks."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the registry: catalog, health checker and the Consul-compatible HTTP API.
    Registry(RegistryArgs),
    /// List services and their tags.
    Services(ListArgs),
    /// List the instances of a service with their health.
    Instances(InstancesArgs),
    /// Register a service instance.
    Register(RegisterArgs),
    /// Deregister a service instance by its id.
    Deregister(DeregisterArgs),
    /// Follow the healthy instances of a service as they change.
    Watch(WatchArgs),
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8500", value_name = "ADDR")]
    pub http: SocketAddr,
    /// Address of the DNS interface (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8600", value_name = "ADDR")]
    pub dns: SocketAddr,
    /// DNS domain answered (`consul` is always answered too).
    #[arg(long, default_value = "wharf", value_name = "NAME")]
    pub domain: String,
    /// Where the embedded store keeps its file.
    #[arg(long, default_value = ".wharf", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Node name (default: this host's name).
    #[arg(long)]
    pub node: Option<String>,
    /// Address of this node: instances registered without an address are reached there.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub advertise: String,
    /// Datacenter name answered to clients.
    #[arg(long, default_value = "dc1")]
    pub datacenter: String,
    /// Floor for DeregisterCriticalServiceAfter (Consul: 1m). Lowered only by tests.
    #[arg(long, default_value = "1m", value_parser = parse_duration, hide = true)]
    pub min_deregister_after: std::time::Duration,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    wharf_model::parse_go_duration(text).map_err(|e| e.to_string())
}

/// Where client commands find the registry.
#[derive(Args, Debug, Clone)]
pub struct RegistryUrl {
    /// Registry HTTP address.
    #[arg(
        long = "registry",
        env = "WHARF_REGISTRY",
        default_value = "http://127.0.0.1:8500",
        value_name = "URL",
        global = true
    )]
    pub url: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub registry: RegistryUrl,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InstancesArgs {
    /// Service name.
    pub name: String,
    /// Only instances whose checks all pass.
    #[arg(long)]
    pub passing: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Service name (or give the whole Consul registration body with --file).
    #[arg(required_unless_present = "file")]
    pub name: Option<String>,
    /// Instance id (default: the service name).
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// A tag; repeat for more.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Metadata KEY=VALUE; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// HTTP health check URL.
    #[arg(long, value_name = "URL", conflicts_with_all = ["tcp_check", "ttl"])]
    pub http_check: Option<String>,
    /// TCP health check address (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "ttl")]
    pub tcp_check: Option<String>,
    /// TTL check: the instance must report within this duration.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Check interval.
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Check timeout.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Remove the instance after its check has been critical this long.
    #[arg(long, value_name = "DURATION")]
    pub deregister_after: Option<String>,
    /// A Consul registration body (JSON) to send as is; `-` reads standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "name")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    /// Instance id.
    pub id: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Service name.
    pub name: String,
    /// Stop after this many changes (default: follow until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    #[command(flatten)]
    pub list: ListArgs,
}
