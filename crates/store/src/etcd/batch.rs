//! Group commit on etcd: transactions without comparisons that wait while others are in
//! flight go to etcd together, as one etcd transaction.
//!
//! Each etcd transaction is a raft proposal, a WAL entry and a round trip; at 64 clients,
//! 64 single registrations cost etcd more than 64 plain puts. Merging what queued up meanwhile
//! (as the embedded store's writer merges its fsyncs) brings a registration back to the cost
//! of a put. Only transactions that cannot fail each other are merged: no comparisons, no
//! prefix deletes, no key written by two of them (etcd refuses a transaction that names a key
//! twice), and within etcd's limits on operations and bytes. They then share one revision,
//! each still atomic. If a merged transaction fails for a reason one of them could cause (a
//! lease gone), each is sent again on its own so that the error reaches only its owner.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::pb::etcdserverpb::request_op::Request as RequestOneof;
use super::pb::etcdserverpb::{RequestOp, TxnRequest};
use super::{Link, Members, send_txn, send_txn_status, txn_error};
use crate::{LeaseId, Result, TxnOutcome};

/// Merged transactions in flight at once: while they are, the next ones queue and merge.
const IN_FLIGHT: usize = 4;
/// etcd's default `--max-txn-ops` is 128.
const MAX_OPS: usize = 120;
/// etcd's default `--max-request-bytes` is 1.5 MiB.
const MAX_BYTES: usize = 1024 * 1024;

/// One transaction waiting to be sent, and where its outcome goes.
pub(super) struct Pending {
    pub request: TxnRequest,
    pub leases: Vec<LeaseId>,
    pub done: oneshot::Sender<Result<TxnOutcome>>,
}

impl Pending {
    /// The keys it writes, if it may be merged at all (no comparisons, no ranges).
    fn keys(&self) -> Option<Vec<&[u8]>> {
        if !self.request.compare.is_empty() {
            return None;
        }
        self.request
            .success
            .iter()
            .map(|op| match &op.request {
                Some(RequestOneof::RequestPut(put)) => Some(put.key.as_slice()),
                Some(RequestOneof::RequestDeleteRange(delete)) if delete.range_end.is_empty() => {
                    Some(delete.key.as_slice())
                }
                _ => None,
            })
            .collect()
    }

    fn bytes(&self) -> usize {
        self.request
            .success
            .iter()
            .map(|op| match &op.request {
                Some(RequestOneof::RequestPut(put)) => put.key.len() + put.value.len(),
                Some(RequestOneof::RequestDeleteRange(delete)) => delete.key.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Whether a transaction may wait for the group commit (else it is sent at once).
pub(super) fn mergeable(request: &TxnRequest) -> bool {
    request.compare.is_empty()
        && request.success.iter().all(|op| {
            matches!(&op.request, Some(RequestOneof::RequestPut(_)))
                || matches!(&op.request, Some(RequestOneof::RequestDeleteRange(d)) if d.range_end.is_empty())
        })
}

/// Takes transactions from `queue` until every sender is gone, merging what waits.
pub(super) async fn run(
    members: Arc<Members>,
    link: Arc<Link>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // Waiting for a slot is what lets the next transactions gather.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        loop {
            let Ok(next) = queue.try_recv() else { break };
            if fits(&batch, &next) {
                batch.push(next);
            } else {
                carried = Some(next);
                break;
            }
        }
        let (members, link) = (members.clone(), link.clone());
        tokio::spawn(async move {
            commit(&members, &link, batch).await;
            drop(permit);
        });
    }
}

/// Whether `next` can join `batch`: within the limits, and no key written twice.
fn fits(batch: &[Pending], next: &Pending) -> bool {
    let ops: usize = batch.iter().map(|p| p.request.success.len()).sum();
    let bytes: usize = batch.iter().map(Pending::bytes).sum();
    if ops + next.request.success.len() > MAX_OPS || bytes + next.bytes() > MAX_BYTES {
        return false;
    }
    let Some(wanted) = next.keys() else {
        return false;
    };
    let taken: HashSet<&[u8]> = batch.iter().filter_map(Pending::keys).flatten().collect();
    let mut own = HashSet::new();
    wanted
        .into_iter()
        .all(|key| !taken.contains(key) && own.insert(key))
}

async fn commit(members: &Members, link: &Link, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let pending = batch.pop().expect("one");
        let outcome = send_txn(members, link, pending.request, &pending.leases).await;
        let _ = pending.done.send(outcome);
        return;
    }
    let merged = TxnRequest {
        compare: Vec::new(),
        success: batch
            .iter()
            .flat_map(|p| p.request.success.iter().cloned())
            .collect::<Vec<RequestOp>>(),
        failure: Vec::new(),
    };
    match send_txn_status(members, link, merged).await {
        Ok(outcome) => {
            for pending in batch {
                let _ = pending.done.send(Ok(outcome));
            }
        }
        // etcd was not reached (or did not answer in time): each would fail the same way.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            for pending in batch {
                let _ = pending.done.send(Err(txn_error(status.clone(), &[])));
            }
        }
        // One of them may be the cause (a lease that is gone): each on its own.
        Err(_) => {
            for pending in batch {
                let outcome = send_txn(members, link, pending.request, &pending.leases).await;
                let _ = pending.done.send(outcome);
            }
        }
    }
}
