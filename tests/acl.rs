//! ACLs on a real `wharf registry --acl`: bootstrap once, policies and tokens as Consul's
//! API makes them, every write checked against its token, reads filtered by policy, and
//! Wharf's own CLI carrying `WHARF_TOKEN`.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::dns;
use crate::support::*;

/// A registry with ACLs on, default deny, and its bootstrap (management) secret.
fn deny_by_default(dir: &std::path::Path) -> (RegistryProcess, String) {
    let registry = RegistryProcess::start(dir, &["--acl", "--acl-default-policy", "deny"]);
    let bootstrap = registry.put("/v1/acl/bootstrap", "");
    assert_eq!(bootstrap.status, 200, "{}", bootstrap.text());
    let secret = bootstrap.json()["SecretID"].as_str().unwrap().to_owned();
    (registry, secret)
}

fn call(registry: &RegistryProcess, method: &str, path: &str, token: &str, body: &str) -> Response {
    request_with(
        registry.addr,
        method,
        path,
        &[("X-Consul-Token", token)],
        body.as_bytes(),
    )
}

fn registration(name: &str, port: u16) -> String {
    json!({"Name": name, "ID": format!("{name}-1"), "Port": port}).to_string()
}

/// A policy made with `root` and a token linked to it by name: the token's secret.
fn token_for(registry: &RegistryProcess, root: &str, name: &str, rules: &str) -> String {
    let policy = call(
        registry,
        "PUT",
        "/v1/acl/policy",
        root,
        &json!({"Name": name, "Rules": rules}).to_string(),
    );
    assert_eq!(policy.status, 200, "{}", policy.text());
    let token = call(
        registry,
        "PUT",
        "/v1/acl/token",
        root,
        &json!({"Description": name, "Policies": [{"Name": name}]}).to_string(),
    );
    assert_eq!(token.status, 200, "{}", token.text());
    token.json()["SecretID"].as_str().unwrap().to_owned()
}

fn names(value: &Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn writes_need_a_token_with_permission_and_reads_follow_policy() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--acl", "--acl-default-policy", "deny"]);

    // Before bootstrap, without a token: every write refused as Consul refuses it.
    let refused = registry.put("/v1/agent/service/register", &registration("web", 9000));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().starts_with("Permission denied"),
        "{}",
        refused.text()
    );
    assert_eq!(registry.get("/v1/acl/policies").status, 403);

    let bootstrap = registry.put("/v1/acl/bootstrap", "");
    assert_eq!(bootstrap.status, 200, "{}", bootstrap.text());
    let boot = bootstrap.json();
    let root = boot["SecretID"].as_str().unwrap().to_owned();
    assert_eq!(boot["Policies"][0]["Name"], "global-management");
    // Once only.
    let again = registry.put("/v1/acl/bootstrap", "");
    assert_eq!(again.status, 403);
    assert!(
        again.text().contains("ACL bootstrap no longer allowed"),
        "{}",
        again.text()
    );

    // A token scoped to service "web" registers web and not db.
    let web = token_for(
        &registry,
        &root,
        "web-only",
        r#"service "web" { policy = "write" } node_prefix "" { policy = "read" }"#,
    );
    let put = call(
        &registry,
        "PUT",
        "/v1/agent/service/register",
        &web,
        &registration("web", 9000),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let db = call(
        &registry,
        "PUT",
        "/v1/agent/service/register",
        &web,
        &registration("db", 5432),
    );
    assert_eq!(db.status, 403);
    assert!(
        db.text()
            .contains("lacks permission 'service:write' on \"db\""),
        "{}",
        db.text()
    );
    let by_root = call(
        &registry,
        "PUT",
        "/v1/agent/service/register",
        &root,
        &registration("db", 5432),
    );
    assert_eq!(by_root.status, 200, "{}", by_root.text());

    // Reads follow policy: the web token sees web only; no token sees nothing.
    let seen = call(&registry, "GET", "/v1/catalog/services", &web, "");
    assert_eq!(names(&seen.json()), ["web"]);
    let all = call(&registry, "GET", "/v1/catalog/services", &root, "");
    assert_eq!(names(&all.json()), ["db", "web"]);
    assert_eq!(
        names(&registry.get("/v1/catalog/services").json()),
        Vec::<String>::new()
    );
    let hidden = call(&registry, "GET", "/v1/health/service/db", &web, "");
    assert_eq!(hidden.status, 200);
    assert_eq!(hidden.json(), json!([]));
    let shown = call(&registry, "GET", "/v1/health/service/web", &web, "");
    assert_eq!(shown.json().as_array().unwrap().len(), 1);
    // Consul's rule: an instance is readable with its service *and* its node.
    let no_nodes = token_for(
        &registry,
        &root,
        "web-without-nodes",
        r#"service "web" { policy = "read" }"#,
    );
    let entries = call(&registry, "GET", "/v1/catalog/service/web", &no_nodes, "");
    assert_eq!(entries.json(), json!([]));

    // The token is read from Bearer and ?token= too.
    let bearer = request_with(
        registry.addr,
        "GET",
        "/v1/catalog/services",
        &[("Authorization", &format!("Bearer {web}"))],
        b"",
    );
    assert_eq!(names(&bearer.json()), ["web"]);
    let query = registry.get(&format!("/v1/catalog/services?token={web}"));
    assert_eq!(names(&query.json()), ["web"]);

    // token/self, and ACL management needs acl rules.
    let me = call(&registry, "GET", "/v1/acl/token/self", &web, "");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["Policies"][0]["Name"], "web-only");
    assert_eq!(
        call(&registry, "GET", "/v1/acl/tokens", &web, "").status,
        403
    );
    let listed = call(&registry, "GET", "/v1/acl/tokens", &root, "").json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["AccessorID"] == me.json()["AccessorID"]),
        "{listed}"
    );

    // The web token may deregister web, not db.
    assert_eq!(
        call(
            &registry,
            "PUT",
            "/v1/agent/service/deregister/db-1",
            &web,
            ""
        )
        .status,
        403
    );
    assert_eq!(
        call(
            &registry,
            "PUT",
            "/v1/agent/service/deregister/web-1",
            &web,
            ""
        )
        .status,
        200
    );

    // A deleted token is unknown from then on.
    let accessor = me.json()["AccessorID"].as_str().unwrap().to_owned();
    let deleted = call(
        &registry,
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        &root,
        "",
    );
    assert_eq!(deleted.text(), "true");
    let gone = call(&registry, "GET", "/v1/catalog/services", &web, "");
    assert_eq!(gone.status, 403);
    assert_eq!(gone.text().trim(), "ACL not found");
}

#[test]
fn bad_rules_unknown_policies_and_expired_tokens_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, root) = deny_by_default(dir.path());

    let bad_rules = call(
        &registry,
        "PUT",
        "/v1/acl/policy",
        &root,
        &json!({"Name": "typo", "Rules": "servcie \"web\" { policy = \"write\" }"}).to_string(),
    );
    assert_eq!(bad_rules.status, 400);
    assert!(
        bad_rules
            .text()
            .contains("Failed to parse ACL rules: line 1, column 1: unknown rule \"servcie\""),
        "{}",
        bad_rules.text()
    );
    let bad_name = call(
        &registry,
        "PUT",
        "/v1/acl/policy",
        &root,
        &json!({"Name": "no spaces", "Rules": ""}).to_string(),
    );
    assert_eq!(bad_name.status, 400, "{}", bad_name.text());
    let unknown_policy = call(
        &registry,
        "PUT",
        "/v1/acl/token",
        &root,
        &json!({"Policies": [{"Name": "nope"}]}).to_string(),
    );
    assert_eq!(unknown_policy.status, 400);
    assert!(
        unknown_policy
            .text()
            .contains("Cannot find policy named \"nope\""),
        "{}",
        unknown_policy.text()
    );
    let not_json = call(&registry, "PUT", "/v1/acl/token", &root, "{");
    assert_eq!(not_json.status, 400);
    assert_eq!(
        call(&registry, "GET", "/v1/agent/self", "not-a-token", "")
            .text()
            .trim(),
        "ACL not found"
    );

    // A token that expires: known, then not.
    let expiring = call(
        &registry,
        "PUT",
        "/v1/acl/token",
        &root,
        &json!({"Policies": [{"Name": "global-management"}], "ExpirationTTL": "2s"}).to_string(),
    );
    assert_eq!(expiring.status, 200, "{}", expiring.text());
    assert!(expiring.json()["ExpirationTime"].is_string());
    let secret = expiring.json()["SecretID"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&registry, "GET", "/v1/agent/self", &secret, "").status,
        200
    );
    eventually("the token expires", || {
        call(&registry, "GET", "/v1/agent/self", &secret, "")
            .text()
            .trim()
            == "ACL not found"
    });

    // The built-in policy and the anonymous token cannot be removed.
    let builtin = call(
        &registry,
        "DELETE",
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        &root,
        "",
    );
    assert_eq!(builtin.status, 400);
    let anonymous = call(
        &registry,
        "DELETE",
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        &root,
        "",
    );
    assert_eq!(anonymous.status, 403);
}

#[test]
fn the_anonymous_token_s_policies_apply_to_requests_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, root) = deny_by_default(dir.path());
    assert_eq!(
        call(
            &registry,
            "PUT",
            "/v1/agent/service/register",
            &root,
            &registration("web", 80)
        )
        .status,
        200
    );
    assert_eq!(registry.get("/v1/health/service/web").json(), json!([]));
    // DNS answers as the anonymous token too (Consul's DNS uses the agent's default token).
    let hidden = dns::udp(
        registry.dns,
        "web.service.consul.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(hidden.metadata.response_code, ResponseCode::NXDomain);
    let policy = call(
        &registry,
        "PUT",
        "/v1/acl/policy",
        &root,
        &json!({"Name": "read-all", "Rules": "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}).to_string(),
    );
    assert_eq!(policy.status, 200, "{}", policy.text());
    let anonymous = call(
        &registry,
        "PUT",
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        &root,
        &json!({"Description": "Anonymous Token", "Policies": [{"Name": "read-all"}]}).to_string(),
    );
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert_eq!(
        registry
            .get("/v1/health/service/web")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let shown = dns::udp(
        registry.dns,
        "web.service.consul.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(dns::srv_ports(&shown), [80]);
    // Reading is not writing.
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &registration("web", 81))
            .status,
        403
    );
}

#[test]
fn wharf_s_cli_carries_wharf_token() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, root) = deny_by_default(dir.path());
    let web = token_for(
        &registry,
        &root,
        "web",
        r#"service "web" { policy = "write" }"#,
    );
    let wharf = |token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(WHARF);
        command
            .args(args)
            .args(["--registry", &registry.url()])
            .env_remove("WHARF_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN");
        if let Some(token) = token {
            command.env("WHARF_TOKEN", token);
        }
        command.output().unwrap()
    };
    let without = wharf(None, &["register", "web", "--port", "9000"]);
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("Permission denied"),
        "{without:?}"
    );
    let with = wharf(Some(&web), &["register", "web", "--port", "9000"]);
    assert!(with.status.success(), "{with:?}");
    let db = wharf(Some(&web), &["register", "db", "--port", "5432"]);
    assert!(!db.status.success(), "{db:?}");
    // Consul's variable works as well.
    let listed = std::process::Command::new(WHARF)
        .args(["services", "--registry", &registry.url()])
        .env_remove("WHARF_TOKEN")
        .env("CONSUL_HTTP_TOKEN", &root)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("web"),
        "{listed:?}"
    );
}

#[test]
fn acl_endpoints_say_when_acls_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let answer = registry.put("/v1/acl/bootstrap", "");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.text().trim(), "ACL support disabled");
    // And tokens are not needed for anything else.
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &registration("web", 80))
            .status,
        200
    );
}

/// `wharf acl ...` as a user types it: bootstrap, a policy from a rules file, a token linked
/// to it by name, and that token's limits, all through Wharf's CLI.
#[test]
fn the_acl_commands_bootstrap_make_policies_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--acl", "--acl-default-policy", "deny"]);
    let wharf = |token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(WHARF);
        command
            .arg("acl")
            .args(args)
            .args(["--registry", &registry.url()])
            .env_remove("WHARF_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN");
        if let Some(token) = token {
            command.env("WHARF_TOKEN", token);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };

    let (ok, out, err) = wharf(None, &["bootstrap"]);
    assert!(ok, "{err}");
    let root = field(&out, "SecretID");
    let (ok, _, err) = wharf(None, &["bootstrap"]);
    assert!(
        !ok && err.contains("ACL bootstrap no longer allowed"),
        "{err}"
    );

    let rules = dir.path().join("web.hcl");
    std::fs::write(
        &rules,
        "service \"web\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }\n",
    )
    .unwrap();
    let rules_arg = format!("@{}", rules.display());
    let (ok, out, err) = wharf(
        Some(&root),
        &["policy", "create", "--name", "web", "--rules", &rules_arg],
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "Name"), "web");
    let (ok, _, err) = wharf(
        Some(&root),
        &[
            "policy",
            "create",
            "--name",
            "bad",
            "--rules",
            "servcie \"x\" {}",
        ],
    );
    assert!(!ok && err.contains("line 1, column 1"), "{err}");

    let (ok, out, err) = wharf(
        Some(&root),
        &[
            "token",
            "create",
            "--policy-name",
            "web",
            "--description",
            "deploys",
        ],
    );
    assert!(ok, "{err}");
    let web = field(&out, "SecretID");
    let accessor = field(&out, "AccessorID");
    assert_eq!(field(&out, "Policies"), "web");

    let (ok, out, _) = wharf(Some(&web), &["token", "self"]);
    assert!(ok);
    assert_eq!(field(&out, "AccessorID"), accessor);
    let register = |name: &str| {
        call(
            &registry,
            "PUT",
            "/v1/agent/service/register",
            &web,
            &registration(name, 80),
        )
        .status
    };
    assert_eq!(register("web"), 200);
    assert_eq!(register("db"), 403);
    let (ok, _, err) = wharf(Some(&web), &["token", "list"]);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, out, _) = wharf(Some(&root), &["token", "list", "--json"]);
    assert!(ok && out.contains(&accessor), "{out}");

    let (ok, _, err) = wharf(Some(&root), &["token", "delete", "--id", &accessor]);
    assert!(ok, "{err}");
    assert_eq!(register("web"), 403);
    let (ok, _, err) = wharf(Some(&root), &["policy", "delete", "--name", "web"]);
    assert!(ok, "{err}");
    let (ok, out, _) = wharf(Some(&root), &["policy", "list"]);
    assert!(
        ok && !out.contains("Name: web\n") && out.contains("global-management"),
        "{out}"
    );
}
