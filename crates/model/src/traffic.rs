//! Versions of a service and the split of its traffic between them, as Consul's
//! `service-resolver` (subsets by filter) and `service-splitter` (weights) config entries say
//! them: `{"Kind": "service-resolver", "Name": "hello", "Subsets": {"v2": {"Filter":
//! "Service.Meta.version == v2"}}}` and `{"Kind": "service-splitter", "Name": "hello",
//! "Splits": [{"Weight": 99, "ServiceSubset": "v1"}, {"Weight": 1, "ServiceSubset": "v2"}]}`.
//!
//! Weights are percentages as Consul writes them, kept to the part per million
//! ([`Splitter::shares`]); they must add up to 100. A split names subsets its service's
//! resolver defines. Splits to other services (Consul's `Service` of a split) are not kept,
//! and the fields of Consul's entries that Wharf does not act on (`Redirect`, `Failover`,
//! `LoadBalancer`, timeouts, ...) are refused by name rather than ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::filter::Filter;

/// Parts per million in a whole.
pub const MILLION: u32 = 1_000_000;

/// Consul's `service-resolver`: the subsets of a service, by filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Resolver {
    #[serde(default)]
    pub name: String,
    /// Where requests go when no splitter says otherwise (`""`: every instance).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_subset: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, Subset>,
}

/// One subset: the instances its filter selects (from each instance's health entry:
/// `Service.Meta.version == v2`, `"canary" in Service.Tags`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default)]
    pub filter: String,
    /// Consul's; Wharf's proxies route to passing instances only in any case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_passing: bool,
}

/// Consul's `service-splitter`: how a service's requests divide between its subsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Splitter {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub splits: Vec<Split>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Split {
    /// A percentage, 0 to 100.
    pub weight: f64,
    #[serde(default)]
    pub service_subset: String,
    /// Consul's split to another service: only the entry's own service is kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}

/// One service's traffic as the proxies take it (`/v1/wharf/traffic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TrafficView {
    /// Subset name → filter.
    pub subsets: BTreeMap<String, String>,
    /// Each subset's share, adding up to a million; `""` is the whole service.
    pub splits: Vec<ShareView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShareView {
    pub subset: String,
    pub ppm: u32,
}

/// Why an entry is refused, in words for a 400.
pub type Refusal = String;

impl Resolver {
    /// Checks the entry as Consul does: a name, subset names of letters, digits and `-`, each
    /// filter parsing (a bad one named with its column), a default subset that exists.
    pub fn validate(&self) -> Result<(), Refusal> {
        check_name(&self.name)?;
        for (name, subset) in &self.subsets {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "Subset {name:?} is invalid: use lower-case letters, digits and '-'"
                ));
            }
            if subset.filter.trim().is_empty() {
                return Err(format!("Subset {name:?}: a Filter is required"));
            }
            Filter::parse(&subset.filter).map_err(|e| format!("Subset {name:?}: {e}"))?;
        }
        if !self.default_subset.is_empty() && !self.subsets.contains_key(&self.default_subset) {
            return Err(format!(
                "DefaultSubset {:?} is not a subset of this resolver",
                self.default_subset
            ));
        }
        Ok(())
    }

    /// The subsets' filters, parsed (each was checked by [`Resolver::validate`]; one that
    /// still fails selects nothing).
    pub fn filters(&self) -> Vec<(String, Option<Filter>)> {
        self.subsets
            .iter()
            .map(|(name, subset)| (name.clone(), Filter::parse(&subset.filter).ok()))
            .collect()
    }
}

impl Splitter {
    /// Checks the entry: a name, at least one split, weights from 0 to 100 adding up to 100
    /// (to the part per million), splits to this service only, each subset named once and
    /// defined by `resolver` (`""` is the whole service).
    pub fn validate(&self, resolver: Option<&Resolver>) -> Result<(), Refusal> {
        check_name(&self.name)?;
        if self.splits.is_empty() {
            return Err("Splits: at least one split is required".to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, split) in self.splits.iter().enumerate() {
            if !(0.0..=100.0).contains(&split.weight) || !split.weight.is_finite() {
                return Err(format!(
                    "Splits[{i}].Weight must be between 0 and 100, not {}",
                    split.weight
                ));
            }
            if !split.service.is_empty() && !split.service.eq_ignore_ascii_case(&self.name) {
                return Err(format!(
                    "Splits[{i}].Service {:?}: Wharf splits a service between its own subsets only",
                    split.service
                ));
            }
            if !seen.insert(split.service_subset.as_str()) {
                return Err(format!(
                    "Splits[{i}].ServiceSubset {:?} is split to more than once",
                    split.service_subset
                ));
            }
            if !split.service_subset.is_empty()
                && !resolver.is_some_and(|r| r.subsets.contains_key(&split.service_subset))
            {
                return Err(format!(
                    "Splits[{i}].ServiceSubset {:?}: the service-resolver of {:?} defines no such subset",
                    split.service_subset, self.name
                ));
            }
        }
        let total: u64 = self.shares().iter().map(|(_, ppm)| u64::from(*ppm)).sum();
        if total != u64::from(MILLION) {
            let percent: f64 = self.splits.iter().map(|s| s.weight).sum();
            return Err(format!(
                "the sum of all split weights must be 100, not {percent}"
            ));
        }
        Ok(())
    }

    /// Each subset's share in parts per million.
    pub fn shares(&self) -> Vec<(String, u32)> {
        self.splits
            .iter()
            .map(|split| {
                let ppm = (split.weight * 10_000.0)
                    .round()
                    .clamp(0.0, f64::from(MILLION));
                (split.service_subset.clone(), ppm as u32)
            })
            .collect()
    }
}

fn check_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err("config entry Name is required".to_owned());
    }
    if name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "config entry Name {name:?} is not a valid service name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        serde_json::from_value(serde_json::json!({
            "Name": "hello",
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": "Service.Meta.version == v1"},
                "v2": {"Filter": "Service.Meta.version == v2"},
            },
        }))
        .unwrap()
    }

    fn splitter(splits: serde_json::Value) -> Splitter {
        serde_json::from_value(serde_json::json!({"Name": "hello", "Splits": splits})).unwrap()
    }

    #[test]
    fn weights_are_kept_to_the_part_per_million() {
        let split = splitter(serde_json::json!([
            {"Weight": 99.9999, "ServiceSubset": "v1"},
            {"Weight": 0.0001, "ServiceSubset": "v2"},
        ]));
        assert_eq!(split.validate(Some(&resolver())), Ok(()));
        assert_eq!(
            split.shares(),
            [("v1".to_owned(), 999_999), ("v2".to_owned(), 1)]
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let refused = |splits: serde_json::Value| {
            splitter(splits)
                .validate(Some(&resolver()))
                .expect_err("refused")
        };
        let sum = refused(serde_json::json!([
            {"Weight": 90, "ServiceSubset": "v1"},
            {"Weight": 5, "ServiceSubset": "v2"},
        ]));
        assert!(sum.contains("must be 100, not 95"), "{sum}");
        let unknown = refused(serde_json::json!([{"Weight": 100, "ServiceSubset": "v3"}]));
        assert!(unknown.contains("defines no such subset"), "{unknown}");
        let twice = refused(serde_json::json!([
            {"Weight": 50, "ServiceSubset": "v1"},
            {"Weight": 50, "ServiceSubset": "v1"},
        ]));
        assert!(twice.contains("more than once"), "{twice}");
        let negative = refused(serde_json::json!([{"Weight": -1, "ServiceSubset": "v1"}]));
        assert!(negative.contains("between 0 and 100"), "{negative}");
        let other = refused(serde_json::json!([{"Weight": 100, "Service": "api"}]));
        assert!(other.contains("own subsets only"), "{other}");

        let mut bad = resolver();
        bad.subsets.get_mut("v2").unwrap().filter = "Service.Meta.version ==".into();
        let reason = bad.validate().expect_err("a bad filter");
        assert!(
            reason.contains("Subset \"v2\"") && reason.contains("column"),
            "{reason}"
        );
        let failover: Result<Resolver, _> = serde_json::from_value(serde_json::json!({
            "Name": "hello", "Failover": {"*": {"Service": "other"}},
        }));
        assert!(
            failover
                .unwrap_err()
                .to_string()
                .contains("unknown field `Failover`"),
            "a field Wharf does not act on is refused, not ignored"
        );
        let mut no_default = resolver();
        no_default.default_subset = "v9".into();
        assert!(no_default.validate().is_err());
    }
}
