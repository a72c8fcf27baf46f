//! The conformance suite against the etcd backend, each case on an etcd server of its own
//! (Debian's `etcd-server`, started here on free loopback ports with a scratch data
//! directory, killed at the end), plus what only this backend promises: a watch resumes
//! after etcd restarts, a compacted start is reported for a relist, keys stay under their
//! prefix. Ignored by a plain `cargo test` (which cannot count on etcd being installed):
//! `bash tests/etcd/run.sh` installs it and runs them.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::etcd_server::EtcdServer;
use wharf_store::conformance::Harness;
use wharf_store::{BoxFuture, EtcdStore, Store, StoreError};

/// A store on `server`, keys under `prefix`.
async fn store_on(server: &EtcdServer, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&[server.endpoint()], prefix)
        .await
        .expect("a healthy etcd answers")
}

struct Etcd {
    server: EtcdServer,
}

impl Etcd {
    fn new() -> Etcd {
        Etcd {
            server: EtcdServer::start(),
        }
    }
}

impl Harness for Etcd {
    fn fresh(&self) -> BoxFuture<'_, Arc<dyn Store>> {
        Box::pin(async move { Arc::new(store_on(&self.server, "/wharf/").await) as Arc<dyn Store> })
    }

    /// The node restarts: a new client on the same etcd.
    fn restart(&self, store: Arc<dyn Store>) -> BoxFuture<'_, Arc<dyn Store>> {
        drop(store);
        self.fresh()
    }
}

wharf_store::conformance_tests!(
    Etcd::new(),
    ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"
);

async fn next_batch(watch: &mut wharf_store::Watch) -> wharf_store::WatchBatch {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch delivered nothing in time")
        .expect("the watch ended")
        .expect("the watch failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn a_watch_resumes_where_it_left_off_after_etcd_restarts() {
    let mut server = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(store_on(&server, "/wharf/").await);
    let first = store.put("a", "1").await.unwrap();
    let mut watch = store.watch("", first).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.events[0].kv.key, "a");
    server.stop();
    // The watch stays, waiting; etcd comes back on the same ports with the same data.
    server.run();
    let store = store_on(&server, "/wharf/").await;
    let store: Arc<dyn Store> = Arc::new(store);
    let second = store.put("b", "2").await.unwrap();
    store.put("c", "3").await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(
        (batch.revision, batch.events[0].kv.key.as_str()),
        (second, "b"),
        "nothing lost and nothing repeated across the restart"
    );
    assert_eq!(next_batch(&mut watch).await.events[0].kv.key, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn a_compacted_start_is_reported_for_a_relist() {
    let server = EtcdServer::start();
    let store = store_on(&server, "/wharf/").await;
    store_put(&store, "a").await;
    let last = store_put(&store, "b").await;
    // Compact everything up to `last` with etcdctl, as an operator (or etcd's own
    // auto-compaction) would.
    let compacted = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(["compact", &last.to_string()])
        .output()
        .expect("etcdctl");
    assert!(compacted.status.success(), "{compacted:?}");
    let store: Arc<dyn Store> = Arc::new(store);
    let mut watch = store.watch("", 1).await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("an answer in time")
        .expect("an error, not the end");
    assert!(
        matches!(failed, Err(StoreError::Compacted { requested: 1, oldest }) if oldest == last),
        "{failed:?}"
    );
}

async fn store_put(store: &EtcdStore, key: &str) -> u64 {
    let store: &dyn Store = store;
    store.put(key, "v").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn keys_stay_under_their_prefix() {
    let server = EtcdServer::start();
    let one: Arc<dyn Store> = Arc::new(store_on(&server, "/one/").await);
    let two: Arc<dyn Store> = Arc::new(store_on(&server, "/two/").await);
    one.put("k", "1").await.unwrap();
    two.put("k", "2").await.unwrap();
    assert_eq!(one.get("k").await.unwrap().unwrap().value, b"1");
    assert_eq!(two.range("").await.unwrap().kvs.len(), 1);
    let mut watch = one.watch("", 0).await.unwrap();
    two.put("x", "ignored").await.unwrap();
    let mine = one.put("y", "seen").await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(
        (batch.revision, batch.events[0].kv.key.as_str()),
        (mine, "y")
    );
    // Unknown endpoints are refused with a reason, not a hang.
    assert!(wharf_store::etcd::parse_url("etcd://nowhere").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn a_dead_member_is_left_for_the_others() {
    let mut members = tokio::task::spawn_blocking(|| EtcdServer::cluster(3))
        .await
        .unwrap();
    // The member in use is the first given: a follower (a leader's death would also fail
    // the writes in flight while the others elect a new one).
    let follower = members.iter().position(|m| !m.is_leader()).unwrap();
    let mut endpoints = vec![members[follower].endpoint()];
    endpoints.extend(
        members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != follower)
            .map(|(_, m)| m.endpoint()),
    );
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(&endpoints, "/wharf/").await.unwrap());
    let first = store.put("a", "1").await.unwrap();
    let mut watch = store.watch("", first + 1).await.unwrap();
    members[follower].stop();
    let second = store.put("b", "2").await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await.revision,
        second,
        "the watch moved to another member too"
    );
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn a_range_larger_than_a_message_comes_whole_in_order() {
    let server = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(store_on(&server, "/wharf/").await);
    // 2,500 keys of 2 KiB: past one page (1,000 keys) and past a 4 MiB gRPC message.
    let value = vec![b'v'; 2048];
    for batch in 0..25 {
        let mut txn = wharf_store::Txn::new();
        for i in 0..100 {
            txn = txn.op(wharf_store::Op::put(
                &format!("k/{:05}", batch * 100 + i),
                value.clone(),
            ));
        }
        store.txn(txn).await.unwrap();
    }
    let head = store.put("z", "after").await.unwrap();
    let range = store.range("k/").await.unwrap();
    assert_eq!(range.kvs.len(), 2500);
    assert!(
        range.kvs.windows(2).all(|w| w[0].key < w[1].key),
        "key order"
    );
    assert_eq!(range.kvs[2499].key, "k/02499");
    assert_eq!(range.revision, head, "read at one revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn an_etcd_that_takes_tls_only_is_reached_with_etcds() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs::issue(dir.path());
    let server = EtcdServer::start_tls(&certs.server_cert, &certs.server_key, &certs.ca);
    let endpoints = wharf_store::etcd::parse_url(&server.store_url()).unwrap();
    assert!(endpoints[0].starts_with("https://"), "{endpoints:?}");
    let tls = wharf_store::etcd::EtcdTls {
        ca_pem: std::fs::read(&certs.ca).unwrap(),
        client: Some((
            std::fs::read(&certs.client_cert).unwrap(),
            std::fs::read(&certs.client_key).unwrap(),
        )),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let store = loop {
        match EtcdStore::connect_with(&endpoints, "/wharf/", Some(&tls)).await {
            Ok(store) => break store,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let store: Arc<dyn Store> = Arc::new(store);
    store.put("k", "over tls").await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"over tls");
    // Without the CA, an etcds:// store is refused with a reason; without a client
    // certificate, etcd refuses the connection.
    let refused = EtcdStore::connect_with(&endpoints, "/wharf/", None).await;
    assert!(matches!(&refused, Err(StoreError::Backend(why)) if why.contains("--etcd-ca")));
    let anonymous = wharf_store::etcd::EtcdTls {
        ca_pem: tls.ca_pem.clone(),
        client: None,
    };
    assert!(
        EtcdStore::connect_with(&endpoints, "/wharf/", Some(&anonymous))
            .await
            .is_err()
    );
}

/// Concurrent writes without comparisons are committed together (fewer revisions than
/// writes), and a merged commit that fails because of one of them (its lease revoked)
/// fails only that one: the others are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh"]
async fn concurrent_writes_are_committed_together_and_fail_alone() {
    let server = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(store_on(&server, "/wharf/").await);
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(&format!("k/{i}"), "v").await.unwrap() })
        })
        .collect();
    let mut revisions = std::collections::HashSet::new();
    for writer in writers {
        revisions.insert(writer.await.unwrap());
    }
    assert!(
        revisions.len() < 200,
        "200 concurrent writes took {} revisions",
        revisions.len()
    );

    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let writers: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let op = if i == 25 {
                    wharf_store::Op::Put {
                        key: "leased/x".into(),
                        value: b"v".to_vec(),
                        lease,
                    }
                } else {
                    wharf_store::Op::put(&format!("m/{i}"), "v")
                };
                store.txn(wharf_store::Txn::new().op(op)).await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        if let Err(e) = writer.await.unwrap() {
            failed.push((i, e));
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 25);
    assert!(
        matches!(failed[0].1, StoreError::LeaseNotFound(_)),
        "{failed:?}"
    );
    assert_eq!(store.range("m/").await.unwrap().kvs.len(), 49);
}
