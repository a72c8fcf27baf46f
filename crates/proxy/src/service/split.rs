//! A service's traffic split between its subsets (Consul's `service-splitter`): each request
//! first draws a share, by its weight in parts per million, then an endpoint of that share by
//! the service's policy.
//!
//! The draw is the Weyl sequence of the golden ratio, `frac(n / φ)`, over the request count:
//! the most evenly spread sequence there is, so that a 1 % share gets one request in every
//! hundred at every scale (within a request or two of its weight over any run of requests,
//! where random draws would drift by the square root of the count), with one atomic counter
//! and no lock. With a hash key (the service's `wharf-hash-header`, else the client's
//! address) the draw is the key's instead: the same key keeps its share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wharf_model::filter::Filter;
use wharf_model::traffic::TrafficView;

/// Parts per million in a whole.
pub const MILLION: u32 = 1_000_000;

/// 2⁶⁴ / φ: each request's step along the sequence.
const WEYL: u64 = 0x9E37_79B9_7F4A_7C15;

/// The shares of a service's endpoints.
#[derive(Debug)]
pub struct Split {
    /// Per share, the upper bound of its range of draws (cumulative parts per million) and
    /// its endpoints (indexes into the set).
    shares: Vec<(u32, Vec<usize>)>,
    /// Each share's subset name (`""`: the whole service).
    names: Vec<String>,
    /// Whether a request's hash key decides its share.
    pub sticky: bool,
    drawn: AtomicU64,
}

impl Split {
    /// Shares as (subset name, parts per million, endpoint indexes), in order; their parts
    /// should add up to a million (a shortfall goes to no share: those requests go to any
    /// endpoint).
    pub fn new(shares: Vec<(String, u32, Vec<usize>)>, sticky: bool) -> Split {
        let mut upto = 0u32;
        let mut names = Vec::with_capacity(shares.len());
        let shares = shares
            .into_iter()
            .map(|(name, ppm, members)| {
                names.push(name);
                upto = upto.saturating_add(ppm).min(MILLION);
                (upto, members)
            })
            .collect();
        Split {
            shares,
            names,
            sticky,
            drawn: AtomicU64::new(0),
        }
    }

    /// Each share's subset name and endpoints.
    pub fn shares(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.names
            .iter()
            .zip(&self.shares)
            .map(|(name, (_, members))| (name.as_str(), members.as_slice()))
    }

    /// The endpoints of the share this request draws; empty if its share has none.
    pub fn draw(&self, key: Option<u64>) -> &[usize] {
        let point = match (self.sticky, key) {
            (true, Some(key)) => to_ppm(key),
            _ => to_ppm(
                self.drawn
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(WEYL),
            ),
        };
        self.shares
            .iter()
            .find(|(upto, _)| point < *upto)
            .map_or(&[], |(_, members)| members.as_slice())
    }
}

/// What a service's split is made from: its subsets' filters and their shares, as the
/// registry's traffic view gives them.
#[derive(Debug)]
pub struct Division {
    subsets: Vec<(String, Option<Filter>)>,
    shares: Vec<(String, u32)>,
}

impl Division {
    pub fn new(view: &TrafficView) -> Division {
        Division {
            subsets: view
                .subsets
                .iter()
                .map(|(name, filter)| (name.clone(), Filter::parse(filter).ok()))
                .collect(),
            shares: view
                .splits
                .iter()
                .map(|share| (share.subset.clone(), share.ppm))
                .collect(),
        }
    }

    /// The split over endpoints described by `labels` (one per endpoint): each share's
    /// endpoints are those its subset's filter selects (`""`: every endpoint).
    pub fn split(&self, labels: &[Arc<serde_json::Value>], sticky: bool) -> Split {
        let members = |subset: &str| -> Vec<usize> {
            if subset.is_empty() {
                return (0..labels.len()).collect();
            }
            let filter = self
                .subsets
                .iter()
                .find(|(name, _)| name == subset)
                .and_then(|(_, filter)| filter.as_ref());
            let Some(filter) = filter else {
                return Vec::new();
            };
            (0..labels.len())
                .filter(|i| filter.matches(&labels[*i]))
                .collect()
        };
        Split::new(
            self.shares
                .iter()
                .map(|(subset, ppm)| {
                    let name = match subset.as_str() {
                        "" => "all".to_owned(),
                        named => named.to_owned(),
                    };
                    (name, *ppm, members(subset))
                })
                .collect(),
            sticky,
        )
    }
}

/// A 64-bit fraction of one, in parts per million.
fn to_ppm(fraction: u64) -> u32 {
    ((u128::from(fraction) * u128::from(MILLION)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(split: &Split, draws: usize) -> Vec<usize> {
        let mut counts = vec![0; 2];
        for _ in 0..draws {
            counts[split.draw(None)[0]] += 1;
        }
        counts
    }

    #[test]
    fn one_percent_is_one_percent_at_every_scale() {
        let split = Split::new(
            vec![
                ("a".into(), 990_000, vec![0]),
                ("b".into(), 10_000, vec![1]),
            ],
            false,
        );
        // Every run of 100 draws sends the 1 % share one or two; 10,000 draws, 100 ± 1.
        for _ in 0..100 {
            let canary = counts(&split, 100)[1];
            assert!((0..=2).contains(&canary), "{canary} of 100");
        }
        let split = Split::new(
            vec![
                ("a".into(), 990_000, vec![0]),
                ("b".into(), 10_000, vec![1]),
            ],
            false,
        );
        let canary = counts(&split, 10_000)[1];
        assert!((99..=101).contains(&canary), "{canary} of 10,000");
    }

    #[test]
    fn weights_hold_to_a_fraction_of_a_percent() {
        for ppm in [1_000, 50_000, 100_000, 333_333, 500_000] {
            let split = Split::new(
                vec![
                    ("a".into(), MILLION - ppm, vec![0]),
                    ("b".into(), ppm, vec![1]),
                ],
                false,
            );
            let got = counts(&split, 10_000)[1] as f64 / 10_000.0;
            let want = f64::from(ppm) / f64::from(MILLION);
            assert!((got - want).abs() < 0.001, "{got} for {want}");
        }
    }

    #[test]
    fn a_key_keeps_its_share_when_sticky() {
        let split = Split::new(
            vec![
                ("a".into(), 500_000, vec![0]),
                ("b".into(), 500_000, vec![1]),
            ],
            true,
        );
        for key in [1u64, 1 << 63, u64::MAX, 12345] {
            let first = split.draw(Some(key))[0];
            assert!((0..20).all(|_| split.draw(Some(key))[0] == first));
        }
        let low = split.draw(Some(0))[0];
        let high = split.draw(Some(u64::MAX))[0];
        assert_ne!(low, high, "keys spread over the shares");
    }
}
