//! The store: the one seam between the registry and durable state.
//!
//! The interface is modelled on etcd's, so that the etcd backend is a thin translation and the
//! embedded backend behaves the same way: a flat keyspace of string keys, one global revision
//! that every successful write increments, prefix ranges read at a revision, watches that
//! replay every change after a given revision, conditional transactions, and leases whose
//! expiry deletes their keys. The registry only sees [`Store`]; the conformance suite in
//! [`conformance`] holds every backend to the same behaviour.

mod embedded;
pub mod etcd;
mod types;

pub mod conformance;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;
pub use types::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Range, Revision, Txn, TxnOutcome, WatchBatch,
};

/// A boxed future, so that [`Store`] can be used as a trait object chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, connection); the operation did not happen, or its
    /// outcome is unknown for a write whose acknowledgement was lost.
    #[error("store backend: {0}")]
    Backend(String),
    /// A watch asked for history that the store no longer keeps; the caller must read the
    /// current state again with a range and watch from there.
    #[error("revision {requested} is compacted; the oldest kept is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A watcher fell too far behind the writes; like [`StoreError::Compacted`], resync.
    #[error("watch fell behind and lost events")]
    WatchLagged,
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a backend's link to the servers that keep its data stands, so that answers can say
/// how fresh they are (Consul's `X-Consul-KnownLeader` and `X-Consul-LastContact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// Whether the backend reaches a leader now (an embedded store always does).
    pub known_leader: bool,
    /// Since the last answer from the servers (zero for an embedded store).
    pub last_contact: Duration,
    /// The latest revision the servers have reported (their head), to measure how far
    /// behind the watch is.
    pub head: Revision,
}

/// An etcd-like keyspace. Implementations must be cheap to share (`Arc<dyn Store>`).
pub trait Store: Send + Sync + 'static {
    /// How the link to the servers stands. An embedded store is its own server.
    fn contact(&self) -> Contact {
        Contact {
            known_leader: true,
            last_contact: Duration::ZERO,
            head: 0,
        }
    }

    /// Every key starting with `prefix`, in key order, and the revision they were read at.
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Range>>;

    /// Applies `txn.ops` atomically, under one new revision, if every comparison holds.
    /// Acknowledged writes are durable. Concurrent transactions without comparisons may
    /// share a revision (a backend may commit them together); each is still all or nothing,
    /// and a later transaction never gets an earlier revision.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome>>;

    /// Every change to keys under `prefix` with a revision of at least `from`, in revision
    /// order, then every later change as it is made.
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>>;

    /// A new lease that expires `ttl` after its grant or its last keep-alive.
    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>>;

    /// Restarts the lease's TTL.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>>;

    /// Ends the lease now and deletes every key attached to it, under one revision.
    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>>;
}

impl dyn Store {
    /// One key, if present.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let range = self.range(key).await?;
        Ok(range.kvs.into_iter().find(|kv| kv.key == key))
    }

    /// Unconditional put; returns the new revision.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Revision> {
        let txn = Txn::new().op(Op::put(key, value));
        Ok(self.txn(txn).await?.revision)
    }

    /// Unconditional delete; returns the store's revision afterwards.
    pub async fn delete(&self, key: &str) -> Result<Revision> {
        let txn = Txn::new().op(Op::Delete {
            key: key.to_owned(),
        });
        Ok(self.txn(txn).await?.revision)
    }
}

/// A stream of changes, delivered in revision order, one batch per revision.
pub struct Watch {
    batches: tokio::sync::mpsc::Receiver<Result<WatchBatch>>,
}

impl Watch {
    /// Wraps the channel a backend feeds.
    pub fn new(batches: tokio::sync::mpsc::Receiver<Result<WatchBatch>>) -> Watch {
        Watch { batches }
    }

    /// The next batch of changes; `None` once the store has closed. An error ends the watch.
    pub async fn next(&mut self) -> Option<Result<WatchBatch>> {
        self.batches.recv().await
    }
}

/// Default watch channel depth; a consumer that falls this far behind gets
/// [`StoreError::WatchLagged`] instead of unbounded memory growth.
pub const WATCH_BUFFER: usize = 4096;
