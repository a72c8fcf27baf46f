//! The client commands: `services`, `instances`, `register`, `deregister`, `watch`.

use std::io::Read;

use anyhow::Context;
use serde_json::{Map, Value, json};
use wharf_client::{Change, Client};

use crate::cli::{
    DeregisterArgs, InstancesArgs, ListArgs, RegisterArgs, RegistryUrl, RestartArgs, ScaleArgs,
    WatchArgs,
};
use crate::{BadInput, table};

fn client(registry: &RegistryUrl) -> anyhow::Result<Client> {
    Ok(Client::new(&registry.url)?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) async fn services(args: ListArgs) -> anyhow::Result<()> {
    let services = client(&args.registry)?.services().await?;
    if args.json {
        return print_json(&services);
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|(name, tags)| vec![name.clone(), tags.join(",")])
        .collect();
    table::print(&["SERVICE", "TAGS"], &rows);
    Ok(())
}

pub(crate) async fn instances(args: InstancesArgs) -> anyhow::Result<()> {
    let (entries, _) = client(&args.list.registry)?
        .health_service(&args.name, args.passing, None)
        .await?;
    if args.list.json {
        let out: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.service.id,
                    "service": e.service.service,
                    "address": e.address(),
                    "port": e.service.port,
                    "tags": e.service.tags,
                    "status": e.aggregate_status(),
                    "restarts": e.service.meta.get("wharf-restarts").and_then(|r| r.parse::<u64>().ok()),
                    "checks": e.checks.iter().map(|c| json!({
                        "id": c.check_id, "type": c.kind, "status": c.status, "output": c.output,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&out);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.service.id.clone(),
                format!("{}:{}", e.address(), e.service.port),
                e.aggregate_status().to_owned(),
                e.service
                    .meta
                    .get("wharf-restarts")
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
                e.service.tags.join(","),
            ]
        })
        .collect();
    table::print(&["ID", "ADDRESS", "STATUS", "RESTARTS", "TAGS"], &rows);
    Ok(())
}

pub(crate) async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => read_body(path)?,
        None => registration_from_flags(&args)?,
    };
    let client = client(&args.registry)?;
    client.register(&body).await?;
    let id = body
        .get("ID")
        .or(body.get("Name"))
        .and_then(Value::as_str)
        .unwrap_or("(from file)");
    println!("registered {id}");
    Ok(())
}

fn read_body(path: &std::path::Path) -> anyhow::Result<Value> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    serde_json::from_str(&text)
        .map_err(|e| BadInput(format!("{}: not JSON: {e}", path.display())).into())
}

fn registration_from_flags(args: &RegisterArgs) -> anyhow::Result<Value> {
    let name = args.name.clone().unwrap_or_default();
    let mut body = Map::new();
    body.insert("Name".into(), json!(name));
    if let Some(id) = &args.id {
        body.insert("ID".into(), json!(id));
    }
    if let Some(address) = &args.address {
        body.insert("Address".into(), json!(address));
    }
    if let Some(port) = args.port {
        body.insert("Port".into(), json!(port));
    }
    if !args.tags.is_empty() {
        body.insert("Tags".into(), json!(args.tags));
    }
    if !args.meta.is_empty() {
        let mut meta = Map::new();
        for pair in &args.meta {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| BadInput(format!("--meta {pair:?}: expected KEY=VALUE")))?;
            meta.insert(k.into(), json!(v));
        }
        body.insert("Meta".into(), Value::Object(meta));
    }
    let mut check = Map::new();
    if let Some(url) = &args.http_check {
        check.insert("HTTP".into(), json!(url));
    } else if let Some(address) = &args.tcp_check {
        check.insert("TCP".into(), json!(address));
    } else if let Some(ttl) = &args.ttl {
        check.insert("TTL".into(), json!(ttl));
    }
    if !check.is_empty() {
        if args.ttl.is_none() {
            check.insert("Interval".into(), json!(args.interval));
        }
        if let Some(timeout) = &args.timeout {
            check.insert("Timeout".into(), json!(timeout));
        }
        if let Some(after) = &args.deregister_after {
            check.insert("DeregisterCriticalServiceAfter".into(), json!(after));
        }
        body.insert("Check".into(), Value::Object(check));
    }
    Ok(Value::Object(body))
}

pub(crate) async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let (name, replicas) = args.target;
    client(&args.registry)?.scale(&name, replicas).await?;
    println!("scaled {name} to {replicas}");
    Ok(())
}

pub(crate) async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    client(&args.registry)?.restart(&args.name).await?;
    println!("rolling restart of {} requested", args.name);
    Ok(())
}

pub(crate) async fn deregister(args: DeregisterArgs) -> anyhow::Result<()> {
    client(&args.registry)?.deregister(&args.id).await?;
    println!("deregistered {}", args.id);
    Ok(())
}

pub(crate) async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let client = client(&args.list.registry)?;
    let mut watch = client.watch(&args.name);
    let mut seen = 0;
    while args.count.is_none_or(|limit| seen < limit) {
        let change = match watch.next().await {
            Ok(change) => change,
            Err(e) => {
                eprintln!("wharf: watch of {}: {e}; retrying", args.name);
                continue;
            }
        };
        seen += 1;
        if args.list.json {
            let line = match &change {
                Change::Reset(endpoints) => {
                    json!({"reset": endpoints.iter().map(endpoint_json).collect::<Vec<_>>()})
                }
                Change::Add(e) => json!({"add": endpoint_json(e)}),
                Change::Remove(id) => json!({"remove": id}),
            };
            println!("{line}");
        } else {
            match &change {
                Change::Reset(endpoints) => {
                    let list: Vec<String> = endpoints
                        .iter()
                        .map(|e| format!("{} {}:{}", e.id, e.address, e.port))
                        .collect();
                    println!("reset  [{}]", list.join(", "));
                }
                Change::Add(e) => println!("add    {} {}:{}", e.id, e.address, e.port),
                Change::Remove(id) => println!("remove {id}"),
            }
        }
    }
    Ok(())
}

fn endpoint_json(e: &wharf_client::Endpoint) -> Value {
    json!({"id": e.id, "address": e.address, "port": e.port, "tags": e.tags})
}
