//! `wharf stat [SERVICE] [--json]`: the mesh's golden metrics once, from the registry's
//! `/v1/wharf/stats`: a row per service (or, for one service, per instance).

use serde_json::Value;
use wharf_client::Method;

use crate::cli::StatArgs;
use crate::{BadInput, table};

fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{:.2}%", v * 100.0))
}

pub(crate) async fn run(args: StatArgs) -> anyhow::Result<()> {
    let stats = crate::client_cmds::client(&args.registry)?
        .call_json(Method::GET, "/v1/wharf/stats", None)
        .await?;
    let services = stats["services"].as_array().cloned().unwrap_or_default();
    if let Some(name) = &args.service {
        let wanted = name.to_ascii_lowercase();
        let service = services
            .iter()
            .find(|s| s["name"] == wanted.as_str())
            .ok_or_else(|| BadInput(format!("no service {name:?} in the registry")))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(service)?);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = service["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                vec![
                    i["id"].as_str().unwrap_or("").to_owned(),
                    i["address"].as_str().unwrap_or("").to_owned(),
                    number(&i["minute"]["rps"], 1),
                    percent(&i["failure_rate"]),
                    i["in_flight"].to_string(),
                ]
            })
            .collect();
        table::print(
            &["INSTANCE", "ADDRESS", "RPS", "FAILURES", "IN FLIGHT"],
            &rows,
        );
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let minute = &s["minute"];
            let health = &s["health"];
            vec![
                s["name"].as_str().unwrap_or("").to_owned(),
                format!(
                    "{}/{}",
                    health["passing"],
                    health["passing"].as_u64().unwrap_or(0)
                        + health["warning"].as_u64().unwrap_or(0)
                        + health["critical"].as_u64().unwrap_or(0)
                ),
                number(&minute["rps"], 1),
                percent(&minute["success_rate"]),
                number(&minute["latency_ms"]["p50"], 1),
                number(&minute["latency_ms"]["p99"], 1),
                number(&s["models"]["mean_load"], 1),
                number(&s["models"]["imbalance"], 2),
                percent(&s["models"]["mean_failure_rate"]),
            ]
        })
        .collect();
    table::print(
        &[
            "SERVICE",
            "PASSING",
            "RPS",
            "SUCCESS",
            "P50 MS",
            "P99 MS",
            "L",
            "IMBALANCE",
            "F",
        ],
        &rows,
    );
    Ok(())
}
