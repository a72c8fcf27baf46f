//! KV writes planned against the catalog: Consul's transaction verbs, each a step that reads
//! what the steps before it left, and the one store transaction that makes them all happen,
//! conditional on every key they read being unchanged.
//!
//! Consul runs a transaction inside its state store, under one lock. The store here is
//! shared (etcd, or the embedded one behind several registry nodes), so a plan is made from
//! the catalog's snapshot and committed with a comparison on each key it wrote or checked;
//! if any moved meanwhile the store refuses it and the caller plans again on the new state.
//! Reads alone (`get`, `get-tree`) are answered from the snapshot and commit nothing. Each
//! key gets one store operation, whatever the steps did to it (etcd refuses a transaction
//! that touches a key twice).

use std::collections::BTreeMap;

use wharf_store::{Compare, Op, Txn};

use super::{Deletion, Entry};
use crate::catalog::{CatalogState, Stored};
use crate::keys;

/// How many times a write is planned again when what it read moved before it committed.
pub const MOST_ATTEMPTS: usize = 64;

/// Consul's KV verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

impl Verb {
    pub fn parse(name: &str) -> Option<Verb> {
        Some(match name {
            "set" => Verb::Set,
            "cas" => Verb::Cas,
            "lock" => Verb::Lock,
            "unlock" => Verb::Unlock,
            "get" => Verb::Get,
            "get-tree" => Verb::GetTree,
            "check-index" => Verb::CheckIndex,
            "check-session" => Verb::CheckSession,
            "check-not-exists" => Verb::CheckNotExists,
            "delete" => Verb::Delete,
            "delete-tree" => Verb::DeleteTree,
            "delete-cas" => Verb::DeleteCas,
            _ => return None,
        })
    }

    /// Whether the verb's key is a prefix (it may be empty).
    pub fn takes_prefix(self) -> bool {
        matches!(self, Verb::GetTree | Verb::DeleteTree)
    }
}

/// One KV operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub verb: Verb,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    /// The `ModifyIndex` a `cas`, `check-index` or `delete-cas` expects (0: absent).
    pub index: u64,
    pub session: String,
}

impl Step {
    pub fn new(verb: Verb, key: &str) -> Step {
        Step {
            verb,
            key: key.to_owned(),
            value: None,
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// What the step requires does not hold: a stale index, a lock held by another session
    /// (a single `PUT` answers `false`).
    Conflict(String),
    /// The step names something that does not exist (a session).
    Invalid(String),
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::Conflict(reason) | Failure::Invalid(reason) => reason,
        }
    }
}

/// An index in an answer: known, or the revision this plan commits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Known(u64),
    ThisCommit,
}

impl Index {
    fn resolve(self, revision: u64) -> u64 {
        match self {
            Index::Known(index) => index,
            Index::ThisCommit => revision + 1,
        }
    }
}

/// An entry as a step left it.
#[derive(Debug, Clone)]
struct Current {
    entry: Entry,
    create: Index,
    modify: Index,
}

/// A key the plan read or wrote.
#[derive(Debug, Clone)]
struct Slot {
    /// The key's store revision as read (0: absent), which the commit requires.
    read: u64,
    now: Option<Current>,
    written: bool,
    /// Whether the commit must require the key unchanged (it was written or checked).
    guarded: bool,
}

/// An entry in the answer to a step, its indexes resolved at commit.
#[derive(Debug, Clone)]
pub struct Shown {
    pub key: String,
    pub entry: Entry,
    create: Index,
    modify: Index,
}

/// An entry as the API shows it, with Consul's indexes (store revision + 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownEntry {
    pub key: String,
    pub entry: Entry,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Shown {
    pub fn resolve(self, revision: u64) -> ShownEntry {
        ShownEntry {
            key: self.key,
            entry: self.entry,
            create_index: self.create.resolve(revision),
            modify_index: self.modify.resolve(revision),
        }
    }
}

impl ShownEntry {
    /// A stored entry with its API indexes.
    pub fn of(key: &str, stored: &Stored<Entry>) -> ShownEntry {
        ShownEntry {
            key: key.to_owned(),
            entry: stored.value.clone(),
            create_index: stored.create_index + 1,
            modify_index: stored.modify_index + 1,
        }
    }
}

/// Steps applied to a snapshot of the catalog, and what committing them takes.
pub struct Plan<'s> {
    state: &'s CatalogState,
    now_ms: u64,
    slots: BTreeMap<String, Slot>,
    /// Prefixes deleted whole, with their mark.
    trees: Vec<String>,
    /// The lock delays deleted keys leave (a session with `Behavior = delete`).
    delays: BTreeMap<String, u64>,
    /// Sessions whose existence the commit requires (lock), or which it deletes.
    sessions: BTreeMap<String, SessionChange>,
    pub results: Vec<Shown>,
    pub errors: Vec<(usize, Failure)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionChange {
    MustExist(u64),
    Delete(u64),
}

impl<'s> Plan<'s> {
    pub fn new(state: &'s CatalogState, now_ms: u64) -> Plan<'s> {
        Plan {
            state,
            now_ms,
            slots: BTreeMap::new(),
            trees: Vec::new(),
            delays: BTreeMap::new(),
            sessions: BTreeMap::new(),
            results: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn slot(&mut self, key: &str) -> &mut Slot {
        let state = self.state;
        self.slots.entry(key.to_owned()).or_insert_with(|| {
            let stored = state.kv.entries.get(key);
            Slot {
                read: stored.map_or(0, |s| s.modify_index),
                now: stored.map(|s| Current {
                    entry: s.value.clone(),
                    create: Index::Known(s.create_index + 1),
                    modify: Index::Known(s.modify_index + 1),
                }),
                written: false,
                guarded: false,
            }
        })
    }

    fn current(&mut self, key: &str) -> Option<Current> {
        self.slot(key).now.clone()
    }

    fn write(&mut self, key: &str, now: Option<Current>) {
        let slot = self.slot(key);
        slot.now = now;
        slot.written = true;
        slot.guarded = true;
    }

    fn guard(&mut self, key: &str) {
        self.slot(key).guarded = true;
    }

    fn show(&mut self, key: &str, current: &Current, with_value: bool) {
        let mut entry = current.entry.clone();
        if !with_value {
            entry.value = None;
        }
        entry.lock_delay_until_ms = 0;
        self.results.push(Shown {
            key: key.to_owned(),
            entry,
            create: current.create,
            modify: current.modify,
        });
    }

    /// Keys under `prefix` as the steps so far left them, in key order.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> = self
            .state
            .kv
            .under(prefix)
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(
            self.slots
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, _)| key.clone()),
        );
        keys.into_iter().collect()
    }

    fn require_session(&mut self, session: &str) -> Result<(), Failure> {
        if session.is_empty() {
            return Err(Failure::Invalid("Missing session".into()));
        }
        let deleted = matches!(self.sessions.get(session), Some(SessionChange::Delete(_)));
        let Some(stored) = self.state.sessions.get(session).filter(|_| !deleted) else {
            return Err(Failure::Invalid(format!("invalid session {session:?}")));
        };
        self.sessions
            .entry(session.to_owned())
            .or_insert(SessionChange::MustExist(stored.modify_index));
        Ok(())
    }

    /// Applies step `i`; a failure is recorded (and the plan must not be committed).
    pub fn step(&mut self, i: usize, step: &Step) {
        if let Err(failure) = self.try_step(step) {
            self.errors.push((i, failure));
        }
    }

    fn try_step(&mut self, step: &Step) -> Result<(), Failure> {
        let key = step.key.as_str();
        let conflict = |reason: String| Err(Failure::Conflict(reason));
        match step.verb {
            Verb::Set => {
                let current = self.current(key);
                self.put(key, current, step, None);
            }
            Verb::Cas => {
                let current = self.current(key);
                self.guard(key);
                if !index_matches(current.as_ref(), step.index) {
                    return conflict(format!("failed to set key {key:?}, index is stale"));
                }
                self.put(key, current, step, None);
            }
            Verb::Lock => {
                self.require_session(&step.session)?;
                let current = self.current(key);
                self.guard(key);
                if self.lock_delayed(key, current.as_ref()) {
                    return conflict(format!(
                        "failed to acquire lock on key {key:?}: the lock delay of its last holder's session is in effect"
                    ));
                }
                let lock_index = match &current {
                    Some(c) if c.entry.session == step.session => c.entry.lock_index,
                    Some(c) if !c.entry.session.is_empty() => {
                        return conflict(format!(
                            "failed to lock key {key:?}, lock is already held"
                        ));
                    }
                    Some(c) => c.entry.lock_index + 1,
                    None => 1,
                };
                self.put(key, current, step, Some((step.session.clone(), lock_index)));
            }
            Verb::Unlock => {
                let current = self.current(key);
                self.guard(key);
                match &current {
                    Some(c) if !step.session.is_empty() && c.entry.session == step.session => {
                        let lock_index = c.entry.lock_index;
                        self.put(key, current, step, Some((String::new(), lock_index)));
                    }
                    _ => {
                        return conflict(format!(
                            "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                        ));
                    }
                }
            }
            Verb::Get => match self.current(key) {
                Some(current) => self.show(key, &current, true),
                None => return conflict(format!("key {key:?} doesn't exist")),
            },
            Verb::GetTree => {
                for key in self.keys_under(key) {
                    if let Some(current) = self.current(&key) {
                        self.show(&key, &current, true);
                    }
                }
            }
            Verb::CheckIndex => {
                let current = self.current(key);
                self.guard(key);
                match &current {
                    None => return conflict(format!("key {key:?} doesn't exist")),
                    Some(c) => match c.modify {
                        Index::Known(modify) if modify == step.index => {
                            let current = c.clone();
                            self.show(key, &current, false);
                        }
                        Index::Known(modify) => {
                            return conflict(format!(
                                "current modify index {modify} != {}",
                                step.index
                            ));
                        }
                        Index::ThisCommit => {
                            return conflict(format!(
                                "key {key:?} was changed by an earlier operation of this transaction"
                            ));
                        }
                    },
                }
            }
            Verb::CheckSession => {
                let current = self.current(key);
                self.guard(key);
                match current {
                    None => return conflict(format!("key {key:?} doesn't exist")),
                    Some(c) if c.entry.session != step.session => {
                        return conflict(format!(
                            "key {key:?} is not locked by session {:?}",
                            step.session
                        ));
                    }
                    Some(c) => self.show(key, &c, false),
                }
            }
            Verb::CheckNotExists => {
                let current = self.current(key);
                self.guard(key);
                if current.is_some() {
                    return conflict(format!("key {key:?} exists"));
                }
            }
            Verb::Delete => {
                if self.current(key).is_some() {
                    self.write(key, None);
                }
            }
            Verb::DeleteCas => {
                let current = self.current(key);
                self.guard(key);
                if current.is_none() || !index_matches(current.as_ref(), step.index) {
                    return conflict(format!("failed to delete key {key:?}, index is stale"));
                }
                self.write(key, None);
            }
            Verb::DeleteTree => {
                for under in self.keys_under(key) {
                    if self.current(&under).is_some() {
                        self.write(&under, None);
                    }
                }
                // A prefix inside one already deleted adds nothing (and etcd refuses
                // overlapping deletions in one transaction).
                if !self.trees.iter().any(|t| key.starts_with(t.as_str())) {
                    self.trees.retain(|t| !t.starts_with(key));
                    self.trees.push(key.to_owned());
                }
            }
        }
        Ok(())
    }

    fn lock_delayed(&self, key: &str, current: Option<&Current>) -> bool {
        let until = match current {
            Some(c) => c.entry.lock_delay_until_ms,
            None => self.state.kv.lock_delay_until(key),
        };
        until > self.now_ms
    }

    /// Writes the step's value and flags over `current`, keeping its lock unless `lock`
    /// sets it (as Consul's `set` keeps a held lock).
    fn put(
        &mut self,
        key: &str,
        current: Option<Current>,
        step: &Step,
        lock: Option<(String, u64)>,
    ) {
        let mut entry = current
            .as_ref()
            .map(|c| c.entry.clone())
            .unwrap_or_default();
        entry.value = step.value.clone().filter(|v| !v.is_empty());
        entry.flags = step.flags;
        if let Some((session, lock_index)) = lock {
            entry.session = session;
            entry.lock_index = lock_index;
        }
        let create = current.map_or(Index::ThisCommit, |c| c.create);
        self.write(
            key,
            Some(Current {
                entry,
                create,
                modify: Index::ThisCommit,
            }),
        );
        if matches!(step.verb, Verb::Set | Verb::Cas | Verb::Lock | Verb::Unlock) {
            let current = self.slots[key].now.clone().expect("just written");
            self.show(key, &current, false);
        }
    }

    /// Invalidates a session: deletes it and releases (or, with `Behavior = delete`,
    /// deletes) every key it holds, each then refusing acquires for the session's lock
    /// delay.
    pub fn invalidate(&mut self, session: &crate::session::Session, modify_revision: u64) {
        self.sessions
            .insert(session.id.clone(), SessionChange::Delete(modify_revision));
        let delay_until = self.now_ms + session.lock_delay_ms;
        let held: Vec<String> = self.state.kv.held_by(&session.id).cloned().collect();
        for key in held {
            let Some(mut current) = self.current(&key) else {
                continue;
            };
            if current.entry.session != session.id {
                continue;
            }
            match session.behavior {
                crate::session::Behavior::Release => {
                    current.entry.session.clear();
                    current.entry.lock_delay_until_ms = delay_until;
                    current.modify = Index::ThisCommit;
                    self.write(&key, Some(current));
                }
                crate::session::Behavior::Delete => {
                    self.write(&key, None);
                    self.delays.insert(key, delay_until);
                }
            }
        }
    }

    /// Whether the plan writes anything.
    pub fn writes(&self) -> bool {
        self.slots.values().any(|s| s.written)
            || !self.trees.is_empty()
            || self
                .sessions
                .values()
                .any(|c| matches!(c, SessionChange::Delete(_)))
    }

    /// The store transaction that commits the plan: one operation per key, each written or
    /// checked key required unchanged since it was read.
    pub fn txn(&self) -> Txn {
        let mut txn = Txn::new();
        let tree_covers = |key: &str| self.trees.iter().any(|t| key.starts_with(t.as_str()));
        // Keys a tree deletes and no later step wrote again go with the prefix deletion;
        // a tree with a key written again under it is deleted key by key instead.
        let rewritten_under_tree = self
            .slots
            .iter()
            .any(|(key, slot)| slot.written && slot.now.is_some() && tree_covers(key));
        for (key, slot) in &self.slots {
            let store_key = super::entry_key(key);
            if slot.guarded {
                txn = txn.when(Compare::ModRevision {
                    key: store_key.clone(),
                    revision: slot.read,
                });
            }
            if !slot.written {
                continue;
            }
            match &slot.now {
                Some(current) => {
                    txn = txn.op(Op::put(&store_key, current.entry.encode()));
                    if self.state.kv.has_mark(key) && !self.trees.iter().any(|t| t == key) {
                        txn = txn.op(Op::delete(&super::deleted_key(key)));
                    }
                }
                None if slot.read == 0 => {}
                None if tree_covers(key) && !rewritten_under_tree => {}
                None => {
                    txn = txn.op(Op::delete(&store_key));
                    let deletion = Deletion {
                        // A tree mark on this very key stays one.
                        tree: self.state.kv.is_tree(key),
                        lock_delay_until_ms: self.delays.get(key).copied().unwrap_or(0),
                    };
                    if !self.trees.iter().any(|t| t == key) {
                        txn = txn.op(Op::put(&super::deleted_key(key), deletion.encode()));
                    }
                }
            }
        }
        if !rewritten_under_tree {
            for tree in &self.trees {
                txn = txn.op(Op::DeletePrefix {
                    prefix: super::entry_key(tree),
                });
            }
        }
        for tree in &self.trees {
            let mark = Deletion {
                tree: true,
                lock_delay_until_ms: 0,
            };
            txn = txn.op(Op::put(&super::deleted_key(tree), mark.encode()));
        }
        for (id, change) in &self.sessions {
            let key = keys::session_key(id);
            match *change {
                SessionChange::MustExist(revision) | SessionChange::Delete(revision) => {
                    txn = txn.when(Compare::ModRevision {
                        key: key.clone(),
                        revision,
                    });
                }
            }
            if matches!(change, SessionChange::Delete(_)) {
                txn = txn.op(Op::delete(&key));
            }
        }
        txn
    }
}

/// Whether `index` is the entry's `ModifyIndex` (0: the key must not exist).
fn index_matches(current: Option<&Current>, index: u64) -> bool {
    match current {
        None => index == 0,
        Some(c) => c.modify == Index::Known(index),
    }
}
