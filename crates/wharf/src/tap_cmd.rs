//! `wharf tap SERVICE`: one line per request to SERVICE, live, from every proxy that sees
//! them: the callers' gateways and sidecars (their outbound side) and SERVICE's own sidecars
//! (their inbound side), found through the registry's `/v1/wharf/proxies` and read from each
//! one's admin `/tap` (a stream of JSON lines, sampled by the proxy when the rate is high).
//! Proxies that start reporting later are picked up as they appear.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use wharf_client::Method;

use crate::cli::TapArgs;

#[derive(Debug, Deserialize)]
struct ProxyEntry {
    proxy: String,
    caller: String,
    admin: Option<String>,
    #[serde(default)]
    services: Vec<String>,
}

/// How often the registry is asked for proxies that began reporting since.
const LOOK_AGAIN: Duration = Duration::from_secs(2);

pub(crate) async fn run(args: TapArgs) -> anyhow::Result<()> {
    let client = crate::client_cmds::client(&args.registry)?;
    let service = args.service.to_ascii_lowercase();
    let (lines, mut printed) = mpsc::channel::<(String, String)>(1024);
    let mut tapped = BTreeSet::new();
    let mut told_none = false;
    let mut look = tokio::time::interval(LOOK_AGAIN);
    loop {
        tokio::select! {
            _ = look.tick() => {
                let proxies: Vec<ProxyEntry> = serde_json::from_value(
                    client.call_json(Method::GET, "/v1/wharf/proxies", None).await?,
                )?;
                for proxy in proxies {
                    let sees = proxy.caller == service || proxy.services.contains(&service);
                    let Some(admin) = proxy.admin.filter(|_| sees) else { continue };
                    if tapped.insert(admin.clone()) {
                        eprintln!("wharf tap: {service} through {} ({admin})", proxy.proxy);
                        tokio::spawn(follow(admin, service.clone(), args.rate, lines.clone()));
                    }
                }
                if tapped.is_empty() && !told_none {
                    eprintln!("wharf tap: no proxy reports traffic to {service} yet; waiting");
                    told_none = true;
                }
            }
            Some((admin, line)) = printed.recv() => {
                if args.json {
                    println!("{line}");
                } else if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    println!("{}", render(&value, &admin, args.rate));
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Reads one proxy's tap until it ends; each line is passed on with the proxy's address.
async fn follow(admin: String, service: String, rate: u32, lines: mpsc::Sender<(String, String)>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!(
        "http://{admin}/tap?service={}&rate={rate}",
        wharf_client::encode(&service)
    );
    let Ok(uri) = uri.parse::<hyper::Uri>() else {
        return;
    };
    let mut body = match client.get(uri).await {
        Ok(response) if response.status().is_success() => response.into_body(),
        Ok(response) => {
            eprintln!("wharf tap: {admin} answered {}", response.status());
            return;
        }
        Err(e) => {
            eprintln!("wharf tap: cannot reach {admin}: {e}");
            return;
        }
    };
    let mut pending = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]).into_owned();
            if lines.send((admin.clone(), text)).await.is_err() {
                return;
            }
        }
    }
    eprintln!("wharf tap: {admin} closed its tap");
}

/// One request for people: when, which way, who called, the request, its answer and time,
/// and who answered.
fn render(line: &Value, admin: &str, rate: u32) -> String {
    if let Some(skipped) = line["skipped"].as_u64() {
        return format!("… {skipped} more at {admin} not shown (sampled at {rate}/s)");
    }
    let text = |key: &str| line[key].as_str().unwrap_or("-").to_owned();
    let time = text("time");
    let clock = time.get(11..23).unwrap_or(&time);
    let answered_by = match (line["instance"].as_str(), line["upstream"].as_str()) {
        (Some(instance), Some(upstream)) => format!("  {instance} {upstream}"),
        _ => String::new(),
    };
    let error = line["error"]
        .as_str()
        .map(|e| format!("  x-wharf-error: {e}"))
        .unwrap_or_default();
    format!(
        "{clock}  {:<8} {} → {}  {} {}  {}  {:.2} ms{answered_by}{error}",
        text("direction"),
        text("caller"),
        text("authority"),
        text("method"),
        text("path"),
        line["status"],
        line["latency_ms"].as_f64().unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_as_one_request() {
        let line = serde_json::json!({
            "time": "2026-12-01T21:30:00.123Z", "direction": "outbound", "caller": "gateway",
            "method": "GET", "authority": "hello", "path": "/x", "status": 200,
            "latency_ms": 1.5, "instance": "hello-1", "upstream": "127.0.0.1:5000"
        });
        assert_eq!(
            render(&line, "a", 100),
            "21:30:00.123  outbound gateway → hello  GET /x  200  1.50 ms  hello-1 127.0.0.1:5000"
        );
        let skipped = serde_json::json!({"skipped": 7});
        assert_eq!(
            render(&skipped, "127.0.0.1:9", 100),
            "… 7 more at 127.0.0.1:9 not shown (sampled at 100/s)"
        );
    }
}
