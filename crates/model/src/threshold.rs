//! How many probe results in a row a check needs before its status follows them: Consul's
//! `SuccessBeforePassing`, `FailuresBeforeWarning` and `FailuresBeforeCritical`.
//!
//! Without them a single lost packet turns an instance critical and takes it out of DNS and
//! the gateway until the next probe. The rules are those of Consul's `StatusHandler`
//! (`agent/checks/check.go`): a passing or warning result counts towards
//! `SuccessBeforePassing` and resets the failures; a critical one counts towards both failure
//! thresholds and resets the successes; until a threshold is reached the check keeps its
//! status (and its output). `FailuresBeforeWarning` left at 0 means the same as
//! `FailuresBeforeCritical`; thresholds of 0 or 1 follow every result.

use serde::{Deserialize, Serialize};

use crate::Status;

/// A check's thresholds, as registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    #[serde(default)]
    pub success_before_passing: u32,
    #[serde(default)]
    pub failures_before_warning: u32,
    #[serde(default)]
    pub failures_before_critical: u32,
}

impl Thresholds {
    /// `FailuresBeforeWarning` as it applies: unset means `FailuresBeforeCritical`.
    pub fn effective_failures_before_warning(&self) -> u32 {
        if self.failures_before_warning == 0 {
            self.failures_before_critical
        } else {
            self.failures_before_warning
        }
    }
}

/// The results in a row one running check has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Counts one probe result; returns the status to record, or `None` to record nothing
    /// because no threshold has been reached yet.
    pub fn judge(&mut self, thresholds: &Thresholds, result: Status) -> Option<Status> {
        if result == Status::Critical {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= thresholds.failures_before_critical {
                return Some(Status::Critical);
            }
            if self.failures >= thresholds.effective_failures_before_warning() {
                return Some(Status::Warning);
            }
            None
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= thresholds.success_before_passing).then_some(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Critical, Passing, Warning};

    fn run(thresholds: Thresholds, results: &[Status]) -> Vec<Option<Status>> {
        let mut streak = Streak::default();
        results
            .iter()
            .map(|r| streak.judge(&thresholds, *r))
            .collect()
    }

    #[test]
    fn without_thresholds_every_result_counts() {
        let none = Thresholds::default();
        assert_eq!(
            run(none, &[Passing, Critical, Warning]),
            [Some(Passing), Some(Critical), Some(Warning)]
        );
    }

    #[test]
    fn results_count_in_a_row_and_reset_each_other() {
        let thresholds = Thresholds {
            success_before_passing: 2,
            failures_before_warning: 0,
            failures_before_critical: 3,
        };
        assert_eq!(
            run(
                thresholds,
                &[
                    Passing, Critical, Passing, Passing, Critical, Critical, Passing, Critical,
                    Critical, Critical
                ]
            ),
            [
                None,
                None,
                None,
                Some(Passing),
                None,
                None,
                None,
                None,
                None,
                Some(Critical)
            ]
        );
    }

    #[test]
    fn warning_comes_before_critical() {
        let thresholds = Thresholds {
            success_before_passing: 0,
            failures_before_warning: 1,
            failures_before_critical: 3,
        };
        assert_eq!(
            run(thresholds, &[Critical, Critical, Critical, Critical]),
            [Some(Warning), Some(Warning), Some(Critical), Some(Critical)]
        );
        assert_eq!(
            Thresholds {
                failures_before_critical: 4,
                ..Thresholds::default()
            }
            .effective_failures_before_warning(),
            4
        );
    }
}
