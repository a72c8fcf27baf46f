//! What `wharf apply` changes: the difference between the services that run and those a
//! manifest now lists, computed before anything is done so that `--dry-run` prints exactly
//! what a real apply would carry out.
//!
//! A service the manifest adds is started, one it no longer lists is drained and stopped. A
//! change to what an instance is made from (command, environment, check, meta, working
//! directory; a caller can add reasons of its own, such as the sidecar's settings) replaces
//! the instances one at a time, as a rolling restart does. A change of `replicas` in the
//! manifest sets the count; a count left as it was keeps whatever `wharf scale` or the
//! autoscaler set since, as `kubectl apply` leaves a scaled deployment alone. A change of the
//! autoscale settings takes effect at once, the count clamped into the new bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::spec::{Autoscale, ServiceSpec, Target};

/// The steps that turn the running services into the listed ones, by service name.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// One service's part of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// A new service: its instances started.
    Start(ServiceSpec),
    /// A service no longer listed: its instances drained and stopped.
    Stop(String),
    /// A service whose spec changed.
    Change(Change),
}

/// How one service changes.
#[derive(Debug, Clone)]
pub struct Change {
    /// The spec it runs from now on.
    pub spec: ServiceSpec,
    /// Why its instances are replaced (`command`, `env GREETING`, ...); none: they stay.
    pub replace: Vec<String>,
    /// The manifest's count, old and new, when it changed.
    pub replicas: Option<(u32, u32)>,
    /// The autoscale settings, old and new, when they changed.
    pub autoscale: Option<(Option<Autoscale>, Option<Autoscale>)>,
    /// Whether the rollout strategy changed (it applies to the next change).
    pub rollout: bool,
}

impl Plan {
    /// The steps from `running` to `listed`.
    pub fn between(running: &[ServiceSpec], listed: &[ServiceSpec]) -> Plan {
        let old: BTreeMap<&str, &ServiceSpec> =
            running.iter().map(|s| (s.name.as_str(), s)).collect();
        let new: BTreeMap<&str, &ServiceSpec> =
            listed.iter().map(|s| (s.name.as_str(), s)).collect();
        let names: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
        let steps = names
            .into_iter()
            .filter_map(|name| match (old.get(name), new.get(name)) {
                (None, Some(spec)) => Some(Step::Start((*spec).clone())),
                (Some(_), None) => Some(Step::Stop(name.to_owned())),
                (Some(before), Some(after)) => {
                    let change = Change::between(before, after);
                    (!change.is_empty()).then_some(Step::Change(change))
                }
                (None, None) => None,
            })
            .collect();
        Plan { steps }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Replaces `service`'s instances for `reason` as well (a change the supervisor cannot
    /// see, such as its sidecar's settings), if the service stays.
    pub fn replace_also(&mut self, service: &str, reason: &str, spec: &ServiceSpec) {
        for step in &mut self.steps {
            match step {
                Step::Change(change) if change.spec.name == service => {
                    change.replace.push(reason.to_owned());
                    return;
                }
                Step::Start(s) if s.name == service => return,
                Step::Stop(name) if name == service => return,
                _ => {}
            }
        }
        self.steps.push(Step::Change(Change {
            spec: spec.clone(),
            replace: vec![reason.to_owned()],
            replicas: None,
            autoscale: None,
            rollout: false,
        }));
        self.steps.sort_by(|a, b| a.service().cmp(b.service()));
    }

    /// One line per step, as `wharf apply` prints them.
    pub fn lines(&self) -> Vec<String> {
        self.steps.iter().map(ToString::to_string).collect()
    }
}

impl Step {
    pub fn service(&self) -> &str {
        match self {
            Step::Start(spec) => &spec.name,
            Step::Stop(name) => name,
            Step::Change(change) => &change.spec.name,
        }
    }
}

impl Change {
    fn between(before: &ServiceSpec, after: &ServiceSpec) -> Change {
        let mut replace = Vec::new();
        if before.command != after.command {
            replace.push("command".to_owned());
        }
        let env = changed_keys(&before.env, &after.env);
        if !env.is_empty() {
            replace.push(format!("env {}", env.join(", ")));
        }
        if before.check != after.check {
            replace.push("check".to_owned());
        }
        let meta = changed_keys(&before.meta, &after.meta);
        if !meta.is_empty() {
            replace.push(format!("meta {}", meta.join(", ")));
        }
        if before.dir != after.dir {
            replace.push("directory".to_owned());
        }
        Change {
            spec: after.clone(),
            replace,
            replicas: (before.replicas != after.replicas)
                .then_some((before.replicas, after.replicas)),
            autoscale: (before.autoscale != after.autoscale)
                .then_some((before.autoscale, after.autoscale)),
            rollout: before.rollout != after.rollout,
        }
    }

    fn is_empty(&self) -> bool {
        self.replace.is_empty()
            && self.replicas.is_none()
            && self.autoscale.is_none()
            && !self.rollout
    }
}

/// The keys added, removed or changed between two maps, in order.
fn changed_keys(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect()
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Start(spec) => {
                write!(
                    f,
                    "+ {}: start {}",
                    spec.name,
                    instances(spec.replicas as usize)
                )?;
                if let Some(autoscale) = &spec.autoscale {
                    write!(f, ", {}", Bounds(autoscale))?;
                }
                Ok(())
            }
            Step::Stop(name) => write!(f, "- {name}: drain and stop its instances"),
            Step::Change(change) => {
                write!(f, "~ {}:", change.spec.name)?;
                let mut parts = Vec::new();
                match (&change.spec.rollout, change.replace.is_empty()) {
                    (_, true) => {}
                    (Some(rollout), false) => {
                        let weights: Vec<String> =
                            rollout.weights.iter().map(|w| w.to_string()).collect();
                        parts.push(format!(
                            "roll out as a canary at {} % for {} a step, then replace the instances ({})",
                            weights.join(", "),
                            wharf_model::format_go_duration(rollout.step),
                            change.replace.join("; ")
                        ));
                    }
                    (None, false) => parts.push(format!(
                        "replace the instances one at a time ({})",
                        change.replace.join("; ")
                    )),
                }
                if change.rollout {
                    parts.push("rollout strategy changed".to_owned());
                }
                if let Some((from, to)) = change.replicas {
                    parts.push(format!("replicas {from} -> {to}"));
                }
                if let Some((from, to)) = &change.autoscale {
                    let describe = |a: &Option<Autoscale>| match a {
                        Some(a) => Bounds(a).to_string(),
                        None => "not autoscaled".to_owned(),
                    };
                    parts.push(format!("{} -> {}", describe(from), describe(to)));
                }
                write!(f, " {}", parts.join(", "))
            }
        }
    }
}

pub(crate) fn instances(n: usize) -> String {
    match n {
        1 => "1 instance".to_owned(),
        n => format!("{n} instances"),
    }
}

/// `autoscaled 1-10 on 10 in flight each`.
struct Bounds<'a>(&'a Autoscale);

impl fmt::Display for Bounds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(f, "autoscaled {}-{} on ", a.min, a.max)?;
        match a.target {
            Target::Concurrency(n) => write!(f, "{n} in flight each"),
            Target::Rps(n) => write!(f, "{n} requests/s each"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::spec::CheckSpec;

    fn spec(name: &str, replicas: u32) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            command: vec!["python3".into(), "app.py".into()],
            replicas,
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
            meta: BTreeMap::new(),
            check: CheckSpec::Tcp {
                interval: "1s".into(),
                timeout: "1s".into(),
            },
            dir: PathBuf::from("/srv"),
            autoscale: None,
            rollout: None,
        }
    }

    #[test]
    fn the_same_services_need_nothing() {
        let running = [spec("a", 2), spec("b", 1)];
        assert!(Plan::between(&running, &running).is_empty());
    }

    #[test]
    fn services_added_and_removed_are_started_and_stopped_in_name_order() {
        let plan = Plan::between(&[spec("a", 2), spec("b", 1)], &[spec("b", 1), spec("c", 3)]);
        assert_eq!(
            plan.lines(),
            [
                "- a: drain and stop its instances",
                "+ c: start 3 instances"
            ]
        );
    }

    #[test]
    fn a_changed_environment_replaces_and_names_the_keys() {
        let mut after = spec("a", 2);
        after.env.insert("GREETING".into(), "hi".into());
        after.env.insert("COLOUR".into(), "blue".into());
        after.command.push("--fast".into());
        let plan = Plan::between(&[spec("a", 2)], &[after]);
        assert_eq!(
            plan.lines(),
            ["~ a: replace the instances one at a time (command; env COLOUR, GREETING)"]
        );
    }

    #[test]
    fn a_count_change_alone_replaces_nothing() {
        let plan = Plan::between(&[spec("a", 2)], &[spec("a", 5)]);
        let [Step::Change(change)] = plan.steps.as_slice() else {
            panic!("one change: {plan:?}");
        };
        assert!(change.replace.is_empty());
        assert_eq!(change.replicas, Some((2, 5)));
        assert_eq!(plan.lines(), ["~ a: replicas 2 -> 5"]);
    }

    #[test]
    fn autoscale_settings_changed_are_shown_old_and_new() {
        let mut after = spec("a", 1);
        after.autoscale = Some(Autoscale {
            min: 1,
            max: 10,
            target: Target::Concurrency(10.0),
            scale_down_delay: Duration::from_secs(300),
            tolerance: 0.1,
        });
        let plan = Plan::between(&[spec("a", 1)], &[after]);
        assert_eq!(
            plan.lines(),
            ["~ a: not autoscaled -> autoscaled 1-10 on 10 in flight each"]
        );
    }

    #[test]
    fn a_service_with_a_rollout_strategy_is_planned_as_a_canary() {
        let mut before = spec("a", 2);
        before.rollout = Some(crate::spec::Rollout {
            weights: vec![1.0, 10.0, 100.0],
            step: Duration::from_secs(60),
            max_failure_rate: 0.01,
            max_p99: None,
        });
        let mut after = before.clone();
        after.env.insert("GREETING".into(), "hi".into());
        assert_eq!(
            Plan::between(&[before.clone()], &[after]).lines(),
            [
                "~ a: roll out as a canary at 1, 10, 100 % for 1m0s a step, then replace the instances (env GREETING)"
            ]
        );
        assert_eq!(
            Plan::between(&[before], &[spec("a", 2)]).lines(),
            ["~ a: rollout strategy changed"]
        );
    }

    #[test]
    fn a_reason_from_outside_replaces_a_service_that_stays() {
        let running = [spec("a", 1), spec("b", 1)];
        let mut plan = Plan::between(&running, &[spec("a", 1), spec("b", 1)]);
        plan.replace_also("b", "sidecar mode", &running[1]);
        assert_eq!(
            plan.lines(),
            ["~ b: replace the instances one at a time (sidecar mode)"]
        );
        let mut plan = Plan::between(&running, &[spec("a", 1)]);
        plan.replace_also("b", "sidecar mode", &running[1]);
        assert_eq!(plan.lines(), ["- b: drain and stop its instances"]);
    }
}
