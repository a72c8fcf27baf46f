//! A service's `rollout = { canary, step, max_failure_rate, max_p99 }` in the manifest,
//! checked: weights rising, each above 0 and at most 100; durations that parse and are above
//! zero; a failure rate between 0 and 1.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use wharf_supervisor::Rollout;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    canary: Spanned<Vec<f64>>,
    step: Option<Spanned<String>>,
    max_failure_rate: Option<Spanned<f64>>,
    max_p99: Option<Spanned<String>>,
}

/// A refusal: where (a byte range of the file) and why.
pub(super) type Refusal = (Option<Range<usize>>, String);

impl RawRollout {
    /// The checked strategy of service `name`.
    pub(super) fn check(&self, name: &str) -> Result<Rollout, Refusal> {
        let refuse = |span: Range<usize>, reason: String| {
            (Some(span), format!("service {name}: rollout {reason}"))
        };
        let weights = self.canary.get_ref().clone();
        if weights.is_empty() {
            return Err(refuse(
                self.canary.span(),
                "canary needs at least one weight, such as [1, 10, 50, 100]".into(),
            ));
        }
        let mut last = 0.0;
        for weight in &weights {
            if !(weight.is_finite() && *weight > last && *weight <= 100.0) {
                return Err(refuse(
                    self.canary.span(),
                    format!(
                        "canary weights must rise, each above 0 and at most 100 (a percentage of the requests), not {weights:?}"
                    ),
                ));
            }
            last = *weight;
        }
        let duration = |value: &Spanned<String>, what: &str| {
            wharf_model::parse_go_duration(value.get_ref())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    refuse(
                        value.span(),
                        format!(
                            "{what} must be a duration above zero such as \"1m\", not {:?}",
                            value.get_ref()
                        ),
                    )
                })
        };
        let step = match &self.step {
            Some(step) => duration(step, "step")?,
            None => Rollout::DEFAULT_STEP,
        };
        let max_p99 = self
            .max_p99
            .as_ref()
            .map(|p99| duration(p99, "max_p99"))
            .transpose()?;
        let max_failure_rate = match &self.max_failure_rate {
            Some(rate) if (0.0..1.0).contains(rate.get_ref()) => *rate.get_ref(),
            Some(rate) => {
                return Err(refuse(
                    rate.span(),
                    format!(
                        "max_failure_rate must be from 0 to below 1 (0.01 is 1 %), not {}",
                        rate.get_ref()
                    ),
                ));
            }
            None => Rollout::DEFAULT_MAX_FAILURE_RATE,
        };
        Ok(Rollout {
            weights,
            step,
            max_failure_rate,
            max_p99,
        })
    }
}
