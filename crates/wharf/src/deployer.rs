//! `wharf apply` and `wharf up --watch` inside `wharf up`: a changed manifest, checked by the
//! same code that checked it at the start, compared with what runs, and carried out by the
//! supervisor ([`wharf_supervisor::Plan`]): services started, drained and stopped, rolled
//! onto a changed command, environment, check, meta or sidecar one instance at a time,
//! counts and autoscale settings declared; the manifest's intentions written. What the
//! running process cannot change without starting again (the registry's and gateway's
//! addresses, the store, TLS, ACLs, the mesh's settings) is reported as not applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use wharf_registry::Agent;
use wharf_registry::deploy::{BoxFuture, Deployed, Deployer, Deployment, StepOutcome};
use wharf_supervisor::{Plan, ServiceSpec, Supervisor};

use crate::manifest::{Manifest, SidecarSpec, Source};

/// Each service's sidecar settings, read by the sidecars as instances start; `wharf apply`
/// changes them before rolling the instances that use them.
pub(crate) type SidecarSpecs = Arc<RwLock<BTreeMap<String, SidecarSpec>>>;

/// What `wharf up` runs, and how to change it.
pub(crate) struct Live {
    pub supervisor: Supervisor,
    pub agent: Arc<Agent>,
    /// The gateway's address, which every instance is told.
    pub gateway: SocketAddr,
    /// With mTLS on, the sidecars' settings per service.
    pub sidecars: Option<SidecarSpecs>,
    /// Per service, the count its manifest lists (for `wharf up`'s progress line).
    pub listed: Arc<RwLock<BTreeMap<String, u32>>>,
    /// The manifest as it was last applied (its services, sidecars and intentions; the rest
    /// as `wharf up` started with it).
    pub running: tokio::sync::Mutex<Manifest>,
}

impl Live {
    /// Plans `source` against what runs and, unless `dry_run`, carries the plan out,
    /// answering once every step is done. A manifest that does not validate is refused with
    /// its `file:line: reason` and changes nothing.
    pub(crate) async fn deploy(&self, source: Source, dry_run: bool) -> Result<Deployed, String> {
        let new = Manifest::parse(&source.text, &source.path).map_err(|e| e.to_string())?;
        let listed = prepare(&new, self.gateway).map_err(|e| format!("{e:#}"))?;
        let mut running = self.running.lock().await;
        let mut plan = Plan::between(&self.supervisor.running().await, &listed);
        if self.sidecars.is_some() {
            for spec in &listed {
                let (before, after) = (
                    running.sidecars.get(&spec.name),
                    new.sidecars.get(&spec.name),
                );
                if before.is_some() && before != after {
                    plan.replace_also(&spec.name, "sidecar settings", spec);
                }
            }
        }
        let intentions = intention_changes(&running.intentions, &new.intentions);
        let mut deployed = Deployed {
            dry_run,
            plan: plan.lines().into_iter().chain(intentions.clone()).collect(),
            not_applied: restart_needed(&running, &new),
            outcomes: Vec::new(),
        };
        if dry_run || deployed.plan.is_empty() {
            return Ok(deployed);
        }
        println!("wharf up: applying {}", source.path.display());
        for line in &deployed.plan {
            println!("wharf up:   {line}");
        }
        for what in &deployed.not_applied {
            println!("wharf up:   not applied until wharf up starts again: {what}");
        }
        create_data_dirs(&new).map_err(|e| format!("{e:#}"))?;
        if let Some(sidecars) = &self.sidecars {
            *sidecars.write().expect("sidecar settings") = new.sidecars.clone();
        }
        if !intentions.is_empty() {
            apply_intentions(&self.agent, &new.intentions)
                .await
                .map_err(|e| format!("cannot write the intentions: {e:#}"))?;
        }
        for outcome in self.supervisor.apply(plan).await {
            let (ok, detail) = match outcome.result {
                Ok(detail) => (true, detail),
                Err(detail) => (false, detail),
            };
            let verdict = if ok { "" } else { "not applied: " };
            println!("wharf up: {}: {verdict}{detail}", outcome.service);
            deployed.outcomes.push(StepOutcome {
                service: outcome.service,
                ok,
                detail,
            });
        }
        *self.listed.write().expect("listed services") = new
            .services
            .iter()
            .map(|s| (s.name.clone(), s.replicas))
            .collect();
        running.services = new.services;
        running.sidecars = new.sidecars;
        running.intentions = new.intentions;
        Ok(deployed)
    }
}

/// The supervisor's specs for a manifest's services: every instance reaches the others
/// through the gateway, keeps its data in its service's folder under the data directory,
/// and with TLS on the API has the CA that `WHARF_REGISTRY` is checked with. The same
/// manifest always makes the same specs, so that an apply of it changes nothing.
pub(crate) fn prepare(
    manifest: &Manifest,
    gateway: SocketAddr,
) -> anyhow::Result<Vec<ServiceSpec>> {
    let data =
        std::fs::canonicalize(&manifest.data_dir).unwrap_or_else(|_| manifest.data_dir.clone());
    let mut services = manifest.services.clone();
    for service in &mut services {
        service.dir = std::fs::canonicalize(&service.dir).with_context(|| {
            format!(
                "service {}: cannot find {}",
                service.name,
                service.dir.display()
            )
        })?;
        let mut defaults = vec![
            ("WHARF_GATEWAY", format!("http://{gateway}")),
            (
                "WHARF_DATA",
                data.join("services")
                    .join(&service.name)
                    .display()
                    .to_string(),
            ),
        ];
        if let Some(tls) = &manifest.tls {
            defaults.push(("WHARF_CACERT", tls.ca.display().to_string()));
            defaults.push(("CONSUL_CACERT", tls.ca.display().to_string()));
        }
        for (name, value) in defaults {
            service.env.entry(name.to_owned()).or_insert(value);
        }
    }
    Ok(services)
}

/// Each service's data folder (`WHARF_DATA`).
pub(crate) fn create_data_dirs(manifest: &Manifest) -> anyhow::Result<()> {
    for service in &manifest.services {
        let data = manifest.data_dir.join("services").join(&service.name);
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
    }
    Ok(())
}

/// What changed in the manifest that only a new `wharf up` takes up.
fn restart_needed(old: &Manifest, new: &Manifest) -> Vec<String> {
    let changes = [
        (old.registry_http != new.registry_http, "[registry] http"),
        (old.registry_dns != new.registry_dns, "[registry] dns"),
        (old.data_dir != new.data_dir, "[registry] data_dir"),
        (old.store != new.store, "[registry] store"),
        (old.etcd_prefix != new.etcd_prefix, "[registry] etcd_prefix"),
        (old.etcd_tls != new.etcd_tls, "[registry] etcd TLS files"),
        (old.node != new.node, "[registry] node"),
        (old.advertise != new.advertise, "[registry] advertise"),
        (old.domain != new.domain, "[registry] domain"),
        (old.http_limits != new.http_limits, "[registry] HTTP limits"),
        (old.tls != new.tls, "[registry] tls"),
        (old.acl != new.acl, "[registry] acl"),
        (old.gateway_listen != new.gateway_listen, "[gateway] listen"),
        (old.gateway_admin != new.gateway_admin, "[gateway] admin"),
        (
            old.gateway_access_log != new.gateway_access_log,
            "[gateway] access_log",
        ),
        (old.balance != new.balance, "[gateway] balance"),
        (old.mtls != new.mtls, "[mesh] mtls"),
        (old.mesh != new.mesh, "[mesh] leaf_ttl / default_intention"),
        (
            old.mesh_access_log != new.mesh_access_log,
            "[mesh] access_log",
        ),
    ];
    changes
        .into_iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, what)| what.to_owned())
        .collect()
}

/// The manifest's intentions added, removed and changed, one line each.
fn intention_changes(
    old: &[wharf_mesh::intentions::Intention],
    new: &[wharf_mesh::intentions::Intention],
) -> Vec<String> {
    let key = |i: &wharf_mesh::intentions::Intention| {
        (
            i.source_name.to_ascii_lowercase(),
            i.destination_name.to_ascii_lowercase(),
        )
    };
    let before: BTreeMap<_, _> = old.iter().map(|i| (key(i), i)).collect();
    let after: BTreeMap<_, _> = new.iter().map(|i| (key(i), i)).collect();
    let mut lines = Vec::new();
    for ((source, destination), intention) in &after {
        match before.get(&(source.clone(), destination.clone())) {
            None => lines.push(format!(
                "+ intention {source} -> {destination}: {}",
                action(intention)
            )),
            Some(was) if *was != *intention => lines.push(format!(
                "~ intention {source} -> {destination}: {} -> {}",
                action(was),
                action(intention)
            )),
            Some(_) => {}
        }
    }
    for (source, destination) in before.keys().filter(|k| !after.contains_key(*k)) {
        lines.push(format!("- intention {source} -> {destination}"));
    }
    lines
}

/// `allow`, `deny`, or (an L7 intention) `permissions`.
fn action(intention: &wharf_mesh::intentions::Intention) -> &'static str {
    intention
        .action
        .map_or("permissions", wharf_mesh::intentions::Action::as_str)
}

/// The meta key that marks an intention as the manifest's, with the node whose manifest it
/// came from (so that several hosts' manifests on one store do not undo one another's).
const FROM_MANIFEST: &str = "wharf-manifest";

/// Makes the store's intentions from this node's manifest what the manifest lists: each one
/// written, and those an earlier run of it wrote and it no longer lists deleted. Intentions
/// made any other way (the API, `wharf intention`, another node's manifest) are left alone.
pub(crate) async fn apply_intentions(
    agent: &Agent,
    listed: &[wharf_mesh::intentions::Intention],
) -> anyhow::Result<()> {
    let node = agent.node().name.clone();
    for intention in listed {
        let mut intention = intention.clone();
        intention
            .meta
            .insert(FROM_MANIFEST.to_owned(), node.clone());
        agent.upsert_intention(intention).await?;
    }
    let gone: Vec<(String, String)> = agent
        .intentions()
        .all()
        .iter()
        .filter(|i| i.meta.get(FROM_MANIFEST) == Some(&node))
        .filter(|i| {
            !listed.iter().any(|l| {
                l.source_name.eq_ignore_ascii_case(&i.source_name)
                    && l.destination_name.eq_ignore_ascii_case(&i.destination_name)
            })
        })
        .map(|i| (i.source_name.clone(), i.destination_name.clone()))
        .collect();
    for (source, destination) in gone {
        tracing::info!(%source, %destination, "removing an intention the manifest no longer lists");
        agent.delete_intention(&source, &destination).await?;
    }
    Ok(())
}

/// `wharf up --watch`: applies the manifest each time its file changes (read once a second);
/// a change that does not validate is reported and changes nothing.
pub(crate) async fn watch_file(live: Arc<Live>, mut last: Source) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Ok(text) = std::fs::read_to_string(&last.path) else {
            continue; // being replaced; read again next second
        };
        if text == last.text {
            continue;
        }
        last.text = text;
        if let Err(reason) = live.deploy(last.clone(), false).await {
            println!(
                "wharf up: {} changed but was not applied: {reason}",
                last.path.display()
            );
        }
    }
}

/// Hands the registry's `PUT /v1/wharf/apply` to [`Live`].
pub(crate) struct Attach(pub Arc<Live>);

impl Deployer for Attach {
    fn deploy(&self, deployment: Deployment) -> BoxFuture<Result<Deployed, String>> {
        let live = self.0.clone();
        Box::pin(async move {
            let source = Source {
                path: deployment.path.into(),
                text: deployment.manifest,
            };
            live.deploy(source, deployment.dry_run).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, std::path::Path::new("/tmp/wharf.toml")).expect("a manifest")
    }

    #[test]
    fn addresses_and_security_settings_are_named_as_needing_a_restart() {
        let old = manifest("[services.a]\ncommand = [\"sh\"]\n");
        let new = manifest(
            "[gateway]\nlisten = \"127.0.0.1:9999\"\n[mesh]\nmtls = true\n[services.a]\ncommand = [\"sh\"]\n",
        );
        assert_eq!(
            restart_needed(&old, &new),
            ["[gateway] listen", "[mesh] mtls"]
        );
        assert!(restart_needed(&old, &old).is_empty());
    }

    #[test]
    fn intentions_added_changed_and_removed_are_listed() {
        let old = manifest("[intentions]\n\"a -> b\" = \"allow\"\n\"a -> c\" = \"allow\"\n");
        let new = manifest("[intentions]\n\"a -> b\" = \"deny\"\n\"b -> c\" = \"allow\"\n");
        assert_eq!(
            intention_changes(&old.intentions, &new.intentions),
            [
                "~ intention a -> b: allow -> deny",
                "+ intention b -> c: allow",
                "- intention a -> c"
            ]
        );
    }
}
