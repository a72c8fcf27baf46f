//! `wharf mesh status`: each sidecar's inbound side — strict or permissive, its connections
//! by kind and the plaintext callers it has seen — so that moving a service to strict mTLS
//! is decided by measurement: a permissive sidecar that has taken plaintext would refuse
//! those callers once strict (exit 2 then, as `wharf intention check` exits on a denial).
//! The figures come from each sidecar's admin listener (`/inbound`), found through the
//! `wharf-admin` meta of its registration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wharf_client::{Client, ServiceEntry};
use wharf_proxy::sidecar::admin::InboundReport;
use wharf_proxy::sidecar::{ADMIN_META, SIDECAR_SUFFIX};

use crate::cli::MeshStatusArgs;
use crate::table;

/// How long one sidecar may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// `wharf mesh status` found a permissive sidecar that has taken plaintext: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("strict mTLS would refuse callers of {0}")]
pub(crate) struct WouldRefuse(pub String);

/// One sidecar as the command reports it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct SidecarStatus {
    service: String,
    instance: String,
    /// What the sidecar said (`None`: it could not be asked, see `error`).
    inbound: Option<InboundReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    verdict: String,
    /// Whether switching this sidecar to strict would refuse a caller it has seen.
    would_refuse: bool,
}

pub(crate) async fn status(args: MeshStatusArgs) -> anyhow::Result<()> {
    let registry = Client::new(&args.registry.url)?;
    let services = registry.services().await?;
    let mut sidecars = Vec::new();
    for name in services
        .keys()
        .filter(|name| name.ends_with(SIDECAR_SUFFIX))
    {
        let (entries, _) = registry.health_service(name, false, None).await?;
        for entry in entries {
            let service = served(&entry).to_owned();
            if args
                .service
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&service))
            {
                sidecars.push(ask(entry, service).await);
            }
        }
    }
    sidecars.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sidecars)?);
    } else if sidecars.is_empty() {
        println!("no sidecars registered");
    } else {
        let rows: Vec<Vec<String>> = sidecars
            .iter()
            .map(|s| {
                let count = |f: fn(&InboundReport) -> u64| {
                    s.inbound.as_ref().map_or("-".into(), |r| f(r).to_string())
                };
                vec![
                    s.service.clone(),
                    s.instance.clone(),
                    s.inbound.as_ref().map_or("-".into(), |r| r.mode.clone()),
                    count(|r| r.mtls_connections),
                    count(|r| r.plaintext_connections),
                    s.verdict.clone(),
                ]
            })
            .collect();
        table::print(
            &["SERVICE", "INSTANCE", "MODE", "MTLS", "PLAINTEXT", "STRICT"],
            &rows,
        );
    }
    let refusing: Vec<&str> = sidecars
        .iter()
        .filter(|s| s.would_refuse)
        .map(|s| s.instance.as_str())
        .collect();
    if refusing.is_empty() {
        Ok(())
    } else {
        Err(WouldRefuse(refusing.join(", ")).into())
    }
}

/// The service a sidecar's registration stands for.
fn served(entry: &ServiceEntry) -> &str {
    entry
        .service
        .meta
        .get("wharf-sidecar-for")
        .map(String::as_str)
        .or_else(|| entry.service.service.strip_suffix(SIDECAR_SUFFIX))
        .unwrap_or(&entry.service.service)
}

async fn ask(entry: ServiceEntry, service: String) -> SidecarStatus {
    let instance = entry
        .service
        .meta
        .get("wharf-instance")
        .cloned()
        .unwrap_or_else(|| entry.service.id.clone());
    let failed = |error: String| SidecarStatus {
        service: service.clone(),
        instance: instance.clone(),
        inbound: None,
        verdict: format!("unknown: {error}"),
        error: Some(error),
        would_refuse: false,
    };
    let Some(admin) = entry.service.meta.get(ADMIN_META) else {
        return failed("the sidecar has no admin listener".into());
    };
    let report = match Client::new(&format!("http://{admin}")) {
        Ok(client) => {
            tokio::time::timeout(ASK_TIMEOUT, client.read::<InboundReport>("/inbound", None)).await
        }
        Err(e) => return failed(e.to_string()),
    };
    let report = match report {
        Ok(Ok((report, _))) => report,
        Ok(Err(e)) => return failed(format!("its admin listener at {admin}: {e}")),
        Err(_) => {
            return failed(format!(
                "its admin listener at {admin} did not answer in time"
            ));
        }
    };
    let (verdict, would_refuse) = verdict(&report, now());
    SidecarStatus {
        service,
        instance,
        inbound: Some(report),
        error: None,
        verdict,
        would_refuse,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What switching to strict would do, in words, and whether it would refuse anyone.
fn verdict(report: &InboundReport, now: u64) -> (String, bool) {
    if report.mode == "strict" {
        return ("strict already".into(), false);
    }
    let since = ago(now.saturating_sub(report.since));
    if report.plaintext_connections == 0 {
        return (
            format!("safe: only mTLS callers in the last {since} (since the sidecar started)"),
            false,
        );
    }
    let mut callers: Vec<String> = report
        .plaintext_callers
        .iter()
        .take(3)
        .map(|c| {
            format!(
                "{} ({} connections, last {} ago)",
                c.address,
                c.connections,
                ago(now.saturating_sub(c.last_seen))
            )
        })
        .collect();
    let more = report.plaintext_callers.len().saturating_sub(3) as u64 + report.plaintext_others;
    if more > 0 {
        callers.push(format!("and {more} more"));
    }
    (
        format!(
            "would refuse {} plaintext connections in the last {since}: {}",
            report.plaintext_connections,
            callers.join(", ")
        ),
        true,
    )
}

/// `90` as `1m30s`, for people.
fn ago(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        _ => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_proxy::sidecar::admin::PlaintextCaller;

    fn report(mode: &str, plaintext: u64, callers: usize) -> InboundReport {
        InboundReport {
            service: "api".into(),
            mode: mode.into(),
            since: 1_000,
            mtls_connections: 7,
            plaintext_connections: plaintext,
            plaintext_callers: (0..callers)
                .map(|i| PlaintextCaller {
                    address: std::net::Ipv4Addr::new(10, 0, 0, i as u8).into(),
                    connections: 2,
                    last_seen: 1_090,
                })
                .collect(),
            plaintext_others: 0,
        }
    }

    #[test]
    fn a_permissive_sidecar_with_plaintext_callers_would_refuse_them() {
        let (text, refuse) = verdict(&report("permissive", 10, 5), 1_100);
        assert!(refuse);
        assert_eq!(
            text,
            "would refuse 10 plaintext connections in the last 1m40s: 10.0.0.0 (2 connections, \
             last 10s ago), 10.0.0.1 (2 connections, last 10s ago), 10.0.0.2 (2 connections, \
             last 10s ago), and 2 more"
        );
    }

    #[test]
    fn only_mtls_is_safe_and_strict_is_strict() {
        let (text, refuse) = verdict(&report("permissive", 0, 0), 4_600);
        assert!(!refuse);
        assert_eq!(
            text,
            "safe: only mTLS callers in the last 1h0m (since the sidecar started)"
        );
        assert_eq!(
            verdict(&report("strict", 0, 0), 1_100),
            ("strict already".into(), false)
        );
    }
}
