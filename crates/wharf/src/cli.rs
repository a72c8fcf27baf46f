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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the whole mesh from a manifest: registry, gateway and every service's instances.
    Up(UpArgs),
    /// Run the registry: catalog, health checker and the Consul-compatible HTTP API.
    Registry(RegistryArgs),
    /// Run the gateway proxy: route by Host to healthy instances, balance, retry, eject.
    Proxy(ProxyArgs),
    /// Run a sidecar beside one instance: mTLS in with intentions enforced, mTLS out.
    Sidecar(SidecarArgs),
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
    /// Change the number of replicas `wharf up` runs of a service: NAME=N.
    Scale(ScaleArgs),
    /// Replace a service's instances one at a time, each new one passing before an old one stops.
    Restart(RestartArgs),
    /// Make the running mesh what a manifest says: services started and stopped, changed
    /// ones rolled out one instance at a time, counts and autoscale settings set.
    Apply(ApplyArgs),
    /// Who may call whom: create, delete, check and list intentions.
    #[command(subcommand)]
    Intention(IntentionCommand),
    /// A service's canary, while `wharf apply` rolls a change out by its `rollout`: its
    /// weight and golden metrics beside the stable version's; promote it now, or roll it back.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// The mesh's sidecars.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// The mesh's golden metrics once: per service (or one service's instances) its rate,
    /// success, latency, load and health, from the proxies' reports.
    Stat(StatArgs),
    /// The mesh's golden metrics live in the terminal: services (Enter: a service's
    /// instances; e: the edges), sorted by any column (←/→, or 1-9), from the registry's
    /// blocking stats endpoint.
    Top(TopArgs),
    /// One line per request to SERVICE, live, from the proxies that carry them (sampled by
    /// each proxy when the rate is high). Ctrl-C stops it.
    Tap(TapArgs),
    /// Tokens on the API (Consul's ACLs): bootstrap, policies, tokens. Uses WHARF_TOKEN (or
    /// CONSUL_HTTP_TOKEN) like every command.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Consul's KV store: read, write, delete, list and follow keys.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Run a command while holding a lock, as `consul lock` does: PREFIX/.lock held by a
    /// session; the command is stopped if the lock is lost, and its exit status is wharf's.
    Lock(LockArgs),
    /// Put a service instance (or, without --service, the registry's node) into maintenance
    /// mode, or take it out: a critical check that takes it out of DNS and the proxies.
    Maint(MaintArgs),
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum KvCommand {
    /// Print a key's value (with --recurse, every key under a prefix as KEY:VALUE).
    Get(KvGetArgs),
    /// Write a value: VALUE, `-` for standard input, `@FILE` for a file's contents.
    Put(KvPutArgs),
    /// Delete a key (with --recurse, every key under a prefix).
    Delete(KvDeleteArgs),
    /// List the keys under a prefix (all of them without one).
    List(KvListArgs),
    /// Print a key's value now and on every change (`(absent)` when it is deleted), until
    /// interrupted.
    Watch(KvKeyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct KvGetArgs {
    pub key: String,
    /// Every key under KEY, as KEY:VALUE lines.
    #[arg(long)]
    pub recurse: bool,
    /// Also print the entry's flags, indexes and lock holder.
    #[arg(long)]
    pub detailed: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct KvPutArgs {
    pub key: String,
    /// The value: text, `-` for standard input, `@FILE` for a file (none: empty).
    pub value: Option<String>,
    /// Flags stored with the entry (any 64-bit number).
    #[arg(long, default_value_t = 0)]
    pub flags: u64,
    /// Write only over this ModifyIndex (0: only if the key does not exist).
    #[arg(long, value_name = "INDEX")]
    pub cas: Option<u64>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct KvDeleteArgs {
    pub key: String,
    /// Every key under KEY.
    #[arg(long)]
    pub recurse: bool,
    /// Delete only if the key's ModifyIndex is this.
    #[arg(long, value_name = "INDEX", conflicts_with = "recurse")]
    pub cas: Option<u64>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct KvListArgs {
    #[arg(default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct KvKeyArgs {
    pub key: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct LockArgs {
    /// The lock's prefix: the lock is the key PREFIX/.lock.
    pub prefix: String,
    /// The session's TTL (renewed at half of it); a holder that dies loses the lock within
    /// twice this.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// After a holder dies, how long the lock cannot be taken (Consul's lock delay).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lock_delay: std::time::Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct MaintArgs {
    /// The instance (service ID); none: the registry's whole node.
    #[arg(long, value_name = "ID")]
    pub service: Option<String>,
    /// Enter maintenance mode.
    #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
    pub enable: bool,
    /// Leave maintenance mode.
    #[arg(long)]
    pub disable: bool,
    /// Why, shown as the maintenance check's notes.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct StatArgs {
    /// One service: its instances.
    pub service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct TapArgs {
    pub service: String,
    /// At most this many lines a second from each proxy.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Print the proxies' JSON lines as they come.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// Open on one service's instances.
    pub service: Option<String>,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AclCommand {
    /// Make the first management token (once per registry store); prints its secret.
    Bootstrap(AclOutputArgs),
    /// Policies: named sets of rules.
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// Tokens: what a client presents, linked to policies.
    #[command(subcommand)]
    Token(AclTokenCommand),
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AclPolicyCommand {
    /// A new policy from rules (HCL or JSON; `@FILE` reads them from a file).
    Create(AclPolicyCreateArgs),
    /// Every policy.
    List(AclOutputArgs),
    /// Delete a policy by name.
    Delete(AclNameArgs),
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AclTokenCommand {
    /// A new token linked to policies (by name) or to service identities; prints its secret.
    Create(AclTokenCreateArgs),
    /// Every token.
    List(AclOutputArgs),
    /// The token this command runs with.
    #[command(name = "self")]
    Myself(AclOutputArgs),
    /// Delete a token by its accessor id.
    Delete(AclAccessorArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AclOutputArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct AclPolicyCreateArgs {
    #[arg(long)]
    pub name: String,
    /// The rules, or `@FILE`.
    #[arg(long)]
    pub rules: String,
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub output: AclOutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct AclNameArgs {
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct AclAccessorArgs {
    /// The token's accessor id.
    #[arg(long)]
    pub id: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct AclTokenCreateArgs {
    /// A policy to link, by name (repeatable).
    #[arg(long = "policy-name", value_name = "NAME")]
    pub policy_names: Vec<String>,
    /// A service identity (repeatable): write on the service, read on every service and node.
    #[arg(long = "service-identity", value_name = "SERVICE")]
    pub service_identities: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// The token expires this long after its creation (`1h`).
    #[arg(long, value_name = "DURATION")]
    pub expires_ttl: Option<String>,
    #[command(flatten)]
    pub output: AclOutputArgs,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum MeshCommand {
    /// Each sidecar's mode, its inbound connections by kind and whether strict mTLS would
    /// refuse a caller it has seen (exit 2 if so).
    Status(MeshStatusArgs),
}

#[derive(Args, Debug)]
pub(crate) struct MeshStatusArgs {
    /// Only the sidecars of this service.
    pub service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum RolloutCommand {
    /// The split between the stable version and the canary, and how each answers.
    Status(RolloutArgs),
    /// Promote the canary now: all traffic to it, the stable instances replaced.
    Promote(RolloutArgs),
    /// Roll the canary back now: all traffic to the stable version, the canary stopped.
    Abort(RolloutArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RolloutArgs {
    /// Service name.
    pub service: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum IntentionCommand {
    /// Allow (or with --deny, deny) SOURCE to call DESTINATION; `*` for any.
    Create(IntentionCreateArgs),
    /// Delete the intention from SOURCE to DESTINATION.
    Delete(IntentionPairArgs),
    /// Whether SOURCE may call DESTINATION now: prints Allowed (exit 0) or Denied (exit 2).
    Check(IntentionPairArgs),
    /// Every intention, in the order they are evaluated.
    List(IntentionListArgs),
}

#[derive(Args, Debug)]
pub(crate) struct IntentionCreateArgs {
    #[command(flatten)]
    pub pair: IntentionPairArgs,
    /// Deny instead of allow.
    #[arg(long)]
    pub deny: bool,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Args, Debug)]
pub(crate) struct IntentionPairArgs {
    pub source: String,
    pub destination: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct IntentionListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    /// The manifest.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "wharf.toml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// Apply the manifest each time the file changes, as `wharf apply` would.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RegistryArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8500", value_name = "ADDR")]
    pub http: SocketAddr,
    /// Address of the DNS interface (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8600", value_name = "ADDR")]
    pub dns: SocketAddr,
    /// DNS domain answered (`consul` is always answered too).
    #[arg(long, default_value = "wharf", value_name = "NAME")]
    pub domain: String,
    /// Where the embedded store keeps its file (and the node keeps its id).
    #[arg(long, default_value = ".wharf", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The store: `embedded` (a file in the data directory) or `etcd://HOST:PORT[,HOST:PORT...]`,
    /// shared by every registry node of a cluster.
    #[arg(long, default_value = "embedded", value_name = "STORE")]
    pub store: String,
    /// With an etcd store: the prefix of every key this mesh keeps in etcd.
    #[arg(long, default_value = "/wharf/", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// With an `etcds://` store: the CA of etcd's certificates (PEM), and this node's client
    /// certificate and key when etcd asks for one.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// Node name (default: this host's name).
    #[arg(long)]
    pub node: Option<String>,
    /// TLS on the HTTP API: the certificate chain and key (PEM). Clients then use
    /// https:// with the CA in WHARF_CACERT (or CONSUL_CACERT).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: DNS over TCP answers over TLS (DNS over TLS, RFC 7858) with the same
    /// certificate; UDP stays plain.
    #[arg(long, requires = "tls_cert")]
    pub dns_tls: bool,
    /// How long after this node dies its instances turn critical on the other nodes of its
    /// store (the TTL of its liveness lease).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub node_ttl: std::time::Duration,
    /// Address of this node: instances registered without an address are reached there.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub advertise: String,
    /// Datacenter name answered to clients.
    #[arg(long, default_value = "dc1")]
    pub datacenter: String,
    /// Most HTTP connections at once from one client address; more get 429 (0: no limit).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub http_max_conns_per_client: usize,
    /// How long a request head may take, an idle connection may stay open, and a request
    /// body may send nothing.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub http_read_timeout: std::time::Duration,
    /// Lifetime of the leaf certificates the mesh's CA issues (Consul's LeafCertTTL).
    #[arg(long, default_value = "72h", value_parser = parse_duration, value_name = "DURATION")]
    pub leaf_ttl: std::time::Duration,
    /// What a call that no intention matches gets: allow or deny.
    #[arg(long, default_value = "allow", value_parser = parse_default_intention, value_name = "ACTION")]
    pub default_intention: wharf_mesh::intentions::DefaultAction,
    /// Tokens on the API (Consul's ACLs): every request is checked against its token's
    /// policies; bootstrap the first management token with `PUT /v1/acl/bootstrap`.
    #[arg(long)]
    pub acl: bool,
    /// With --acl: what no rule names gets, allow (Consul's default) or deny.
    #[arg(long, default_value = "allow", value_parser = parse_acl_default, value_name = "POLICY", requires = "acl")]
    pub acl_default_policy: wharf_registry::acl::DefaultPolicy,
    /// Floor for DeregisterCriticalServiceAfter (Consul: 1m). Lowered only by tests.
    #[arg(long, default_value = "1m", value_parser = parse_duration, hide = true)]
    pub min_deregister_after: std::time::Duration,
}

#[derive(Args, Debug)]
pub(crate) struct SidecarArgs {
    /// The service this sidecar stands for; its identity is this service's.
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// The instance it stands beside (default: the service name).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Where the app listens.
    #[arg(long, value_name = "ADDR")]
    pub app: SocketAddr,
    /// What the app speaks: http (HTTP/1.1, HTTP/2, gRPC) or tcp.
    #[arg(long, default_value = "http", value_name = "PROTOCOL")]
    pub protocol: wharf_proxy::sidecar::Protocol,
    /// strict (mTLS only) or permissive (plaintext too, counted, for a move to mTLS).
    #[arg(long, default_value = "strict", value_name = "MODE")]
    pub mode: wharf_proxy::sidecar::Mode,
    /// Where other sidecars reach this one, over mTLS.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub inbound: SocketAddr,
    /// Where the app sends its calls (plain HTTP, by Host); "none" for no outbound side.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub outbound: String,
    /// `/ready` and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub admin: SocketAddr,
    /// The registry.
    #[arg(
        long,
        env = "WHARF_REGISTRY",
        default_value = "http://127.0.0.1:8500",
        value_name = "URL"
    )]
    pub registry: String,
    /// A TCP upstream: a local listener at ADDR whose connections reach NAME over mTLS
    /// (repeatable; for apps that do not speak HTTP).
    #[arg(long = "upstream", value_name = "NAME=ADDR", value_parser = wharf_proxy::sidecar::upstreams::parse_upstream)]
    pub upstreams: Vec<(String, SocketAddr)>,
    /// Threads serving traffic: 1 (the default) is one event loop, as a sidecar beside one
    /// instance needs; more share the work between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256), value_name = "N")]
    pub threads: u16,
    /// Log every request, in and out, as a JSON line to PATH (`-`: standard output).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The registry (Wharf or Consul) that the proxy learns endpoints from.
    #[arg(
        long,
        env = "WHARF_REGISTRY",
        default_value = "http://127.0.0.1:8500",
        value_name = "URL"
    )]
    pub registry: String,
    /// Load-balancing policy: round-robin, weighted, least-request, p2c-ewma or ring-hash.
    #[arg(long, default_value = "round-robin", value_parser = parse_policy)]
    pub balance: wharf_proxy::Policy,
    /// A service with fixed addresses, NAME=ADDR[,ADDR...]; repeat for more.
    #[arg(long = "upstream", value_name = "NAME=ADDR", value_parser = parse_upstream)]
    pub upstreams: Vec<(String, Vec<SocketAddr>)>,
    /// Admin listener: /ready and /metrics.
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
    pub admin: SocketAddr,
    /// Deadline of a request, retries included.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Deadline of one attempt.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub try_timeout: std::time::Duration,
    /// Requests in flight per service before new ones are refused with 503.
    #[arg(long, default_value_t = 10_000)]
    pub max_concurrency: usize,
    /// A client must send a whole request head within this long, or get 408.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Threads serving clients, each with its own event loop; 0 = one per available core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Log every request as a JSON line to PATH (`-`: standard output).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// Golden metrics by route class (method and first path segment) for every service, not
    /// only for those whose instances' meta says `wharf-routes = "on"`.
    #[arg(long)]
    pub routes: bool,
}

fn parse_default_intention(text: &str) -> Result<wharf_mesh::intentions::DefaultAction, String> {
    match text {
        "allow" => Ok(wharf_mesh::intentions::DefaultAction::Allow),
        "deny" => Ok(wharf_mesh::intentions::DefaultAction::Deny),
        other => Err(format!("expected allow or deny, not {other:?}")),
    }
}

pub(crate) fn parse_acl_default(text: &str) -> Result<wharf_registry::acl::DefaultPolicy, String> {
    match text {
        "allow" => Ok(wharf_registry::acl::DefaultPolicy::Allow),
        "deny" => Ok(wharf_registry::acl::DefaultPolicy::Deny),
        other => Err(format!("expected allow or deny, not {other:?}")),
    }
}

fn parse_policy(text: &str) -> Result<wharf_proxy::Policy, String> {
    text.parse()
}

fn parse_upstream(text: &str) -> Result<(String, Vec<SocketAddr>), String> {
    let (name, addrs) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=ADDR[,ADDR...]"))?;
    let addrs = addrs
        .split(',')
        .map(|a| {
            a.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{a:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if name.is_empty() || addrs.is_empty() {
        return Err(format!("{text:?}: expected NAME=ADDR[,ADDR...]"));
    }
    Ok((name.to_owned(), addrs))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    wharf_model::parse_go_duration(text).map_err(|e| e.to_string())
}

/// Where client commands find the registry.
#[derive(Args, Debug, Clone)]
pub(crate) struct RegistryUrl {
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
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub registry: RegistryUrl,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct InstancesArgs {
    /// Service name.
    pub name: String,
    /// Only instances whose checks all pass.
    #[arg(long)]
    pub passing: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Args, Debug)]
pub(crate) struct RegisterArgs {
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
pub(crate) struct DeregisterArgs {
    /// Instance id.
    pub id: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct ScaleArgs {
    /// NAME=N
    #[arg(value_parser = parse_scale)]
    pub target: (String, u32),
    #[command(flatten)]
    pub registry: RegistryUrl,
}

#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
    /// The manifest.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "wharf.toml",
        value_name = "FILE"
    )]
    pub file: std::path::PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Registry HTTP address (default: the manifest's `[registry] http`).
    #[arg(long = "registry", env = "WHARF_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RestartArgs {
    /// Service name.
    pub name: String,
    #[command(flatten)]
    pub registry: RegistryUrl,
}

fn parse_scale(text: &str) -> Result<(String, u32), String> {
    let (name, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=N"))?;
    let count = count
        .parse::<u32>()
        .map_err(|_| format!("{text:?}: N must be a number from 0 to 64"))?;
    if name.is_empty() || count > 64 {
        return Err(format!("{text:?}: expected NAME=N with N from 0 to 64"));
    }
    Ok((name.to_owned(), count))
}

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Service name.
    pub name: String,
    /// Stop after this many changes (default: follow until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    #[command(flatten)]
    pub list: ListArgs,
}
