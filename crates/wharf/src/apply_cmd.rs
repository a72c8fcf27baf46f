//! `wharf apply [-f wharf.toml] [--dry-run]`: makes the running mesh what the manifest says.
//! The manifest is checked here first (a refusal names the file, line and reason, and nothing
//! is sent); the `wharf up` that runs it plans the change against what it runs and prints
//! the plan, then carries it out and says how each service's step went.

use anyhow::Context;
use wharf_client::{Client, Credentials, encode};
use wharf_registry::deploy::Deployed;

use crate::BadInput;
use crate::cli::ApplyArgs;
use crate::manifest::{Manifest, Source};

pub(crate) async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let (manifest, source) = Manifest::load(&args.file).map_err(|e| BadInput(e.to_string()))?;
    let url = args.registry.unwrap_or_else(|| registry_of(&manifest));
    let mut credentials = Credentials::from_env();
    if credentials.ca_file.is_none() {
        credentials.ca_file = manifest.tls.as_ref().map(|tls| tls.ca.clone());
    }
    let client = Client::connect(&url, &credentials)?;
    let file = args.file.display();

    let planned = send(&client, &source, true).await?;
    if planned.plan.is_empty() && planned.not_applied.is_empty() {
        println!("wharf apply: {file}: nothing to change");
        return Ok(());
    }
    let heading = match args.dry_run {
        true => "plan (dry run: nothing changed)",
        false => "plan",
    };
    println!("wharf apply: {file}: {heading}");
    print_plan(&planned);
    if args.dry_run || planned.plan.is_empty() {
        return Ok(());
    }

    let done = send(&client, &source, false).await?;
    if done.plan != planned.plan {
        println!("wharf apply: the mesh changed meanwhile; carried out instead:");
        print_plan(&done);
    }
    let mut failed = 0;
    for outcome in &done.outcomes {
        if outcome.ok {
            println!("wharf apply: {}: {}", outcome.service, outcome.detail);
        } else {
            failed += 1;
            println!(
                "wharf apply: {}: not applied: {}",
                outcome.service, outcome.detail
            );
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} steps not applied", done.outcomes.len());
    }
    println!("wharf apply: applied");
    Ok(())
}

/// The manifest's own registry, on loopback when it listens on every address.
fn registry_of(manifest: &Manifest) -> String {
    let mut addr = manifest.registry_http;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if manifest.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

async fn send(client: &Client, source: &Source, dry_run: bool) -> anyhow::Result<Deployed> {
    let mut path = format!(
        "/v1/wharf/apply?path={}",
        encode(&source.path.display().to_string())
    );
    if dry_run {
        path.push_str("&dry-run");
    }
    let answer = client
        .call_bytes(
            wharf_client::Method::PUT,
            &path,
            source.text.clone().into_bytes(),
        )
        .await?;
    serde_json::from_slice(&answer).context("the registry's answer to the apply")
}

fn print_plan(deployed: &Deployed) {
    for line in &deployed.plan {
        println!("  {line}");
    }
    for what in &deployed.not_applied {
        println!("  not applied until wharf up starts again: {what}");
    }
}
