//! Load-balancing policies: which endpoint gets the next request.
//!
//! - `round-robin` — each endpoint in turn; what users expect first, and exact.
//! - `weighted` — random in proportion to Consul's `Weights.Passing`.
//! - `least-request` — power of two choices: pick two at random, send to the one with fewer
//!   requests in flight. Nearly as good as scanning all, without a global view or lock.
//! - `p2c-ewma` — the same two choices compared on peak-EWMA latency times load (Finagle,
//!   Linkerd): routes away from slow endpoints as well as busy ones.
//! - `ring-hash` — consistent hashing of a header (or the client address) onto a ring of
//!   virtual nodes: the same key keeps reaching the same endpoint while the set changes little.
//!
//! Ejected endpoints (outlier detection) and endpoints already tried by this request are not
//! candidates. If ejection would leave nothing, ejection is ignored: never eject all.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::endpoint::Endpoint;
use super::split::Split;

/// Virtual nodes per endpoint on the hash ring.
const RING_REPLICAS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Weighted,
    LeastRequest,
    P2cEwma,
    RingHash,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "weighted" => Ok(Policy::Weighted),
            "least-request" => Ok(Policy::LeastRequest),
            "p2c-ewma" => Ok(Policy::P2cEwma),
            "ring-hash" => Ok(Policy::RingHash),
            other => Err(format!(
                "unknown balancing policy {other:?}: expected round-robin, weighted, least-request, p2c-ewma or ring-hash"
            )),
        }
    }
}

/// The endpoints of a service at one moment, with what the policies precompute.
#[derive(Debug, Default)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Sorted (hash, endpoint index) points of the consistent-hash ring.
    ring: Vec<(u64, usize)>,
    /// What each endpoint is, for subsets' filters: its health entry as JSON (`Null` when
    /// not from the registry).
    pub labels: Vec<Arc<serde_json::Value>>,
    /// The split between the service's subsets, if it has one.
    pub split: Option<Split>,
}

impl EndpointSet {
    /// `endpoints` with what subsets are chosen by, and the split between them.
    pub fn labelled(
        endpoints: Vec<Arc<Endpoint>>,
        labels: Vec<Arc<serde_json::Value>>,
        split: Option<Split>,
    ) -> EndpointSet {
        let mut set = EndpointSet::new(endpoints);
        set.labels = labels;
        set.split = split;
        set
    }

    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> EndpointSet {
        let mut ring = Vec::with_capacity(endpoints.len() * RING_REPLICAS);
        for (index, endpoint) in endpoints.iter().enumerate() {
            for replica in 0..RING_REPLICAS {
                ring.push((hash(&(endpoint.id.as_str(), replica)), index));
            }
        }
        ring.sort_unstable();
        EndpointSet {
            endpoints,
            ring,
            labels: Vec::new(),
            split: None,
        }
    }
}

pub fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A service's balancer: the policy and its small state.
#[derive(Debug)]
pub struct Balancer {
    pub policy: Policy,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Policy) -> Balancer {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks an endpoint index, skipping `tried`; `key` is the ring-hash key (and a sticky
    /// split's). A service split between subsets draws the request's subset first and picks
    /// within it; a subset with no endpoint left to try lets the request go to any.
    pub fn pick(&self, set: &EndpointSet, tried: &[usize], key: Option<u64>) -> Option<usize> {
        let now = Instant::now();
        let all = set.endpoints.len();
        let healthy = |i: &usize| !set.endpoints[*i].outlier.is_ejected(now);
        if let Some(split) = &set.split {
            let members = split.draw(key);
            if tried.is_empty() && !members.is_empty() && members.iter().all(healthy) {
                return self.choose(set, members.len(), |n| members[n], key);
            }
            let untried: Vec<usize> = members
                .iter()
                .copied()
                .filter(|i| !tried.contains(i))
                .collect();
            let live: Vec<usize> = untried.iter().copied().filter(healthy).collect();
            let candidates = if live.is_empty() { untried } else { live };
            if !candidates.is_empty() {
                return self.choose(set, candidates.len(), |n| candidates[n], key);
            }
        }
        // The common case, nothing tried and nothing ejected, needs no candidate list.
        if tried.is_empty() && (0..all).all(|i| healthy(&i)) {
            return self.choose(set, all, |n| n, key);
        }
        let mut candidates: Vec<usize> = (0..all)
            .filter(|i| !tried.contains(i))
            .filter(healthy)
            .collect();
        if candidates.is_empty() {
            // Never eject all: if ejection left nothing, ignore it.
            candidates = (0..all).filter(|i| !tried.contains(i)).collect();
        }
        self.choose(set, candidates.len(), |n| candidates[n], key)
    }

    /// Chooses among `count` candidates, the `n`th being endpoint `candidate(n)`.
    fn choose(
        &self,
        set: &EndpointSet,
        count: usize,
        candidate: impl Fn(usize) -> usize,
        key: Option<u64>,
    ) -> Option<usize> {
        if count == 0 {
            return None;
        }
        let endpoint = |n: usize| &set.endpoints[candidate(n)];
        let choice = match self.policy {
            Policy::RoundRobin => candidate(self.next.fetch_add(1, Ordering::Relaxed) % count),
            Policy::Weighted => {
                let total: u64 = (0..count).map(|n| u64::from(endpoint(n).weight)).sum();
                let mut point = fastrand::u64(..total.max(1));
                let mut chosen = candidate(0);
                for n in 0..count {
                    let weight = u64::from(endpoint(n).weight);
                    if point < weight {
                        chosen = candidate(n);
                        break;
                    }
                    point -= weight;
                }
                chosen
            }
            Policy::LeastRequest => {
                candidate(two_choices(count, |n| f64::from(endpoint(n).inflight())))
            }
            Policy::P2cEwma => candidate(two_choices(count, |n| endpoint(n).cost())),
            Policy::RingHash => {
                let key = key.unwrap_or_else(|| fastrand::u64(..));
                let start = set.ring.partition_point(|(point, _)| *point < key);
                let ring = set.ring.len();
                let is_candidate = |i: usize| (0..count).any(|n| candidate(n) == i);
                (0..ring)
                    .map(|step| set.ring[(start + step) % ring].1)
                    .find(|i| is_candidate(*i))
                    .unwrap_or(candidate(0))
            }
        };
        Some(choice)
    }
}

/// Power of two choices: the cheaper of two distinct random candidates out of `count`.
fn two_choices(count: usize, cost: impl Fn(usize) -> f64) -> usize {
    if count == 1 {
        return 0;
    }
    let a = fastrand::usize(..count);
    let mut b = fastrand::usize(..count - 1);
    if b >= a {
        b += 1;
    }
    if cost(b) < cost(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::outlier::CONSECUTIVE_FAILURES;

    fn set(n: usize) -> EndpointSet {
        EndpointSet::new(
            (0..n)
                .map(|i| {
                    Arc::new(Endpoint::new(
                        format!("e{i}"),
                        format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                        1,
                    ))
                })
                .collect(),
        )
    }

    fn counts(
        balancer: &Balancer,
        set: &EndpointSet,
        picks: usize,
        key: impl Fn(usize) -> Option<u64>,
    ) -> Vec<usize> {
        let mut counts = vec![0; set.endpoints.len()];
        for n in 0..picks {
            counts[balancer.pick(set, &[], key(n)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_exact() {
        let set = set(3);
        assert_eq!(
            counts(&Balancer::new(Policy::RoundRobin), &set, 300, |_| None),
            [100, 100, 100]
        );
    }

    #[test]
    fn weighted_follows_weights() {
        let endpoints = vec![
            Arc::new(Endpoint::new("a".into(), "127.0.0.1:1".parse().unwrap(), 1)),
            Arc::new(Endpoint::new("b".into(), "127.0.0.1:2".parse().unwrap(), 3)),
        ];
        let set = EndpointSet::new(endpoints);
        let counts = counts(&Balancer::new(Policy::Weighted), &set, 4000, |_| None);
        assert!(counts[1] > 2 * counts[0], "{counts:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let set = set(2);
        let _busy: Vec<_> = (0..10).map(|_| set.endpoints[0].start()).collect();
        let counts = counts(&Balancer::new(Policy::LeastRequest), &set, 100, |_| None);
        assert_eq!(counts, [0, 100]);
    }

    #[test]
    fn ring_hash_is_sticky_and_moves_little_when_the_set_changes() {
        let balancer = Balancer::new(Policy::RingHash);
        let three = set(3);
        let keys: Vec<u64> = (0..1000u64).map(|k| hash(&k)).collect();
        let first: Vec<usize> = keys
            .iter()
            .map(|k| balancer.pick(&three, &[], Some(*k)).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|k| balancer.pick(&three, &[], Some(*k)).unwrap())
            .collect();
        assert_eq!(first, again, "same key, same endpoint");
        let four = set(4);
        let moved = keys
            .iter()
            .zip(&first)
            .filter(|(k, before)| balancer.pick(&four, &[], Some(**k)).unwrap() != **before)
            .count();
        assert!(
            moved < 400,
            "adding one of four endpoints moves about a quarter of keys, moved {moved}"
        );
    }

    #[test]
    fn ejected_and_tried_endpoints_are_skipped_but_never_all() {
        let set = set(2);
        let now = Instant::now();
        for _ in 0..CONSECUTIVE_FAILURES {
            set.endpoints[0].outlier.failure(now);
        }
        let balancer = Balancer::new(Policy::RoundRobin);
        assert_eq!(counts(&balancer, &set, 10, |_| None), [0, 10]);
        assert_eq!(
            balancer.pick(&set, &[1], None),
            Some(0),
            "ejection never takes all"
        );
        assert_eq!(balancer.pick(&set, &[0, 1], None), None);
    }
}
