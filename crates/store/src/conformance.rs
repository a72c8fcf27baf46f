//! The behaviour every store backend must show, as test cases any backend can run.
//!
//! A backend's test file implements [`Harness`] and invokes [`conformance_tests!`], which
//! expands to one `#[tokio::test]` per case, so failures name the case.

use std::sync::Arc;
use std::time::Duration;

use crate::{BoxFuture, Compare, EventKind, Op, Store, StoreError, Txn, Watch, WatchBatch};

/// How the suite gets stores from a backend.
pub trait Harness: Send + Sync {
    /// A store over an empty keyspace.
    fn fresh(&self) -> BoxFuture<'_, Arc<dyn Store>>;
    /// The same keyspace after the backend restarts: `store` is dropped and opened again.
    fn restart(&self, store: Arc<dyn Store>) -> BoxFuture<'_, Arc<dyn Store>>;
}

/// Expands to one test per conformance case for the harness that `$harness` builds.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@all $harness; []);
    };
    // Every case `#[ignore]`d with `$why`: for a backend that needs a server the plain
    // `cargo test` cannot count on (run with `--include-ignored` where it is installed).
    ($harness:expr, ignore = $why:literal) => {
        $crate::conformance_tests!(@all $harness; [ignore = $why]);
    };
    (@all $harness:expr; $attrs:tt) => {
        $crate::conformance_tests!(@cases $harness; $attrs;
            put_get_and_range_by_prefix,
            revisions_are_monotonic_and_per_key,
            txn_applies_only_when_comparisons_hold,
            txn_is_one_revision_and_one_batch,
            delete_prefix_removes_only_the_prefix,
            watch_replays_from_a_revision_then_follows,
            watch_filters_by_prefix,
            lease_expiry_deletes_attached_keys,
            keep_alive_holds_a_lease,
            revoke_deletes_keys_and_unknown_leases_are_refused,
            writes_survive_a_restart,
            concurrent_writes_all_apply_under_new_revisions
        );
    };
    (@cases $harness:expr; $attrs:tt; $($case:ident),*) => {
        $( $crate::conformance_tests!(@case $harness; $attrs; $case); )*
    };
    (@case $harness:expr; [$($attr:meta),*]; $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $case() {
            let harness = $harness;
            $crate::conformance::$case(&harness).await;
        }
    };
}

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_batch(watch: &mut Watch) -> WatchBatch {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("watch delivered nothing before the deadline")
        .expect("watch ended")
        .expect("watch failed")
}

pub async fn put_get_and_range_by_prefix(h: &dyn Harness) {
    let store = h.fresh().await;
    for key in ["a", "c/2", "c/1", "d"] {
        store.put(key, key.as_bytes()).await.unwrap();
    }
    let range = store.range("c/").await.unwrap();
    let keys: Vec<_> = range.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["c/1", "c/2"], "prefix range in key order");
    assert_eq!(range.kvs[0].value, b"c/1");
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"a");
    assert!(
        store.get("c").await.unwrap().is_none(),
        "get is exact, not a prefix"
    );
    assert_eq!(store.range("").await.unwrap().kvs.len(), 4);
}

pub async fn revisions_are_monotonic_and_per_key(h: &dyn Harness) {
    let store = h.fresh().await;
    let r1 = store.put("k", "1").await.unwrap();
    let r2 = store.put("k", "2").await.unwrap();
    assert_eq!(r2, r1 + 1);
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    let r3 = store.delete("missing").await.unwrap();
    assert_eq!(r3, r2, "deleting nothing is not a write");
    let r4 = store.delete("k").await.unwrap();
    assert_eq!(r4, r2 + 1);
    let r5 = store.put("k", "3").await.unwrap();
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!(kv.create_revision, r5, "a re-created key starts a new life");
    assert_eq!(store.range("").await.unwrap().revision, r5);
}

pub async fn txn_applies_only_when_comparisons_hold(h: &dyn Harness) {
    let store = h.fresh().await;
    let create = || {
        Txn::new()
            .when(Compare::ModRevision {
                key: "lock".into(),
                revision: 0,
            })
            .op(Op::put("lock", "me"))
    };
    let first = store.txn(create()).await.unwrap();
    assert!(first.succeeded);
    let second = store.txn(create()).await.unwrap();
    assert!(!second.succeeded, "key exists now");
    assert_eq!(
        second.revision, first.revision,
        "a failed txn writes nothing"
    );
    let update = Txn::new()
        .when(Compare::ModRevision {
            key: "lock".into(),
            revision: first.revision,
        })
        .op(Op::put("lock", "you"));
    assert!(store.txn(update.clone()).await.unwrap().succeeded);
    assert!(
        !store.txn(update).await.unwrap().succeeded,
        "stale revision"
    );
    assert_eq!(store.get("lock").await.unwrap().unwrap().value, b"you");
}

pub async fn txn_is_one_revision_and_one_batch(h: &dyn Harness) {
    let store = h.fresh().await;
    let start = store.put("x", "0").await.unwrap();
    let mut watch = store.watch("", start + 1).await.unwrap();
    let txn = Txn::new()
        .op(Op::put("a", "1"))
        .op(Op::put("b", "2"))
        .op(Op::delete("x"));
    let outcome = store.txn(txn).await.unwrap();
    assert_eq!(outcome.revision, start + 1);
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, outcome.revision);
    let kinds: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.kv.key.as_str(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", EventKind::Put),
            ("b", EventKind::Put),
            ("x", EventKind::Delete)
        ]
    );
}

pub async fn delete_prefix_removes_only_the_prefix(h: &dyn Harness) {
    let store = h.fresh().await;
    for key in ["s/1", "s/2", "s2", "t"] {
        store.put(key, "v").await.unwrap();
    }
    store
        .txn(Txn::new().op(Op::DeletePrefix {
            prefix: "s/".into(),
        }))
        .await
        .unwrap();
    let keys: Vec<_> = store
        .range("")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["s2", "t"]);
}

pub async fn watch_replays_from_a_revision_then_follows(h: &dyn Harness) {
    let store = h.fresh().await;
    store.put("k1", "a").await.unwrap();
    let r2 = store.put("k2", "b").await.unwrap();
    store.put("k3", "c").await.unwrap();
    let mut watch = store.watch("", r2).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.events[0].kv.key, "k2");
    assert_eq!(next_batch(&mut watch).await.events[0].kv.key, "k3");
    let r4 = store.put("k4", "d").await.unwrap();
    let live = next_batch(&mut watch).await;
    assert_eq!((live.revision, live.events[0].kv.key.as_str()), (r4, "k4"));
    assert_eq!(live.events[0].kv.value, b"d");
}

pub async fn watch_filters_by_prefix(h: &dyn Harness) {
    let store = h.fresh().await;
    let mut watch = store.watch("a/", 0).await.unwrap();
    store.put("b/1", "x").await.unwrap();
    store.put("a/1", "y").await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kv.key, "a/1");
}

pub async fn lease_expiry_deletes_attached_keys(h: &dyn Harness) {
    let store = h.fresh().await;
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let txn = Txn::new().op(Op::Put {
        key: "eph".into(),
        value: b"v".to_vec(),
        lease,
    });
    let put = store.txn(txn).await.unwrap();
    store.put("durable", "v").await.unwrap();
    assert_eq!(store.get("eph").await.unwrap().unwrap().lease, lease);
    let mut watch = store.watch("eph", put.revision + 1).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert!(store.get("eph").await.unwrap().is_none());
    assert!(
        store.get("durable").await.unwrap().is_some(),
        "keys without the lease stay"
    );
}

pub async fn keep_alive_holds_a_lease(h: &dyn Harness) {
    let store = h.fresh().await;
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let txn = Txn::new().op(Op::Put {
        key: "held".into(),
        value: b"v".to_vec(),
        lease,
    });
    store.txn(txn).await.unwrap();
    // Keep alive for three TTLs: the key must outlive the TTL it was granted with.
    for _ in 0..15 {
        store.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        store.get("held").await.unwrap().is_some(),
        "kept-alive lease expired"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while store.get("held").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never expired after keep-alives stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn revoke_deletes_keys_and_unknown_leases_are_refused(h: &dyn Harness) {
    let store = h.fresh().await;
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    for key in ["l/1", "l/2"] {
        let txn = Txn::new().op(Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
        });
        store.txn(txn).await.unwrap();
    }
    store.revoke_lease(lease).await.unwrap();
    assert!(store.range("l/").await.unwrap().kvs.is_empty());
    let txn = Txn::new().op(Op::Put {
        key: "z".into(),
        value: b"v".to_vec(),
        lease,
    });
    assert!(matches!(
        store.txn(txn).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(
        store.get("z").await.unwrap().is_none(),
        "a refused txn writes nothing"
    );
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

pub async fn writes_survive_a_restart(h: &dyn Harness) {
    let store = h.fresh().await;
    store.put("a", "1").await.unwrap();
    let last = store.put("b", "2").await.unwrap();
    let store = h.restart(store).await;
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
    assert_eq!(store.get("b").await.unwrap().unwrap().mod_revision, last);
    assert_eq!(
        store.range("").await.unwrap().revision,
        last,
        "revision survives"
    );
    assert_eq!(
        store.put("c", "3").await.unwrap(),
        last + 1,
        "revisions continue"
    );
}

/// Concurrent writes all apply, each under a revision after the start and at most the
/// final one, and a write after them gets a later revision still. (They may share
/// revisions: a backend may commit them together.) A watch sees every one, each key with the
/// revision its writer was told.
pub async fn concurrent_writes_all_apply_under_new_revisions(h: &dyn Harness) {
    let store = h.fresh().await;
    let start = store.range("").await.unwrap().revision;
    let mut watch = store.watch("k/", start + 1).await.unwrap();
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(&format!("k/{i}"), "v").await.unwrap() })
        })
        .collect();
    let mut told = std::collections::HashMap::new();
    for (i, writer) in writers.into_iter().enumerate() {
        told.insert(format!("k/{i}"), writer.await.unwrap());
    }
    let range = store.range("k/").await.unwrap();
    assert_eq!(range.kvs.len(), 200);
    let end = range.revision;
    assert!(end > start && end <= start + 200, "{start} -> {end}");
    for kv in &range.kvs {
        assert_eq!(kv.mod_revision, told[&kv.key], "{}", kv.key);
        assert!(kv.mod_revision > start && kv.mod_revision <= end);
    }
    let mut seen = 0;
    let mut last = start;
    while seen < 200 {
        let batch = next_batch(&mut watch).await;
        assert!(batch.revision > last, "batches in revision order");
        last = batch.revision;
        for event in batch.events {
            assert_eq!(told[&event.kv.key], batch.revision);
            seen += 1;
        }
    }
    assert!(store.put("after", "v").await.unwrap() > end);
}
