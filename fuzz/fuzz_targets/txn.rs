//! Any bytes as the body of `PUT /v1/txn`: decoded into at most 64 KV steps or refused with
//! a reason, never a panic; the steps planned against a catalog with a few entries and a
//! session give errors or a store transaction that touches each key once.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use wharf_registry::CatalogState;
use wharf_registry::api::txn::{MAX_OPERATIONS, decode};
use wharf_registry::kv::Entry;
use wharf_registry::kv::plan::Plan;
use wharf_registry::session::{Behavior, Session};
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
    CatalogState::from_kv(entries, vec![session])
}

fuzz_target!(|data: &[u8]| {
    let Ok(steps) = decode(data) else { return };
    assert!(steps.len() <= MAX_OPERATIONS);
    let state = catalog();
    let mut plan = Plan::new(&state, 1_000);
    for (i, step) in steps.iter().enumerate() {
        plan.step(i, step);
    }
    if plan.errors.is_empty() && plan.writes() {
        let txn = plan.txn();
        let mut keys = HashSet::new();
        for op in &txn.ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
                Op::DeletePrefix { prefix } => prefix,
            };
            assert!(keys.insert(key.clone()), "{key} touched twice: {txn:?}");
        }
    }
});
