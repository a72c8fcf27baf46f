//! Any bytes as the body of `PUT /v1/txn`: decoded into at most 64 operations (KV, Node,
//! Service, Check, Session) or refused with a reason, never a panic; the operations planned
//! against a catalog with a few entries, a session, a registry node and an external node give
//! errors or a store transaction that touches each key once and never a registry node's
//! records.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use wharf_registry::api::txn::{MAX_OPERATIONS, decode};
use wharf_registry::kv::Entry;
use wharf_registry::session::{Behavior, Session};
use wharf_registry::{CatalogState, NodeInfo, Stored};
use wharf_store::Op;

fn catalog() -> CatalogState {
    let session = Session {
        id: "s".into(),
        name: String::new(),
        node: "n".into(),
        node_checks: vec![],
        service_checks: vec![],
        lock_delay_ms: 0,
        behavior: Behavior::Release,
        ttl_ms: 0,
        renewed_at_ms: 0,
    };
    let held = Entry {
        session: "s".into(),
        lock_index: 1,
        ..Entry::default()
    };
    let entries = vec![
        ("a".to_owned(), Entry::default()),
        ("a/b".to_owned(), Entry::default()),
        ("lock".to_owned(), held),
    ];
    let mut state = CatalogState::from_kv(entries, vec![session]);
    for node in [registry_node(), external_node()] {
        let stored = Stored {
            value: node.clone(),
            create_index: 1,
            modify_index: 1,
        };
        state.nodes.insert(node.name, stored);
    }
    state
}

fn registry_node() -> NodeInfo {
    NodeInfo::local("00000000-0000-4000-8000-000000000000".into())
}

fn external_node() -> NodeInfo {
    NodeInfo {
        name: "ext".into(),
        external: true,
        ..registry_node()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(operations) = decode(data) else { return };
    assert!(operations.len() <= MAX_OPERATIONS);
    let state = catalog();
    let own = registry_node();
    let Ok(planned) = wharf_registry::txn::plan(&state, &own, &operations, 1_000) else {
        return;
    };
    let Some(txn) = planned.txn else { return };
    let mut keys = HashSet::new();
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
            Op::DeletePrefix { prefix } => prefix,
        };
        assert!(keys.insert(key.clone()), "{key} touched twice: {txn:?}");
        let owned_by_registry_node = key == &format!("wharf/nodes/{}", own.name)
            || key.starts_with(&format!("wharf/services/{}/", own.name))
            || key.starts_with(&format!("wharf/checks/{}/", own.name));
        assert!(!owned_by_registry_node, "{key}: a registry node's record: {txn:?}");
    }
});
