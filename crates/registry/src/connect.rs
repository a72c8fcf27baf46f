//! Consul Connect's control plane in the registry: the certificate authority (made on first
//! start and kept in the store, so that every registry node on the same store signs with the
//! same root), leaves for services (cached per service, renewed at a random point between
//! 60 % and 90 % of their lifetime, as Consul's agent does), root rotation with overlap, and
//! intentions. The model (identities, certificates, precedence) is `wharf-mesh`'s; this
//! module keeps it in the store and answers for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wharf_mesh::ca::{LEAF_TTL, Leaf, Root, unix};
use wharf_mesh::identity::{SpiffeId, trust_domain};
use wharf_mesh::intentions::{DefaultAction, Intention, Intentions};
use wharf_store::{Compare, Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::{Resource, Stored};
use crate::keys;

/// The intentions to `destination` (lower-cased), in evaluation order: the sources of its
/// `service-intentions` config entry.
pub fn intentions_to(
    state: &crate::catalog::CatalogState,
    destination: &str,
) -> Vec<Stored<Intention>> {
    let mut to: Vec<Stored<Intention>> = state
        .intentions
        .values()
        .filter(|stored| stored.value.destination_name == destination)
        .cloned()
        .collect();
    to.sort_by(|a, b| wharf_mesh::intentions::order(&a.value, &b.value));
    to
}

/// A `service-intentions` entry's `CreateIndex` and `ModifyIndex` (as the API shows indexes,
/// one above the store's revisions): its oldest source's creation and its latest write.
/// `None` when it has no source (no entry).
pub fn entry_indexes(sources: &[Stored<Intention>]) -> Option<(u64, u64)> {
    let create = sources.iter().map(|s| s.create_index).min()?;
    let modify = sources.iter().map(|s| s.modify_index).max()?;
    Some((create + 1, modify + 1))
}

/// How the mesh's security runs (`[mesh]` in the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// Lifetime of a leaf certificate (`leaf_ttl`, Consul's `LeafCertTTL`; 72 h).
    pub leaf_ttl: Duration,
    /// What a call that no intention matches gets (`default_intention`).
    pub default_intention: DefaultAction,
}

impl Default for MeshConfig {
    fn default() -> MeshConfig {
        MeshConfig {
            leaf_ttl: LEAF_TTL,
            default_intention: DefaultAction::Allow,
        }
    }
}

/// The certificate authority as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// Made once; the trust domain is derived from it.
    pub cluster_id: String,
    pub trust_domain: String,
    pub active_root_id: String,
    /// The active root and those retired but still trusted, newest first.
    pub roots: Vec<TrustedRoot>,
    pub leaf_ttl_secs: u64,
}

/// A root in the trust bundle; a retired one stays until every leaf it signed has expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedRoot {
    pub root: Root,
    /// Seconds since the epoch after which it leaves the bundle (`None`: active).
    #[serde(default)]
    pub retire_after: Option<u64>,
}

impl CaState {
    pub fn active(&self) -> Option<&Root> {
        self.roots
            .iter()
            .map(|r| &r.root)
            .find(|r| r.id == self.active_root_id)
    }

    /// The roots to trust at `now`: the active one and those not retired yet.
    pub fn trusted(&self, now: u64) -> impl Iterator<Item = &TrustedRoot> {
        self.roots
            .iter()
            .filter(move |r| r.retire_after.is_none_or(|after| now <= after))
    }

    pub fn leaf_ttl(&self) -> Duration {
        Duration::from_secs(self.leaf_ttl_secs)
    }
}

/// A leaf the agent issued and hands out until it is due for renewal.
#[derive(Debug, Clone)]
pub struct CachedLeaf {
    pub leaf: Leaf,
    pub root_id: String,
    pub index: u64,
    /// Seconds since the epoch when a new leaf is due.
    pub renew_at: u64,
}

/// The agent's leaves, by service.
#[derive(Debug, Default)]
pub struct LeafCache {
    leaves: Mutex<HashMap<String, CachedLeaf>>,
    last_index: AtomicU64,
}

impl Agent {
    /// Makes the CA if the store has none (once, whichever registry node gets there first),
    /// and applies the configured leaf lifetime.
    pub async fn ensure_ca(&self) -> Result<(), RegistryError> {
        let ttl = self.config.mesh.leaf_ttl.as_secs().max(1);
        let current = self.catalog.read(|state| state.ca.clone());
        match current {
            Some(stored) if stored.value.leaf_ttl_secs == ttl => Ok(()),
            Some(stored) => {
                let ca = CaState {
                    leaf_ttl_secs: ttl,
                    ..stored.value
                };
                self.write_ca(&ca, Some(stored.modify_index)).await
            }
            None => {
                let cluster_id = crate::node::random_uuid();
                let domain = trust_domain(&cluster_id);
                let root = Root::generate(&domain, 1, None, SystemTime::now())
                    .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
                let ca = CaState {
                    cluster_id,
                    trust_domain: domain,
                    active_root_id: root.id.clone(),
                    roots: vec![TrustedRoot {
                        root,
                        retire_after: None,
                    }],
                    leaf_ttl_secs: ttl,
                };
                self.write_ca(&ca, None).await?;
                tracing::info!(trust_domain = %ca.trust_domain, "made the mesh's certificate authority");
                Ok(())
            }
        }
    }

    /// Writes the CA if it is still at `expected` (`None`: absent), so that two nodes never
    /// make or rotate it at once; losing that race is fine, the winner's stands.
    async fn write_ca(&self, ca: &CaState, expected: Option<u64>) -> Result<(), RegistryError> {
        let value = serde_json::to_vec(ca).expect("the CA serialises");
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: keys::CONNECT_CA.to_owned(),
                revision: expected.unwrap_or(0),
            })
            .op(Op::put(keys::CONNECT_CA, value));
        let outcome = self.store.txn(txn).await?;
        self.catalog.wait_applied(outcome.revision).await;
        Ok(())
    }

    pub fn ca(&self) -> Result<Stored<CaState>, RegistryError> {
        self.catalog
            .read(|state| state.ca.clone())
            .ok_or_else(|| RegistryError::NotFound("The CA is not made yet".into()))
    }

    /// A new active root (with the operator's key, or a new one); the old root stays trusted
    /// until every leaf it signed has expired, and every agent re-issues its leaves under the
    /// new one (their blocking queries return at once).
    pub async fn rotate_root(&self, key_pem: Option<&str>) -> Result<(), RegistryError> {
        let stored = self.ca()?;
        let mut ca = stored.value;
        let serial = ca.roots.iter().map(|r| r.root.serial).max().unwrap_or(0) + 1;
        let root = Root::generate(&ca.trust_domain, serial, key_pem, SystemTime::now())
            .map_err(|e| RegistryError::BadRequest(format!("Invalid CA configuration: {e}")))?;
        let retire_after = unix(SystemTime::now()) + ca.leaf_ttl_secs + 60;
        for old in &mut ca.roots {
            old.retire_after.get_or_insert(retire_after);
        }
        let now = unix(SystemTime::now());
        ca.roots
            .retain(|r| r.retire_after.is_none_or(|after| now <= after));
        ca.active_root_id = root.id.clone();
        ca.roots.insert(
            0,
            TrustedRoot {
                root,
                retire_after: None,
            },
        );
        self.write_ca(&ca, Some(stored.modify_index)).await?;
        tracing::info!(root = %ca.active_root_id, "rotated the mesh's root");
        Ok(())
    }

    pub async fn set_leaf_ttl(&self, ttl: Duration) -> Result<(), RegistryError> {
        let stored = self.ca()?;
        let ca = CaState {
            leaf_ttl_secs: ttl.as_secs().max(1),
            ..stored.value
        };
        self.write_ca(&ca, Some(stored.modify_index)).await
    }

    /// The leaf for `service`: the cached one until its renewal is due or the active root
    /// changed, then a new one.
    pub fn leaf(&self, service: &str) -> Result<CachedLeaf, RegistryError> {
        let ca = self.ca()?.value;
        let root = ca
            .active()
            .ok_or_else(|| RegistryError::NotFound("The CA has no active root".into()))?;
        let now = SystemTime::now();
        let mut leaves = self.leaves.leaves.lock().expect("leaf cache lock");
        if let Some(cached) = leaves.get(&service.to_ascii_lowercase())
            && cached.root_id == root.id
            && unix(now) < cached.renew_at
        {
            return Ok(cached.clone());
        }
        let identity = SpiffeId::service(&ca.trust_domain, &self.node().datacenter, service)
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let leaf = root
            .sign(&identity, ca.leaf_ttl(), now)
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        // Consul's agent: renew at a random point between 60 % and 90 % of the lifetime.
        let lifetime = leaf.valid_before.saturating_sub(unix(now)) as f64;
        let renew_at = unix(now) + (lifetime * (0.6 + 0.3 * fastrand::f64())) as u64;
        // Above every store revision, so that it only grows, restarts included; the cache's
        // lock is held, so the load and the store do not race.
        let floor = self.catalog.read(|state| state.revision());
        let index = self.leaves.last_index.load(Ordering::Relaxed).max(floor) + 1;
        self.leaves.last_index.store(index, Ordering::Relaxed);
        let cached = CachedLeaf {
            leaf,
            root_id: root.id.clone(),
            index,
            renew_at,
        };
        leaves.insert(service.to_ascii_lowercase(), cached.clone());
        Ok(cached)
    }

    /// Every intention, in evaluation order, with the configured default.
    pub fn intentions(&self) -> Intentions {
        let all = self.catalog.read(|state| {
            state
                .intentions
                .values()
                .map(|stored| stored.value.clone())
                .collect()
        });
        Intentions::new(all, self.config.mesh.default_intention)
    }

    /// Creates or replaces the intention between its source and destination. A replaced one
    /// keeps its legacy ID.
    pub async fn upsert_intention(&self, mut intention: Intention) -> Result<(), RegistryError> {
        intention
            .validate()
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let key = keys::intention_key(&intention.source_name, &intention.destination_name);
        let pair = key.trim_start_matches(keys::INTENTIONS).to_owned();
        if intention.id.is_empty()
            && let Some(existing) = self.catalog.read(|state| {
                state
                    .intentions
                    .get(&pair)
                    .map(|stored| stored.value.id.clone())
            })
        {
            intention.id = existing;
        }
        let value = serde_json::to_vec(&intention).expect("an intention serialises");
        self.commit(Txn::new().op(Op::put(&key, value))).await
    }

    /// Deletes the intention between `source` and `destination`; `false` if there was none.
    pub async fn delete_intention(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<bool, RegistryError> {
        let key = keys::intention_key(
            &source.to_ascii_lowercase(),
            &destination.to_ascii_lowercase(),
        );
        let pair = key.trim_start_matches(keys::INTENTIONS).to_owned();
        if !self
            .catalog
            .read(|state| state.intentions.contains_key(&pair))
        {
            return Ok(false);
        }
        self.commit(Txn::new().op(Op::delete(&key))).await?;
        Ok(true)
    }

    /// Replaces every intention to `destination` with `sources` (a `service-intentions`
    /// config entry written whole, Consul's `PUT /v1/config`): sources not named any more are
    /// deleted, the others written, in one transaction. With `cas`, only if the entry is still
    /// at that index (`0`: only if it does not exist); `Ok(false)` when it is not.
    pub async fn replace_intentions_to(
        &self,
        destination: &str,
        mut sources: Vec<Intention>,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        let destination = destination.to_ascii_lowercase();
        for source in &mut sources {
            source.destination_name = destination.clone();
            source
                .validate()
                .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        }
        loop {
            let current = self
                .catalog
                .read(|state| intentions_to(state, &destination));
            if let Some(cas) = cas
                && entry_indexes(&current).map_or(0, |(_, modify)| modify) != cas
            {
                return Ok(false);
            }
            let mut txn = Txn::new();
            for stored in &current {
                let key =
                    keys::intention_key(&stored.value.source_name, &stored.value.destination_name);
                txn = txn.when(Compare::ModRevision {
                    key: key.clone(),
                    revision: stored.modify_index,
                });
                if !sources
                    .iter()
                    .any(|s| s.source_name == stored.value.source_name)
                {
                    txn = txn.op(Op::delete(&key));
                }
            }
            for source in &sources {
                let mut source = source.clone();
                let key = keys::intention_key(&source.source_name, &destination);
                match current
                    .iter()
                    .find(|stored| stored.value.source_name == source.source_name)
                {
                    // A source that was already there keeps its legacy ID.
                    Some(stored) if source.id.is_empty() => source.id = stored.value.id.clone(),
                    Some(_) => {}
                    None => {
                        txn = txn.when(Compare::ModRevision {
                            key: key.clone(),
                            revision: 0,
                        })
                    }
                }
                let value = serde_json::to_vec(&source).expect("an intention serialises");
                txn = txn.op(Op::put(&key, value));
            }
            if self.commit_when(txn).await? {
                return Ok(true);
            }
            if cas.is_some() {
                return Ok(false); // changed underneath: the index the caller holds is stale
            }
        }
    }

    /// Deletes every intention to `destination` (the `service-intentions` entry). With `cas`,
    /// only if the entry is still at that index; `Ok(false)` when it is not.
    pub async fn delete_intentions_to(
        &self,
        destination: &str,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        self.replace_intentions_to(destination, Vec::new(), cas)
            .await
    }

    /// The `<source>/<destination>` of the intention with legacy `id`.
    pub fn intention_by_id(&self, id: &str) -> Option<Stored<Intention>> {
        self.catalog.read(|state| {
            state
                .intentions
                .values()
                .find(|stored| stored.value.id == id)
                .cloned()
        })
    }

    /// The index of the CA's last change (for the leaf's blocking queries).
    pub fn ca_index(&self) -> u64 {
        self.catalog.read(|state| state.index(&Resource::ConnectCa))
    }
}

/// When a leaf's renewal is due, as an instant of the runtime's clock.
pub fn until(at_unix: u64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(at_unix);
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
