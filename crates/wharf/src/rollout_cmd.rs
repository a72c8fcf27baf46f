//! `wharf rollout status|promote|abort SERVICE`: a canary as `wharf apply` rolls it out. The
//! status is read from what the proxies split by (`/v1/wharf/traffic`) and the subsets' golden
//! metrics (`/v1/wharf/stats`); promote and abort are orders through the service's desired
//! state, which its supervisor follows.

use wharf_client::Method;
use wharf_model::traffic::{MILLION, TrafficView};

use crate::cli::{RolloutArgs, RolloutCommand};
use crate::client_cmds::client;
use crate::stats_answer::{StatsAnswer, number, percent};
use crate::table;

pub(crate) async fn run(command: RolloutCommand) -> anyhow::Result<()> {
    match command {
        RolloutCommand::Status(args) => status(args).await,
        RolloutCommand::Promote(args) => order(args, "promote").await,
        RolloutCommand::Abort(args) => order(args, "abort").await,
    }
}

async fn order(args: RolloutArgs, order: &str) -> anyhow::Result<()> {
    client(&args.registry)?
        .rollout(&args.service, order)
        .await?;
    let done = match order {
        "promote" => "promotion",
        _ => "rollback",
    };
    println!(
        "{done} of {}'s canary ordered (a service with no canary running ignores it)",
        args.service
    );
    Ok(())
}

async fn status(args: RolloutArgs) -> anyhow::Result<()> {
    let client = client(&args.registry)?;
    let name = args.service.to_ascii_lowercase();
    let traffic: std::collections::BTreeMap<String, TrafficView> = serde_json::from_value(
        client
            .call_json(Method::GET, "/v1/wharf/traffic", None)
            .await?,
    )?;
    let Some(view) = traffic.get(&name) else {
        println!("{name}: no split, no rollout in progress");
        return Ok(());
    };
    let stats: StatsAnswer = serde_json::from_value(
        client
            .call_json(Method::GET, "/v1/wharf/stats", None)
            .await?,
    )?;
    let subsets = stats
        .services
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.subsets.clone())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = view
        .splits
        .iter()
        .map(|share| {
            let figures = subsets.iter().find(|s| s.subset == share.subset);
            let minute = figures.map(|s| &s.minute);
            vec![
                share.subset.clone(),
                format!("{}%", f64::from(share.ppm) * 100.0 / f64::from(MILLION)),
                number(minute.map(|m| m.rps), 1),
                percent(minute.and_then(|m| m.success())),
                number(minute.and_then(|m| m.latency_ms.p50), 1),
                number(minute.and_then(|m| m.latency_ms.p99), 1),
                view.subsets.get(&share.subset).cloned().unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &[
            "SUBSET", "WEIGHT", "RPS", "SUCCESS", "P50 MS", "P99 MS", "FILTER",
        ],
        &rows,
    );
    Ok(())
}
