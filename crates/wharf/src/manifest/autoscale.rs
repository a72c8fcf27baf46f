//! A service's `autoscale = { ... }` in the manifest, checked: bounds in order and within the
//! replica limit, exactly one target and above zero, a delay that parses, a tolerance below 1.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wharf_supervisor::{Autoscale, Target};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoscale {
    min: Option<Spanned<i64>>,
    max: Spanned<i64>,
    target_concurrency: Option<Spanned<f64>>,
    target_rps: Option<Spanned<f64>>,
    scale_down_delay: Option<Spanned<String>>,
    tolerance: Option<Spanned<f64>>,
}

/// A refusal: where (a byte range of the file) and why.
pub(super) type Refusal = (Option<Range<usize>>, String);

impl RawAutoscale {
    /// The checked settings of service `name`, whose count may go up to `most`.
    pub(super) fn check(&self, name: &str, most: u32) -> Result<Autoscale, Refusal> {
        let refuse = |span: Range<usize>, reason: String| {
            (Some(span), format!("service {name}: autoscale {reason}"))
        };
        let count = |value: &Spanned<i64>, what: &str| {
            u32::try_from(*value.get_ref())
                .ok()
                .filter(|n| *n <= most)
                .ok_or_else(|| {
                    refuse(
                        value.span(),
                        format!(
                            "{what} must be between 0 and {most}, not {}",
                            value.get_ref()
                        ),
                    )
                })
        };
        let max = count(&self.max, "max")?;
        let min = match &self.min {
            Some(min) => count(min, "min")?,
            None => 1,
        };
        if min > max {
            let span = self.min.as_ref().map_or(self.max.span(), Spanned::span);
            return Err(refuse(
                span,
                format!("min ({min}) is more than max ({max})"),
            ));
        }
        if max == 0 {
            return Err(refuse(self.max.span(), "max must be at least 1".into()));
        }
        let positive = |value: &Spanned<f64>, what: &str| {
            let v = *value.get_ref();
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(refuse(
                    value.span(),
                    format!("{what} must be above 0, not {v}"),
                ))
            }
        };
        let target = match (&self.target_concurrency, &self.target_rps) {
            (Some(c), None) => Target::Concurrency(positive(c, "target_concurrency")?),
            (None, Some(r)) => Target::Rps(positive(r, "target_rps")?),
            (Some(c), Some(_)) => {
                return Err(refuse(
                    c.span(),
                    "takes target_concurrency or target_rps, not both".into(),
                ));
            }
            (None, None) => {
                return Err(refuse(
                    self.max.span(),
                    "needs a target: target_concurrency (requests in flight per instance) or target_rps".into(),
                ));
            }
        };
        let scale_down_delay = match &self.scale_down_delay {
            None => Autoscale::DEFAULT_SCALE_DOWN_DELAY,
            Some(text) => wharf_model::parse_go_duration(text.get_ref())
                .map_err(|e| refuse(text.span(), format!("scale_down_delay: {e}")))?,
        };
        if scale_down_delay > Duration::from_secs(3_600) {
            let span = self
                .scale_down_delay
                .as_ref()
                .map_or(self.max.span(), Spanned::span);
            return Err(refuse(span, "scale_down_delay must be at most 1h".into()));
        }
        let tolerance = match &self.tolerance {
            None => Autoscale::DEFAULT_TOLERANCE,
            Some(t) if (0.0..1.0).contains(t.get_ref()) => *t.get_ref(),
            Some(t) => {
                return Err(refuse(
                    t.span(),
                    format!("tolerance must be from 0 to below 1, not {}", t.get_ref()),
                ));
            }
        };
        Ok(Autoscale {
            min,
            max,
            target,
            scale_down_delay,
            tolerance,
        })
    }
}
