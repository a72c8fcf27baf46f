//! The registry as users run it: a real `wharf registry` process on port 0, real sockets,
//! real health-check targets. No timing assertions: conditions are polled with a deadline.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

fn ids(entries: &Value) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            e["Service"]["ID"]
                .as_str()
                .or(e["ServiceID"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

fn passing_ids(registry: &RegistryProcess, name: &str) -> Vec<String> {
    ids(&registry
        .get(&format!("/v1/health/service/{name}?passing=1"))
        .json())
}

fn check_status(registry: &RegistryProcess, id: &str) -> String {
    let checks = registry.get("/v1/agent/checks").json();
    checks[id]["Status"].as_str().unwrap_or("absent").to_owned()
}

#[test]
fn every_acknowledged_registration_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let addr = registry.addr;
    // Concurrent writers, so that group commit is exercised too.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let body = json!({"Name": "durable", "ID": format!("durable-{w}-{i}"), "Port": 1000 + i});
                    let response = request(addr, "PUT", "/v1/agent/service/register", body.to_string().as_bytes());
                    assert_eq!(response.status, 200, "{}", response.text());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let before = registry.get("/v1/catalog/service/durable");
    assert_eq!(ids(&before.json()).len(), 100);
    registry.kill_9();

    let registry = RegistryProcess::start(dir.path(), &[]);
    let after = registry.get("/v1/catalog/service/durable");
    assert_eq!(
        ids(&after.json()),
        ids(&before.json()),
        "every registration is back"
    );
    assert!(
        after.index() >= before.index(),
        "index never goes backwards across restarts"
    );
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"durable","ID":"durable-new"}"#,
    );
    assert!(registry.get("/v1/catalog/service/durable").index() > before.index());
}

#[test]
fn http_check_moves_an_instance_out_of_and_back_into_the_healthy_list() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let endpoint = HealthEndpoint::start(200);
    let body = json!({"Name": "web", "ID": "web-1", "Port": endpoint.addr.port(),
        "Check": {"HTTP": endpoint.url(), "Interval": "1s", "Timeout": "1s"}});
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &body.to_string())
            .status,
        200
    );
    assert_eq!(
        check_status(&registry, "service:web-1"),
        "critical",
        "new checks start critical"
    );
    eventually("web-1 passing", || {
        passing_ids(&registry, "web") == ["web-1"]
    });

    endpoint.set(500);
    eventually("web-1 dropped", || passing_ids(&registry, "web").is_empty());
    let output = registry.get("/v1/health/checks/web").json()[0]["Output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(output.contains("500"), "output names the failure: {output}");
    assert_eq!(
        ids(&registry.get("/v1/health/service/web").json()),
        ["web-1"],
        "still registered"
    );

    endpoint.set(429);
    eventually("429 warns", || {
        check_status(&registry, "service:web-1") == "warning"
    });
    endpoint.set(200);
    eventually("web-1 back", || passing_ids(&registry, "web") == ["web-1"]);
}

#[test]
fn check_thresholds_hold_the_status_until_enough_results_agree() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let endpoint = HealthEndpoint::start(200);
    let body = json!({"Name": "web", "ID": "web-1", "Port": endpoint.addr.port(),
        "Check": {"HTTP": endpoint.url(), "Interval": "1s", "Timeout": "1s",
            "SuccessBeforePassing": 2, "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 3}});
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &body.to_string())
            .status,
        200
    );
    let definition = &registry.get("/v1/health/checks/web").json()[0]["Definition"];
    assert_eq!(definition["SuccessBeforePassing"], 2);
    assert_eq!(definition["FailuresBeforeWarning"], 1);
    assert_eq!(definition["FailuresBeforeCritical"], 3);
    eventually("web-1 passing", || {
        passing_ids(&registry, "web") == ["web-1"]
    });

    // A 500 is critical to a check without thresholds; here the first failures only warn.
    endpoint.set(500);
    eventually("the first failure warns", || {
        check_status(&registry, "service:web-1") == "warning"
    });
    eventually("the third failure in a row is critical", || {
        check_status(&registry, "service:web-1") == "critical"
    });
    endpoint.set(200);
    eventually("web-1 back", || passing_ids(&registry, "web") == ["web-1"]);

    let refused = json!({"Name": "bad", "Check": {"TTL": "10s",
        "FailuresBeforeWarning": 4, "FailuresBeforeCritical": 2}});
    let response = registry.put("/v1/agent/service/register", &refused.to_string());
    assert_eq!(response.status, 400);
    assert!(
        response
            .text()
            .contains("can't be higher than FailuresBeforeCritical"),
        "{}",
        response.text()
    );
}

#[test]
fn tcp_check_follows_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let body = json!({"name": "db", "port": 5432, "check": {"tcp": address, "interval": "1s"}});
    registry.put("/v1/agent/service/register", &body.to_string());
    eventually("db passing", || {
        check_status(&registry, "service:db") == "passing"
    });
    drop(listener);
    eventually("db critical", || {
        check_status(&registry, "service:db") == "critical"
    });
}

#[test]
fn ttl_checks_pass_fail_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let body = json!({"Name": "worker", "Checks": [{"CheckID": "beat", "TTL": "2s"}]});
    registry.put("/v1/agent/service/register", &body.to_string());
    assert_eq!(check_status(&registry, "beat"), "critical");

    assert_eq!(
        registry
            .put("/v1/agent/check/pass/beat?note=alive", "")
            .status,
        200
    );
    let checks = registry.get("/v1/agent/checks").json();
    assert_eq!(checks["beat"]["Status"], "passing");
    assert_eq!(checks["beat"]["Output"], "alive");
    assert_eq!(checks["beat"]["Type"], "ttl");

    registry.put("/v1/agent/check/warn/beat", "");
    assert_eq!(check_status(&registry, "beat"), "warning");
    registry.put("/v1/agent/check/pass/beat", "");
    // Without further passes the TTL runs out.
    eventually("TTL expiry", || {
        check_status(&registry, "beat") == "critical"
    });
    assert_eq!(
        registry.get("/v1/agent/checks").json()["beat"]["Output"],
        "TTL expired"
    );

    // Percent-encoded ids (npm consul) reach the same check.
    let body = json!({"Name": "api", "ID": "api-1", "Check": {"TTL": "30s"}});
    registry.put("/v1/agent/service/register", &body.to_string());
    assert_eq!(
        registry
            .put("/v1/agent/check/pass/service%3Aapi-1", "")
            .status,
        200
    );
    assert_eq!(check_status(&registry, "service:api-1"), "passing");
}

#[test]
fn reregistering_keeps_check_status_and_replace_removes_old_checks() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let body = json!({"Name": "svc", "Checks": [{"CheckID": "a", "TTL": "60s"}, {"CheckID": "b", "TTL": "60s"}]});
    registry.put("/v1/agent/service/register", &body.to_string());
    registry.put("/v1/agent/check/pass/a", "");
    let again = json!({"Name": "svc", "Tags": ["new"], "Checks": [{"CheckID": "a", "TTL": "60s"}]});
    registry.put("/v1/agent/service/register", &again.to_string());
    assert_eq!(
        check_status(&registry, "a"),
        "passing",
        "status survives re-registration"
    );
    assert_eq!(
        check_status(&registry, "b"),
        "critical",
        "unlisted checks stay without the flag"
    );
    registry.put(
        "/v1/agent/service/register?replace-existing-checks=true",
        &again.to_string(),
    );
    assert_eq!(check_status(&registry, "b"), "absent");
    assert_eq!(
        registry.get("/v1/catalog/services").json()["svc"],
        json!(["new"])
    );
}

#[test]
fn blocking_queries_wake_on_change_and_not_on_unchanged_checks() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let body = json!({"Name": "steady", "Check": {"TCP": address, "Interval": "1s"}});
    registry.put("/v1/agent/service/register", &body.to_string());
    eventually("steady passing", || {
        passing_ids(&registry, "steady") == ["steady"]
    });
    let index = registry.get("/v1/health/service/steady").index();

    // The check keeps passing once a second; a 3 s hold must end by timeout with the same index.
    let held = registry.get(&format!("/v1/health/service/steady?index={index}&wait=3s"));
    assert_eq!(
        held.index(),
        index,
        "periodic checks with unchanged status do not change the index"
    );

    // A change to another service does not change this one's index either.
    registry.put("/v1/agent/service/register", r#"{"Name":"other"}"#);
    assert_eq!(registry.get("/v1/health/service/steady").index(), index);

    // A change to this service wakes a held query.
    let addr = registry.addr;
    let waiter = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            &format!("/v1/health/service/steady?index={index}&wait=5m"),
            b"",
        )
    });
    eventually("query held", || {
        registry.metric("wharf_registry_blocking_queries_held") == 1.0
    });
    let started = Instant::now();
    registry.put(
        "/v1/agent/service/register",
        &json!({"Name": "steady", "ID": "steady-2"}).to_string(),
    );
    let woken = waiter.join().unwrap();
    assert!(woken.index() > index);
    assert_eq!(ids(&woken.json()), ["steady", "steady-2"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "woken by the change, not the 5m wait"
    );

    // Indexes are never 0, even for names never seen.
    assert!(registry.get("/v1/health/service/never-seen").index() >= 1);
    // An index ahead of the registry's (a client from before a restore) answers at once.
    let ahead = registry.get(&format!(
        "/v1/health/service/steady?index={}&wait=5m",
        index + 1000
    ));
    assert!(ahead.index() <= index + 1000);
}

#[test]
fn critical_instances_are_deregistered_after_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--min-deregister-after", "1s"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let body = json!({"Name": "doomed", "Check": {"TCP": closed.to_string(), "Interval": "1s",
        "DeregisterCriticalServiceAfter": "1s"}});
    registry.put("/v1/agent/service/register", &body.to_string());
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"kept","Check":{"TTL":"1h","DeregisterCriticalServiceAfter":"1h"}}"#,
    );
    eventually("doomed reaped", || {
        registry.get("/v1/catalog/service/doomed").json() == json!([])
    });
    assert_eq!(
        check_status(&registry, "service:doomed"),
        "absent",
        "its checks go with it"
    );
    assert_eq!(
        ids(&registry.get("/v1/catalog/service/kept").json()),
        ["kept"]
    );
}

#[test]
fn bad_input_gets_a_reason_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"keep","Check":{"TTL":"60s"}}"#,
    );
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/v1/agent/service/register",
            "{not json",
            400,
            "Request decode failed",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Port": 80}"#,
            400,
            "Missing service name",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"HTTP":"http://a/","Interval":"often"}}"#,
            400,
            "invalid duration",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Script":"rm -rf /","Interval":"1s"}}"#,
            400,
            "not supported",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Interval":"1s"}}"#,
            400,
            "must define one of",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Port":-1}"#,
            400,
            "Invalid port",
        ),
        (
            "/v1/agent/service/deregister/nope",
            "",
            404,
            "Unknown service ID",
        ),
        ("/v1/agent/check/pass/nope", "", 404, "Unknown check ID"),
        (
            "/v1/agent/check/register",
            r#"{"Name":"c","TTL":"1s","ServiceID":"nope"}"#,
            400,
            "does not exist",
        ),
    ];
    for (path, body, status, reason) in cases {
        let response = registry.put(path, body);
        assert_eq!(
            response.status,
            *status,
            "{path} {body}: {}",
            response.text()
        );
        assert!(
            response.text().contains(reason),
            "{path} {body}: {}",
            response.text()
        );
        assert!(
            response
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
    }
    let big = format!(
        r#"{{"Name":"big","Meta":{{"k":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    assert_eq!(registry.put("/v1/agent/service/register", &big).status, 413);
    assert_eq!(registry.get("/v1/health/service/x?index=abc").status, 400);
    assert_eq!(
        registry
            .get("/v1/health/service/x?index=1&wait=soon")
            .status,
        400
    );
    assert_eq!(
        registry.get("/v1/health/service/x?passing=perhaps").status,
        400
    );
    assert_eq!(registry.get("/v1/health/state/sleepy").status, 400);
    assert_eq!(
        registry.get("/v1/catalog/services?stale&consistent").status,
        400
    );
    assert_eq!(registry.get("/v1/agent/service/register").status, 405);
    // A check that is not TTL cannot be passed by hand (Consul answers 500).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = json!({"Name": "t", "Check": {"TCP": listener.local_addr().unwrap().to_string(), "Interval": "1s"}});
    registry.put("/v1/agent/service/register", &tcp.to_string());
    let response = registry.put("/v1/agent/check/pass/service:t", "");
    assert_eq!(response.status, 500);
    assert!(response.text().contains("does not have associated TTL"));

    assert_eq!(
        ids(&registry.get("/v1/catalog/service/keep").json()),
        ["keep"],
        "nothing lost"
    );
    assert!(
        registry.get("/v1/catalog/service/x").json() == json!([]),
        "nothing half-written"
    );
    assert!(registry.terminate(), "still alive, stops cleanly");
}

#[test]
fn reads_answer_with_consul_headers_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let write = registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"Shape","ID":"shape-1","Tags":["a","B"],"Port":9,"Meta":{"v":"1"},"Check":{"TTL":"10s","Status":"passing"}}"#,
    );
    assert_eq!(
        (write.status, write.body.len()),
        (200, 0),
        "writes answer 200 with no body"
    );
    for path in [
        "/v1/catalog/services",
        "/v1/catalog/service/shape",
        "/v1/health/service/shape",
        "/v1/health/checks/shape",
        "/v1/health/state/any",
        "/v1/catalog/nodes",
    ] {
        let response = registry.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert!(response.index() >= 1, "{path}");
        assert!(
            response.headers.iter().any(|(n, _)| n == "X-Consul-Index"),
            "title-case header on {path}"
        );
        assert_eq!(response.header("x-consul-knownleader"), Some("true"));
    }
    let entry = &registry.get("/v1/health/service/SHAPE?tag=a&tag=b").json()[0];
    assert_eq!(
        entry["Service"]["Service"], "Shape",
        "names and tags match case-insensitively"
    );
    assert_eq!(
        entry["Service"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    assert_eq!(
        entry["Checks"][0]["Definition"]["DeregisterCriticalServiceAfter"],
        "0s"
    );
    assert!(entry["Node"]["Node"].is_string());
    assert_eq!(
        registry.get("/v1/health/service/shape?tag=a&tag=c").json(),
        json!([]),
        "tags are ANDed"
    );
    let catalog = &registry.get("/v1/catalog/service/shape").json()[0];
    assert_eq!(catalog["ServiceID"], "shape-1");
    assert_eq!(catalog["ServicePort"], 9);
    assert_eq!(catalog["ServiceMeta"], json!({"v": "1"}));
    let me = registry.get("/v1/agent/self").json();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert!(
        me.as_object()
            .unwrap()
            .values()
            .all(|v| v.is_object() || v.is_null())
    );
    assert_eq!(
        registry.get("/v1/status/leader").json(),
        json!("127.0.0.1:8300")
    );
    assert_eq!(
        registry.get("/v1/agent/service/shape-1").json()["Service"],
        "Shape"
    );
    assert_eq!(registry.get("/v1/agent/service/nope").status, 404);
}

#[test]
fn cli_lists_registers_deregisters_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let url = registry.url();
    let (code, out, err) = wharf(
        &url,
        &[
            "register", "hello", "--id", "hello-1", "--port", "8001", "--tag", "v1", "--ttl", "1h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("registered hello-1"));

    let (code, out, _) = wharf(&url, &["services"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello") && l.contains("v1")),
        "{out}"
    );
    let (_, out, _) = wharf(&url, &["services", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"hello": ["v1"]})
    );

    let (_, out, _) = wharf(&url, &["instances", "hello", "--json"]);
    let instances: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(instances[0]["id"], "hello-1");
    assert_eq!(instances[0]["status"], "critical");
    assert_eq!(instances[0]["port"], 8001);
    let (_, out, _) = wharf(&url, &["instances", "hello"]);
    assert!(
        out.contains("hello-1") && out.contains("127.0.0.1:8001") && out.contains("critical"),
        "{out}"
    );

    // Watch: the passing set starts empty, then hello-1 passes.
    let mut watcher = std::process::Command::new(WHARF)
        .args([
            "watch",
            "hello",
            "--count",
            "2",
            "--json",
            "--registry",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(watcher.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"reset": []})
    );
    registry.put("/v1/agent/check/pass/service:hello-1", "");
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["add"]["id"],
        "hello-1"
    );
    assert!(watcher.wait().unwrap().success());

    let (code, _, _) = wharf(&url, &["deregister", "hello-1"]);
    assert_eq!(code, 0);
    let (code, _, err) = wharf(&url, &["deregister", "hello-1"]);
    assert_eq!(code, 2, "unknown id is bad input: {err}");
    assert!(err.contains("Unknown service ID"));
    let (code, _, _) = wharf(&url, &["register", "x", "--meta", "novalue"]);
    assert_eq!(code, 2);
    let (code, _, err) = wharf("http://127.0.0.1:1", &["services"]);
    assert_eq!(code, 1, "unreachable registry is a failure: {err}");
    assert!(err.contains("cannot reach"));
}

#[test]
fn a_second_registry_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RegistryProcess::start(dir.path(), &[]);
    let output = registry_command(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open the store"));
}

#[test]
fn metrics_count_requests_and_describe_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"m","Check":{"TTL":"1h"}}"#,
    );
    registry.get("/v1/health/service/m");
    let metrics = registry.get("/metrics");
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    assert!(text.contains(r#"wharf_registry_http_requests_total{endpoint="/v1/health/service/{name}",code="200"} 1"#), "{text}");
    assert_eq!(registry.metric("wharf_registry_instances"), 1.0);
    assert!(
        text.contains(r#"wharf_registry_checks{status="critical"} 1"#),
        "{text}"
    );
}

#[test]
fn connect_proxies_answer_health_connect_and_block_on_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let proxy = serde_json::json!({
        "Name": "web-sidecar-proxy", "ID": "web-1-sidecar-proxy", "Port": 21000,
        "Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"},
    });
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &proxy.to_string())
            .status,
        200
    );
    let first = registry.get("/v1/health/connect/web");
    let entries = first.json();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["Service"]["Kind"], "connect-proxy");
    assert_eq!(
        entries[0]["Service"]["Proxy"]["DestinationServiceName"],
        "web"
    );
    assert_eq!(
        registry.get("/v1/health/connect/db").json(),
        serde_json::json!([]),
        "no proxy for db"
    );
    let catalog = registry.get("/v1/catalog/connect/web").json();
    assert_eq!(catalog[0]["ServiceID"], "web-1-sidecar-proxy", "{catalog}");
    assert_eq!(catalog[0]["ServiceKind"], "connect-proxy");
    // A blocking query wakes when a second proxy registers.
    let index = first.index();
    let waiting = held_query(registry.addr, "/v1/health/connect/web", index, "30s");
    let second = serde_json::json!({
        "Name": "web-sidecar-proxy", "ID": "web-2-sidecar-proxy", "Port": 21001,
        "Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"},
    });
    registry.put("/v1/agent/service/register", &second.to_string());
    let woken = waiting.join().unwrap();
    assert!(woken.index() > index);
    assert_eq!(woken.json().as_array().unwrap().len(), 2);
    let refused = registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"x","Kind":"connect-proxy"}"#,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.text().contains("DestinationServiceName"),
        "{}",
        refused.text()
    );
}

/// `--tls-cert`/`--tls-key`: the API speaks TLS only; curl and Wharf's own CLI reach it with
/// the CA (`--cacert`, `WHARF_CACERT`), and nothing reaches it in plaintext or without it.
#[test]
fn the_api_can_listen_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::support::certs::issue(dir.path());
    let (ca_file, cert_file, key_file) = (&certs.ca, &certs.server_cert, &certs.server_key);
    let registry = RegistryProcess::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}", registry.addr);
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("{url}/v1/catalog/services"))
            .output()
            .expect("curl")
    };
    let ok = curl(&["--cacert", ca_file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        text.ends_with("\n200"),
        "{text} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !curl(&[]).status.success(),
        "a client without the CA is refused"
    );
    let mut plain = std::net::TcpStream::connect(registry.addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = std::io::Write::write_all(
        &mut plain,
        b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plaintext is not answered"
    );

    // Wharf's own CLI, as a user would point it: https:// and the CA in WHARF_CACERT.
    let register = std::process::Command::new(WHARF)
        .args(["register", "web", "--port", "9000", "--registry", &url])
        .env("WHARF_CACERT", ca_file)
        .output()
        .unwrap();
    assert!(register.status.success(), "{register:?}");
    let listed = std::process::Command::new(WHARF)
        .args(["services", "--registry", &url])
        .env("WHARF_CACERT", ca_file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("web"),
        "{listed:?}"
    );
    let without = std::process::Command::new(WHARF)
        .args(["services", "--registry", &url])
        .env_remove("WHARF_CACERT")
        .env_remove("CONSUL_CACERT")
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("WHARF_CACERT"),
        "{without:?}"
    );
}

#[test]
fn apply_to_a_registry_without_wharf_up_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let manifest = dir.path().join("wharf.toml");
    std::fs::write(&manifest, "[services.hello]\ncommand = [\"python3\"]\n").unwrap();
    let (code, out, err) = wharf(
        &registry.url(),
        &["apply", "-f", &manifest.display().to_string()],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("no `wharf up` runs with this registry"),
        "{err}"
    );
    let no_path = registry.put("/v1/wharf/apply", "");
    assert_eq!(no_path.status, 400);
    assert!(no_path.text().contains("path=FILE"), "{}", no_path.text());
}

#[test]
fn filters_keep_the_entries_an_expression_holds_for_and_a_bad_one_names_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    for (id, version, tags) in [
        ("web-1", "v1", json!(["prod"])),
        ("web-2", "v2", json!(["prod", "canary"])),
        ("web-3", "v1", json!([])),
    ] {
        let body = json!({"Name": "web", "ID": id, "Port": 8000, "Tags": tags, "Meta": {"version": version}});
        assert_eq!(
            registry
                .put("/v1/agent/service/register", &body.to_string())
                .status,
            200
        );
    }
    let query = |path: &str, filter: &str| {
        let encoded: String = filter
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        registry.get(&format!("{path}?filter={encoded}"))
    };
    let health = query("/v1/health/service/web", "Service.Meta.version == v1");
    assert_eq!(health.status, 200);
    assert_eq!(ids(&health.json()), ["web-1", "web-3"]);
    assert_eq!(
        ids(&query("/v1/catalog/service/web", "\"canary\" in ServiceTags").json()),
        ["web-2"]
    );
    let agent = query("/v1/agent/services", "Tags is empty or Meta.version == v2").json();
    let mut kept: Vec<&String> = agent.as_object().unwrap().keys().collect();
    kept.sort();
    assert_eq!(kept, ["web-2", "web-3"]);
    let bad = query("/v1/health/service/web", "Service.Meta.version ==");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("at column 24"), "{}", bad.text());
}
