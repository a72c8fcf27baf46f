//! Services' subsets and the split of their traffic: Consul's `service-resolver` and
//! `service-splitter` entries (`/v1/config`), kept one record per service and kind, and
//! answered to the proxies as one view (`/v1/wharf/traffic`), each service's subsets with
//! their filters and its shares in parts per million.
//!
//! The two entries must agree: a splitter names subsets its resolver defines, so a write of
//! either (or the deletion of a resolver) is checked against the other as stored, and
//! committed only if neither changed meanwhile.

use std::collections::BTreeMap;

use wharf_model::traffic::{Resolver, ShareView, Splitter, TrafficView};
use wharf_store::{Compare, Op, Txn};

use crate::agent::{Agent, RegistryError};
use crate::catalog::{CatalogState, Stored};
use crate::keys;

/// Every service with subsets and a split (or a default subset), by name. A resolver with a
/// default subset and no splitter sends that subset everything.
pub fn views(state: &CatalogState) -> BTreeMap<String, TrafficView> {
    state
        .resolvers
        .iter()
        .filter_map(|(name, resolver)| {
            let resolver = &resolver.value;
            let splits: Vec<ShareView> = match state.splitters.get(name) {
                Some(splitter) => splitter
                    .value
                    .shares()
                    .into_iter()
                    .filter(|(_, ppm)| *ppm > 0)
                    .map(|(subset, ppm)| ShareView { subset, ppm })
                    .collect(),
                None if !resolver.default_subset.is_empty() => vec![ShareView {
                    subset: resolver.default_subset.clone(),
                    ppm: wharf_model::traffic::MILLION,
                }],
                None => return None,
            };
            let subsets = resolver
                .subsets
                .iter()
                .map(|(name, subset)| (name.clone(), subset.filter.clone()))
                .collect();
            Some((name.clone(), TrafficView { subsets, splits }))
        })
        .collect()
}

/// Refuses a split that gives a share to a subset no instance of the service is in now:
/// nothing would answer that share (its requests would go to any instance instead).
fn shares_answerable(
    state: &CatalogState,
    splitter: &Splitter,
    resolver: &Resolver,
) -> Result<(), String> {
    let filters: BTreeMap<String, Option<wharf_model::filter::Filter>> =
        resolver.filters().into_iter().collect();
    let instances: Vec<serde_json::Value> = state
        .instances_of(&splitter.name)
        .map(|stored| {
            let i = &stored.value;
            serde_json::json!({
                "Node": {"Node": i.node},
                "Service": {
                    "ID": i.id, "Service": i.name, "Tags": i.tags, "Address": i.address,
                    "Port": i.port, "Meta": i.meta, "Kind": i.kind,
                },
            })
        })
        .collect();
    for (i, (subset, ppm)) in splitter.shares().into_iter().enumerate() {
        if ppm == 0 || subset.is_empty() {
            continue;
        }
        let matched = filters
            .get(&subset)
            .and_then(Option::as_ref)
            .is_some_and(|filter| instances.iter().any(|instance| filter.matches(instance)));
        if !matched {
            return Err(format!(
                "Splits[{i}].ServiceSubset {subset:?} matches no instance of {:?}: nothing would answer its {}%",
                splitter.name,
                f64::from(ppm) / 10_000.0
            ));
        }
    }
    Ok(())
}

/// A stored entry's indexes as the API shows them (revision + 1, never 0).
pub fn indexes<T>(stored: &Stored<T>) -> (u64, u64) {
    (stored.create_index + 1, stored.modify_index + 1)
}

/// The comparison that makes a write conditional on `stored` being as read (absent: still
/// absent).
fn unchanged<T>(key: String, stored: Option<&Stored<T>>) -> Compare {
    Compare::ModRevision {
        key,
        revision: stored.map_or(0, |s| s.modify_index),
    }
}

/// `?cas=N` against what is stored: N is the entry's `ModifyIndex`, 0 for "does not exist".
fn cas_holds<T>(cas: Option<u64>, stored: Option<&Stored<T>>) -> bool {
    match (cas, stored) {
        (None, _) => true,
        (Some(0), None) => true,
        (Some(cas), Some(stored)) => indexes(stored).1 == cas,
        (Some(_), None) => false,
    }
}

impl Agent {
    /// Writes a `service-resolver` entry (checked, and checked against the service's
    /// splitter); false when `cas` did not hold.
    pub async fn write_resolver(
        &self,
        mut resolver: Resolver,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        resolver.name = resolver.name.to_ascii_lowercase();
        resolver.validate().map_err(RegistryError::BadRequest)?;
        let name = resolver.name.clone();
        let (current, splitter) = self.catalog.read(|state| {
            (
                state.resolvers.get(&name).cloned(),
                state.splitters.get(&name).cloned(),
            )
        });
        if !cas_holds(cas, current.as_ref()) {
            return Ok(false);
        }
        if let Some(splitter) = &splitter {
            splitter.value.validate(Some(&resolver)).map_err(|e| {
                RegistryError::BadRequest(format!(
                    "the service-splitter of {name:?} would no longer hold: {e}"
                ))
            })?;
        }
        let value = serde_json::to_vec(&resolver).expect("a resolver serialises");
        let txn = Txn::new()
            .when(unchanged(keys::resolver_key(&name), current.as_ref()))
            .when(unchanged(keys::splitter_key(&name), splitter.as_ref()))
            .op(Op::put(&keys::resolver_key(&name), value));
        self.commit_when(txn).await
    }

    /// Writes a `service-splitter` entry (checked against the service's resolver); false
    /// when `cas` did not hold.
    pub async fn write_splitter(
        &self,
        mut splitter: Splitter,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        splitter.name = splitter.name.to_ascii_lowercase();
        let name = splitter.name.clone();
        let (current, resolver) = self.catalog.read(|state| {
            (
                state.splitters.get(&name).cloned(),
                state.resolvers.get(&name).cloned(),
            )
        });
        splitter
            .validate(resolver.as_ref().map(|r| &r.value))
            .map_err(RegistryError::BadRequest)?;
        if let Some(resolver) = &resolver {
            self.catalog
                .read(|state| shares_answerable(state, &splitter, &resolver.value))
                .map_err(RegistryError::BadRequest)?;
        }
        if !cas_holds(cas, current.as_ref()) {
            return Ok(false);
        }
        let value = serde_json::to_vec(&splitter).expect("a splitter serialises");
        let txn = Txn::new()
            .when(unchanged(keys::splitter_key(&name), current.as_ref()))
            .when(unchanged(keys::resolver_key(&name), resolver.as_ref()))
            .op(Op::put(&keys::splitter_key(&name), value));
        self.commit_when(txn).await
    }

    /// Deletes a service's resolver (refused while its splitter names subsets) or splitter;
    /// false when `cas` did not hold or there was none.
    pub async fn delete_traffic(
        &self,
        kind: TrafficKind,
        name: &str,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        let name = name.to_ascii_lowercase();
        let (resolver, splitter) = self.catalog.read(|state| {
            (
                state.resolvers.get(&name).cloned(),
                state.splitters.get(&name).cloned(),
            )
        });
        let (key, present, holds) = match kind {
            TrafficKind::Resolver => (
                keys::resolver_key(&name),
                resolver.is_some(),
                cas_holds(cas, resolver.as_ref()),
            ),
            TrafficKind::Splitter => (
                keys::splitter_key(&name),
                splitter.is_some(),
                cas_holds(cas, splitter.as_ref()),
            ),
        };
        if !present || !holds {
            return Ok(false);
        }
        if kind == TrafficKind::Resolver
            && let Some(splitter) = &splitter
            && splitter.value.validate(None).is_err()
        {
            return Err(RegistryError::BadRequest(format!(
                "the service-splitter of {name:?} splits between this resolver's subsets: delete it first"
            )));
        }
        let txn = Txn::new()
            .when(unchanged(keys::resolver_key(&name), resolver.as_ref()))
            .when(unchanged(keys::splitter_key(&name), splitter.as_ref()))
            .op(Op::delete(&key));
        self.commit_when(txn).await
    }
}

/// Which of the two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficKind {
    Resolver,
    Splitter,
}
