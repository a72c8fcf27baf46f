//! The etcd backend of [`Store`]: the same keyspace, revisions, watches and leases, kept by
//! an etcd cluster, so that several registry nodes share one state and none of them
//! implements consensus.
//!
//! - Keys live under a prefix (`/wharf/` by default), so one etcd can hold several meshes;
//!   the registry sees keys without it.
//! - One gRPC channel per member given, used one at a time: a call that cannot reach its
//!   member (the connection refused or broken) moves to the next one and is tried there. A
//!   write may so go twice if the first had reached etcd before the connection broke; the
//!   registry's writes put the same records again, and a compare that then meets its own
//!   earlier write reports a conflict, which the registry answers by reading again. A write
//!   with comparisons that timed out is not sent again (it may still be applied); reads are,
//!   and so are writes without comparisons, which applying twice cannot change (unless
//!   another write to the same key came between, the price of riding out a leader's death). A deadline per
//!   call and HTTP/2 keep-alives find a dead member.
//! - A watch **resumes** from the last revision it delivered + 1 after any disconnect (with
//!   a backoff and jitter, so that an etcd restart does not bring every node back at once),
//!   asks for progress notifications so that an idle watch's resume point stays fresh, and
//!   reports a compacted start as [`StoreError::Compacted`] for the caller to relist.
//! - Writes are etcd transactions, durable when etcd acknowledges them; those without
//!   comparisons that wait while others are in flight are merged into one ([`batch`]), so
//!   concurrent writes may share a revision.
//! - A heartbeat asks etcd's status every second: [`Store::contact`] says whether a leader
//!   answers and how long ago anything did, for answers that must say when they are stale.
//!
//! Why not the `etcd-client` crate: its build script runs `protoc`, which a machine with only
//! the Rust toolchain does not have. The generated messages and clients it would build are
//! checked in here ([`pb`]) and this module is the thin translation etcd-client would be.

mod batch;
mod pb;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::maintenance_client::MaintenanceClient;
use pb::etcdserverpb::request_op::Request as RequestOneof;
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::watch_request::RequestUnion;
use pb::etcdserverpb::{
    Compare as EtcdCompare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::{
    BoxFuture, Compare, Contact, Event, EventKind, KeyValue, LeaseId, Op, Range, Result, Revision,
    Store, StoreError, Txn, TxnOutcome, WATCH_BUFFER, Watch, WatchBatch,
};

/// How long one call to etcd may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A resumed watch waits this long after its first failure, doubling to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys per page of a range.
const RANGE_PAGE: i64 = 1000;
/// The largest message taken from etcd (tonic's default is 4 MiB; a watch response after a
/// burst of writes, or a page of large values, can be more).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A KV client that takes large answers.
fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_MESSAGE)
}

/// How often the heartbeat asks etcd's status.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A [`Store`] on etcd.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<Members>,
    prefix: String,
    link: Arc<Link>,
    /// Transactions for the group commit ([`batch`]).
    batches: tokio::sync::mpsc::UnboundedSender<batch::Pending>,
}

/// The etcd members given, one channel each, and the one in use.
struct Members {
    channels: Vec<Channel>,
    current: std::sync::atomic::AtomicUsize,
}

impl Members {
    fn current(&self) -> (usize, Channel) {
        let which = self.current.load(Ordering::Relaxed) % self.channels.len();
        (which, self.channels[which].clone())
    }

    /// `which` did not answer: the next member is used from now on (unless another caller
    /// already moved on).
    fn failed(&self, which: usize) {
        let next = (which + 1) % self.channels.len();
        let _ = self
            .current
            .compare_exchange(which, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `call` on the member in use, moving to the next member when it cannot be
    /// reached ([`unreached`]). Each member is tried at most once.
    async fn call<T, F, Fut>(&self, any_failure: bool, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = None;
        for _ in 0..self.channels.len() {
            let (which, channel) = self.current();
            match call(channel).await {
                Err(status) if unreached(&status, any_failure) => {
                    self.failed(which);
                    last = Some(status);
                }
                answered => return answered,
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no etcd member given")))
    }
}

/// Whether a call failed for want of its member (and may go to another): the member is
/// unavailable (refused, or the connection broke); with `any_failure` (reads), a timeout too.
fn unreached(status: &tonic::Status, any_failure: bool) -> bool {
    // A broken connection surfaces as Unavailable, or as Unknown/Internal with the
    // transport's words (tonic maps the I/O error kinds one by one).
    let message = status.message().to_ascii_lowercase();
    let broken = [
        "transport error",
        "connect",
        "connection reset",
        "broken pipe",
    ]
    .iter()
    .any(|words| message.contains(words));
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => any_failure,
        tonic::Code::Unknown | tonic::Code::Internal => broken,
        _ => false,
    }
}

/// What the calls to etcd have learnt about the link.
struct Link {
    started: Instant,
    /// Milliseconds after `started` of the last answer from etcd.
    last_answer_ms: AtomicU64,
    leader: AtomicBool,
    head: AtomicU64,
}

impl Link {
    fn answered(&self, revision: i64) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_answer_ms.fetch_max(ms, Ordering::Relaxed);
        self.head
            .fetch_max(self::revision(revision), Ordering::Relaxed);
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `etcd://H:P[,H:P...]` as the endpoints it names (`http://H:P` each); `etcds://` for TLS
/// (`https://H:P` each).
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let (scheme, hosts) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
        (Some(hosts), _) => ("http", hosts),
        (_, Some(hosts)) => ("https", hosts),
        _ => {
            return Err(format!(
                "{url:?}: an etcd store is etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)"
            ));
        }
    };
    let endpoints: Vec<String> = hosts
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .map(|host| {
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
            if valid {
                Ok(format!("{scheme}://{host}"))
            } else {
                Err(format!("{url:?}: {host:?} is not HOST:PORT"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(endpoints)
}

/// How to talk TLS to etcd (`etcds://`): the CA that signed its members' certificates, and
/// this node's client certificate when etcd asks for one (`--client-cert-auth`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM; `None`: the machine's usual roots are not consulted, so it is required.
    pub ca_pem: Vec<u8>,
    /// PEM certificate and key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

fn backend(what: &str, status: tonic::Status) -> StoreError {
    StoreError::Backend(format!(
        "etcd {what}: {} ({:?})",
        status.message(),
        status.code()
    ))
}

/// Sends one etcd transaction; the error names a lease of `leases` that etcd no longer has.
async fn send_txn(
    members: &Members,
    link: &Link,
    request: TxnRequest,
    leases: &[LeaseId],
) -> Result<TxnOutcome> {
    send_txn_status(members, link, request)
        .await
        .map_err(|status| txn_error(status, leases))
}

/// [`send_txn`] with etcd's own status as the error. A transaction without comparisons
/// (puts and deletes of given keys: applying it twice is applying it once) whose call timed
/// out goes to the next member, as reads do: a leader killed leaves its followers dropping
/// proposals until they elect another, and the next member may already have one.
async fn send_txn_status(
    members: &Members,
    link: &Link,
    request: TxnRequest,
) -> std::result::Result<TxnOutcome, tonic::Status> {
    let idempotent = request.compare.is_empty();
    let response = members
        .call(idempotent, |channel| {
            let request = request.clone();
            async move { kv_client(channel).txn(request).await }
        })
        .await?
        .into_inner();
    link.answered(response.header.as_ref().map_or(0, |h| h.revision));
    Ok(TxnOutcome {
        succeeded: response.succeeded,
        revision: revision(response.header.map_or(0, |h| h.revision)),
    })
}

fn txn_error(status: tonic::Status, leases: &[LeaseId]) -> StoreError {
    if status.code() == tonic::Code::NotFound
        && status.message().contains("lease")
        && let Some(lease) = leases.first()
    {
        StoreError::LeaseNotFound(*lease)
    } else {
        backend("txn", status)
    }
}

/// The end of the range of every key starting with `prefix` (etcd's "prefix + 1").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn revision(value: i64) -> Revision {
    u64::try_from(value).unwrap_or(0)
}

impl EtcdStore {
    /// A store on the etcd members at `endpoints` (`http://H:P`), keys under `prefix`. Checks
    /// that etcd answers before returning.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore> {
        EtcdStore::connect_with(endpoints, prefix, None).await
    }

    /// As [`EtcdStore::connect`], with TLS for `https://` endpoints.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&EtcdTls>,
    ) -> Result<EtcdStore> {
        let tls_config = tls.map(|tls| {
            let mut config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                config = config.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            config
        });
        let endpoints = endpoints
            .iter()
            .map(|url| {
                if url.starts_with("https://") && tls_config.is_none() {
                    return Err(StoreError::Backend(format!(
                        "etcd endpoint {url:?}: TLS needs the CA of etcd's certificates (--etcd-ca)"
                    )));
                }
                Endpoint::from_shared(url.clone())
                    .and_then(|e| match &tls_config {
                        Some(config) if url.starts_with("https://") => e.tls_config(config.clone()),
                        _ => Ok(e),
                    })
                    .map(|e| {
                        e.connect_timeout(CONNECT_TIMEOUT)
                            .timeout(CALL_TIMEOUT)
                            .http2_keep_alive_interval(Duration::from_secs(10))
                            .keep_alive_timeout(Duration::from_secs(5))
                            .keep_alive_while_idle(true)
                            .tcp_nodelay(true)
                    })
                    .map_err(|e| StoreError::Backend(format!("etcd endpoint {url:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoint given".into()));
        }
        let (batches, queue) = tokio::sync::mpsc::unbounded_channel();
        let store = EtcdStore {
            members: Arc::new(Members {
                channels: endpoints.into_iter().map(|e| e.connect_lazy()).collect(),
                current: Default::default(),
            }),
            prefix: prefix.to_owned(),
            link: Arc::new(Link {
                started: Instant::now(),
                last_answer_ms: AtomicU64::new(0),
                leader: AtomicBool::new(false),
                head: AtomicU64::new(0),
            }),
            batches,
        };
        // The group commit ends when the last clone of the store (its sender) is gone.
        tokio::spawn(batch::run(store.members.clone(), store.link.clone(), queue));
        store.range("").await?; // etcd answers
        status(&store.members, &store.link).await;
        tokio::spawn(beat(store.members.clone(), Arc::downgrade(&store.link)));
        Ok(store)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn key_value(&self, kv: pb::mvccpb::KeyValue) -> Option<KeyValue> {
        let key = kv.key.strip_prefix(self.prefix.as_bytes())?;
        Some(KeyValue {
            key: String::from_utf8(key.to_vec()).ok()?,
            value: kv.value,
            create_revision: revision(kv.create_revision),
            mod_revision: revision(kv.mod_revision),
            lease: revision(kv.lease),
        })
    }

    fn request_op(&self, op: Op) -> RequestOp {
        let request = match op {
            Op::Put { key, value, lease } => RequestOneof::RequestPut(PutRequest {
                key: self.full_key(&key),
                value,
                lease: lease as i64,
                ..PutRequest::default()
            }),
            Op::Delete { key } => RequestOneof::RequestDeleteRange(DeleteRangeRequest {
                key: self.full_key(&key),
                ..DeleteRangeRequest::default()
            }),
            Op::DeletePrefix { prefix } => {
                let key = self.full_key(&prefix);
                RequestOneof::RequestDeleteRange(DeleteRangeRequest {
                    range_end: prefix_end(&key),
                    key,
                    ..DeleteRangeRequest::default()
                })
            }
        };
        RequestOp {
            request: Some(request),
        }
    }
}

/// One status call; records what it learns.
async fn status(members: &Members, link: &Link) -> bool {
    let answer = members
        .call(true, |channel| async move {
            MaintenanceClient::new(channel)
                .status(StatusRequest {})
                .await
        })
        .await;
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            link.answered(answer.header.map_or(0, |h| h.revision));
            link.leader.store(answer.leader != 0, Ordering::Relaxed);
            true
        }
        Err(_) => {
            link.leader.store(false, Ordering::Relaxed);
            false
        }
    }
}

/// The heartbeat, until the store is dropped.
async fn beat(members: Arc<Members>, link: std::sync::Weak<Link>) {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(link) = link.upgrade() else { return };
        status(&members, &link).await;
    }
}

impl Store for EtcdStore {
    fn contact(&self) -> Contact {
        let last = Duration::from_millis(self.link.last_answer_ms.load(Ordering::Relaxed));
        Contact {
            known_leader: self.link.leader.load(Ordering::Relaxed),
            last_contact: self.link.started.elapsed().saturating_sub(last),
            head: self.link.head.load(Ordering::Relaxed),
        }
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Range>> {
        Box::pin(async move {
            // In pages of RANGE_PAGE keys, all read at the revision of the first page, so that
            // a large catalog is neither one huge message nor a torn read.
            let start = self.full_key(prefix);
            let end = prefix_end(&start);
            let mut next = start;
            let mut at = 0i64;
            let mut kvs = Vec::new();
            loop {
                let request = RangeRequest {
                    key: next.clone(),
                    range_end: end.clone(),
                    limit: RANGE_PAGE,
                    revision: at,
                    ..RangeRequest::default()
                };
                let response = self
                    .members
                    .call(true, |channel| {
                        let request = request.clone();
                        async move { kv_client(channel).range(request).await }
                    })
                    .await
                    .map_err(|e| backend("range", e))?
                    .into_inner();
                let revision_now = response.header.as_ref().map_or(0, |h| h.revision);
                self.link.answered(revision_now);
                if at == 0 {
                    at = revision_now;
                }
                if let Some(last) = response.kvs.last() {
                    next = last.key.clone();
                    next.push(0); // the smallest key after it
                }
                let more = response.more && !response.kvs.is_empty();
                kvs.extend(response.kvs.into_iter().filter_map(|kv| self.key_value(kv)));
                if !more {
                    break;
                }
            }
            Ok(Range {
                revision: revision(at),
                kvs,
            })
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome>> {
        Box::pin(async move {
            let leases: Vec<LeaseId> = txn
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                    _ => None,
                })
                .collect();
            let request = TxnRequest {
                compare: txn
                    .compares
                    .iter()
                    .map(|Compare::ModRevision { key, revision }| EtcdCompare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: self.full_key(key),
                        target_union: Some(TargetUnion::ModRevision(*revision as i64)),
                        ..EtcdCompare::default()
                    })
                    .collect(),
                success: txn.ops.into_iter().map(|op| self.request_op(op)).collect(),
                failure: Vec::new(),
            };
            if !batch::mergeable(&request) {
                return send_txn(&self.members, &self.link, request, &leases).await;
            }
            let (done, outcome) = tokio::sync::oneshot::channel();
            self.batches
                .send(batch::Pending {
                    request,
                    leases,
                    done,
                })
                .map_err(|_| StoreError::Closed)?;
            outcome.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let (batches, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
            let follower = Follower {
                store: self.clone(),
                key: self.full_key(prefix),
                next: from,
                batches,
            };
            // The first stream is opened here, so that a watch that cannot start says so.
            let stream = follower.open().await?;
            tokio::spawn(follower.run(stream));
            Ok(Watch::new(receiver))
        })
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        Box::pin(async move {
            let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
            let response = self
                .members
                .call(false, |channel| async move {
                    LeaseClient::new(channel)
                        .lease_grant(LeaseGrantRequest {
                            ttl: seconds,
                            id: 0,
                        })
                        .await
                })
                .await
                .map_err(|e| backend("lease grant", e))?
                .into_inner();
            if !response.error.is_empty() {
                return Err(StoreError::Backend(format!(
                    "etcd lease grant: {}",
                    response.error
                )));
            }
            Ok(revision(response.id))
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // One request on etcd's keep-alive stream, one answer: a TTL of 0 means the
            // lease is gone.
            let mut answers = self
                .members
                .call(true, |channel| async move {
                    let request = tokio_stream::once(LeaseKeepAliveRequest { id: lease as i64 });
                    LeaseClient::new(channel).lease_keep_alive(request).await
                })
                .await
                .map_err(|e| backend("lease keep-alive", e))?
                .into_inner();
            match answers.message().await {
                Ok(Some(answer)) if answer.ttl > 0 => Ok(()),
                Ok(Some(_)) => Err(StoreError::LeaseNotFound(lease)),
                Ok(None) => Err(StoreError::Backend(
                    "etcd lease keep-alive: the stream closed without an answer".into(),
                )),
                Err(e) => Err(backend("lease keep-alive", e)),
            }
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.members
                .call(true, |channel| async move {
                    LeaseClient::new(channel)
                        .lease_revoke(LeaseRevokeRequest { id: lease as i64 })
                        .await
                })
                .await
                .map_err(|status| {
                    if status.code() == tonic::Code::NotFound {
                        StoreError::LeaseNotFound(lease)
                    } else {
                        backend("lease revoke", status)
                    }
                })?;
            Ok(())
        })
    }
}

type WatchStream = tonic::Streaming<pb::etcdserverpb::WatchResponse>;

/// One watch: an etcd watch stream, opened again from where it left off whenever it breaks.
struct Follower {
    store: EtcdStore,
    key: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    batches: tokio::sync::mpsc::Sender<Result<WatchBatch>>,
}

/// Why a watch stream ended.
enum Ended {
    /// The consumer went away, or the history it needs is gone: the watch is over.
    Over,
    /// The stream broke: open it again from `next`.
    Broken(String),
}

impl Follower {
    async fn open(&self) -> Result<WatchStream> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: prefix_end(&self.key),
                key: self.key.clone(),
                start_revision: self.next as i64,
                progress_notify: true,
                ..WatchCreateRequest::default()
            })),
        };
        // The request stream stays open (an etcd watch ends when its requests end).
        self.store
            .members
            .call(true, |channel| {
                let requests = tokio_stream::StreamExt::chain(
                    tokio_stream::once(create.clone()),
                    tokio_stream::pending(),
                );
                async move {
                    WatchClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .watch(requests)
                        .await
                }
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| backend("watch", e))
    }

    async fn run(mut self, mut stream: WatchStream) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.follow(&mut stream).await {
                Ended::Over => return,
                Ended::Broken(why) => {
                    tracing::warn!(from = self.next, "etcd watch broke ({why}); resuming");
                }
            }
            loop {
                let jitter = backoff.mul_f64(fastrand::f64() / 2.0);
                tokio::select! {
                    _ = tokio::time::sleep(backoff + jitter) => {}
                    _ = self.batches.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match self.open().await {
                    Ok(opened) => {
                        stream = opened;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd watch: cannot resume yet"),
                }
            }
            backoff = FIRST_BACKOFF;
        }
    }

    /// Delivers what the stream brings until it ends.
    async fn follow(&mut self, stream: &mut WatchStream) -> Ended {
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = self.batches.closed() => return Ended::Over,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Broken("the stream ended".into()),
                Err(status) => return Ended::Broken(status.message().to_owned()),
            };
            self.store
                .link
                .answered(response.header.as_ref().map_or(0, |h| h.revision));
            if response.compact_revision > 0 {
                let oldest = revision(response.compact_revision);
                let _ = self
                    .batches
                    .send(Err(StoreError::Compacted {
                        requested: self.next,
                        oldest,
                    }))
                    .await;
                return Ended::Over;
            }
            if response.canceled {
                return Ended::Broken(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason
                ));
            }
            if response.events.is_empty() {
                if let Some(header) = response.header {
                    let now = revision(header.revision);
                    if !response.created {
                        // A progress notification: nothing up to `now` is left to come.
                        self.next = self.next.max(now + 1);
                    } else if self.next == 0 {
                        // Watching "from now": a resume must start where this one did.
                        self.next = now + 1;
                    }
                }
                continue;
            }
            for batch in self.batches_of(response.events) {
                self.next = batch.revision + 1;
                if self.batches.send(Ok(batch)).await.is_err() {
                    return Ended::Over;
                }
            }
        }
    }

    /// Events grouped by revision, one batch each, in order.
    fn batches_of(&self, events: Vec<pb::mvccpb::Event>) -> Vec<WatchBatch> {
        let mut batches: Vec<WatchBatch> = Vec::new();
        for event in events {
            let kind = if event.r#type == pb::mvccpb::event::EventType::Delete as i32 {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            let Some(kv) = event.kv.and_then(|kv| self.store.key_value(kv)) else {
                continue;
            };
            if kv.mod_revision < self.next {
                continue; // already delivered before a resume
            }
            match batches.last_mut() {
                Some(batch) if batch.revision == kv.mod_revision => {
                    batch.events.push(Event { kind, kv })
                }
                _ => batches.push(WatchBatch {
                    revision: kv.mod_revision,
                    events: vec![Event { kind, kv }],
                }),
            }
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_its_keys_end() {
        assert_eq!(prefix_end(b"/wharf/"), b"/wharf0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0u8], "every key");
    }

    #[test]
    fn store_urls_name_their_members() {
        assert_eq!(
            parse_url("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap(),
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        for bad in [
            "127.0.0.1:2379",
            "etcd://",
            "etcd://host",
            "etcd://:1",
            "etcd://h:x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
