//! `wharf stat [SERVICE] [--json]`: the mesh's golden metrics once, from the registry's
//! `/v1/wharf/stats`: a row per service, or for one service a row per instance and per edge
//! to or from it. `--json` prints the registry's answer as it came.

use serde_json::Value;
use wharf_client::Method;

use crate::cli::StatArgs;
use crate::stats_answer::{Edge, StatsAnswer, number, percent};
use crate::{BadInput, table};

pub(crate) async fn run(args: StatArgs) -> anyhow::Result<()> {
    let raw = crate::client_cmds::client(&args.registry)?
        .call_json(Method::GET, "/v1/wharf/stats", None)
        .await?;
    let stats: StatsAnswer = serde_json::from_value(raw.clone())?;
    let Some(name) = &args.service else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&raw)?);
        } else {
            print_services(&stats);
        }
        return Ok(());
    };
    let wanted = name.to_ascii_lowercase();
    let position = stats
        .services
        .iter()
        .position(|s| s.name == wanted)
        .ok_or_else(|| BadInput(format!("no service {name:?} in the registry")))?;
    if args.json {
        let one = raw["services"].get(position).unwrap_or(&Value::Null);
        println!("{}", serde_json::to_string_pretty(one)?);
        return Ok(());
    }
    let service = &stats.services[position];
    if let Some(desired) = &service.desired {
        println!(
            "{}: {} passing, desired {}",
            service.name,
            service.health.passing,
            desired.short()
        );
        if let Some(d) = &desired.last_decision {
            println!(
                "last autoscale: {} -> {} ({}): load {:.1}, {:.1} per passing instance ({}), target {}",
                d.from, d.to, d.mode, d.load, d.per_instance, d.ready, d.target
            );
        }
        println!();
    }
    let rows: Vec<Vec<String>> = service
        .instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.address.clone(),
                number(Some(i.minute.rps), 1),
                percent(Some(i.failure_rate)),
                i.in_flight.to_string(),
                number(i.minute.latency_ms.p99, 1),
            ]
        })
        .collect();
    table::print(
        &[
            "INSTANCE",
            "ADDRESS",
            "RPS",
            "FAILURES",
            "IN FLIGHT",
            "P99 MS",
        ],
        &rows,
    );
    if !service.routes.is_empty() {
        let rows: Vec<Vec<String>> = service
            .routes
            .iter()
            .map(|r| {
                vec![
                    r.route.clone(),
                    number(Some(r.minute.rps), 1),
                    percent(r.minute.success()),
                    number(r.minute.latency_ms.p50, 1),
                    number(r.minute.latency_ms.p99, 1),
                ]
            })
            .collect();
        println!();
        table::print(&["ROUTE", "RPS", "SUCCESS", "P50 MS", "P99 MS"], &rows);
    }
    if !service.subsets.is_empty() {
        let rows: Vec<Vec<String>> = service
            .subsets
            .iter()
            .map(|s| {
                vec![
                    s.subset.clone(),
                    number(Some(s.minute.rps), 1),
                    percent(s.minute.success()),
                    number(s.minute.latency_ms.p50, 1),
                    number(s.minute.latency_ms.p99, 1),
                ]
            })
            .collect();
        println!();
        table::print(&["SUBSET", "RPS", "SUCCESS", "P50 MS", "P99 MS"], &rows);
    }
    let edges: Vec<&Edge> = stats
        .edges
        .iter()
        .filter(|e| e.source == wanted || e.destination == wanted)
        .collect();
    if !edges.is_empty() {
        println!();
        print_edges(&edges);
    }
    Ok(())
}

fn print_services(stats: &StatsAnswer) {
    let rows: Vec<Vec<String>> = stats
        .services
        .iter()
        .map(|s| {
            let m = &s.minute;
            vec![
                s.name.clone(),
                format!("{}/{}", s.health.passing, s.health.instances()),
                s.desired
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |d| d.short()),
                s.health.sidecars.to_string(),
                number(Some(m.rps), 1),
                percent(m.success()),
                number(m.latency_ms.p50, 1),
                number(m.latency_ms.p95, 1),
                number(m.latency_ms.p99, 1),
                number(s.models.mean_load, 1),
                number(s.models.imbalance, 2),
                percent(s.models.mean_failure_rate),
            ]
        })
        .collect();
    table::print(
        &[
            "SERVICE",
            "PASSING",
            "DESIRED",
            "SIDECARS",
            "RPS",
            "SUCCESS",
            "P50 MS",
            "P95 MS",
            "P99 MS",
            "L",
            "IMBALANCE",
            "F",
        ],
        &rows,
    );
}

fn print_edges(edges: &[&Edge]) {
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            vec![
                e.source.clone(),
                e.destination.clone(),
                number(Some(e.minute.rps), 1),
                percent(e.minute.success()),
                number(e.minute.latency_ms.p99, 1),
                if e.mtls { "mTLS" } else { "plaintext" }.to_owned(),
                e.intention.clone(),
            ]
        })
        .collect();
    table::print(
        &[
            "FROM",
            "TO",
            "RPS",
            "SUCCESS",
            "P99 MS",
            "TRANSPORT",
            "INTENTION",
        ],
        &rows,
    );
}
