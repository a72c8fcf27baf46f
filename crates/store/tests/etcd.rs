//! The conformance suite against the etcd backend, each case on an etcd server of its own
//! (Debian's `etcd-server`, started here on free loopback ports with a scratch data
//! directory, killed at the end), plus what only this backend promises: a watch resumes
//! after etcd restarts, a compacted start is reported for a relist, keys stay under their
//! prefix. Ignored by a plain `cargo test` (which cannot count on etcd being installed):
//! `bash tests/etcd/run.sh` installs it and runs them.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use wharf_store::conformance::Harness;
use wharf_store::{BoxFuture, EtcdStore, Store, StoreError};

const NEEDS_ETCD: &str = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd server, killed on drop.
struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    fn start() -> EtcdServer {
        let mut server = EtcdServer {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("etcd.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({NEEDS_ETCD}): {e}"));
        self.child = Some(child);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A store on this server, once it answers (polled, with a deadline).
    async fn store(&self, prefix: &str) -> EtcdStore {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect(&[self.endpoint()], prefix).await {
                Ok(store) => return store,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "etcd did not answer: {e}; its log: {}",
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
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
        Box::pin(async move { Arc::new(self.server.store("/wharf/").await) as Arc<dyn Store> })
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
    let store: Arc<dyn Store> = Arc::new(server.store("/wharf/").await);
    let first = store.put("a", "1").await.unwrap();
    let mut watch = store.watch("", first).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.events[0].kv.key, "a");
    server.stop();
    // The watch stays, waiting; etcd comes back on the same ports with the same data.
    server.run();
    let store = server.store("/wharf/").await;
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
    let store = server.store("/wharf/").await;
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
    let one: Arc<dyn Store> = Arc::new(server.store("/one/").await);
    let two: Arc<dyn Store> = Arc::new(server.store("/two/").await);
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
