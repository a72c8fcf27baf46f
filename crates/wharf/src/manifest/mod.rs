//! `wharf.toml`: the manifest of `wharf up`, read and checked before anything starts.
//!
//! Every refusal names the file, the line and the reason: unknown keys, wrong types, a
//! negative or absurd replica count, a command that cannot be found, an unknown balancing
//! policy, a check that does not parse, autoscale settings that do not hold together
//! ([`autoscale`]). TOML itself refuses duplicate service names.

mod autoscale;
mod rollout;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use wharf_supervisor::{CheckSpec, ServiceSpec};

/// Most replicas of one service on one machine.
const MAX_REPLICAS: u32 = 64;

/// A manifest, validated.
#[derive(Debug)]
pub(crate) struct Manifest {
    pub registry_http: SocketAddr,
    pub registry_dns: SocketAddr,
    pub data_dir: PathBuf,
    /// `embedded`, or `etcd://HOST:PORT[,...]`.
    pub store: String,
    pub etcd_prefix: String,
    pub etcd_tls: crate::registry_cmd::EtcdTlsFiles,
    /// This registry node's name, when the manifest gives one.
    pub node: Option<String>,
    /// This host's address for the other hosts of the mesh: the node's address, and where
    /// sidecars take mTLS from them.
    pub advertise: Option<std::net::IpAddr>,
    pub domain: String,
    pub http_limits: wharf_registry::HttpLimits,
    /// `[registry] tls = { cert, key, ca, dns }`: TLS on the API (and DNS over TLS).
    pub tls: Option<TlsFiles>,
    /// `[registry] acl = { enabled, default_policy }`: tokens on the API.
    pub acl: wharf_registry::acl::AclConfig,
    pub gateway_listen: SocketAddr,
    pub gateway_admin: SocketAddr,
    /// `[gateway] access_log`: a file (relative to the manifest) or `-` for standard output.
    pub gateway_access_log: Option<PathBuf>,
    /// `[mesh] access_log`: the sidecars' requests, in and out.
    pub mesh_access_log: Option<PathBuf>,
    pub balance: wharf_proxy::Policy,
    pub services: Vec<ServiceSpec>,
    /// `[mesh]`: mTLS between sidecars, and the CA's and intentions' settings.
    pub mtls: bool,
    pub mesh: wharf_registry::connect::MeshConfig,
    /// Per service, what its sidecars need to know.
    pub sidecars: BTreeMap<String, SidecarSpec>,
    /// `[intentions]`: `"SOURCE -> DESTINATION" = "allow" | "deny"`.
    pub intentions: Vec<wharf_mesh::intentions::Intention>,
}

/// The registry's TLS: its certificate chain and key, the CA that `wharf up`'s own parts
/// check it with, and whether DNS over TCP becomes DNS over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub dns: bool,
}

/// What a service's sidecars need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SidecarSpec {
    /// What the service speaks.
    pub protocol: wharf_proxy::sidecar::Protocol,
    /// Its inbound mode: the service's `mode`, else `[mesh] mode`, else strict.
    pub mode: wharf_proxy::sidecar::Mode,
    /// The services its instances reach over TCP (lower-cased).
    pub upstreams: Vec<String>,
    /// The service's `wharf-` meta (its proxies' settings, `wharf-routes` say), which the
    /// sidecars register with too: with mTLS on, callers discover the sidecars.
    pub meta: BTreeMap<String, String>,
}

/// A manifest's file as read: its absolute path and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Why a manifest was refused: `file:line: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub(crate) struct ManifestError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    registry: RawRegistry,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawService>,
    #[serde(default)]
    mesh: RawMesh,
    #[serde(default)]
    intentions: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    #[serde(default)]
    mtls: bool,
    mode: Option<Spanned<String>>,
    leaf_ttl: Option<Spanned<String>>,
    default_intention: Option<Spanned<String>>,
    access_log: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    http: Option<SocketAddr>,
    dns: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    /// `embedded` (default) or `etcd://HOST:PORT[,...]` (`etcds://` for TLS).
    store: Option<Spanned<String>>,
    etcd_prefix: Option<Spanned<String>>,
    /// For `etcds://`: PEM files, relative to the manifest.
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    /// This registry node's name (default: the host's).
    node: Option<String>,
    /// This host's address for the other hosts (default: loopback).
    advertise: Option<std::net::IpAddr>,
    domain: Option<String>,
    http_max_conns_per_client: Option<Spanned<i64>>,
    http_read_timeout: Option<Spanned<String>>,
    acl: Option<RawAcl>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    /// The CA of `cert`: `wharf up`'s own parts (supervisor, gateway, sidecars) call the API
    /// over TLS and check it with this.
    ca: Option<PathBuf>,
    /// DNS over TCP answers over TLS (RFC 7858) with the same certificate.
    #[serde(default)]
    dns: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    #[serde(default)]
    enabled: bool,
    /// `allow` (Consul's default) or `deny`.
    default_policy: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    balance: Option<Spanned<String>>,
    access_log: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    /// Services its instances reach over TCP, each through a local listener of its sidecar
    /// (`WHARF_UPSTREAM_<NAME>` in their environment).
    upstreams: Option<Spanned<Vec<String>>>,
    command: Spanned<Vec<String>>,
    replicas: Option<Spanned<i64>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Service meta its instances register with: `wharf-balance`, `wharf-hash-header`,
    /// `wharf-routes = "on"` (golden metrics by route class at the proxies).
    #[serde(default)]
    meta: BTreeMap<String, String>,
    check: Option<Spanned<RawCheck>>,
    /// What the service speaks, for its sidecar: `http` (default) or `tcp`.
    protocol: Option<Spanned<String>>,
    /// Its sidecar's inbound mode: `strict` or `permissive` (default: `[mesh] mode`).
    mode: Option<Spanned<String>>,
    /// Scaled on load between bounds: `{ min, max, target_concurrency | target_rps, ... }`.
    autoscale: Option<autoscale::RawAutoscale>,
    /// Changes rolled out as a canary: `{ canary = [1, 10, 50, 100], step, ... }`.
    rollout: Option<rollout::RawRollout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    http: Option<String>,
    tcp: Option<bool>,
    interval: Option<String>,
    timeout: Option<String>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`. What it names relative to itself (commands'
    /// working directory, data directory, files) is resolved against its absolute path, so
    /// that the same file read from anywhere is the same manifest (`wharf apply` compares
    /// it with what `wharf up` runs); refusals name the file as given.
    pub(crate) fn load(path: &Path) -> Result<(Manifest, Source), ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: path.display().to_string(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let manifest = Manifest::parse_named(&text, &absolute, &path.display().to_string())?;
        Ok((
            manifest,
            Source {
                path: absolute,
                text,
            },
        ))
    }

    pub(crate) fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse_named(text, path, &path.display().to_string())
    }

    /// [`Manifest::parse`], naming the file `file` in refusals.
    pub(crate) fn parse_named(
        text: &str,
        path: &Path,
        file: &str,
    ) -> Result<Manifest, ManifestError> {
        let file = file.to_owned();
        let error = |span: Option<Range<usize>>, reason: String| ManifestError {
            file: file.clone(),
            line: span.map_or(1, |s| line_of(text, s.start)),
            reason,
        };
        let raw: Raw =
            toml::from_str(text).map_err(|e| error(e.span(), e.message().trim().to_owned()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();

        let balance = match &raw.gateway.balance {
            None => wharf_proxy::Policy::RoundRobin,
            Some(policy) => policy
                .get_ref()
                .parse()
                .map_err(|e: String| error(Some(policy.span()), e))?,
        };
        let store = match &raw.registry.store {
            None => "embedded".to_owned(),
            Some(store) if store.get_ref() == "embedded" => "embedded".to_owned(),
            Some(store) => {
                wharf_store::etcd::parse_url(store.get_ref())
                    .map_err(|e| error(Some(store.span()), format!("registry store: {e}")))?;
                store.get_ref().clone()
            }
        };
        let etcd_prefix = match &raw.registry.etcd_prefix {
            None => "/wharf/".to_owned(),
            Some(prefix)
                if prefix.get_ref().starts_with('/') && prefix.get_ref().ends_with('/') =>
            {
                prefix.get_ref().clone()
            }
            Some(prefix) => {
                return Err(error(
                    Some(prefix.span()),
                    format!(
                        "registry etcd_prefix {:?}: a prefix starts and ends with /",
                        prefix.get_ref()
                    ),
                ));
            }
        };
        let mut http_limits = wharf_registry::HttpLimits::default();
        if let Some(limit) = &raw.registry.http_max_conns_per_client {
            let value = *limit.get_ref();
            http_limits.max_conns_per_client = usize::try_from(value).map_err(|_| {
                error(
                    Some(limit.span()),
                    format!("registry http_max_conns_per_client must be 0 or more, not {value}"),
                )
            })?;
        }
        if let Some(timeout) = &raw.registry.http_read_timeout {
            http_limits.read_timeout = wharf_model::parse_go_duration(timeout.get_ref())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    error(
                        Some(timeout.span()),
                        format!(
                            "registry http_read_timeout must be a duration above zero such as \"30s\", not {:?}",
                            timeout.get_ref()
                        ),
                    )
                })?;
        }
        let mut mesh = wharf_registry::connect::MeshConfig::default();
        if let Some(ttl) = &raw.mesh.leaf_ttl {
            mesh.leaf_ttl = wharf_model::parse_go_duration(ttl.get_ref())
                .ok()
                .filter(|d| d.as_secs() >= 1)
                .ok_or_else(|| {
                    error(
                        Some(ttl.span()),
                        format!(
                            "mesh leaf_ttl must be a duration of a second or more such as \"72h\", not {:?}",
                            ttl.get_ref()
                        ),
                    )
                })?;
        }
        if let Some(default) = &raw.mesh.default_intention {
            mesh.default_intention = match default.get_ref().as_str() {
                "allow" => wharf_mesh::intentions::DefaultAction::Allow,
                "deny" => wharf_mesh::intentions::DefaultAction::Deny,
                other => {
                    return Err(error(
                        Some(default.span()),
                        format!(
                            "mesh default_intention must be \"allow\" or \"deny\", not {other:?}"
                        ),
                    ));
                }
            };
        }
        let mesh_mode = match &raw.mesh.mode {
            None => wharf_proxy::sidecar::Mode::Strict,
            Some(mode) => mode
                .get_ref()
                .parse()
                .map_err(|e: String| error(Some(mode.span()), format!("mesh mode: {e}")))?,
        };
        let mut intentions = Vec::new();
        for (pair, action) in &raw.intentions {
            let (source, destination) = pair
                .get_ref()
                .split_once("->")
                .map(|(s, d)| (s.trim(), d.trim()))
                .ok_or_else(|| {
                    error(
                        Some(pair.span()),
                        format!(
                            "intention {:?}: write it as \"SOURCE -> DESTINATION\" (a service name or *)",
                            pair.get_ref()
                        ),
                    )
                })?;
            let action = match action.get_ref().as_str() {
                "allow" => wharf_mesh::intentions::Action::Allow,
                "deny" => wharf_mesh::intentions::Action::Deny,
                other => {
                    return Err(error(
                        Some(action.span()),
                        format!(
                            "intention {:?}: \"allow\" or \"deny\", not {other:?}",
                            pair.get_ref()
                        ),
                    ));
                }
            };
            let mut intention = wharf_mesh::intentions::Intention::new(source, destination, action);
            intention.validate().map_err(|e| {
                error(
                    Some(pair.span()),
                    format!("intention {:?}: {e}", pair.get_ref()),
                )
            })?;
            intentions.push(intention);
        }
        let mut services = Vec::new();
        let mut sidecars = BTreeMap::new();
        for (name, service) in raw.services {
            let span = name.span();
            let name = name.into_inner();
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(error(
                    Some(span),
                    format!(
                        "service name {name:?}: use lower-case letters, digits and '-' (it becomes a host and DNS name)"
                    ),
                ));
            }
            let command_span = service.command.span();
            let command = service.command.into_inner();
            if command.is_empty() || command[0].is_empty() {
                return Err(error(
                    Some(command_span),
                    format!("service {name}: command is empty"),
                ));
            }
            if !command_exists(&command[0], &dir) {
                return Err(error(
                    Some(command_span),
                    format!("service {name}: command {:?} not found", command[0]),
                ));
            }
            let autoscale = match &service.autoscale {
                None => None,
                Some(raw) => Some(
                    raw.check(&name, MAX_REPLICAS)
                        .map_err(|(span, reason)| error(span, reason))?,
                ),
            };
            let rollout = match &service.rollout {
                None => None,
                Some(raw) => Some(
                    raw.check(&name)
                        .map_err(|(span, reason)| error(span, reason))?,
                ),
            };
            let replicas = match &service.replicas {
                // An autoscaled service starts with its least.
                None => autoscale.map_or(1, |a| a.min),
                Some(count) => {
                    let value = *count.get_ref();
                    let replicas = u32::try_from(value).ok().filter(|n| *n <= MAX_REPLICAS).ok_or_else(|| {
                        error(Some(count.span()), format!("service {name}: replicas must be between 0 and {MAX_REPLICAS}, not {value}"))
                    })?;
                    if let Some(a) = autoscale
                        && !(a.min..=a.max).contains(&replicas)
                    {
                        return Err(error(
                            Some(count.span()),
                            format!(
                                "service {name}: replicas ({replicas}) must be within autoscale's min ({}) and max ({})",
                                a.min, a.max
                            ),
                        ));
                    }
                    replicas
                }
            };
            let check = match service.check {
                None => CheckSpec::Tcp {
                    interval: "1s".into(),
                    timeout: "1s".into(),
                },
                Some(check) => {
                    let span = check.span();
                    let check = check.into_inner();
                    let interval = check.interval.unwrap_or_else(|| "1s".into());
                    let timeout = check.timeout.unwrap_or_else(|| "1s".into());
                    for (what, value) in [("interval", &interval), ("timeout", &timeout)] {
                        wharf_model::parse_go_duration(value).map_err(|e| {
                            error(
                                Some(span.clone()),
                                format!("service {name}: check {what}: {e}"),
                            )
                        })?;
                    }
                    match (check.http, check.tcp) {
                        (Some(path), None | Some(false)) if path.starts_with('/') => {
                            CheckSpec::Http {
                                path,
                                interval,
                                timeout,
                            }
                        }
                        (Some(path), _) if !path.starts_with('/') => {
                            return Err(error(
                                Some(span),
                                format!(
                                    "service {name}: check http must be a path starting with '/', not {path:?}"
                                ),
                            ));
                        }
                        (None, _) => CheckSpec::Tcp { interval, timeout },
                        _ => {
                            return Err(error(
                                Some(span),
                                format!("service {name}: a check is either http or tcp"),
                            ));
                        }
                    }
                }
            };
            let protocol = match &service.protocol {
                None => wharf_proxy::sidecar::Protocol::Http,
                Some(p) => p
                    .get_ref()
                    .parse()
                    .map_err(|e: String| error(Some(p.span()), format!("service {name}: {e}")))?,
            };
            let mode = match &service.mode {
                None => mesh_mode,
                Some(m) => m
                    .get_ref()
                    .parse()
                    .map_err(|e: String| error(Some(m.span()), format!("service {name}: {e}")))?,
            };
            let mut upstreams: Vec<String> = Vec::new();
            if let Some(listed) = &service.upstreams {
                for upstream in listed.get_ref() {
                    wharf_mesh::identity::check_name(upstream).map_err(|e| {
                        error(
                            Some(listed.span()),
                            format!("service {name}: upstream {upstream:?}: {e}"),
                        )
                    })?;
                    let upstream = upstream.to_ascii_lowercase();
                    if upstreams.contains(&upstream) {
                        return Err(error(
                            Some(listed.span()),
                            format!("service {name}: upstream {upstream:?} is listed twice"),
                        ));
                    }
                    upstreams.push(upstream);
                }
            }
            sidecars.insert(
                name.clone(),
                SidecarSpec {
                    protocol,
                    mode,
                    upstreams,
                    meta: service
                        .meta
                        .iter()
                        .filter(|(key, _)| key.starts_with("wharf-"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            );
            services.push(ServiceSpec {
                name,
                command,
                replicas,
                env: service.env,
                meta: service.meta,
                check,
                dir: dir.clone(),
                autoscale,
                rollout,
            });
        }
        let acl = match &raw.registry.acl {
            None => wharf_registry::acl::AclConfig::default(),
            Some(acl) => wharf_registry::acl::AclConfig {
                enabled: acl.enabled,
                default_policy: match &acl.default_policy {
                    None => wharf_registry::acl::DefaultPolicy::Allow,
                    Some(p) => crate::cli::parse_acl_default(p.get_ref()).map_err(|e| {
                        error(Some(p.span()), format!("registry.acl.default_policy: {e}"))
                    })?,
                },
            },
        };
        let tls = match &raw.registry.tls {
            None => None,
            Some(tls) => {
                let ca = tls.get_ref().ca.as_ref().ok_or_else(|| {
                    error(
                        Some(tls.span()),
                        "registry.tls: ca is needed (the CA of cert): wharf up's own parts \
                         call the API over TLS and check its certificate with it"
                            .to_owned(),
                    )
                })?;
                Some(TlsFiles {
                    cert: dir.join(&tls.get_ref().cert),
                    key: dir.join(&tls.get_ref().key),
                    ca: dir.join(ca),
                    dns: tls.get_ref().dns,
                })
            }
        };
        Ok(Manifest {
            tls,
            acl,
            mtls: raw.mesh.mtls,
            sidecars,
            mesh,
            intentions,
            registry_http: raw
                .registry
                .http
                .unwrap_or_else(|| ([127, 0, 0, 1], 8500).into()),
            registry_dns: raw
                .registry
                .dns
                .unwrap_or_else(|| ([127, 0, 0, 1], 8600).into()),
            data_dir: raw
                .registry
                .data_dir
                .map_or_else(|| dir.join(".wharf"), |d| dir.join(d)),
            store,
            etcd_prefix,
            etcd_tls: crate::registry_cmd::EtcdTlsFiles {
                ca: raw.registry.etcd_ca.as_ref().map(|p| dir.join(p)),
                cert: raw.registry.etcd_cert.as_ref().map(|p| dir.join(p)),
                key: raw.registry.etcd_key.as_ref().map(|p| dir.join(p)),
            },
            node: raw.registry.node.clone(),
            advertise: raw.registry.advertise,
            domain: raw.registry.domain.unwrap_or_else(|| "wharf".into()),
            http_limits,
            gateway_listen: raw
                .gateway
                .listen
                .unwrap_or_else(|| ([127, 0, 0, 1], 8080).into()),
            gateway_admin: raw
                .gateway
                .admin
                .unwrap_or_else(|| ([127, 0, 0, 1], 9901).into()),
            gateway_access_log: raw.gateway.access_log.as_deref().map(|p| log_path(&dir, p)),
            mesh_access_log: raw.mesh.access_log.as_deref().map(|p| log_path(&dir, p)),
            balance,
            services,
        })
    }
}

/// An access log's path: `-` (standard output) as it is, a file relative to the manifest.
fn log_path(dir: &std::path::Path, path: &std::path::Path) -> PathBuf {
    if path == std::path::Path::new("-") {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// A command with a `/` is a path (relative to the manifest's directory); otherwise it is
/// looked up on `PATH`.
fn command_exists(command: &str, dir: &Path) -> bool {
    if command.contains('/') {
        return dir.join(command).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(command).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("wharf.toml"))
    }

    #[test]
    fn reads_the_design_example() {
        let manifest = parse(
            r#"
[registry]
http = "127.0.0.1:8500"

[gateway]
listen = "127.0.0.1:8080"
balance = "least-request"

[services.hello]
command = ["sh", "-c", "exec sleep 1"]
replicas = 3
check = { http = "/healthz", interval = "1s", timeout = "500ms" }

[services.api]
command = ["python3", "api.py"]
replicas = 2
env = { GREETING = "hi" }
"#,
        )
        .unwrap();
        assert_eq!(manifest.balance, wharf_proxy::Policy::LeastRequest);
        let hello = manifest
            .services
            .iter()
            .find(|s| s.name == "hello")
            .unwrap();
        assert_eq!(hello.replicas, 3);
        assert_eq!(
            hello.check,
            CheckSpec::Http {
                path: "/healthz".into(),
                interval: "1s".into(),
                timeout: "500ms".into()
            }
        );
        let api = manifest.services.iter().find(|s| s.name == "api").unwrap();
        assert_eq!(api.env["GREETING"], "hi");
        assert!(matches!(api.check, CheckSpec::Tcp { .. }));
    }

    #[test]
    fn access_logs_are_files_beside_the_manifest_or_standard_output() {
        let text = "[gateway]\naccess_log = \"-\"\n[mesh]\naccess_log = \"logs/mesh.log\"\n";
        let manifest = Manifest::parse(text, Path::new("/srv/app/wharf.toml")).unwrap();
        assert_eq!(manifest.gateway_access_log, Some(PathBuf::from("-")));
        assert_eq!(
            manifest.mesh_access_log,
            Some(PathBuf::from("/srv/app/logs/mesh.log"))
        );
        let plain = Manifest::parse("", Path::new("wharf.toml")).unwrap();
        assert_eq!(
            (plain.gateway_access_log, plain.mesh_access_log),
            (None, None)
        );
    }

    #[test]
    fn autoscale_settings_are_read_with_the_hpa_s_defaults() {
        let text = "[services.web]\ncommand = [\"sh\"]\nautoscale = { min = 2, max = 10, target_concurrency = 10 }\n\
                    [services.api]\ncommand = [\"sh\"]\nreplicas = 3\nautoscale = { max = 5, target_rps = 100, scale_down_delay = \"30s\", tolerance = 0.2 }\n";
        let manifest = parse(text).unwrap();
        let web = manifest.services.iter().find(|s| s.name == "web").unwrap();
        let autoscale = web.autoscale.unwrap();
        assert_eq!(web.replicas, 2, "starts with its least");
        assert_eq!((autoscale.min, autoscale.max), (2, 10));
        assert_eq!(
            autoscale.target,
            wharf_supervisor::Target::Concurrency(10.0)
        );
        assert_eq!(autoscale.scale_down_delay, Duration::from_secs(300));
        assert!((autoscale.tolerance - 0.1).abs() < 1e-9);
        let api = manifest.services.iter().find(|s| s.name == "api").unwrap();
        let autoscale = api.autoscale.unwrap();
        assert_eq!((api.replicas, autoscale.min), (3, 1));
        assert_eq!(autoscale.target, wharf_supervisor::Target::Rps(100.0));
        assert_eq!(autoscale.scale_down_delay, Duration::from_secs(30));
    }

    #[test]
    fn a_rollout_strategy_is_read_with_its_defaults() {
        let manifest = parse(
            "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [1, 10, 50, 100], max_p99 = \"500ms\" }\n",
        )
        .unwrap();
        let rollout = manifest.services[0].rollout.clone().expect("a rollout");
        assert_eq!(rollout.weights, [1.0, 10.0, 50.0, 100.0]);
        assert_eq!(rollout.step, std::time::Duration::from_secs(60));
        assert_eq!(rollout.max_failure_rate, 0.01);
        assert_eq!(rollout.max_p99, Some(std::time::Duration::from_millis(500)));
    }

    #[test]
    fn a_service_s_meta_goes_to_its_instances() {
        let text = "[services.web]\ncommand = [\"sh\"]\nmeta = { wharf-routes = \"on\", team = \"core\" }\n";
        let manifest = Manifest::parse(text, Path::new("wharf.toml")).unwrap();
        let web = &manifest.services[0];
        assert_eq!(web.meta["wharf-routes"], "on");
        assert_eq!(web.meta["team"], "core");
    }

    #[test]
    fn the_mesh_and_its_intentions_are_read() {
        let text = "[mesh]\nmtls = true\nleaf_ttl = \"1h\"\ndefault_intention = \"deny\"\n[intentions]\n\"gateway -> frontend\" = \"allow\"\n\"* -> db\" = \"deny\"\n";
        let manifest = Manifest::parse(text, Path::new("wharf.toml")).unwrap();
        assert!(manifest.mtls);
        assert_eq!(manifest.mesh.leaf_ttl, std::time::Duration::from_secs(3600));
        assert_eq!(
            manifest.mesh.default_intention,
            wharf_mesh::intentions::DefaultAction::Deny
        );
        let pairs: Vec<(&str, &str, u32)> = manifest
            .intentions
            .iter()
            .map(|i| {
                (
                    i.source_name.as_str(),
                    i.destination_name.as_str(),
                    i.precedence,
                )
            })
            .collect();
        assert_eq!(pairs, [("*", "db", 8), ("gateway", "frontend", 9)]);
        let plain = Manifest::parse("", Path::new("wharf.toml")).unwrap();
        assert!(!plain.mtls && plain.intentions.is_empty());
    }

    #[test]
    fn registry_limits_default_to_consuls_and_can_be_set() {
        let manifest = parse("").unwrap();
        assert_eq!(manifest.http_limits.max_conns_per_client, 200);
        assert_eq!(manifest.http_limits.read_timeout, Duration::from_secs(30));
        let manifest =
            parse("[registry]\nhttp_max_conns_per_client = 0\nhttp_read_timeout = \"2m\"\n")
                .unwrap();
        assert_eq!(manifest.http_limits.max_conns_per_client, 0);
        assert_eq!(manifest.http_limits.read_timeout, Duration::from_secs(120));
    }

    #[test]
    fn refusals_name_the_line_and_the_reason() {
        let cases = [
            (
                "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [1, 10], stride = \"1m\" }\n",
                3,
                "unknown field `stride`",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [10, 5, 100] }\n",
                3,
                "canary weights must rise",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [1, 150] }\n",
                3,
                "at most 100",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [50], step = \"soon\" }\n",
                3,
                "step must be a duration",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nrollout = { canary = [50], max_failure_rate = 2 }\n",
                3,
                "max_failure_rate must be",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nreplcas = 2\n",
                3,
                "unknown field `replcas`",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nreplicas = -1\n",
                3,
                "between 0 and 64",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nreplicas = \"three\"\n",
                3,
                "invalid type",
            ),
            (
                "[services.a]\ncommand = [\"no-such-command-anywhere\"]\n",
                2,
                "not found",
            ),
            ("[services.a]\ncommand = []\n", 2, "command is empty"),
            (
                "[services.a]\ncommand = [\"sh\"]\n[services.a]\ncommand = [\"sh\"]\n",
                3,
                "duplicate",
            ),
            (
                "[gateway]\nbalance = \"fastest\"\n",
                2,
                "unknown balancing policy",
            ),
            (
                "[mesh]\nmtls = true\nleaf_ttl = \"soon\"\n",
                3,
                "mesh leaf_ttl must be a duration",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nprotocol = \"udp\"\n",
                3,
                "expected http or tcp",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nupstreams = [\"db\", \"DB\"]\n",
                3,
                "listed twice",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nupstreams = [\"d b\"]\n",
                3,
                "upstream \"d b\"",
            ),
            (
                "[registry]\nstore = \"etcd:/127.0.0.1:2379\"\n",
                2,
                "registry store",
            ),
            (
                "[registry]\netcd_prefix = \"wharf\"\n",
                2,
                "starts and ends with /",
            ),
            (
                "[mesh]\nmode = \"lenient\"\n",
                2,
                "expected strict or permissive",
            ),
            (
                "[mesh]\ndefault_intention = \"maybe\"\n",
                2,
                "\"allow\" or \"deny\"",
            ),
            (
                "[intentions]\n\"web to db\" = \"allow\"\n",
                2,
                "SOURCE -> DESTINATION",
            ),
            (
                "[intentions]\n\"web -> db\" = \"perhaps\"\n",
                2,
                "not \"perhaps\"",
            ),
            (
                "[intentions]\n\"we_b -> db\" = \"allow\"\n",
                2,
                "SourceName",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\ncheck = { http = \"/\", interval = \"often\" }\n",
                3,
                "invalid duration",
            ),
            ("[services.Bad_Name]\ncommand = [\"sh\"]\n", 1, "lower-case"),
            ("[services.a]\n", 1, "missing field `command`"),
            (
                "[registry]\nhttp = \"not an address\"\n",
                2,
                "invalid socket address",
            ),
            (
                "[registry]\ndns = \"127.0.0.1:8600\"\nhttp_max_conns_per_client = -5\n",
                3,
                "must be 0 or more",
            ),
            ("[registry]\nhttp_read_timeout = \"0s\"\n", 2, "above zero"),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { min = 5, max = 2, target_concurrency = 10 }\n",
                3,
                "min (5) is more than max (2)",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4, target_concurrency = 0 }\n",
                3,
                "target_concurrency must be above 0",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4 }\n",
                3,
                "needs a target",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4, target_rps = 5, target_concurrency = 2 }\n",
                3,
                "not both",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4, target_rps = 5, cooldown = \"1m\" }\n",
                3,
                "unknown field `cooldown`",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 400, target_rps = 5 }\n",
                3,
                "max must be between 0 and 64",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4, target_rps = 5, scale_down_delay = \"soon\" }\n",
                3,
                "scale_down_delay",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { max = 4, target_rps = 5, tolerance = 1.5 }\n",
                3,
                "tolerance must be from 0 to below 1",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nreplicas = 9\nautoscale = { max = 4, target_rps = 5 }\n",
                3,
                "within autoscale's min (1) and max (4)",
            ),
            (
                "[services.a]\ncommand = [\"sh\"]\nautoscale = { min = 0, max = 0, target_rps = 5 }\n",
                3,
                "max must be at least 1",
            ),
        ];
        for (text, line, reason) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(reason), "{text}: {err}");
            assert!(
                err.to_string().starts_with(&format!("wharf.toml:{line}: ")),
                "{err}"
            );
        }
    }
}
