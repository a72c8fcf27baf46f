//! `wharf acl ...`: Consul's ACL endpoints as commands (`consul acl` for Wharf): bootstrap,
//! policies and tokens. Each prints what a person needs (a token's secret, a policy's id), or
//! the whole JSON answer with `--json`.

use anyhow::Context;
use serde_json::{Value, json};
use wharf_client::{Method, encode};

use crate::BadInput;
use crate::cli::{AclCommand, AclOutputArgs, AclPolicyCommand, AclTokenCommand};
use crate::client_cmds::client;

/// Prints `value` whole with `--json`, else the `fields` named, one `Name: value` a line.
fn show(value: &Value, output: &AclOutputArgs, fields: &[&str]) -> anyhow::Result<()> {
    if output.json {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    for field in fields {
        let text = match &value[*field] {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i["Name"]
                        .as_str()
                        .or(i["ServiceName"].as_str())
                        .unwrap_or("?")
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        println!("{field}: {text}");
    }
    Ok(())
}

/// Rules given inline, or `@FILE`.
fn rules(text: &str) -> anyhow::Result<String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rules in {path}")),
        None => Ok(text.to_owned()),
    }
}

const TOKEN_FIELDS: &[&str] = &[
    "AccessorID",
    "SecretID",
    "Description",
    "Policies",
    "ServiceIdentities",
    "ExpirationTime",
];
const POLICY_FIELDS: &[&str] = &["ID", "Name", "Description"];

pub(crate) async fn run(command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Bootstrap(output) => {
            let token = client(&output.registry)?
                .call_json(Method::PUT, "/v1/acl/bootstrap", None)
                .await?;
            show(&token, &output, TOKEN_FIELDS)
        }
        AclCommand::Policy(AclPolicyCommand::Create(args)) => {
            let body = json!({
                "Name": args.name,
                "Description": args.description,
                "Rules": rules(&args.rules)?,
            });
            let policy = client(&args.output.registry)?
                .call_json(Method::PUT, "/v1/acl/policy", Some(&body))
                .await?;
            show(&policy, &args.output, POLICY_FIELDS)
        }
        AclCommand::Policy(AclPolicyCommand::List(output)) => {
            let all = client(&output.registry)?
                .call_json(Method::GET, "/v1/acl/policies", None)
                .await?;
            list(&all, &output, POLICY_FIELDS)
        }
        AclCommand::Policy(AclPolicyCommand::Delete(args)) => {
            let client = client(&args.registry)?;
            let policy = client
                .call_json(
                    Method::GET,
                    &format!("/v1/acl/policy/name/{}", encode(&args.name)),
                    None,
                )
                .await?;
            let id = policy["ID"]
                .as_str()
                .ok_or_else(|| BadInput(format!("no policy named {:?}", args.name)))?;
            client
                .call_json(Method::DELETE, &format!("/v1/acl/policy/{id}"), None)
                .await?;
            println!("deleted policy {} ({id})", args.name);
            Ok(())
        }
        AclCommand::Token(AclTokenCommand::Create(args)) => {
            let mut body = json!({
                "Description": args.description,
                "Policies": args.policy_names.iter().map(|n| json!({"Name": n})).collect::<Vec<_>>(),
                "ServiceIdentities": args
                    .service_identities
                    .iter()
                    .map(|s| json!({"ServiceName": s}))
                    .collect::<Vec<_>>(),
            });
            if let Some(ttl) = &args.expires_ttl {
                body["ExpirationTTL"] = json!(ttl);
            }
            let token = client(&args.output.registry)?
                .call_json(Method::PUT, "/v1/acl/token", Some(&body))
                .await?;
            show(&token, &args.output, TOKEN_FIELDS)
        }
        AclCommand::Token(AclTokenCommand::List(output)) => {
            let all = client(&output.registry)?
                .call_json(Method::GET, "/v1/acl/tokens", None)
                .await?;
            list(&all, &output, TOKEN_FIELDS)
        }
        AclCommand::Token(AclTokenCommand::Myself(output)) => {
            let token = client(&output.registry)?
                .call_json(Method::GET, "/v1/acl/token/self", None)
                .await?;
            show(&token, &output, TOKEN_FIELDS)
        }
        AclCommand::Token(AclTokenCommand::Delete(args)) => {
            client(&args.registry)?
                .call_json(
                    Method::DELETE,
                    &format!("/v1/acl/token/{}", encode(&args.id)),
                    None,
                )
                .await?;
            println!("deleted token {}", args.id);
            Ok(())
        }
    }
}

/// Every entry of a list answer, each as [`show`] prints one, a blank line between.
fn list(all: &Value, output: &AclOutputArgs, fields: &[&str]) -> anyhow::Result<()> {
    if output.json {
        println!("{}", serde_json::to_string_pretty(all)?);
        return Ok(());
    }
    for (i, entry) in all.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            println!();
        }
        show(entry, output, fields)?;
    }
    Ok(())
}
