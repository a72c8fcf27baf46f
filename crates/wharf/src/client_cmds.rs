//! The client commands: `services`, `instances`, `register`, `deregister`, `watch`.

use std::io::Read;

use anyhow::Context;
use serde_json::{Value, json};
use wharf_client::{Change, CheckRegistration, Client, Registration};

use crate::cli::{
    DeregisterArgs, InstancesArgs, IntentionCommand, ListArgs, RegisterArgs, RegistryUrl,
    RestartArgs, ScaleArgs, WatchArgs,
};
use crate::{BadInput, table};

pub(crate) fn client(registry: &RegistryUrl) -> anyhow::Result<Client> {
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
    let client = client(&args.registry)?;
    let id = match &args.file {
        Some(path) => {
            let body = read_body(path)?;
            client.register_json(&body).await?;
            body.get("ID")
                .or(body.get("Name"))
                .and_then(Value::as_str)
                .unwrap_or("(from file)")
                .to_owned()
        }
        None => {
            let registration = registration_from_flags(&args)?;
            client.register(&registration).await?;
            registration.id.unwrap_or(registration.name)
        }
    };
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

fn registration_from_flags(args: &RegisterArgs) -> anyhow::Result<Registration> {
    let meta = args
        .meta
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| BadInput(format!("--meta {pair:?}: expected KEY=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    let mut check = CheckRegistration {
        http: args.http_check.clone(),
        tcp: args
            .http_check
            .is_none()
            .then(|| args.tcp_check.clone())
            .flatten(),
        ttl: (args.http_check.is_none() && args.tcp_check.is_none())
            .then(|| args.ttl.clone())
            .flatten(),
        ..CheckRegistration::default()
    };
    let has_check = check.http.is_some() || check.tcp.is_some() || check.ttl.is_some();
    if has_check {
        if args.ttl.is_none() {
            check.interval = Some(args.interval.clone());
        }
        check.timeout = args.timeout.clone();
        check.deregister_critical_service_after = args.deregister_after.clone();
    }
    Ok(Registration {
        name: args.name.clone().unwrap_or_default(),
        id: args.id.clone(),
        address: args.address.clone(),
        port: args.port,
        tags: args.tags.clone(),
        meta,
        check: has_check.then_some(check),
        ..Registration::default()
    })
}

pub(crate) async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let (name, replicas) = args.target;
    let set = client(&args.registry)?.scale(&name, replicas).await?;
    if set == replicas {
        println!("scaled {name} to {replicas}");
    } else {
        println!("scaled {name} to {set} (asked {replicas}: its autoscale bounds allow {set})");
    }
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

/// `wharf intention ...`.
pub(crate) async fn intention(command: IntentionCommand) -> anyhow::Result<()> {
    match command {
        IntentionCommand::Create(args) => {
            let action = if args.deny { "deny" } else { "allow" };
            let pair = &args.pair;
            client(&pair.registry)?
                .upsert_intention(&pair.source, &pair.destination, action, &args.description)
                .await?;
            println!("{} => {} ({action})", pair.source, pair.destination);
        }
        IntentionCommand::Delete(args) => {
            client(&args.registry)?
                .delete_intention(&args.source, &args.destination)
                .await?;
            println!("deleted {} => {}", args.source, args.destination);
        }
        IntentionCommand::Check(args) => {
            let allowed = client(&args.registry)?
                .check_intention(&args.source, &args.destination)
                .await?;
            if !allowed {
                println!("Denied");
                return Err(crate::Denied.into());
            }
            println!("Allowed");
        }
        IntentionCommand::List(args) => {
            let all = client(&args.registry)?.intentions().await?;
            if args.json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|i| {
                    let text = |key: &str| i[key].as_str().unwrap_or("").to_owned();
                    let action = i["Action"]
                        .as_str()
                        .map_or_else(|| "L7".to_owned(), str::to_owned);
                    vec![
                        text("SourceName"),
                        text("DestinationName"),
                        action,
                        i["Precedence"].to_string(),
                        text("Description"),
                    ]
                })
                .collect();
            table::print(
                &[
                    "SOURCE",
                    "DESTINATION",
                    "ACTION",
                    "PRECEDENCE",
                    "DESCRIPTION",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

pub(crate) async fn maint(args: crate::cli::MaintArgs) -> anyhow::Result<()> {
    let enable = !args.disable;
    let reason = args.reason.unwrap_or_default();
    client(&args.registry)?
        .maintenance(args.service.as_deref(), enable, &reason)
        .await?;
    let what = match &args.service {
        Some(id) => format!("service {id}"),
        None => "the node".to_owned(),
    };
    if enable {
        println!(
            "{what} is in maintenance mode: out of DNS and the proxies until `wharf maint --disable`"
        );
    } else {
        println!("{what} is out of maintenance mode");
    }
    Ok(())
}
