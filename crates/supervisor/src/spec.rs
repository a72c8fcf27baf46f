//! What the supervisor is asked to run, and how patient it is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How the registry checks an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    /// `GET http://127.0.0.1:PORT<path>`.
    Http {
        path: String,
        interval: String,
        timeout: String,
    },
    /// A TCP connect to the port.
    Tcp { interval: String, timeout: String },
}

/// One service to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// argv; `command[0]` is resolved by the caller.
    pub command: Vec<String>,
    pub replicas: u32,
    pub env: BTreeMap<String, String>,
    /// Service meta every instance registers with (`wharf-balance`, `wharf-routes`, ...);
    /// the supervisor's own keys (`wharf-pid`, `wharf-restarts`) win over these.
    pub meta: BTreeMap<String, String>,
    pub check: CheckSpec,
    /// Working directory of the processes.
    pub dir: PathBuf,
    /// Scaled on its load between bounds, if set; `replicas` is then its first count.
    pub autoscale: Option<Autoscale>,
    /// How a change of what its instances run is rolled out: a canary judged by its golden
    /// metrics, if set; else one instance at a time.
    pub rollout: Option<Rollout>,
}

/// `rollout = { canary = [1, 10, 50, 100], step = "1m", max_failure_rate = 0.01,
/// max_p99 = "500ms" }`: a new spec first runs as a canary taking each weight in turn (a
/// percentage of the requests) for a step, judged at the end of each against the limits and
/// the stable version; promoted after the last, rolled back at the first failed judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The canary's weights in turn, rising, each above 0 and at most 100.
    pub weights: Vec<f64>,
    pub step: Duration,
    /// The canary fails a step if more of its requests failed than this share (and more
    /// than the stable version's).
    pub max_failure_rate: f64,
    /// ... or if its p99 is above this (and above the stable version's).
    pub max_p99: Option<Duration>,
}

impl Rollout {
    pub const DEFAULT_STEP: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_FAILURE_RATE: f64 = 0.01;
}

/// The supervisor's waits. [`Timings::default`] is what `wharf up` uses; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// A check stays critical this long before its process is restarted.
    pub critical_grace: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Between deregistration and SIGTERM: time for proxies to hear of the change and for
    /// requests in flight to finish.
    pub drain: Duration,
    /// A process must open its port within this long after starting.
    pub start_deadline: Duration,
    /// The first restart's delay, doubled after each restart up to `backoff_max`.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// Running this long resets the backoff.
    pub ran_well: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            critical_grace: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
            drain: Duration::from_millis(500),
            start_deadline: Duration::from_secs(30),
            backoff_start: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            ran_well: Duration::from_secs(60),
        }
    }
}

/// What an autoscaled service's load is measured by, per instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Requests in flight at once (measured at the proxies), Knative's default.
    Concurrency(f64),
    /// Requests per second.
    Rps(f64),
}

/// `autoscale = { min, max, target_concurrency | target_rps, scale_down_delay, tolerance }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub target: Target,
    /// Scale down only to the highest count recommended over this long (the HPA's
    /// stabilization window; default 5 min).
    pub scale_down_delay: Duration,
    /// No change while the load per instance is within this share of the target (0.1).
    pub tolerance: f64,
}

impl Autoscale {
    pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(300);
    pub const DEFAULT_TOLERANCE: f64 = 0.1;
}
