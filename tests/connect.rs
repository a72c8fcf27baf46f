//! Consul Connect's CA and intentions on a real `wharf registry`: certificates checked with
//! `openssl`, root rotation, leaves that renew, intentions with Consul's precedence.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn leaf(registry: &RegistryProcess, service: &str) -> Value {
    let answer = registry.get(&format!("/v1/agent/connect/ca/leaf/{service}"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

#[test]
fn the_ca_is_made_once_and_its_leaves_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let roots = registry.get("/v1/agent/connect/ca/roots");
    assert_eq!(roots.status, 200);
    let roots = roots.json();
    let domain = roots["TrustDomain"].as_str().unwrap().to_owned();
    assert!(domain.ends_with(".consul"), "{domain}");
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 1);
    let root = &roots["Roots"][0];
    assert_eq!(root["ID"], roots["ActiveRootID"]);
    assert_eq!(root["Active"], true);
    assert_eq!(root["PrivateKeyType"], "ec");
    assert!(
        root.get("PrivateKey").is_none(),
        "the key never leaves the registry"
    );
    assert_eq!(registry.get("/v1/connect/ca/roots").json(), roots);
    let pem = registry.get("/v1/connect/ca/roots?pem=true");
    assert_eq!(
        pem.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    std::fs::write(dir.path().join("root.pem"), pem.text()).unwrap();

    let web = leaf(&registry, "web");
    assert_eq!(
        web["ServiceURI"],
        format!("spiffe://{domain}/ns/default/dc/dc1/svc/web")
    );
    std::fs::write(dir.path().join("web.pem"), web["CertPEM"].as_str().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("web.key"),
        web["PrivateKeyPEM"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-purpose",
            "sslclient",
            "web.pem",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-purpose",
            "sslserver",
            "web.pem",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", "web.pem", "-noout", "-text"], dir.path());
    assert!(
        text.contains(&format!("URI:spiffe://{domain}/ns/default/dc/dc1/svc/web")),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    let (ok, out) = openssl(&["pkey", "-in", "web.key", "-noout"], dir.path());
    assert!(ok, "the key is a usable private key: {out}");

    // The agent hands out the same leaf until it is due for renewal.
    assert_eq!(leaf(&registry, "web")["SerialNumber"], web["SerialNumber"]);
    let bad = registry.get("/v1/agent/connect/ca/leaf/we_b");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("invalid service name"),
        "{}",
        bad.text()
    );

    // A restart on the same store keeps the same CA.
    registry.terminate();
    let again = RegistryProcess::start(dir.path(), &[]);
    assert_eq!(
        again.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"],
        roots["ActiveRootID"]
    );
}

#[test]
fn a_new_key_rotates_the_root_and_wakes_every_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let old_root = registry.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"].clone();
    let first = registry.get("/v1/agent/connect/ca/leaf/web");
    let index = first.index();

    // A leaf's blocking query, held until something changes.
    let waiting = held_query(registry.addr, "/v1/agent/connect/ca/leaf/web", index, "60s");

    let bad = registry.put(
        "/v1/connect/ca/configuration",
        &json!({"Provider": "consul", "Config": {"PrivateKey": "not a key"}}).to_string(),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("Invalid CA configuration"),
        "{}",
        bad.text()
    );
    assert_eq!(
        registry.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"],
        old_root,
        "a refused configuration changes nothing"
    );

    let (ok, key) = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        dir.path(),
    );
    assert!(ok, "{key}");
    let rotated = registry.put(
        "/v1/connect/ca/configuration",
        &json!({"Provider": "consul", "Config": {"PrivateKey": key}}).to_string(),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text());

    let roots = registry.get("/v1/agent/connect/ca/roots").json();
    assert_ne!(roots["ActiveRootID"], old_root);
    let listed: Vec<(Value, Value)> = roots["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ID"].clone(), r["Active"].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (roots["ActiveRootID"].clone(), json!(true)),
            (old_root.clone(), json!(false))
        ],
        "the old root stays trusted until its leaves expire"
    );

    let renewed = waiting.join().unwrap();
    assert_eq!(renewed.status, 200);
    assert!(renewed.index() > index);
    let renewed = renewed.json();
    assert_ne!(renewed["SerialNumber"], first.json()["SerialNumber"]);
    // Signed by the new root.
    let new_root = roots["Roots"][0]["RootCert"].as_str().unwrap();
    std::fs::write(dir.path().join("new.pem"), new_root).unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        renewed["CertPEM"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, out) = openssl(&["verify", "-CAfile", "new.pem", "leaf.pem"], dir.path());
    assert!(ok, "{out}");
}

#[test]
fn a_short_lived_leaf_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--leaf-ttl", "3s"]);
    let config = registry.get("/v1/connect/ca/configuration").json();
    assert_eq!(config["Config"]["LeafCertTTL"], "3s");
    let first = registry.get("/v1/agent/connect/ca/leaf/api");
    let renewed = request(
        registry.addr,
        "GET",
        &format!(
            "/v1/agent/connect/ca/leaf/api?index={}&wait=30s",
            first.index()
        ),
        b"",
    );
    assert!(renewed.index() > first.index());
    let (a, b) = (first.json(), renewed.json());
    assert_ne!(a["SerialNumber"], b["SerialNumber"]);
    assert!(
        b["ValidBefore"].as_str() > a["ValidBefore"].as_str(),
        "{} then {}",
        a["ValidBefore"],
        b["ValidBefore"]
    );
}

#[test]
fn intentions_follow_consuls_precedence_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--default-intention", "deny"]);
    let put = |source: &str, destination: &str, body: Value| {
        registry.put(
            &format!("/v1/connect/intentions/exact?source={source}&destination={destination}"),
            &body.to_string(),
        )
    };
    let check = |source: &str, destination: &str| {
        registry
            .get(&format!(
                "/v1/connect/intentions/check?source={source}&destination={destination}"
            ))
            .json()["Allowed"]
            .clone()
    };
    assert_eq!(check("web", "db"), json!(false), "default deny");
    assert_eq!(put("web", "db", json!({"Action": "allow"})).text(), "true");
    assert_eq!(put("*", "db", json!({"Action": "deny"})).status, 200);
    assert_eq!(put("web", "*", json!({"Action": "allow"})).status, 200);
    assert_eq!(check("web", "db"), json!(true), "exact beats * => db");
    assert_eq!(check("api", "db"), json!(false));
    assert_eq!(check("web", "cache"), json!(true), "web => *");

    let exact = registry.get("/v1/connect/intentions/exact?source=web&destination=db");
    assert_eq!(exact.status, 200);
    let exact = exact.json();
    assert_eq!(
        (exact["Action"].clone(), exact["Precedence"].clone()),
        (json!("allow"), json!(9))
    );
    assert!(exact["CreateIndex"].as_u64().unwrap() > 0);

    let matched = registry
        .get("/v1/connect/intentions/match?by=destination&name=db")
        .json();
    let order: Vec<(&str, &str)> = matched["db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["SourceName"].as_str().unwrap(),
                i["DestinationName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [("web", "db"), ("*", "db"), ("web", "*")],
        "every intention that can apply to db, in evaluation order"
    );
    assert_eq!(
        registry
            .get("/v1/connect/intentions")
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Legacy IDs.
    let create = |action: &str| {
        let body = json!({"SourceName": "api", "DestinationName": "db", "Action": action});
        request(
            registry.addr,
            "POST",
            "/v1/connect/intentions",
            body.to_string().as_bytes(),
        )
    };
    let created = create("allow");
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["ID"].as_str().unwrap().to_owned();
    assert_eq!(
        registry.get(&format!("/v1/connect/intentions/{id}")).json()["SourceName"],
        "api"
    );
    assert_eq!(check("api", "db"), json!(true));
    let duplicate = create("deny");
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());
    assert_eq!(
        request(
            registry.addr,
            "DELETE",
            &format!("/v1/connect/intentions/{id}"),
            b""
        )
        .status,
        200
    );
    assert_eq!(check("api", "db"), json!(false));

    // Bad input: a 400 that says why, and nothing changed.
    let before = registry.get("/v1/connect/intentions").json();
    for (source, body, why) in [
        (
            "web",
            json!({"Action": "maybe"}),
            "Failed to decode intention body",
        ),
        ("web", json!({}), "needs an Action"),
        ("we_b", json!({"Action": "allow"}), "SourceName"),
        (
            "web",
            json!({"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "no-slash"}}]}),
            "permission 0",
        ),
    ] {
        let refused = put(source, "db", body);
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(refused.text().contains(why), "{why}: {}", refused.text());
    }
    let missing = registry.get("/v1/connect/intentions/check?source=web");
    assert_eq!(missing.status, 400);
    assert_eq!(registry.get("/v1/connect/intentions").json(), before);

    assert_eq!(
        request(
            registry.addr,
            "DELETE",
            "/v1/connect/intentions/exact?source=web&destination=db",
            b""
        )
        .text(),
        "true"
    );
    assert_eq!(
        registry
            .get("/v1/connect/intentions/exact?source=web&destination=db")
            .status,
        404
    );
    assert_eq!(
        check("web", "db"),
        json!(false),
        "* => db (precedence 8) now decides over web => * (6)"
    );
}

#[test]
fn authorize_answers_for_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let web = leaf(&registry, "web");
    registry.put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        &json!({"Action": "deny"}).to_string(),
    );
    let authorize = |uri: &Value, target: &str| {
        let answer = request(
            registry.addr,
            "POST",
            "/v1/agent/connect/authorize",
            json!({"Target": target, "ClientCertURI": uri, "ClientCertSerial": web["SerialNumber"]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    };
    let denied = authorize(&web["ServiceURI"], "db");
    assert_eq!(denied["Authorized"], false);
    assert_eq!(denied["Reason"], "Matched intention: web => db (deny)");
    assert_eq!(
        authorize(&web["ServiceURI"], "cache")["Authorized"],
        true,
        "default allow"
    );
    let stranger = json!("spiffe://other.consul/ns/default/dc/dc1/svc/web");
    let foreign = authorize(&stranger, "cache");
    assert_eq!(foreign["Authorized"], false);
    assert!(foreign["Reason"].as_str().unwrap().contains("trust domain"));
    let bad = request(
        registry.addr,
        "POST",
        "/v1/agent/connect/authorize",
        br#"{"Target":"db","ClientCertURI":"https://x"}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[test]
fn the_intention_commands_create_check_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--default-intention", "deny"]);
    let url = registry.url();
    let run = |args: &[&str]| wharf(&url, args);
    let (code, out, _) = run(&["intention", "check", "web", "db"]);
    assert_eq!((code, out.trim()), (2, "Denied"), "the default");
    let (code, out, err) = run(&["intention", "create", "web", "db", "--description", "reads"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "web => db (allow)");
    let (code, out, _) = run(&["intention", "check", "web", "db"]);
    assert_eq!((code, out.trim()), (0, "Allowed"));
    assert_eq!(run(&["intention", "create", "--deny", "*", "db"]).0, 0);
    let (_, list, _) = run(&["intention", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..4], ["web", "db", "allow", "9"], "{list}");
    assert_eq!(rows[1][..4], ["*", "db", "deny", "8"], "{list}");
    assert_eq!(run(&["intention", "delete", "web", "db"]).0, 0);
    assert_eq!(
        run(&["intention", "check", "web", "db"]).0,
        2,
        "* => db denies now"
    );
    let (code, _, err) = run(&["intention", "create", "we_b", "db"]);
    assert_eq!(code, 2, "a bad name is the user's input: {err}");
    assert!(err.contains("SourceName"), "{err}");
}

#[test]
fn service_intentions_config_entries_are_the_intentions_to_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--default-intention", "deny"]);
    let check = |source: &str| {
        registry
            .get(&format!(
                "/v1/connect/intentions/check?source={source}&destination=api"
            ))
            .json()["Allowed"]
            .clone()
    };
    let missing = registry.get("/v1/config/service-intentions/api");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(missing.header("x-consul-index").is_some());

    let entry = json!({
        "Kind": "service-intentions",
        "Name": "api",
        "Sources": [
            {"Name": "web", "Action": "allow", "Description": "the site"},
            {"Name": "*", "Action": "deny"},
            {"Name": "admin", "Permissions": [
                {"Action": "allow", "HTTP": {"PathPrefix": "/admin", "Methods": ["GET"]}}
            ]},
        ],
    });
    let written = registry.put("/v1/config", &entry.to_string());
    assert_eq!((written.status, written.text().trim()), (200, "true"));
    assert_eq!(check("web"), json!(true));
    assert_eq!(check("billing"), json!(false), "* => api deny");
    // The intentions API sees the same intentions.
    let exact = registry.get("/v1/connect/intentions/exact?source=web&destination=api");
    assert_eq!(exact.json()["Description"], "the site");

    let read = registry.get("/v1/config/service-intentions/api");
    assert_eq!(read.status, 200);
    let read = read.json();
    assert_eq!(read["Kind"], "service-intentions");
    assert_eq!(read["Name"], "api");
    let names: Vec<&str> = read["Sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "web", "*"], "evaluation order");
    assert_eq!(
        read["Sources"][0]["Permissions"][0]["HTTP"]["PathPrefix"],
        "/admin"
    );
    assert_eq!(read["Sources"][1]["Action"], "allow");
    assert_eq!(read["Sources"][1]["Precedence"], 9);
    let modify = read["ModifyIndex"].as_u64().unwrap();

    // A blocking read wakes when the entry changes; the new entry replaces the old sources.
    let held = held_query(
        registry.addr,
        "/v1/config/service-intentions/api",
        modify,
        "30s",
    );
    let cas_stale = registry.put(
        "/v1/config?cas=1",
        &json!({"Kind": "service-intentions", "Name": "api",
                "Sources": [{"Name": "web", "Action": "deny"}]})
        .to_string(),
    );
    assert_eq!(cas_stale.text().trim(), "false", "stale cas writes nothing");
    assert_eq!(check("web"), json!(true));
    let replaced = registry.put(
        &format!("/v1/config?cas={modify}"),
        &json!({"Kind": "service-intentions", "Name": "api",
                "Sources": [{"Name": "web", "Action": "deny"}]})
        .to_string(),
    );
    assert_eq!(replaced.text().trim(), "true");
    let woken = held.join().unwrap();
    assert_eq!(woken.json()["Sources"].as_array().unwrap().len(), 1);
    assert_eq!(check("web"), json!(false));
    assert_eq!(
        registry
            .get("/v1/connect/intentions/exact?source=admin&destination=api")
            .status,
        404,
        "a source no longer named is gone"
    );
    let created_only = registry.put(
        "/v1/config?cas=0",
        &json!({"Kind": "service-intentions", "Name": "api", "Sources": []}).to_string(),
    );
    assert_eq!(created_only.text().trim(), "false", "cas=0: only if absent");

    // The list, other kinds, bad entries.
    registry.put(
        "/v1/config",
        &json!({"Kind": "service-intentions", "Name": "db",
                "Sources": [{"Name": "api", "Action": "allow"}]})
        .to_string(),
    );
    let list = registry.get("/v1/config/service-intentions").json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "db"]);
    let other = registry.get("/v1/config/service-defaults");
    assert_eq!(other.status, 501);
    assert!(other.text().contains("/v1/config") && other.text().contains("service-defaults"));
    assert_eq!(registry.get("/v1/config/nonsense").status, 400);
    for bad in [
        json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "maybe"}]}),
        json!({"Kind": "service-intentions", "Sources": []}),
        json!({"Name": "api"}),
    ] {
        let answer = registry.put("/v1/config", &bad.to_string());
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
    }
    assert_eq!(registry.put("/v1/config", "{not json").status, 400);
    assert_eq!(check("api"), json!(false), "bad entries changed nothing");
    assert_eq!(
        registry
            .get("/v1/connect/intentions/check?source=api&destination=db")
            .json()["Allowed"],
        json!(true)
    );

    // Delete: `{}`, then 404; with a stale cas, nothing.
    let db = registry.get("/v1/config/service-intentions/db").json();
    let stale = request(
        registry.addr,
        "DELETE",
        "/v1/config/service-intentions/db?cas=1",
        b"",
    );
    assert_eq!(stale.text().trim(), "false");
    let cas = db["ModifyIndex"].as_u64().unwrap();
    let deleted = request(
        registry.addr,
        "DELETE",
        &format!("/v1/config/service-intentions/db?cas={cas}"),
        b"",
    );
    assert_eq!(deleted.text().trim(), "true");
    let deleted = request(
        registry.addr,
        "DELETE",
        "/v1/config/service-intentions/api",
        b"",
    );
    assert_eq!((deleted.status, deleted.text().trim()), (200, "{}"));
    assert_eq!(
        registry.get("/v1/config/service-intentions/api").status,
        404
    );
    assert_eq!(
        registry.get("/v1/config/service-intentions").json(),
        json!([])
    );
}
