//! Registry nodes on one etcd (Debian's `etcd-server`, started by the test): every node
//! serves the whole catalog from its own watch of etcd, a write through one wakes blocking
//! queries on the other, and a node restarted on the same etcd finds everything. Ignored by a
//! plain `cargo test`; `bash tests/etcd/run.sh` installs etcd and runs them.

use serde_json::json;

use crate::support::etcd_server::EtcdServer;
use crate::support::*;

fn node(dir: &std::path::Path, etcd: &EtcdServer, name: &str) -> RegistryProcess {
    RegistryProcess::start(
        &dir.join(name),
        &[
            "--store",
            &etcd.store_url(),
            "--node",
            name,
            "--node-ttl",
            "2s",
        ],
    )
}

/// Polls `find` until it gives something, panicking with `what` after the deadline.
fn eventually_some<T>(what: &str, mut find: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    eventually(what, || {
        found = find();
        found.is_some()
    });
    found.expect("found")
}

fn index(answer: &Response) -> u64 {
    answer
        .header("x-consul-index")
        .and_then(|v| v.parse().ok())
        .expect("an X-Consul-Index")
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn registry_nodes_on_one_etcd_share_the_catalog() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &etcd, "a");
    let b = node(dir.path(), &etcd, "b");

    let registered = a.put(
        "/v1/agent/service/register",
        &json!({"Name": "hello", "ID": "hello-1", "Address": "127.0.0.1", "Port": 9001})
            .to_string(),
    );
    assert_eq!(registered.status, 200, "{}", registered.text());
    eventually("b sees what a registered", || {
        b.get("/v1/health/service/hello").json()[0]["Service"]["ID"] == "hello-1"
    });
    let seen = b.get("/v1/health/service/hello");
    let before = index(&seen);

    // A blocking query on b wakes when a registers another instance.
    let held = held_query(b.addr, "/v1/health/service/hello", before, "30s");
    a.put(
        "/v1/agent/service/register",
        &json!({"Name": "hello", "ID": "hello-2", "Address": "127.0.0.1", "Port": 9002})
            .to_string(),
    );
    let woken = held.join().unwrap();
    assert_eq!(woken.json().as_array().unwrap().len(), 2);
    assert!(
        index(&woken) > before,
        "the index moves forward across nodes"
    );

    // DNS on b answers for instances registered through a.
    let answer = crate::support::dns::udp(
        b.dns,
        "hello.service.wharf",
        hickory_proto::rr::RecordType::SRV,
        None,
    );
    let mut ports = crate::support::dns::srv_ports(&answer);
    ports.sort_unstable();
    assert_eq!(ports, [9001, 9002]);

    // A node restarted on the same etcd finds everything; so does a new one.
    drop(a);
    let a = node(dir.path(), &etcd, "a");
    assert_eq!(
        a.get("/v1/health/service/hello")
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let c = node(dir.path(), &etcd, "c");
    assert_eq!(c.get("/v1/catalog/services").json()["hello"], json!([]));
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn a_registry_node_resumes_after_etcd_restarts() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &etcd, "a");
    let b = node(dir.path(), &etcd, "b");
    a.put(
        "/v1/agent/service/register",
        &json!({"Name": "early", "ID": "early-1", "Port": 9001}).to_string(),
    );
    eventually("b has early", || {
        b.get("/v1/catalog/services").json().get("early").is_some()
    });
    assert_eq!(
        b.get("/v1/health/service/early")
            .header("x-consul-knownleader"),
        Some("true")
    );

    // Cut off: reads and DNS answer from what the node holds, and say they are stale;
    // writes fail with a 503 and a reason.
    etcd.stop();
    eventually("b says it has no leader", || {
        b.get("/v1/health/service/early")
            .header("x-consul-knownleader")
            == Some("false")
    });
    let stale = b.get("/v1/health/service/early");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.json()[0]["Service"]["ID"], "early-1");
    let last_contact: u64 = stale
        .header("x-consul-lastcontact")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(last_contact > 0, "{last_contact}");
    let answer = crate::support::dns::udp(
        b.dns,
        "early.service.wharf",
        hickory_proto::rr::RecordType::SRV,
        None,
    );
    assert_eq!(crate::support::dns::srv_ports(&answer), [9001]);
    let refused = b.put(
        "/v1/agent/service/register",
        &json!({"Name": "lost", "Port": 9009}).to_string(),
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("store is unavailable"),
        "{}",
        refused.text()
    );
    assert!(b.metric("wharf_registry_store_known_leader") == 0.0);

    etcd.run();
    // Without a restart of either node: a write through a reaches b again.
    eventually("a writes again once etcd is back", || {
        a.put(
            "/v1/agent/service/register",
            &json!({"Name": "late", "ID": "late-1", "Port": 9003}).to_string(),
        )
        .status
            == 200
    });
    eventually("b follows again", || {
        b.get("/v1/catalog/services").json().get("late").is_some()
    });
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn a_dead_nodes_instances_turn_critical_everywhere_and_come_back() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = node(dir.path(), &etcd, "a");
    let b = node(dir.path(), &etcd, "b");
    let registered = a.put(
        "/v1/agent/service/register",
        &json!({"Name": "web", "ID": "web-1", "Port": 9001,
                "Check": {"TTL": "1h", "Status": "passing"}})
        .to_string(),
    );
    assert_eq!(registered.status, 200, "{}", registered.text());
    eventually("b sees web passing", || {
        b.get("/v1/health/service/web?passing")
            .json()
            .as_array()
            .is_some_and(|all| all.len() == 1)
    });
    // The instance is a's: b shows it on node a, does not list it as its own, and refuses to
    // update its TTL (a runs it).
    let entry = b.get("/v1/health/service/web").json();
    assert_eq!(entry[0]["Node"]["Node"], "a", "{entry}");
    assert_eq!(b.get("/v1/agent/services").json(), json!({}));
    assert!(a.get("/v1/agent/services").json().get("web-1").is_some());
    let check_id = entry[0]["Checks"][0]["CheckID"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = b.put(&format!("/v1/agent/check/pass/{check_id}"), "");
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.text());
    assert!(
        elsewhere.text().contains("node \"a\""),
        "{}",
        elsewhere.text()
    );
    // Both nodes are listed, both alive.
    let nodes = b.get("/v1/catalog/nodes").json();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        b.get("/v1/status/peers").json().as_array().unwrap().len(),
        2
    );

    // a dies: within its lease TTL its instance is critical on b, with serfHealth saying why.
    a.kill_9();
    eventually("web turns critical on b", || {
        b.get("/v1/health/service/web?passing")
            .json()
            .as_array()
            .is_some_and(|all| all.is_empty())
    });
    let entry = b.get("/v1/health/service/web").json();
    let serf = &entry[0]["Checks"][0];
    assert_eq!(
        (serf["CheckID"].as_str(), serf["Status"].as_str()),
        (Some("serfHealth"), Some("critical")),
        "{entry}"
    );
    let answer = crate::support::dns::udp(
        b.dns,
        "web.service.wharf",
        hickory_proto::rr::RecordType::SRV,
        None,
    );
    assert!(
        crate::support::dns::srv_ports(&answer).is_empty(),
        "{answer:?}"
    );
    assert_eq!(
        b.get("/v1/status/peers").json().as_array().unwrap().len(),
        1
    );
    let a_health = b.get("/v1/health/node/a").json();
    assert_eq!(a_health[0]["CheckID"], "serfHealth", "{a_health}");

    // a returns: its instance passes again everywhere.
    a = node(dir.path(), &etcd, "a");
    eventually("web passes again on b", || {
        b.get("/v1/health/service/web?passing")
            .json()
            .as_array()
            .is_some_and(|all| all.len() == 1)
    });
    drop(a);
}

/// Instance ids are each node's own, as a Consul agent's are: the same id through two nodes
/// is two instances, and deregistering it on one leaves the other's.
#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn the_same_instance_id_on_two_nodes_is_two_instances() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &etcd, "a");
    let b = node(dir.path(), &etcd, "b");
    for (node, port) in [(&a, 9001), (&b, 9002)] {
        let answer = node.put(
            "/v1/agent/service/register",
            &json!({"Name": "hello", "ID": "hello-1", "Port": port}).to_string(),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let placed = |from: &RegistryProcess| -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = from
            .get("/v1/catalog/service/hello")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["Node"].as_str().unwrap().to_owned(),
                    e["ServicePort"].as_u64().unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    };
    let both = vec![("a".to_owned(), 9001), ("b".to_owned(), 9002)];
    eventually("both nodes see both instances", || {
        placed(&a) == both && placed(&b) == both
    });
    assert_eq!(a.get("/v1/agent/service/hello-1").json()["Port"], 9001);
    assert_eq!(b.get("/v1/agent/service/hello-1").json()["Port"], 9002);
    assert_eq!(
        a.put("/v1/agent/service/deregister/hello-1", "").status,
        200
    );
    eventually("only b's is left", || placed(&b) == both[1..]);
}

#[test]
fn a_bad_store_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (store, reason) in [
        ("etcd:/127.0.0.1:2379", "etcd://HOST:PORT"),
        ("etcd://127.0.0.1", "is not HOST:PORT"),
        ("postgres://db", "etcd://HOST:PORT"),
    ] {
        let output = registry_command(dir.path())
            .args(["--store", store])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{store}: {err}");
        assert!(err.contains(reason), "{store}: {err}");
    }
}

/// A three-member etcd cluster under two registry nodes: one member killed changes nothing
/// for clients; every member killed and restarted loses no acknowledged registration and no
/// index goes back; a compaction while a node is stopped leaves it no ghost on restart.
#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn a_three_member_etcd_cluster_loses_nothing() {
    let mut members = EtcdServer::cluster(3);
    let url = EtcdServer::cluster_url(&members);
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        RegistryProcess::start(&dir.path().join(name), &["--store", &url, "--node", name])
    };
    let a = start("a");
    let b = start("b");
    let register = |node: &RegistryProcess, i: u32| {
        node.put(
            "/v1/agent/service/register",
            &json!({"Name": "api", "ID": format!("api-{i}"), "Port": 9000 + i}).to_string(),
        )
    };
    let count = |node: &RegistryProcess| -> usize {
        node.get("/v1/health/service/api")
            .json()
            .as_array()
            .map_or(0, Vec::len)
    };
    for i in 0..5 {
        assert_eq!(register(&a, i).status, 200);
    }
    eventually("b has the five", || count(&b) == 5);

    // The leader killed: the followers drop proposals until they elect another, and a write
    // without comparisons that times out goes to the next member. Writes and reads go on,
    // through both nodes, none refused.
    let leader = eventually_some("a leader", || members.iter().position(|m| m.is_leader()));
    members[leader].stop();
    for i in 5..10 {
        let answer = register(&b, i);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    eventually("a has the ten", || count(&a) == 10);
    let before = index(&a.get("/v1/health/service/api"));

    // Every member killed, then restarted: everything acknowledged is there, the index has
    // not gone back, and the nodes carry on without a restart.
    for member in &mut members {
        member.stop();
    }
    for member in &mut members {
        member.spawn();
    }
    for member in &members {
        member.wait_healthy();
    }
    eventually("writes work again", || register(&a, 10).status == 200);
    eventually("b has the eleven", || count(&b) == 11);
    assert!(index(&b.get("/v1/health/service/api")) > before);

    // A compaction while b is stopped: b restarts with no ghost of what was deleted.
    drop(b);
    assert_eq!(a.put("/v1/agent/service/deregister/api-0", "").status, 200);
    let revision = index(&a.get("/v1/health/service/api"));
    let compacted = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=127.0.0.1:{}",
            members[(leader + 1) % 3].client_port
        ))
        .args(["compact", &(revision - 1).to_string()])
        .output()
        .expect("etcdctl");
    assert!(compacted.status.success(), "{compacted:?}");
    let b = start("b");
    assert_eq!(count(&b), 10);
    assert!(
        b.get("/v1/health/service/api")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["Service"]["ID"] != "api-0"),
        "no ghost"
    );
}

#[test]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
fn acls_are_shared_by_every_node_and_bootstrap_happens_once() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let acl_node = |name: &str| {
        RegistryProcess::start(
            &dir.path().join(name),
            &[
                "--store",
                &etcd.store_url(),
                "--node",
                name,
                "--acl",
                "--acl-default-policy",
                "deny",
            ],
        )
    };
    let a = acl_node("a");
    let b = acl_node("b");
    let boot = a.put("/v1/acl/bootstrap", "");
    assert_eq!(boot.status, 200, "{}", boot.text());
    let root = boot.json()["SecretID"].as_str().unwrap().to_owned();
    // Bootstrap is once for the store, whichever node is asked.
    let again = b.put("/v1/acl/bootstrap", "");
    assert_eq!(again.status, 403, "{}", again.text());

    // A policy and a token made through a work on b.
    let with = |node: &RegistryProcess, token: &str, method: &str, path: &str, body: &str| {
        request_with(
            node.addr,
            method,
            path,
            &[("X-Consul-Token", token)],
            body.as_bytes(),
        )
    };
    let policy = with(
        &a,
        &root,
        "PUT",
        "/v1/acl/policy",
        &json!({"Name": "web", "Rules": "service \"web\" { policy = \"write\" }"}).to_string(),
    );
    assert_eq!(policy.status, 200, "{}", policy.text());
    let token = with(
        &a,
        &root,
        "PUT",
        "/v1/acl/token",
        &json!({"Policies": [{"Name": "web"}]}).to_string(),
    );
    let web = token.json()["SecretID"].as_str().unwrap().to_owned();
    let register = |name: &str| {
        with(
            &b,
            &web,
            "PUT",
            "/v1/agent/service/register",
            &json!({"Name": name, "Port": 80}).to_string(),
        )
        .status
    };
    eventually("b knows the token made on a", || register("web") == 200);
    assert_eq!(register("db"), 403);
    assert_eq!(
        b.put("/v1/agent/service/register", "{\"Name\": \"web\"}")
            .status,
        403
    );
}
