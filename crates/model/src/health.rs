//! Health status of a check, and how the statuses of several checks combine.

use serde::{Deserialize, Serialize};

/// The status of one check, as Consul names it. Ordered from best to worst so that the
/// aggregate of several checks is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Parses a status as Consul's API spells it (`passing`, `warning`, `critical`).
    pub fn parse(s: &str) -> Option<Status> {
        match s.to_ascii_lowercase().as_str() {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }

    /// The worst of several statuses; `Passing` when there are none (an instance without
    /// checks is healthy, as in Consul).
    pub fn aggregate(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses.into_iter().max().unwrap_or(Status::Passing)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_is_the_worst() {
        assert_eq!(Status::aggregate([]), Status::Passing);
        assert_eq!(
            Status::aggregate([Status::Passing, Status::Warning]),
            Status::Warning
        );
        assert_eq!(
            Status::aggregate([Status::Critical, Status::Warning, Status::Passing]),
            Status::Critical
        );
    }

    #[test]
    fn parses_consul_spelling() {
        assert_eq!(Status::parse("passing"), Some(Status::Passing));
        assert_eq!(Status::parse("Critical"), Some(Status::Critical));
        assert_eq!(Status::parse("any"), None);
    }
}
