//! The conformance suite against the embedded (redb) backend, plus what only it promises.

use std::sync::Arc;
use std::time::Duration;

use wharf_store::conformance::Harness;
use wharf_store::{BoxFuture, EmbeddedStore, Store, StoreError};

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        Embedded {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Opens the file, waiting for a previous handle's writer thread to let go of it.
    async fn open(&self) -> Arc<dyn Store> {
        let path = self.dir.path().join("store.redb");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match EmbeddedStore::open(&path) {
                Ok(store) => return Arc::new(store),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot reopen store: {e}"),
            }
        }
    }
}

impl Harness for Embedded {
    fn fresh(&self) -> BoxFuture<'_, Arc<dyn Store>> {
        Box::pin(self.open())
    }

    fn restart(&self, store: Arc<dyn Store>) -> BoxFuture<'_, Arc<dyn Store>> {
        drop(store);
        Box::pin(self.open())
    }
}

wharf_store::conformance_tests!(Embedded::new());

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _first = EmbeddedStore::open(&path).unwrap();
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn watching_history_from_before_a_restart_is_compacted() {
    let harness = Embedded::new();
    let store = harness.fresh().await;
    let first = store.put("a", "1").await.unwrap();
    store.put("a", "2").await.unwrap();
    let store = harness.restart(store).await;
    assert!(matches!(
        store.watch("", first).await,
        Err(StoreError::Compacted { .. })
    ));
}
