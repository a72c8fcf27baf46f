//! Consul's KV store, sessions, `wharf lock` and maintenance mode through the real binary:
//! what the interoperability suite (py-consul on both backends) cannot send or see, such as
//! raw paths with `..`, a command run under a lock that is then lost, and maintenance taking
//! an instance out of DNS and the gateway.

use std::process::{Command, Stdio};

use hickory_proto::rr::RecordType;

use crate::support::*;

fn wharf(registry: &RegistryProcess, args: &[&str]) -> std::process::Output {
    Command::new(WHARF)
        .args(args)
        .env("WHARF_REGISTRY", registry.url())
        .output()
        .expect("run wharf")
}

#[test]
fn bad_keys_and_values_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    for path in [
        "/v1/kv/a/../b",
        "/v1/kv/a/%2e%2e/b",
        "/v1/kv/a//b",
        "/v1/kv/./x",
    ] {
        let answer = registry.put(path, "x");
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert!(
            answer.text().starts_with("Invalid key"),
            "{path}: {}",
            answer.text()
        );
    }
    let too_big = vec![b'x'; 512 * 1024 + 1];
    let answer = request(registry.addr, "PUT", "/v1/kv/big", &too_big);
    assert_eq!(answer.status, 413, "{}", answer.text());
    let bad_txn = request(
        registry.addr,
        "PUT",
        "/v1/txn",
        br#"[{"KV":{"Verb":"set","Key":"k","Value":"%%%"}}]"#,
    );
    assert_eq!(bad_txn.status, 400);
    assert!(
        bad_txn
            .text()
            .contains("operation 0: Value is not valid base64")
    );
    let unknown_session =
        registry.put("/v1/kv/k?acquire=0b0d0a1c-0000-4000-8000-000000000000", "x");
    assert_eq!(unknown_session.status, 400);
    assert!(unknown_session.text().contains("invalid session"));
    // Nothing of the refused writes was kept; a missing key is a 404 that carries its index.
    let missing = registry.get("/v1/kv/?recurse");
    assert_eq!(missing.status, 404);
    assert!(missing.index() >= 1);
    assert_eq!(registry.put("/v1/kv/k?flags=x", "v").status, 400);
}

#[test]
fn the_kv_commands_write_read_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let ok = |args: &[&str]| {
        let out = wharf(&registry, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["kv", "put", "app/greeting", "Hello"]);
    ok(&["kv", "put", "app/limit", "10", "--flags", "7"]);
    assert_eq!(ok(&["kv", "get", "app/greeting"]), "Hello\n");
    assert_eq!(ok(&["kv", "list", "app/"]), "app/greeting\napp/limit\n");
    assert_eq!(
        ok(&["kv", "get", "app/", "--recurse"]),
        "app/greeting:Hello\napp/limit:10\n"
    );
    assert!(ok(&["kv", "get", "app/limit", "--detailed"]).contains("Flags            7"));
    let stale = wharf(
        &registry,
        &["kv", "put", "app/greeting", "Hi", "--cas", "1"],
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("did not write"));
    ok(&["kv", "delete", "app/", "--recurse"]);
    let gone = wharf(&registry, &["kv", "get", "app/greeting"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no key exists"));
}

/// The session holding `key`, if any.
fn holder(registry: &RegistryProcess, key: &str) -> Option<String> {
    let answer = registry.get(&format!("/v1/kv/{key}"));
    (answer.status == 200)
        .then(|| answer.json()[0]["Session"].as_str().map(str::to_owned))
        .flatten()
}

#[test]
fn wharf_lock_runs_one_holder_at_a_time_and_stops_a_command_that_loses_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let lock = |script: &str| {
        Command::new(WHARF)
            .args([
                "lock",
                "jobs/nightly",
                "--lock-delay",
                "0s",
                "--",
                "sh",
                "-c",
                script,
            ])
            .current_dir(&work)
            .env("WHARF_REGISTRY", registry.url())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = lock("touch first-started && exec sleep 60");
    eventually("the first command runs", || {
        work.join("first-started").exists()
    });
    let first_session = holder(&registry, "jobs/nightly/.lock").expect("the lock is held");
    let second = lock("touch second-ran");
    // The second waits for the lock: it is held, by the first's session.
    eventually("the second waits", || {
        registry.metric("wharf_registry_blocking_queries_held") >= 2.0
    });
    assert!(
        !work.join("second-ran").exists(),
        "ran while the first held the lock"
    );
    assert_eq!(
        holder(&registry, "jobs/nightly/.lock").as_deref(),
        Some(first_session.as_str())
    );

    // The first's session is destroyed under it: its command is stopped, wharf exits 1,
    // and the second takes the lock and runs.
    let destroyed = registry.put(&format!("/v1/session/destroy/{first_session}"), "");
    assert_eq!(destroyed.status, 200);
    let first_out = {
        let status = first.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    };
    assert_eq!(first_out.0.code(), Some(1), "{}", first_out.1);
    assert!(first_out.1.contains("lost the lock"), "{}", first_out.1);
    let second = second.wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(work.join("second-ran").exists());
    assert_eq!(
        holder(&registry, "jobs/nightly/.lock"),
        None,
        "released when done"
    );
    assert_eq!(
        registry.get("/v1/session/list").json(),
        serde_json::json!([]),
        "and the sessions destroyed"
    );
    // The command's exit status is wharf's.
    let failing = lock("exit 7").wait().unwrap();
    assert_eq!(failing.code(), Some(7));
}

#[test]
fn maintenance_takes_an_instance_out_of_dns_and_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backends = [Backend::start("hello-1"), Backend::start("hello-2")];
    for backend in &backends {
        register(&registry, "hello", backend);
    }
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    let answered_by = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| {
                let answer = proxy.get("hello", "/");
                assert_eq!(answer.status, 200, "{}", answer.text());
                answer.header("x-backend").unwrap_or_default().to_owned()
            })
            .collect()
    };
    let srv_ports = || {
        dns::srv_ports(&dns::udp(
            registry.dns,
            "hello.service.consul",
            RecordType::SRV,
            None,
        ))
    };
    eventually("both answer", || {
        answered_by(20).len() == 2 && srv_ports().len() == 2
    });

    let out = wharf(
        &registry,
        &[
            "maint",
            "--service",
            "hello-1",
            "--enable",
            "--reason",
            "kernel upgrade",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("hello-1 leaves DNS and the gateway", || {
        srv_ports() == [backends[1].port] && answered_by(20) == ["hello-2".to_owned()].into()
    });
    let checks = registry.get("/v1/health/checks/hello").json();
    let maintenance = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:hello-1")
        .expect("the maintenance check");
    assert_eq!(maintenance["Status"], "critical");
    assert_eq!(maintenance["Notes"], "kernel upgrade");

    let out = wharf(&registry, &["maint", "--service", "hello-1", "--disable"]);
    assert!(out.status.success());
    eventually("hello-1 is back", || {
        answered_by(20).len() == 2 && srv_ports().len() == 2
    });

    // The node's maintenance takes every instance out.
    assert!(wharf(&registry, &["maint", "--enable"]).status.success());
    eventually("no instance is passing", || {
        registry.get("/v1/health/service/hello?passing").json() == serde_json::json!([])
    });
    let refused = wharf(&registry, &["maint", "--service", "nope", "--enable"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown instance is bad input"
    );
}
