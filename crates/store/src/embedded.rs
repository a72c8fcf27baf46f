//! The embedded backend: one redb file under the data directory.
//!
//! Why this shape:
//! - **Durability with throughput.** Every acknowledged write is fsynced (redb's `Immediate`
//!   durability). One writer thread takes every transaction that is waiting and commits them
//!   together (group commit): each keeps its own revision, the fsync is shared, so durable
//!   writes scale with concurrency instead of being capped at one per disk flush.
//! - **Watches without polling.** Committed changes go to a broadcast channel and to a bounded
//!   in-memory history, so a watch can start at a recent revision (read a range at R, then
//!   watch from R+1) without a gap. History older than the window, or from before a restart,
//!   answers [`StoreError::Compacted`], as etcd does after compaction.
//! - **Leases** are stored (id and TTL) so that keys attached to them still expire after a
//!   restart; deadlines restart at open, as etcd restarts them on leader change.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::types::*;
use crate::{BoxFuture, Result, Store, StoreError, WATCH_BUFFER, Watch};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
const REVISION_KEY: &str = "revision";
const LEASE_SEQ_KEY: &str = "lease_seq";

/// Transactions committed together under one fsync, at most.
const MAX_GROUP: usize = 512;
/// Recent revisions kept in memory for watches that start in the past.
const HISTORY: usize = 4096;
/// Bytes before the value in a stored entry: create revision, mod revision, lease.
const HEADER: usize = 24;

/// The embedded store. Cloning shares the same database.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<Database>,
    writes: mpsc::Sender<Request>,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<WatchBatch>>,
    leases_changed: Arc<Notify>,
}

impl Drop for Shared {
    /// Wakes the lease reaper so that it notices the store is gone and ends.
    fn drop(&mut self) {
        self.leases_changed.notify_one();
    }
}

struct State {
    revision: Revision,
    history: VecDeque<Arc<WatchBatch>>,
    lease_deadlines: HashMap<LeaseId, (Duration, Instant)>,
}

enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnOutcome>>),
    Grant(Duration, oneshot::Sender<Result<LeaseId>>),
    Revoke(LeaseId, oneshot::Sender<Result<()>>),
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `path`. Must be called inside a tokio runtime: the
    /// lease reaper runs as a task. Fails if another process has the file open.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let db = Database::create(path.as_ref()).map_err(|e| {
            StoreError::Backend(format!("cannot open {}: {e}", path.as_ref().display()))
        })?;
        let (revision, leases) = initialise(&db)?;
        let now = Instant::now();
        let lease_deadlines = leases
            .into_iter()
            .map(|(id, ttl)| (id, (ttl, now + ttl)))
            .collect();
        let (writes, requests) = mpsc::channel(4 * MAX_GROUP);
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            db: Arc::new(db),
            writes,
            state: Mutex::new(State {
                revision,
                history: VecDeque::new(),
                lease_deadlines,
            }),
            events,
            leases_changed: Arc::new(Notify::new()),
        });
        let writer = Writer {
            shared: Arc::downgrade(&shared),
            db: shared.db.clone(),
        };
        std::thread::Builder::new()
            .name("wharf-store-writer".into())
            .spawn(move || writer.run(requests))
            .map_err(backend)?;
        tokio::spawn(reap_leases(Arc::downgrade(&shared)));
        Ok(EmbeddedStore { shared })
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, outcome) = oneshot::channel();
        self.shared
            .writes
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }
}

/// Creates the tables if needed; returns the stored revision and leases.
fn initialise(db: &Database) -> Result<(Revision, Vec<(LeaseId, Duration)>)> {
    let txn = db.begin_write().map_err(backend)?;
    let (revision, leases) = {
        txn.open_table(KV).map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let revision = meta
            .get(REVISION_KEY)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        let table = txn.open_table(LEASES).map_err(backend)?;
        let mut leases = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (id, ttl_ms) = entry.map_err(backend)?;
            leases.push((id.value(), Duration::from_millis(ttl_ms.value())));
        }
        (revision, leases)
    };
    txn.commit().map_err(backend)?;
    Ok((revision, leases))
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + kv.value.len());
    bytes.extend_from_slice(&kv.create_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.mod_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.lease.to_le_bytes());
    bytes.extend_from_slice(&kv.value);
    bytes
}

fn decode(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < HEADER {
        return Err(StoreError::Backend(format!(
            "corrupt entry for key {key:?}"
        )));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: word(0),
        mod_revision: word(1),
        lease: word(2),
        value: bytes[HEADER..].to_vec(),
    })
}

fn prefix_range(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<KeyValue>> {
    let mut kvs = Vec::new();
    for entry in table.range::<&str>(prefix..).map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        if !key.value().starts_with(prefix) {
            break;
        }
        kvs.push(decode(key.value(), value.value())?);
    }
    Ok(kvs)
}

impl Store for EmbeddedStore {
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Range>> {
        Box::pin(async move {
            let db = self.shared.db.clone();
            let prefix = prefix.to_owned();
            tokio::task::spawn_blocking(move || {
                let txn = db.begin_read().map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                let revision = meta
                    .get(REVISION_KEY)
                    .map_err(backend)?
                    .map_or(0, |v| v.value());
                let kv = txn.open_table(KV).map_err(backend)?;
                Ok(Range {
                    kvs: prefix_range(&kv, &prefix)?,
                    revision,
                })
            })
            .await
            .map_err(backend)?
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome>> {
        Box::pin(self.request(move |reply| Request::Txn(txn, reply)))
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let (replay, live) = {
                let state = self.shared.state.lock().expect("store state lock");
                let oldest = state
                    .history
                    .front()
                    .map_or(state.revision + 1, |b| b.revision);
                if from != 0 && from < oldest {
                    return Err(StoreError::Compacted {
                        requested: from,
                        oldest,
                    });
                }
                let replay: Vec<_> = state
                    .history
                    .iter()
                    .filter(|b| from != 0 && b.revision >= from)
                    .cloned()
                    .collect();
                (replay, self.shared.events.subscribe())
            };
            tokio::spawn(forward(prefix.to_owned(), replay, live, tx));
            Ok(Watch::new(rx))
        })
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        Box::pin(self.request(move |reply| Request::Grant(ttl, reply)))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut state = self.shared.state.lock().expect("store state lock");
            let (ttl, deadline) = state
                .lease_deadlines
                .get_mut(&lease)
                .ok_or(StoreError::LeaseNotFound(lease))?;
            *deadline = Instant::now() + *ttl;
            Ok(())
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.request(move |reply| Request::Revoke(lease, reply)))
    }
}

/// Feeds one watcher: the replayed history, then live batches, filtered by prefix.
async fn forward(
    prefix: String,
    replay: Vec<Arc<WatchBatch>>,
    mut live: broadcast::Receiver<Arc<WatchBatch>>,
    tx: mpsc::Sender<Result<WatchBatch>>,
) {
    let filter = |batch: &WatchBatch| -> Option<WatchBatch> {
        let events: Vec<Event> = batch
            .events
            .iter()
            .filter(|e| e.kv.key.starts_with(&prefix))
            .cloned()
            .collect();
        (!events.is_empty()).then_some(WatchBatch {
            revision: batch.revision,
            events,
        })
    };
    let mut last = 0;
    for batch in replay {
        last = batch.revision;
        if let Some(batch) = filter(&batch)
            && tx.send(Ok(batch)).await.is_err()
        {
            return;
        }
    }
    loop {
        match live.recv().await {
            Ok(batch) if batch.revision <= last => continue,
            Ok(batch) => {
                if let Some(batch) = filter(&batch)
                    && tx.send(Ok(batch)).await.is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = tx.send(Err(StoreError::WatchLagged)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Revokes leases whose deadline has passed. Sleeps until the next deadline, or until a lease
/// is granted or kept alive.
async fn reap_leases(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (expired, next) = {
            let state = strong.state.lock().expect("store state lock");
            let expired: Vec<LeaseId> = state
                .lease_deadlines
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let next = state
                .lease_deadlines
                .values()
                .map(|(_, d)| *d)
                .filter(|d| *d > now)
                .min();
            (expired, next)
        };
        let store = EmbeddedStore {
            shared: strong.clone(),
        };
        for lease in expired {
            if let Err(e) = store.revoke_lease(lease).await {
                tracing::warn!(lease, error = %e, "could not expire lease");
            }
        }
        let wake = strong.leases_changed.clone();
        let wake_at = next.unwrap_or(now + Duration::from_secs(3600));
        drop(store);
        drop(strong);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

// === impl Writer ===

/// The single writer: drains waiting requests and commits them under one fsync.
struct Writer {
    shared: Weak<Shared>,
    db: Arc<Database>,
}

/// What one request did inside a group, applied to memory once the group is durable.
enum Effect {
    Txn(
        oneshot::Sender<Result<TxnOutcome>>,
        Result<(TxnOutcome, Option<WatchBatch>)>,
    ),
    Grant(
        oneshot::Sender<Result<LeaseId>>,
        Result<(LeaseId, Duration)>,
    ),
    Revoke(
        oneshot::Sender<Result<()>>,
        LeaseId,
        Result<Option<WatchBatch>>,
    ),
}

impl Writer {
    fn run(self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<Request>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let start_revision = shared.state.lock().expect("store state lock").revision;
        let mut effects = Vec::with_capacity(group.len());
        let committed = (|| -> Result<Revision> {
            let txn = self.db.begin_write().map_err(backend)?;
            let mut revision = start_revision;
            {
                let mut kv = txn.open_table(KV).map_err(backend)?;
                let mut meta = txn.open_table(META).map_err(backend)?;
                let mut leases = txn.open_table(LEASES).map_err(backend)?;
                for request in group {
                    effects.push(match request {
                        Request::Txn(t, reply) => {
                            Effect::Txn(reply, apply_txn(&mut kv, &leases, &t, &mut revision))
                        }
                        Request::Grant(ttl, reply) => {
                            Effect::Grant(reply, grant(&mut meta, &mut leases, ttl))
                        }
                        Request::Revoke(lease, reply) => {
                            let outcome = revoke(&mut kv, &mut leases, lease, &mut revision);
                            Effect::Revoke(reply, lease, outcome)
                        }
                    });
                }
                meta.insert(REVISION_KEY, revision).map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(revision)
        })();

        let revision = match committed {
            Ok(revision) => revision,
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for effect in effects {
                    let err = || StoreError::Backend(e.to_string());
                    match effect {
                        Effect::Txn(reply, _) => drop(reply.send(Err(err()))),
                        Effect::Grant(reply, _) => drop(reply.send(Err(err()))),
                        Effect::Revoke(reply, _, _) => drop(reply.send(Err(err()))),
                    }
                }
                return;
            }
        };

        // Durable: publish to memory and watchers first, then acknowledge, so that a caller
        // that reads after its write is acknowledged sees the write everywhere.
        let mut replies = Vec::with_capacity(effects.len());
        let mut leases_changed = false;
        {
            let mut state = shared.state.lock().expect("store state lock");
            state.revision = revision;
            let publish = |state: &mut State, batch: WatchBatch| {
                let batch = Arc::new(batch);
                state.history.push_back(batch.clone());
                if state.history.len() > HISTORY {
                    state.history.pop_front();
                }
                let _ = shared.events.send(batch);
            };
            for effect in effects {
                match effect {
                    Effect::Txn(reply, outcome) => {
                        let outcome = outcome.map(|(outcome, batch)| {
                            if let Some(batch) = batch {
                                publish(&mut state, batch);
                            }
                            outcome
                        });
                        replies
                            .push(Box::new(move || drop(reply.send(outcome))) as Box<dyn FnOnce()>);
                    }
                    Effect::Grant(reply, outcome) => {
                        let outcome = outcome.map(|(id, ttl)| {
                            state
                                .lease_deadlines
                                .insert(id, (ttl, Instant::now() + ttl));
                            leases_changed = true;
                            id
                        });
                        replies.push(Box::new(move || drop(reply.send(outcome))));
                    }
                    Effect::Revoke(reply, lease, outcome) => {
                        let outcome = outcome.map(|batch| {
                            state.lease_deadlines.remove(&lease);
                            if let Some(batch) = batch {
                                publish(&mut state, batch);
                            }
                        });
                        replies.push(Box::new(move || drop(reply.send(outcome))));
                    }
                }
            }
        }
        if leases_changed {
            shared.leases_changed.notify_one();
        }
        for reply in replies {
            reply();
        }
    }
}

type KvTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type LeaseTable<'t> = redb::Table<'t, u64, u64>;

fn current(kv: &KvTable<'_>, key: &str) -> Result<Option<KeyValue>> {
    match kv.get(key).map_err(backend)? {
        Some(bytes) => Ok(Some(decode(key, bytes.value())?)),
        None => Ok(None),
    }
}

/// Applies one transaction inside the group. Validates everything before writing anything,
/// so a refused transaction leaves no trace.
fn apply_txn(
    kv: &mut KvTable<'_>,
    leases: &LeaseTable<'_>,
    txn: &Txn,
    revision: &mut Revision,
) -> Result<(TxnOutcome, Option<WatchBatch>)> {
    for compare in &txn.compares {
        let Compare::ModRevision {
            key,
            revision: expected,
        } = compare;
        let actual = current(kv, key)?.map_or(0, |kv| kv.mod_revision);
        if actual != *expected {
            return Ok((
                TxnOutcome {
                    succeeded: false,
                    revision: *revision,
                },
                None,
            ));
        }
    }
    for op in &txn.ops {
        if let Op::Put { lease, .. } = op
            && *lease != 0
            && leases.get(*lease).map_err(backend)?.is_none()
        {
            return Err(StoreError::LeaseNotFound(*lease));
        }
    }
    let next = *revision + 1;
    let mut events = Vec::new();
    for op in &txn.ops {
        match op {
            Op::Put { key, value, lease } => {
                let create_revision = current(kv, key)?.map_or(next, |kv| kv.create_revision);
                let entry = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: next,
                    lease: *lease,
                };
                kv.insert(key.as_str(), encode(&entry).as_slice())
                    .map_err(backend)?;
                events.push(Event {
                    kind: EventKind::Put,
                    kv: entry,
                });
            }
            Op::Delete { key } => {
                if let Some(old) = kv.remove(key.as_str()).map_err(backend)? {
                    let old = decode(key, old.value())?;
                    events.push(deleted(old, next));
                }
            }
            Op::DeletePrefix { prefix } => {
                for old in prefix_range(kv, prefix)? {
                    kv.remove(old.key.as_str()).map_err(backend)?;
                    events.push(deleted(old, next));
                }
            }
        }
    }
    if events.is_empty() {
        return Ok((
            TxnOutcome {
                succeeded: true,
                revision: *revision,
            },
            None,
        ));
    }
    *revision = next;
    Ok((
        TxnOutcome {
            succeeded: true,
            revision: next,
        },
        Some(WatchBatch {
            revision: next,
            events,
        }),
    ))
}

fn deleted(old: KeyValue, revision: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            value: Vec::new(),
            mod_revision: revision,
            ..old
        },
    }
}

fn grant(
    meta: &mut redb::Table<'_, &'static str, u64>,
    leases: &mut LeaseTable<'_>,
    ttl: Duration,
) -> Result<(LeaseId, Duration)> {
    let id = meta
        .get(LEASE_SEQ_KEY)
        .map_err(backend)?
        .map_or(0, |v| v.value())
        + 1;
    meta.insert(LEASE_SEQ_KEY, id).map_err(backend)?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    leases.insert(id, ttl_ms).map_err(backend)?;
    Ok((id, Duration::from_millis(ttl_ms)))
}

fn revoke(
    kv: &mut KvTable<'_>,
    leases: &mut LeaseTable<'_>,
    lease: LeaseId,
    revision: &mut Revision,
) -> Result<Option<WatchBatch>> {
    if leases.remove(lease).map_err(backend)?.is_none() {
        return Err(StoreError::LeaseNotFound(lease));
    }
    let mut attached = Vec::new();
    for entry in kv.iter().map_err(backend)? {
        let (key, value) = entry.map_err(backend)?;
        let entry = decode(key.value(), value.value())?;
        if entry.lease == lease {
            attached.push(entry);
        }
    }
    if attached.is_empty() {
        return Ok(None);
    }
    let next = *revision + 1;
    let mut events = Vec::with_capacity(attached.len());
    for old in attached {
        kv.remove(old.key.as_str()).map_err(backend)?;
        events.push(deleted(old, next));
    }
    *revision = next;
    Ok(Some(WatchBatch {
        revision: next,
        events,
    }))
}
