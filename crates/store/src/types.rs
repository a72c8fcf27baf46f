//! The data the store deals in: keys and values with revisions, transactions and events.

/// A store-wide, monotonically increasing version number. Each successful write gets a new one.
pub type Revision = u64;
/// A lease; `0` means "no lease".
pub type LeaseId = u64;

/// A key, its value and its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the key's last change; for a delete event, the deleting revision.
    pub mod_revision: Revision,
    pub lease: LeaseId,
}

/// The result of a range: the keys and the revision of the snapshot they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl Op {
    pub fn put(key: &str, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.to_owned(),
            value: value.into(),
            lease: 0,
        }
    }

    pub fn delete(key: &str) -> Op {
        Op::Delete {
            key: key.to_owned(),
        }
    }
}

/// A condition on the current state that a transaction requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals `revision`; `0` means "the key does not exist".
    ModRevision { key: String, revision: Revision },
}

/// Comparisons and the writes to apply, atomically, if they all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    pub fn op(mut self, op: Op) -> Txn {
        self.ops.push(op);
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the comparisons held and the writes were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction: the new revision when it changed anything.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// After a put, the new key-value; after a delete, the key with an empty value and the
    /// deleting revision as `mod_revision`.
    pub kv: KeyValue,
}

/// Every change made at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}
