//! This registry node in the store, so that the nodes sharing it know one another (Consul's
//! gossip membership, done with a lease): the node's record under `wharf/nodes/<name>`
//! (durable: a node that dies stays listed, critical), and its liveness mark under
//! `wharf/alive/<name>`, attached to a lease of [`crate::Config::node_ttl`] that this task
//! keeps alive at a third of its TTL. When the node dies the store lets the lease expire and
//! deletes the mark; every node's catalog then turns the node's `serfHealth` critical, and
//! with it every instance registered through that node, until it comes back. A node that
//! stops cleanly revokes its lease at once. A lease the store no longer knows (the node was
//! cut off for longer than the TTL) is taken again.

use std::sync::Arc;

use tokio::sync::watch;
use wharf_store::{LeaseId, Op, StoreError, Txn};

use crate::agent::{Agent, RegistryError};
use crate::keys;

/// Makes sure the store holds this node's record and a live liveness mark; the lease the
/// mark is under. A node restarted within its TTL finds its mark and lease still there and
/// keeps them, and an unchanged record is not written again, so that a restart moves no
/// index.
pub(crate) async fn announce(agent: &Agent) -> Result<LeaseId, RegistryError> {
    let node = agent.node();
    let (record_key, alive_key) = (
        format!("{}{}", keys::NODES, node.name),
        format!("{}{}", keys::ALIVE, node.name),
    );
    let held = agent.store.get(&alive_key).await?.map(|kv| kv.lease);
    let lease = match held {
        Some(lease) if lease != 0 && agent.store.keep_alive(lease).await.is_ok() => Some(lease),
        _ => None,
    };
    let unchanged = agent.catalog.read(|state| {
        state
            .nodes
            .get(&node.name)
            .is_some_and(|stored| stored.value == *node)
    });
    let mut txn = Txn::new();
    if !unchanged {
        let record = serde_json::to_vec(node).expect("a node serialises");
        txn = txn.op(Op::put(&record_key, record));
    }
    let lease = match lease {
        Some(lease) => lease,
        None => {
            let lease = agent.store.grant_lease(agent.config.node_ttl).await?;
            txn = txn.op(Op::Put {
                key: alive_key,
                value: Vec::new(),
                lease,
            });
            lease
        }
    };
    if !txn.ops.is_empty() {
        agent.commit(txn).await?;
    }
    Ok(lease)
}

/// Keeps the lease alive until `shutdown`, then revokes it.
pub(crate) async fn keep(
    agent: Arc<Agent>,
    mut lease: LeaseId,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = agent.config.node_ttl / 3;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::stopped(&mut shutdown) => break,
        }
        let kept = match agent.store.keep_alive(lease).await {
            Ok(()) => Ok(()),
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!("this node's liveness lease expired; taking a new one");
                announce(&agent).await.map(|new| lease = new)
            }
            Err(e) => Err(e.into()),
        };
        match kept {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("this node's liveness lease is kept again");
                }
            }
            Err(e) => {
                agent.metrics.lease_failures.inc();
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot keep this node's liveness lease");
                }
            }
        }
    }
    if let Err(e) = agent.store.revoke_lease(lease).await {
        tracing::debug!(error = %e, "could not revoke the liveness lease on the way out");
    }
}
