//! Consul's key/value store: entries, the keys they may have, and their indexes.
//!
//! Each entry is one store record (`wharf/kv/<key>`), so a write is one store transaction and
//! both backends keep the same data. The catalog holds every entry in memory ([`KvState`]),
//! so reads cost a lock and a copy, and a blocking read's index is *per prefix*: the latest
//! change of any key under it, deletions included, so a write wakes only the watchers of
//! what it changed (Consul's table-wide KV index woke every watcher of every key).
//!
//! Deletions leave a mark (`wharf/kv-deleted/<key>`) in the same transaction: its revision
//! keeps the prefix's index after a restart, and it carries the lock delay of a key deleted
//! by its session's invalidation. A `recurse` delete leaves one mark for its prefix (a
//! *tree* mark) rather than one per key, so that it stays one bounded store operation.
//!
//! Writes are planned against the catalog and committed conditionally on what they read
//! ([`plan`]): every verb of Consul's `/v1/txn` is a step of a [`plan::Plan`], and a single
//! `PUT /v1/kv/...` is a plan of one step.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::catalog::Stored;

/// Store prefix of entries, and of the marks their deletions leave.
pub(crate) const ENTRIES: &str = "wharf/kv/";
pub(crate) const DELETED: &str = "wharf/kv-deleted/";

/// Largest value, as Consul's (`kv_max_value_size`, 512 KiB).
pub const MAX_VALUE: usize = 512 * 1024;

/// Longest key accepted.
pub const MAX_KEY: usize = 4096;

pub(crate) fn entry_key(key: &str) -> String {
    format!("{ENTRIES}{key}")
}

pub(crate) fn deleted_key(key: &str) -> String {
    format!("{DELETED}{key}")
}

/// One entry as stored. Indexes come from the store's revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    /// `None` for an entry written with an empty body (Consul answers `"Value": null`).
    #[serde(
        default,
        with = "base64_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u64,
    /// The session holding the entry's lock, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// How many times the lock has been acquired.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_index: u64,
    /// Until when (Unix ms) an acquire is refused: the lock delay after the holding
    /// session was invalidated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_delay_until_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry serialises")
    }
}

/// What a deletion left: its lock delay, and whether it deleted a whole prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Deletion {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_delay_until_ms: u64,
}

impl Deletion {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a deletion serialises")
    }
}

/// A deletion as the catalog knows it: from the store's delete event or its mark.
#[derive(Debug, Clone, Copy, Default)]
struct Deleted {
    revision: u64,
    deletion: Deletion,
}

/// Why a key is refused, in Consul's words where Consul refuses it.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("Missing key name".into());
    }
    if key.len() > MAX_KEY {
        return Err(format!(
            "Key is {} bytes long: at most {MAX_KEY}",
            key.len()
        ));
    }
    check_prefix(key)
}

/// Why a prefix (a key that may be empty, or end in `/`) is refused.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        return Err(format!("Invalid key {prefix:?}: it starts with '/'"));
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control()) {
        return Err(format!("Invalid key {prefix:?}: control character {c:?}"));
    }
    let segments: Vec<&str> = prefix.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == ".." || *segment == "." {
            return Err(format!(
                "Invalid key {prefix:?}: a {segment:?} segment (keys are names, not paths)"
            ));
        }
        // The last segment may be empty: `folder/` is a key, as in Consul's UI.
        if segment.is_empty() && i + 1 < segments.len() && !prefix.is_empty() {
            return Err(format!("Invalid key {prefix:?}: an empty segment ('//')"));
        }
    }
    Ok(())
}

/// Every entry, and what blocking reads of keys and prefixes need to know.
#[derive(Debug, Default)]
pub struct KvState {
    pub entries: BTreeMap<String, Stored<Entry>>,
    /// Deleted keys (and prefixes deleted whole), by key.
    deleted: BTreeMap<String, Deleted>,
    /// Keys deleted whole by a tree mark, for looking up the marks above a key.
    trees: BTreeSet<String>,
    /// The keys each session holds.
    held: HashMap<String, BTreeSet<String>>,
}

impl KvState {
    /// An entry was put (`Some`) or deleted (`None`) at `revision`.
    pub(crate) fn apply_entry(
        &mut self,
        key: &str,
        entry: Option<Entry>,
        create: u64,
        revision: u64,
    ) {
        if let Some(old) = self.entries.remove(key)
            && !old.value.session.is_empty()
            && let Some(keys) = self.held.get_mut(&old.value.session)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.held.remove(&old.value.session);
            }
        }
        match entry {
            Some(entry) => {
                if !entry.session.is_empty() {
                    self.held
                        .entry(entry.session.clone())
                        .or_default()
                        .insert(key.to_owned());
                }
                if !self.trees.contains(key) {
                    self.deleted.remove(key);
                }
                let stored = Stored {
                    value: entry,
                    create_index: create,
                    modify_index: revision,
                };
                self.entries.insert(key.to_owned(), stored);
            }
            None => {
                let deleted = self.deleted.entry(key.to_owned()).or_default();
                deleted.revision = deleted.revision.max(revision);
            }
        }
    }

    /// A deletion's mark was written (`Some`) or removed (`None`, the key was written again).
    pub(crate) fn apply_deletion(&mut self, key: &str, deletion: Option<Deletion>, revision: u64) {
        let Some(deletion) = deletion else { return };
        if deletion.tree {
            self.trees.insert(key.to_owned());
        }
        let deleted = self.deleted.entry(key.to_owned()).or_default();
        deleted.revision = deleted.revision.max(revision);
        deleted.deletion.tree |= deletion.tree;
        deleted.deletion.lock_delay_until_ms = deletion.lock_delay_until_ms;
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn under<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = (&'s String, &'s Stored<Entry>)> + use<'s> {
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    /// The keys a session holds.
    pub fn held_by(&self, session: &str) -> impl Iterator<Item = &String> {
        self.held.get(session).into_iter().flatten()
    }

    /// The revision of the last change of `key` (0 if none is known).
    pub fn key_revision(&self, key: &str) -> u64 {
        let own = self
            .entries
            .get(key)
            .map(|e| e.modify_index)
            .or_else(|| self.deleted.get(key).map(|d| d.revision))
            .unwrap_or(0);
        own.max(self.trees_above(key))
    }

    /// The revision of the last change of any key under `prefix`.
    pub fn prefix_revision(&self, prefix: &str) -> u64 {
        let live = self.under(prefix).map(|(_, e)| e.modify_index).max();
        let gone = self
            .deleted
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, d)| d.revision)
            .max();
        live.unwrap_or(0)
            .max(gone.unwrap_or(0))
            .max(self.trees_above(prefix))
    }

    /// The latest tree deletion of a prefix of `key` (which deleted `key` too).
    fn trees_above(&self, key: &str) -> u64 {
        if self.trees.is_empty() {
            return 0;
        }
        (0..=key.len())
            .filter(|i| key.is_char_boundary(*i))
            .filter_map(|i| {
                let prefix = &key[..i];
                self.trees
                    .contains(prefix)
                    .then(|| self.deleted.get(prefix).map_or(0, |d| d.revision))
            })
            .max()
            .unwrap_or(0)
    }

    /// Until when (Unix ms) acquires of `key` are refused.
    pub fn lock_delay_until(&self, key: &str) -> u64 {
        match self.entries.get(key) {
            Some(entry) => entry.value.lock_delay_until_ms,
            None => self
                .deleted
                .get(key)
                .map_or(0, |d| d.deletion.lock_delay_until_ms),
        }
    }

    /// Whether `key` carries the mark of a whole prefix's deletion.
    pub(crate) fn is_tree(&self, key: &str) -> bool {
        self.trees.contains(key)
    }

    /// Whether a mark of the deletion of `key` itself is known (a put must remove it).
    pub(crate) fn has_mark(&self, key: &str) -> bool {
        self.deleted.get(key).is_some_and(|d| !d.deletion.tree)
    }
}

/// Values are base64 in the store's JSON, as in Consul's answers.
pub(crate) mod base64_value {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_names_not_paths() {
        for good in ["a", "a/b", "folder/", "app/config.json", "ünïcode/ключ"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a//b", "a/../b", "..", "a/./b", "a\nb"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("").is_ok(), "the empty prefix is every key");
        assert!(check_key(&"k".repeat(MAX_KEY + 1)).is_err());
    }

    #[test]
    fn a_prefix_index_is_its_latest_change_deletions_included() {
        let mut kv = KvState::default();
        kv.apply_entry("app/a", Some(Entry::default()), 3, 3);
        kv.apply_entry("app/b", Some(Entry::default()), 4, 4);
        kv.apply_entry("other", Some(Entry::default()), 5, 5);
        assert_eq!(kv.prefix_revision("app/"), 4);
        assert_eq!(kv.key_revision("app/a"), 3);
        kv.apply_entry("app/a", None, 0, 6);
        assert_eq!(kv.prefix_revision("app/"), 6, "a deletion moves the prefix");
        assert_eq!(kv.key_revision("app/a"), 6);
        assert_eq!(kv.key_revision("other"), 5, "but not other keys");
        // A tree mark (read back after a restart) counts for every key below it.
        let mut reloaded = KvState::default();
        reloaded.apply_entry("app/b", Some(Entry::default()), 4, 4);
        reloaded.apply_deletion(
            "app/",
            Some(Deletion {
                tree: true,
                lock_delay_until_ms: 0,
            }),
            9,
        );
        assert_eq!(reloaded.key_revision("app/zzz"), 9);
        assert_eq!(reloaded.prefix_revision("app/x/"), 9);
        assert_eq!(reloaded.prefix_revision("ap"), 9);
        assert_eq!(reloaded.key_revision("elsewhere"), 0);
    }

    #[test]
    fn sessions_are_indexed_by_the_keys_they_hold() {
        let mut kv = KvState::default();
        let held = Entry {
            session: "s1".into(),
            ..Entry::default()
        };
        kv.apply_entry("lock", Some(held), 2, 2);
        assert_eq!(kv.held_by("s1").collect::<Vec<_>>(), ["lock"]);
        kv.apply_entry("lock", Some(Entry::default()), 2, 3);
        assert_eq!(kv.held_by("s1").count(), 0);
    }

    #[test]
    fn values_are_base64_and_an_empty_value_is_null() {
        let entry = Entry {
            value: Some(b"hi".to_vec()),
            ..Entry::default()
        };
        assert_eq!(
            String::from_utf8(entry.encode()).unwrap(),
            r#"{"Value":"aGk="}"#
        );
        let back: Entry = serde_json::from_slice(&entry.encode()).unwrap();
        assert_eq!(back, entry);
        let empty: Entry = serde_json::from_slice(b"{}").unwrap();
        assert_eq!(empty.value, None);
    }
}

/// What applying KV steps came to.
#[derive(Debug)]
pub enum Applied {
    /// Every step held and was committed: each step's entries, and the index of the
    /// snapshot read (a plan of reads only) or of the commit.
    Done {
        results: Vec<plan::ShownEntry>,
        index: u64,
    },
    /// These steps failed; nothing was changed.
    Failed(Vec<(usize, plan::Failure)>),
}

impl crate::Agent {
    /// Applies `steps` as one transaction: all of them or none ([`crate::txn`], with KV
    /// steps only).
    pub async fn kv_apply(&self, steps: &[plan::Step]) -> Result<Applied, crate::RegistryError> {
        use crate::txn::{Operation, Shown, TxnApplied};
        let operations: Vec<Operation> = steps.iter().cloned().map(Operation::Kv).collect();
        Ok(match self.txn_apply(&operations).await? {
            TxnApplied::Done { results, index } => Applied::Done {
                results: results
                    .into_iter()
                    .filter_map(|shown| match shown {
                        Shown::Kv(entry) => Some(entry),
                        _ => None,
                    })
                    .collect(),
                index,
            },
            TxnApplied::Failed(errors) => Applied::Failed(errors),
        })
    }
}

#[cfg(test)]
mod agent_tests {
    use std::sync::Arc;

    use wharf_store::{EmbeddedStore, Store};

    use super::plan::{Failure, Step, Verb};
    use super::*;
    use crate::catalog::{Catalog, Resource};
    use crate::session::{Behavior, NewSession};
    use crate::{Agent, Config, NodeInfo};

    async fn agent() -> (Arc<Agent>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let catalog = Catalog::follow(store.clone()).await.unwrap();
        let config = Config::new("127.0.0.1:0".parse().unwrap(), NodeInfo::local("id".into()));
        let agent = Agent::new(store, catalog, config);
        crate::liveness::announce(&agent).await.unwrap();
        (agent, dir)
    }

    fn set(key: &str, value: &str) -> Step {
        Step {
            value: Some(value.as_bytes().to_vec()),
            ..Step::new(Verb::Set, key)
        }
    }

    fn with(verb: Verb, key: &str, f: impl FnOnce(&mut Step)) -> Step {
        let mut step = Step::new(verb, key);
        f(&mut step);
        step
    }

    async fn done(agent: &Agent, steps: &[Step]) -> Vec<plan::ShownEntry> {
        match agent.kv_apply(steps).await.unwrap() {
            Applied::Done { results, .. } => results,
            Applied::Failed(errors) => panic!("{errors:?}"),
        }
    }

    async fn failed(agent: &Agent, steps: &[Step]) -> Vec<(usize, Failure)> {
        match agent.kv_apply(steps).await.unwrap() {
            Applied::Done { results, .. } => panic!("applied: {results:?}"),
            Applied::Failed(errors) => errors,
        }
    }

    fn value(agent: &Agent, key: &str) -> Option<Entry> {
        agent
            .catalog
            .read(|s| s.kv.entries.get(key).map(|e| e.value.clone()))
    }

    async fn session(agent: &Agent, behavior: Behavior, lock_delay: std::time::Duration) -> String {
        let request = NewSession {
            behavior,
            lock_delay: Some(lock_delay),
            ..NewSession::default()
        };
        agent.create_session(request).await.unwrap()
    }

    #[tokio::test]
    async fn cas_writes_only_over_the_index_it_names() {
        let (agent, _dir) = agent().await;
        let created = done(
            &agent,
            &[with(Verb::Cas, "k", |s| s.value = Some(b"1".to_vec()))],
        )
        .await;
        let index = created[0].modify_index;
        assert_eq!(created[0].create_index, index);
        // cas=0 means "only if absent": it is there now.
        assert!(
            !failed(&agent, &[with(Verb::Cas, "k", |s| s.index = 0)])
                .await
                .is_empty()
        );
        assert!(
            !failed(&agent, &[with(Verb::Cas, "k", |s| s.index = index + 100)])
                .await
                .is_empty()
        );
        let step = with(Verb::Cas, "k", |s| {
            s.index = index;
            s.value = Some(b"2".to_vec());
            s.flags = 42;
        });
        let updated = done(&agent, &[step]).await;
        assert!(updated[0].modify_index > index);
        assert_eq!(updated[0].create_index, index, "CreateIndex stays");
        let entry = value(&agent, "k").unwrap();
        assert_eq!((entry.value.as_deref(), entry.flags), (Some(&b"2"[..]), 42));
    }

    #[tokio::test]
    async fn a_lock_is_held_by_one_session_and_counted() {
        let (agent, _dir) = agent().await;
        let zero = std::time::Duration::ZERO;
        let a = session(&agent, Behavior::Release, zero).await;
        let b = session(&agent, Behavior::Release, zero).await;
        let lock = |s: &str| with(Verb::Lock, "leader", |step| step.session = s.to_owned());
        let unlock = |s: &str| with(Verb::Unlock, "leader", |step| step.session = s.to_owned());
        done(&agent, &[lock(&a)]).await;
        assert_eq!(value(&agent, "leader").unwrap().lock_index, 1);
        let refused = failed(&agent, &[lock(&b)]).await;
        assert!(matches!(refused[0].1, Failure::Conflict(_)), "{refused:?}");
        done(&agent, &[lock(&a)]).await;
        assert_eq!(
            value(&agent, "leader").unwrap().lock_index,
            1,
            "held again: same lock"
        );
        assert!(
            !failed(&agent, &[unlock(&b)]).await.is_empty(),
            "b does not hold it"
        );
        // A plain set keeps the lock, as Consul's does.
        done(&agent, &[set("leader", "x")]).await;
        assert_eq!(value(&agent, "leader").unwrap().session, a);
        done(&agent, &[unlock(&a)]).await;
        done(&agent, &[lock(&b)]).await;
        let entry = value(&agent, "leader").unwrap();
        assert_eq!((entry.session.as_str(), entry.lock_index), (b.as_str(), 2));
        let unknown = failed(&agent, &[lock("no-such-session")]).await;
        assert!(matches!(unknown[0].1, Failure::Invalid(_)), "{unknown:?}");
    }

    #[tokio::test]
    async fn a_transaction_that_fails_one_check_changes_nothing() {
        let (agent, _dir) = agent().await;
        done(&agent, &[set("a", "1"), set("b", "1")]).await;
        let revision = agent.catalog.read(|s| s.revision());
        let errors = failed(
            &agent,
            &[
                set("a", "2"),
                Step::new(Verb::Delete, "b"),
                with(Verb::CheckIndex, "b", |s| s.index = 1),
                Step::new(Verb::CheckNotExists, "a"),
            ],
        )
        .await;
        assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(
            agent.catalog.read(|s| s.revision()),
            revision,
            "nothing committed"
        );
        assert_eq!(
            value(&agent, "a").unwrap().value.as_deref(),
            Some(&b"1"[..])
        );
        // Steps see what earlier steps did; each key is written once.
        let results = done(
            &agent,
            &[
                set("c", "1"),
                set("c", "2"),
                Step::new(Verb::Get, "c"),
                Step::new(Verb::DeleteTree, ""),
                set("d", "1"),
                Step::new(Verb::GetTree, ""),
            ],
        )
        .await;
        let got: Vec<_> = results
            .iter()
            .map(|r| (r.key.as_str(), r.entry.value.clone()))
            .collect();
        assert_eq!(got[2], ("c", Some(b"2".to_vec())));
        assert_eq!(
            got.last().unwrap(),
            &("d", Some(b"1".to_vec())),
            "only d is left"
        );
        let keys: Vec<String> = agent
            .catalog
            .read(|s| s.kv.entries.keys().cloned().collect());
        assert_eq!(keys, ["d"]);
    }

    #[tokio::test]
    async fn indexes_of_deleted_keys_and_prefixes_survive_a_restart() {
        let (agent, _dir) = agent().await;
        done(
            &agent,
            &[set("app/a", "1"), set("app/b/c", "1"), set("other", "1")],
        )
        .await;
        done(&agent, &[Step::new(Verb::Delete, "app/a")]).await;
        done(&agent, &[Step::new(Verb::DeleteTree, "app/b/")]).await;
        let resources = [
            Resource::Kv("app/a".into()),
            Resource::Kv("app/b/c".into()),
            Resource::KvPrefix("app/".into()),
            Resource::KvPrefix("app/b/".into()),
            Resource::Kv("other".into()),
        ];
        let indexes = |catalog: &Catalog| -> Vec<u64> {
            resources
                .iter()
                .map(|r| catalog.read(|s| s.index(r)))
                .collect()
        };
        let before = indexes(&agent.catalog);
        assert!(before[2] > before[4], "the deletions moved app/, not other");
        let reloaded = Catalog::follow(agent.store.clone()).await.unwrap();
        assert_eq!(indexes(&reloaded), before, "{resources:?}");
    }

    #[tokio::test]
    async fn invalidation_releases_or_deletes_with_the_lock_delay() {
        let (agent, _dir) = agent().await;
        let delay = std::time::Duration::from_secs(30);
        let releasing = session(&agent, Behavior::Release, delay).await;
        let deleting = session(&agent, Behavior::Delete, delay).await;
        let other = session(&agent, Behavior::Release, delay).await;
        let lock = |key: &str, s: &str| with(Verb::Lock, key, |step| step.session = s.to_owned());
        done(&agent, &[lock("kept", &releasing), lock("gone", &deleting)]).await;
        assert!(agent.destroy_session(&releasing).await.unwrap());
        assert!(agent.destroy_session(&deleting).await.unwrap());
        assert!(
            !agent.destroy_session(&deleting).await.unwrap(),
            "already gone"
        );
        let kept = value(&agent, "kept").unwrap();
        assert!(kept.session.is_empty(), "released: {kept:?}");
        assert_eq!(value(&agent, "gone"), None, "deleted");
        assert!(
            agent
                .catalog
                .read(|s| s.sessions.is_empty() || !s.sessions.contains_key(&releasing))
        );
        // Both keys refuse a new holder for the lock delay, even across a restart.
        for key in ["kept", "gone"] {
            let refused = failed(&agent, &[lock(key, &other)]).await;
            assert!(refused[0].1.reason().contains("lock delay"), "{refused:?}");
        }
        let reloaded = Catalog::follow(agent.store.clone()).await.unwrap();
        assert!(reloaded.read(|s| s.kv.lock_delay_until("gone")) > crate::now_ms());
    }
}
