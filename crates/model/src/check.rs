//! Health checks: what to probe, how often, and the last result.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Status;

/// The smallest interval a probe runs at; smaller requests are raised to it, as Consul does.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Probe timeout when the definition gives none (Consul's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Output kept per check; longer output is cut (Consul keeps 4 KiB by default).
pub const MAX_OUTPUT: usize = 4096;

/// A health check and its last known result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub name: String,
    /// The instance the check belongs to; empty for a node-level check, which counts for every
    /// instance of the node.
    #[serde(default)]
    pub service_id: String,
    #[serde(default)]
    pub notes: String,
    pub kind: CheckKind,
    /// How often to probe (not used by TTL checks).
    #[serde(default)]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Remove the whole instance once this check has been critical this long.
    #[serde(default)]
    pub deregister_critical_after: Option<Duration>,
    /// Results in a row needed before the status follows a probe (not used by TTL checks).
    #[serde(default)]
    pub thresholds: crate::Thresholds,
    pub status: Status,
    #[serde(default)]
    pub output: String,
    /// Wall-clock milliseconds since the Unix epoch when the check last turned critical; kept
    /// in the store so that `DeregisterCriticalServiceAfter` survives a restart.
    #[serde(default)]
    pub critical_since_ms: Option<u64>,
    /// The registry node that runs it (the node its instance was registered through); empty
    /// in records written before registry nodes shared a store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl Check {
    /// The probe interval, raised to [`MIN_INTERVAL`].
    pub fn effective_interval(&self) -> Duration {
        self.interval
            .unwrap_or(Duration::from_secs(10))
            .max(MIN_INTERVAL)
    }

    /// The probe timeout, [`DEFAULT_TIMEOUT`] if none was given.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Consul's `Type` field.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// Sets a new result, cutting the output to [`MAX_OUTPUT`] and keeping track of when the
    /// check turned critical. Returns whether anything changed.
    pub fn record(&mut self, status: Status, output: &str, now_ms: u64) -> bool {
        let output = truncate_output(output);
        if self.status == status && self.output == output {
            return false;
        }
        if status == Status::Critical {
            if self.status != Status::Critical || self.critical_since_ms.is_none() {
                self.critical_since_ms = Some(now_ms);
            }
        } else {
            self.critical_since_ms = None;
        }
        self.status = status;
        self.output = output;
        true
    }
}

pub(crate) fn truncate_output(output: &str) -> String {
    if output.len() <= MAX_OUTPUT {
        return output.to_owned();
    }
    let mut end = MAX_OUTPUT;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    output[..end].to_owned()
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// The application reports its own health before the TTL runs out.
    Ttl { ttl: Duration },
    /// An HTTP request: 2xx passes, 429 warns, anything else is critical.
    Http {
        url: String,
        #[serde(default)]
        method: String,
        #[serde(default)]
        header: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        body: String,
        #[serde(default)]
        tls_skip_verify: bool,
    },
    /// A TCP connect: success passes, anything else is critical.
    Tcp { address: String },
    /// gRPC health protocol (`grpc.health.v1.Health/Check`) on `host:port[/service]`.
    Grpc {
        target: String,
        #[serde(default)]
        use_tls: bool,
    },
    /// Maintenance mode of an instance or a node: critical while it exists, probed by
    /// nothing (`/v1/agent/service/maintenance`, `/v1/agent/maintenance`).
    Maintenance,
    /// A check of an external service (`/v1/catalog/register`): probed by nothing here, its
    /// status is what the last registration said (Consul ESM and the like keep it current).
    External,
}

impl CheckKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Maintenance => "maintenance",
            CheckKind::External => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl_check() -> Check {
        Check {
            id: "c".into(),
            name: "c".into(),
            service_id: String::new(),
            notes: String::new(),
            kind: CheckKind::Ttl {
                ttl: Duration::from_secs(10),
            },
            interval: None,
            timeout: None,
            deregister_critical_after: None,
            thresholds: Default::default(),
            status: Status::Critical,
            output: String::new(),
            critical_since_ms: Some(5),
            node: String::new(),
        }
    }

    #[test]
    fn record_tracks_when_critical_began() {
        let mut check = ttl_check();
        assert!(check.record(Status::Passing, "ok", 10));
        assert_eq!(check.critical_since_ms, None);
        assert!(
            !check.record(Status::Passing, "ok", 11),
            "same result is no change"
        );
        assert!(check.record(Status::Critical, "down", 20));
        assert_eq!(check.critical_since_ms, Some(20));
        assert!(check.record(Status::Critical, "still down", 30));
        assert_eq!(
            check.critical_since_ms,
            Some(20),
            "critical since the first failure"
        );
    }

    #[test]
    fn output_is_cut_on_a_char_boundary() {
        let mut check = ttl_check();
        let long = "é".repeat(MAX_OUTPUT);
        check.record(Status::Passing, &long, 1);
        assert!(check.output.len() <= MAX_OUTPUT);
        assert!(check.output.chars().all(|c| c == 'é'));
    }

    #[test]
    fn intervals_are_raised_to_the_minimum() {
        let mut check = ttl_check();
        check.interval = Some(Duration::from_millis(10));
        assert_eq!(check.effective_interval(), MIN_INTERVAL);
        assert_eq!(check.effective_timeout(), DEFAULT_TIMEOUT);
    }
}
