//! Consul's catalog writes for external services, `/v1/agent/members` and user events through
//! the real binary: an external service is answered by the catalog, health, DNS and the
//! gateway like any other, its check is what its registrar says, and deregistering its node
//! takes everything of it away; events reach the registry nodes their filters name, the last
//! 256 are kept, and a blocking list wakes on the next one; the agent's health endpoint
//! answers a load balancer by status code.

use hickory_proto::rr::RecordType;

use crate::support::*;

/// The registry node's own name, as `/v1/agent/members` lists it.
fn node_name(registry: &RegistryProcess) -> String {
    let members = registry.get("/v1/agent/members").json();
    members[0]["Name"].as_str().expect("a member").to_owned()
}

#[test]
fn external_services_are_answered_everywhere_and_leave_with_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backend = Backend::start("legacy-1");
    let registration = |status: &str| {
        format!(
            r#"{{"Node": "legacy-host", "Address": "127.0.0.1", "NodeMeta": {{"external-node": "true"}},
                "Service": {{"ID": "legacy-1", "Service": "legacy", "Port": {}, "Tags": ["v1"]}},
                "Check": {{"CheckID": "legacy-alive", "Name": "legacy alive", "Status": "{status}",
                           "ServiceID": "legacy-1", "Output": "checked by esm"}}}}"#,
            backend.port
        )
    };
    let answer = registry.put("/v1/catalog/register", &registration("passing"));
    assert_eq!((answer.status, answer.text().as_str()), (200, "true"));

    let nodes = registry.get("/v1/catalog/nodes").json();
    let legacy = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "legacy-host")
        .expect("the external node is listed");
    assert_eq!(legacy["Meta"]["external-node"], "true");
    assert_eq!(legacy["Address"], "127.0.0.1");
    let healthy = registry.get("/v1/health/service/legacy?passing").json();
    let entries = healthy.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{healthy}");
    assert_eq!(entries[0]["Node"]["Node"], "legacy-host");
    // No agent runs there: no serfHealth, only the registrar's check, probed by nothing.
    let checks: Vec<(&str, &str, &str)> = entries[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap(),
                c["Type"].as_str().unwrap(),
                c["Output"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(checks, [("legacy-alive", "", "checked by esm")]);
    // Nor is it an agent's: it is not a member and not in this agent's services.
    let members = registry.get("/v1/agent/members").json();
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["Name"] != "legacy-host")
    );
    assert_eq!(members[0]["Status"], 1);
    assert!(
        registry
            .get("/v1/agent/services")
            .json()
            .get("legacy-1")
            .is_none()
    );

    let srv = || {
        dns::srv_ports(&dns::udp(
            registry.dns,
            "legacy.service.consul",
            RecordType::SRV,
            None,
        ))
    };
    assert_eq!(srv(), [backend.port]);
    let node_a = dns::udp(registry.dns, "legacy-host.node.consul", RecordType::A, None);
    assert_eq!(node_a.answers.len(), 1, "{node_a:?}");
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    eventually("the gateway routes to the external service", || {
        let answer = proxy.get("legacy", "/");
        answer.status == 200 && answer.header("x-backend") == Some("legacy-1")
    });

    // The registrar says it is down: out of ?passing, DNS and the gateway; and it stays so
    // (nothing here probes it back to passing, though the backend answers).
    let index = registry.get("/v1/health/service/legacy").index();
    let held = held_query(registry.addr, "/v1/health/service/legacy", index, "10s");
    assert_eq!(
        registry
            .put("/v1/catalog/register", &registration("critical"))
            .status,
        200
    );
    let woken = held.join().unwrap();
    assert_eq!(woken.json()[0]["Checks"][0]["Status"], "critical");
    assert_eq!(
        registry.get("/v1/health/service/legacy?passing").json(),
        serde_json::json!([])
    );
    assert!(srv().is_empty());
    eventually("the gateway stops routing to it", || {
        proxy.get("legacy", "/").status == 503
    });
    // The same registration again changes nothing, so it moves no index.
    let index = registry.get("/v1/health/service/legacy").index();
    assert_eq!(
        registry
            .put("/v1/catalog/register", &registration("critical"))
            .status,
        200
    );
    assert_eq!(registry.get("/v1/health/service/legacy").index(), index);

    // Refused with a reason, and nothing changed: a registry node's name, a check on a
    // service the node does not have, a body without a node.
    let own = node_name(&registry);
    for (body, reason) in [
        (
            format!(r#"{{"Node": "{own}", "Address": "127.0.0.1", "Service": {{"Service": "x"}}}}"#),
            "is a registry node",
        ),
        (
            r#"{"Node": "legacy-host", "Address": "127.0.0.1", "Check": {"Name": "c", "ServiceID": "nope"}}"#.into(),
            "Unknown service ID",
        ),
        (r#"{"Address": "127.0.0.1"}"#.into(), "Must provide node"),
        (r#"{"Node": "other"}"#.into(), "Must provide address"),
    ] {
        let answer = registry.put("/v1/catalog/register", &body);
        assert_eq!(answer.status, 400, "{body}: {}", answer.text());
        assert!(answer.text().contains(reason), "{body}: {}", answer.text());
    }
    let elsewhere = registry.put(
        "/v1/catalog/register",
        r#"{"Datacenter": "dc9", "Node": "x", "Address": "10.0.0.1"}"#,
    );
    assert_eq!(elsewhere.status, 500, "{}", elsewhere.text());
    assert!(elsewhere.text().contains("No path to datacenter"));
    assert_eq!(registry.get("/v1/health/service/legacy").index(), index);
    let answer = registry.put("/v1/catalog/deregister", &format!(r#"{{"Node": "{own}"}}"#));
    assert_eq!(answer.status, 400, "{}", answer.text());

    // Deregistering the node takes its services and checks with it; again is still `true`.
    for _ in 0..2 {
        let answer = registry.put("/v1/catalog/deregister", r#"{"Node": "legacy-host"}"#);
        assert_eq!((answer.status, answer.text().as_str()), (200, "true"));
    }
    let nodes = registry.get("/v1/catalog/nodes").json();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["Node"] != "legacy-host")
    );
    assert!(
        registry
            .get("/v1/catalog/services")
            .json()
            .get("legacy")
            .is_none()
    );
    assert_eq!(
        registry.get("/v1/health/checks/legacy").json(),
        serde_json::json!([])
    );
}

#[test]
fn deregistering_a_service_or_a_check_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    for (id, port) in [("db-1", 5432), ("db-2", 5433)] {
        let body = format!(
            r#"{{"Node": "db-host", "Address": "10.0.0.5",
                "Service": {{"ID": "{id}", "Service": "db", "Port": {port}}},
                "Checks": [{{"CheckID": "{id}-up", "Status": "passing", "ServiceID": "{id}"}}]}}"#
        );
        assert_eq!(registry.put("/v1/catalog/register", &body).status, 200);
    }
    // A node-level check of the external node counts for both of its services.
    let node_check = r#"{"Node": "db-host", "SkipNodeUpdate": true, "Check": {"Name": "host up", "Status": "passing"}}"#;
    assert_eq!(registry.put("/v1/catalog/register", node_check).status, 200);
    let ids = |path: &str| -> Vec<String> {
        registry
            .get(path)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("/v1/health/service/db?passing"), ["db-1", "db-2"]);
    let critical_host = r#"{"Node": "db-host", "SkipNodeUpdate": true, "Check": {"Name": "host up", "Status": "critical"}}"#;
    assert_eq!(
        registry.put("/v1/catalog/register", critical_host).status,
        200
    );
    assert!(ids("/v1/health/service/db?passing").is_empty());
    let answer = registry.put(
        "/v1/catalog/deregister",
        r#"{"Node": "db-host", "CheckID": "host up"}"#,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(ids("/v1/health/service/db?passing"), ["db-1", "db-2"]);

    let answer = registry.put(
        "/v1/catalog/deregister",
        r#"{"Node": "db-host", "ServiceID": "db-1"}"#,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(ids("/v1/health/service/db"), ["db-2"]);
    let catalog = registry.get("/v1/catalog/service/db").json();
    assert_eq!(catalog.as_array().unwrap().len(), 1);
    assert_eq!(catalog[0]["ServiceID"], "db-2");
    let checks = registry.get("/v1/health/node/db-host").json();
    let check_ids: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(check_ids, ["db-2-up"]);
    // The node keeps its address: SkipNodeUpdate left it as first registered.
    let node = registry.get("/v1/catalog/node/db-host").json();
    assert_eq!(node["Node"]["Address"], "10.0.0.5");
    assert_eq!(node["Services"]["db-2"]["Port"], 5433);
    let listed = registry.get("/v1/catalog/node-services/db-host").json();
    assert_eq!(listed["Node"]["Node"], "db-host");
    let listed: Vec<&str> = listed["Services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["db-2"]);

    // A session on the external node holds a lock until the node is deregistered.
    let created = registry.put(
        "/v1/session/create",
        r#"{"Node": "db-host", "NodeChecks": [], "LockDelay": "0s"}"#,
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let session = created.json()["ID"].as_str().unwrap().to_owned();
    let acquire = format!("/v1/kv/db/leader?acquire={session}");
    assert_eq!(registry.put(&acquire, "db-2").text(), "true");
    assert_eq!(
        registry
            .put("/v1/catalog/deregister", r#"{"Node": "db-host"}"#)
            .status,
        200
    );
    eventually(
        "the node's session is invalidated and its lock released",
        || {
            let lock = registry.get("/v1/kv/db/leader").json();
            lock[0].get("Session").is_none()
                && registry.get(&format!("/v1/session/info/{session}")).json()
                    == serde_json::json!([])
        },
    );
}

#[test]
fn user_events_reach_the_nodes_they_name_and_the_last_256_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backend = Backend::start("web-1");
    register(&registry, "web", &backend);

    let fired = registry.put("/v1/event/fire/deploy", "v2");
    assert_eq!(fired.status, 200, "{}", fired.text());
    let event = fired.json();
    assert_eq!(event["Name"], "deploy");
    assert_eq!(event["Payload"], "djI="); // base64 of "v2"
    assert_eq!(
        (event["Version"].as_u64(), event["LTime"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(event["ID"].as_str().unwrap().len(), 36);

    // A blocking list wakes on the next event, which the list then ends with.
    let list = registry.get("/v1/event/list");
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    let held = held_query(registry.addr, "/v1/event/list", list.index(), "10s");
    let own = node_name(&registry);
    let aimed = registry.put(
        &format!("/v1/event/fire/restart?node=^{own}$&service=^we"),
        "",
    );
    assert_eq!(aimed.status, 200, "{}", aimed.text());
    assert_eq!(aimed.json()["Payload"], serde_json::Value::Null);
    let woken = held.join().unwrap().json();
    let names: Vec<&str> = woken
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deploy", "restart"]);

    // Events for other nodes or services are not this node's to list; ?name narrows.
    for path in [
        "/v1/event/fire/elsewhere?node=^not-this-node$",
        "/v1/event/fire/elsewhere?service=^db$",
        "/v1/event/fire/elsewhere?service=^web$&tag=^canary$",
    ] {
        assert_eq!(registry.put(path, "").status, 200);
    }
    let listed = registry.get("/v1/event/list").json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let deploys = registry.get("/v1/event/list?name=deploy").json();
    assert_eq!(deploys.as_array().unwrap().len(), 1);

    for (path, body, status, reason) in [
        ("/v1/event/fire/_internal", "", 400, "reserved"),
        ("/v1/event/fire/x?tag=v1", "", 400, "without service filter"),
        ("/v1/event/fire/x?node=(", "", 400, "Invalid node filter"),
        ("/v1/event/fire/", "", 400, "Missing name"),
        ("/v1/event/fire/x", &"p".repeat(513), 413, "at most 512"),
    ] {
        let answer = registry.put(path, body);
        assert_eq!(answer.status, status, "{path}: {}", answer.text());
        assert!(answer.text().contains(reason), "{path}: {}", answer.text());
    }

    // The buffer keeps the last 256, in the order fired.
    for n in 0..256 {
        assert_eq!(
            registry.put("/v1/event/fire/tick", &n.to_string()).status,
            200
        );
    }
    let kept = registry.get("/v1/event/list?name=tick").json();
    let times: Vec<u64> = kept
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["LTime"].as_u64().unwrap())
        .collect();
    // 5 events came before the ticks; the first tick (time 6) was dropped with them.
    assert_eq!(times.len(), 256);
    assert_eq!((times[0], times[255]), (6, 261));
    assert!(times.windows(2).all(|w| w[0] + 1 == w[1]));
}

#[test]
fn transactions_write_external_nodes_services_and_checks_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let txn = |body: &str| registry.put("/v1/txn", body);

    // A node, its service and check, and a KV key, in one transaction; each step sees the
    // ones before it (the service's node, the check's service).
    let done = txn(r#"[
        {"Node": {"Verb": "set", "Node": {"Node": "db-host", "Address": "10.0.0.7", "Meta": {"rack": "r1"}}}},
        {"Service": {"Verb": "set", "Node": "db-host", "Service": {"ID": "pg-1", "Service": "postgres", "Port": 5432}}},
        {"Check": {"Verb": "set", "Check": {"Node": "db-host", "CheckID": "pg-up", "Name": "pg up", "Status": "passing", "ServiceID": "pg-1"}}},
        {"KV": {"Verb": "set", "Key": "db/primary", "Value": "cGctMQ=="}}
    ]"#);
    assert_eq!(done.status, 200, "{}", done.text());
    let results = done.json()["Results"].clone();
    assert_eq!(results[0]["Node"]["Node"], "db-host");
    assert_eq!(results[0]["Node"]["Meta"]["rack"], "r1");
    assert_eq!(results[1]["Service"]["ID"], "pg-1");
    assert_eq!(results[2]["Check"]["Status"], "passing");
    assert_eq!(results[2]["Check"]["ServiceName"], "postgres");
    assert_eq!(results[3]["KV"]["Key"], "db/primary");
    let service_index = results[1]["Service"]["ModifyIndex"].as_u64().unwrap();
    let passing = registry.get("/v1/health/service/postgres?passing").json();
    assert_eq!(passing[0]["Node"]["Address"], "10.0.0.7", "{passing}");

    // One failing operation fails them all: nothing of the others is applied.
    let index = registry.get("/v1/health/service/postgres").index();
    let failed = txn(&format!(
        r#"[
        {{"KV": {{"Verb": "set", "Key": "db/primary", "Value": "cGctMg=="}}}},
        {{"Service": {{"Verb": "cas", "Node": "db-host", "Service": {{"ID": "pg-1", "Service": "postgres", "Port": 6000, "ModifyIndex": {}}}}}}}
    ]"#,
        service_index + 1000
    ));
    assert_eq!(failed.status, 409, "{}", failed.text());
    let errors = failed.json()["Errors"].clone();
    assert_eq!(errors[0]["OpIndex"], 1, "{errors}");
    assert!(
        errors[0]["What"]
            .as_str()
            .unwrap()
            .contains("ModifyIndex does not match")
    );
    assert_eq!(registry.get("/v1/kv/db/primary?raw").text(), "pg-1");
    assert_eq!(registry.get("/v1/health/service/postgres").index(), index);
    // The right index wins.
    let cas = txn(&format!(
        r#"[{{"Service": {{"Verb": "cas", "Node": "db-host", "Service": {{"ID": "pg-1", "Service": "postgres", "Port": 6000, "ModifyIndex": {service_index}}}}}}}]"#
    ));
    assert_eq!(cas.status, 200, "{}", cas.text());
    assert_eq!(
        registry.get("/v1/catalog/service/postgres").json()[0]["ServicePort"],
        6000
    );

    // A registry node's records are not the transaction's to write; they are to read.
    let own = node_name(&registry);
    let refused = txn(&format!(
        r#"[{{"Node": {{"Verb": "set", "Node": {{"Node": "{own}", "Address": "127.0.0.1"}}}}}}]"#
    ));
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(
        refused.text().contains("is a registry node"),
        "{}",
        refused.text()
    );
    let read = txn(&format!(
        r#"[{{"Node": {{"Verb": "get", "Node": {{"Node": "{own}"}}}}}}]"#
    ));
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["Results"][0]["Node"]["Node"], own.as_str());
    let missing =
        txn(r#"[{"Check": {"Verb": "get", "Check": {"Node": "db-host", "CheckID": "nope"}}}]"#);
    assert_eq!(missing.status, 409);
    assert!(
        missing.text().contains("doesn't exist"),
        "{}",
        missing.text()
    );

    // A session deleted in a transaction releases what it held, as its TTL would.
    let session = registry
        .put("/v1/session/create", r#"{"LockDelay": "0s"}"#)
        .json()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        registry
            .put(&format!("/v1/kv/db/lock?acquire={session}"), "me")
            .text(),
        "true"
    );
    let deleted = txn(&format!(
        r#"[{{"Session": {{"Verb": "delete", "Session": {{"ID": "{session}"}}}}}}]"#
    ));
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let lock = registry.get("/v1/kv/db/lock").json();
    assert!(lock[0].get("Session").is_none(), "{lock}");
    assert_eq!(
        registry.get(&format!("/v1/session/info/{session}")).json(),
        serde_json::json!([])
    );

    // Deleting the node takes its service and check with it.
    let gone = txn(r#"[{"Node": {"Verb": "delete", "Node": {"Node": "db-host"}}}]"#);
    assert_eq!(gone.status, 200, "{}", gone.text());
    assert_eq!(
        registry.get("/v1/health/service/postgres").json(),
        serde_json::json!([])
    );
    assert_eq!(
        registry.get("/v1/health/node/db-host").json(),
        serde_json::json!([])
    );
}

#[test]
fn members_and_intentions_take_filters() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let count = |path: &str| {
        let answer = registry.get(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        answer.json().as_array().unwrap().len()
    };
    assert_eq!(count("/v1/agent/members?filter=Status%20%3D%3D%201"), 1);
    assert_eq!(count("/v1/agent/members?filter=Tags.dc%20%3D%3D%20dc9"), 0);
    for (source, destination) in [("web", "db"), ("web", "cache"), ("batch", "db")] {
        let answer = registry.put(
            &format!("/v1/connect/intentions/exact?source={source}&destination={destination}"),
            r#"{"Action": "allow"}"#,
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(count("/v1/connect/intentions"), 3);
    assert_eq!(
        count("/v1/connect/intentions?filter=SourceName%20%3D%3D%20web"),
        2
    );
    assert_eq!(
        count(
            "/v1/connect/intentions?filter=SourceName%20%3D%3D%20web%20and%20DestinationName%20%3D%3D%20db"
        ),
        1
    );
    let bad = registry.get("/v1/agent/members?filter=Status%20%3D%3D");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("column"), "{}", bad.text());
}

#[test]
fn the_agent_health_endpoint_answers_by_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    for id in ["web-1", "web-2"] {
        let body = format!(
            r#"{{"Name": "web", "ID": "{id}", "Port": 80, "Check": {{"TTL": "60s", "Status": "passing"}}}}"#
        );
        assert_eq!(
            registry.put("/v1/agent/service/register", &body).status,
            200
        );
    }
    let text = |path: &str| {
        let answer = registry.get(path);
        (answer.status, answer.text().trim_end().to_owned())
    };
    assert_eq!(
        text("/v1/agent/health/service/id/web-1?format=text"),
        (200, "passing".to_owned())
    );
    let json = registry.get("/v1/agent/health/service/id/web-1").json();
    assert_eq!(json["AggregatedStatus"], "passing");
    assert_eq!(json["Service"]["ID"], "web-1");
    assert_eq!(json["Checks"][0]["CheckID"], "service:web-1");

    assert_eq!(
        registry
            .put("/v1/agent/check/warn/service:web-2", "")
            .status,
        200
    );
    assert_eq!(
        text("/v1/agent/health/service/id/web-2?format=text"),
        (429, "warning".to_owned())
    );
    // By name: every local instance, the worst status wins.
    let by_name = registry.get("/v1/agent/health/service/name/web");
    assert_eq!(by_name.status, 429);
    assert_eq!(by_name.json().as_array().unwrap().len(), 2);
    assert_eq!(
        registry
            .put("/v1/agent/check/fail/service:web-2", "")
            .status,
        200
    );
    assert_eq!(
        text("/v1/agent/health/service/name/web?format=text"),
        (503, "critical".to_owned())
    );
    let maintenance = registry.put("/v1/agent/service/maintenance/web-1?enable=true", "");
    assert_eq!(maintenance.status, 200);
    assert_eq!(
        text("/v1/agent/health/service/id/web-1?format=text"),
        (503, "maintenance".to_owned())
    );
    assert_eq!(
        text("/v1/agent/health/service/id/nope"),
        (404, "ServiceId nope not found".to_owned())
    );
    assert_eq!(
        text("/v1/agent/health/service/name/nope"),
        (404, "ServiceName nope Not Found".to_owned())
    );
}
