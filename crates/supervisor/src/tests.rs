//! The controller and the replicas in-process, against a fake registry: real processes
//! (a few lines of Python that listen on `PORT`), no registry process, short timings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use wharf_client::{ClientError, Desired, Registration};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Registered {
        id: String,
        pid: i32,
        restarts: u32,
    },
    Deregistered(String),
    /// The canary's weight set, in percent (and its version).
    Split(String, u32),
    Unsplit,
}

/// A registry in memory: it records what the supervisor does, gives each instance the status
/// `status_of` says as it registers, and lets the test change desired state and health.
struct Fake {
    events: Mutex<Vec<Event>>,
    desired: watch::Sender<Option<Desired>>,
    health: watch::Sender<Arc<HealthView>>,
    status_of: fn(&str) -> &'static str,
    /// What the stable and the canary subsets answered, as the proxies would report it.
    figures: Mutex<(
        crate::registry::SubsetFigures,
        crate::registry::SubsetFigures,
    )>,
}

impl Fake {
    fn new(status_of: fn(&str) -> &'static str) -> Arc<Fake> {
        Arc::new(Fake {
            events: Mutex::default(),
            desired: watch::Sender::new(None),
            health: watch::Sender::new(Arc::default()),
            status_of,
            figures: Mutex::default(),
        })
    }

    /// `wharf rollout promote` (true) or `abort` (false).
    fn order(&self, promote: bool) {
        self.desired.send_modify(|desired| {
            if let Some(d) = desired {
                if promote {
                    d.promote += 1;
                } else {
                    d.abort += 1;
                }
            }
        });
    }

    fn answer(&self, stable: (u64, u64), canary: (u64, u64)) {
        let figures = |(requests, failures)| crate::registry::SubsetFigures {
            requests,
            failures,
            p99: Some(Duration::from_millis(5)),
        };
        *self.figures.lock().unwrap() = (figures(stable), figures(canary));
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn want(&self, replicas: u32, restart: u64) {
        self.desired.send_modify(|desired| {
            let (promote, abort) = desired.map_or((0, 0), |d| (d.promote, d.abort));
            *desired = Some(Desired {
                replicas,
                restart,
                min: None,
                max: None,
                promote,
                abort,
                target_concurrency: None,
            });
        });
    }

    fn set_status(&self, id: &str, status: &str) {
        self.health.send_modify(|view| {
            Arc::make_mut(view).insert(id.to_owned(), status.to_owned());
        });
    }

    /// Waits (polling, at most 20 s) until the recorded events satisfy `done`.
    async fn until(&self, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; events: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Registry for Fake {
    async fn declare(
        &self,
        _service: &str,
        replicas: u32,
        _bounds: Option<(u32, u32)>,
        _target: Option<f64>,
    ) -> Result<(), ClientError> {
        self.desired.send_modify(|desired| {
            let (restart, promote, abort) =
                desired.map_or((0, 0, 0), |d| (d.restart, d.promote, d.abort));
            *desired = Some(Desired {
                replicas,
                restart,
                min: None,
                max: None,
                promote,
                abort,
                target_concurrency: None,
            });
        });
        Ok(())
    }

    async fn split(&self, _service: &str, version: &str, weight: f64) -> Result<(), ClientError> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Split(version.to_owned(), weight as u32));
        Ok(())
    }

    async fn unsplit(&self, _service: &str) -> Result<(), ClientError> {
        self.events.lock().unwrap().push(Event::Unsplit);
        Ok(())
    }

    async fn subsets(
        &self,
        _service: &str,
    ) -> Result<
        (
            crate::registry::SubsetFigures,
            crate::registry::SubsetFigures,
        ),
        ClientError,
    > {
        Ok(*self.figures.lock().unwrap())
    }

    async fn forget(&self, _service: &str) -> Result<(), ClientError> {
        self.desired.send_replace(None);
        Ok(())
    }

    async fn load(&self, _service: &str) -> Result<wharf_client::Load, ClientError> {
        Err(ClientError::Decode("the fake has no load".into()))
    }

    async fn autoscale(
        &self,
        _service: &str,
        decision: &crate::autoscale::Decision,
    ) -> Result<u32, ClientError> {
        Ok(decision.to)
    }

    async fn register(&self, registration: &Registration) -> Result<(), ClientError> {
        let id = registration.id.clone().unwrap();
        let meta = |key: &str| &registration.meta[key];
        self.events.lock().unwrap().push(Event::Registered {
            id: id.clone(),
            pid: meta("wharf-pid").parse().unwrap(),
            restarts: meta("wharf-restarts").parse().unwrap(),
        });
        self.set_status(&id, (self.status_of)(&id));
        Ok(())
    }

    async fn deregister(&self, id: &str) -> Result<(), ClientError> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Deregistered(id.to_owned()));
        self.health.send_modify(|view| {
            Arc::make_mut(view).remove(id);
        });
        Ok(())
    }

    fn desired(
        &self,
        _service: &str,
        _stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Option<Desired>> {
        self.desired.subscribe()
    }

    fn health(
        &self,
        _service: &str,
        _stop: watch::Receiver<bool>,
    ) -> watch::Receiver<Arc<HealthView>> {
        self.health.subscribe()
    }
}

const TIMINGS: Timings = Timings {
    critical_grace: Duration::from_millis(300),
    stop_grace: Duration::from_secs(2),
    drain: Duration::from_millis(10),
    start_deadline: Duration::from_secs(10),
    backoff_start: Duration::from_millis(10),
    backoff_max: Duration::from_millis(100),
    ran_well: Duration::from_secs(60),
};

fn spec(replicas: u32) -> ServiceSpec {
    let listen = "import os, socket, time\n\
        s = socket.socket()\n\
        s.bind(('127.0.0.1', int(os.environ['PORT'])))\n\
        s.listen()\n\
        time.sleep(120)\n";
    ServiceSpec {
        name: "svc".into(),
        command: vec!["python3".into(), "-c".into(), listen.into()],
        replicas,
        env: BTreeMap::new(),
        meta: BTreeMap::new(),
        check: CheckSpec::Tcp {
            interval: "1s".into(),
            timeout: "1s".into(),
        },
        dir: std::env::temp_dir(),
        autoscale: None,
        rollout: None,
    }
}

fn start(fake: &Arc<Fake>, replicas: u32, timings: Timings) -> Supervisor {
    Supervisor::start_with(
        fake.clone(),
        "http://127.0.0.1:1".into(),
        vec![spec(replicas)],
        LogStyle::Plain,
        timings,
        None,
    )
}

/// A supervisor of `spec` alone, on the fake, with the tests' timings.
fn start_spec(fake: &Arc<Fake>, spec: ServiceSpec) -> Supervisor {
    Supervisor::start_with(
        fake.clone(),
        "http://127.0.0.1:1".into(),
        vec![spec],
        LogStyle::Plain,
        TIMINGS,
        None,
    )
}

fn registered(events: &[Event], id: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e, Event::Registered { id: i, .. } if i == id))
}

fn deregistered(events: &[Event], id: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e, Event::Deregistered(i) if i == id))
}

fn pids(events: &[Event]) -> Vec<i32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Registered { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn passing(_: &str) -> &'static str {
    "passing"
}

#[tokio::test]
async fn replicas_follow_the_desired_count_and_stop_leaves_nothing() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 2, TIMINGS);
    fake.until("two replicas", |e| {
        registered(e, "svc-1").is_some() && registered(e, "svc-2").is_some()
    })
    .await;

    fake.want(3, 0);
    fake.until("a third", |e| registered(e, "svc-3").is_some())
        .await;

    fake.want(1, 0);
    let events = fake
        .until("scaled down to one", |e| deregistered(e, "svc-2").is_some())
        .await;
    assert!(
        deregistered(&events, "svc-3") < deregistered(&events, "svc-2"),
        "the highest-numbered go first: {events:#?}"
    );
    assert_eq!(deregistered(&events, "svc-1"), None);

    supervisor.stop().await;
    let events = fake.events();
    assert!(deregistered(&events, "svc-1").is_some(), "stop deregisters");
    for pid in pids(&events) {
        assert!(!alive(pid), "process {pid} was stopped");
    }
}

#[tokio::test]
async fn a_rolling_restart_drains_each_old_replica_only_after_its_replacement_passes() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 2, TIMINGS);
    fake.until("two replicas", |e| registered(e, "svc-2").is_some())
        .await;
    fake.want(2, 1);
    let events = fake
        .until("both replaced", |e| deregistered(e, "svc-2").is_some())
        .await;
    for slot in ["svc-1", "svc-2"] {
        let new = registered(&events, &format!("{slot}-r1")).expect("a replacement");
        let old = deregistered(&events, slot).expect("the old one drained");
        assert!(new < old, "{slot}: the replacement first: {events:#?}");
    }
    assert!(
        registered(&events, "svc-2-r1") > deregistered(&events, "svc-1"),
        "one at a time: {events:#?}"
    );
    supervisor.stop().await;
}

#[tokio::test]
async fn a_replacement_that_never_passes_is_stopped_and_the_old_replica_kept() {
    let fake = Fake::new(|id| {
        if id.contains("-r") {
            "critical"
        } else {
            "passing"
        }
    });
    let timings = Timings {
        start_deadline: Duration::from_millis(500),
        critical_grace: Duration::from_millis(500),
        ..TIMINGS
    };
    let supervisor = start(&fake, 1, timings);
    fake.until("one replica", |e| registered(e, "svc-1").is_some())
        .await;
    fake.want(1, 1);
    let events = fake
        .until("the replacement given up", |e| {
            deregistered(e, "svc-1-r1").is_some()
        })
        .await;
    assert_eq!(deregistered(&events, "svc-1"), None, "{events:#?}");
    supervisor.stop().await;
}

#[tokio::test]
async fn a_replica_critical_past_the_grace_or_killed_is_restarted() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 1, TIMINGS);
    let restarted = |n: u32| {
        move |events: &[Event]| {
            events.iter().any(
                |e| matches!(e, Event::Registered { id, restarts, .. } if id == "svc-1" && *restarts == n),
            )
        }
    };
    let events = fake.until("running", restarted(0)).await;

    fake.set_status("svc-1", "critical");
    let events_after = fake.until("restarted for its check", restarted(1)).await;
    assert!(!alive(pids(&events)[0]), "the critical process was stopped");

    let pid = *pids(&events_after).last().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    fake.until("restarted after kill -9", restarted(2)).await;
    supervisor.stop().await;
}

/// The services running after `plan`, for a test's next plan.
async fn apply(supervisor: &Supervisor, listed: &[ServiceSpec]) -> Vec<Outcome> {
    let plan = Plan::between(&supervisor.running().await, listed);
    supervisor.apply(plan).await
}

#[tokio::test]
async fn an_applied_environment_is_rolled_out_one_instance_at_a_time() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 2, TIMINGS);
    fake.until("two replicas", |e| registered(e, "svc-2").is_some())
        .await;
    let mut changed = spec(2);
    changed.env.insert("GREETING".into(), "hi".into());
    let outcomes = apply(&supervisor, &[changed.clone()]).await;
    assert_eq!(
        outcomes,
        [Outcome {
            service: "svc".into(),
            result: Ok("2 instances replaced".into())
        }]
    );
    let events = fake.events();
    for slot in ["svc-1", "svc-2"] {
        let new = registered(&events, &format!("{slot}-v2")).expect("a replacement");
        let old = deregistered(&events, slot).expect("the old one drained");
        assert!(new < old, "{slot}: the replacement first: {events:#?}");
    }
    assert!(
        registered(&events, "svc-2-v2") > deregistered(&events, "svc-1"),
        "one at a time: {events:#?}"
    );
    assert_eq!(supervisor.running().await, [changed.clone()]);
    assert!(
        apply(&supervisor, &[changed]).await.is_empty(),
        "nothing more to do"
    );
    supervisor.stop().await;
}

#[tokio::test]
async fn a_rollout_whose_instance_never_passes_is_rolled_back_and_the_old_spec_kept() {
    // The second instance on the new spec never passes: the first, replaced already, is
    // put back on the old spec.
    let fake = Fake::new(|id| {
        if id == "svc-2-v2" {
            "critical"
        } else {
            "passing"
        }
    });
    let timings = Timings {
        start_deadline: Duration::from_millis(500),
        critical_grace: Duration::from_millis(500),
        ..TIMINGS
    };
    let supervisor = start(&fake, 2, timings);
    fake.until("two replicas", |e| registered(e, "svc-2").is_some())
        .await;
    let mut broken = spec(2);
    broken.env.insert("BROKEN".into(), "yes".into());
    let outcomes = apply(&supervisor, &[broken]).await;
    let failure = outcomes[0].result.clone().expect_err("the rollout fails");
    assert!(failure.contains("svc-2-v2 did not pass"), "{failure}");
    assert!(
        failure.contains("rolled back (1 instance put back"),
        "{failure}"
    );
    let events = fake.events();
    let back = registered(&events, "svc-1-v3").expect("svc-1 back on the old spec");
    assert!(back < deregistered(&events, "svc-1-v2").expect("{events:#?}"));
    assert_eq!(deregistered(&events, "svc-2"), None, "{events:#?}");
    assert_eq!(supervisor.running().await, [spec(2)], "the old spec stays");
    supervisor.stop().await;
}

#[tokio::test]
async fn applied_services_are_started_and_removed_ones_stopped_and_forgotten() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 1, TIMINGS);
    fake.until("one replica", |e| registered(e, "svc-1").is_some())
        .await;
    let outcomes = apply(&supervisor, &[]).await;
    assert_eq!(outcomes[0].result, Ok("stopped 1 instance".into()));
    let events = fake.events();
    assert!(deregistered(&events, "svc-1").is_some(), "{events:#?}");
    assert!(!alive(pids(&events)[0]));
    assert_eq!(*fake.desired.borrow(), None, "its desired state forgotten");
    assert!(supervisor.running().await.is_empty());

    let outcomes = apply(&supervisor, &[spec(1)]).await;
    assert_eq!(outcomes[0].result, Ok("started with 1 instance".into()));
    fake.until("started again", |e| {
        e.iter()
            .filter(|e| matches!(e, Event::Registered { id, .. } if id == "svc-1"))
            .count()
            == 2
    })
    .await;
    supervisor.stop().await;
}

#[tokio::test]
async fn an_applied_count_is_declared_and_an_unchanged_one_keeps_the_scaled_count() {
    let fake = Fake::new(passing);
    let supervisor = start(&fake, 1, TIMINGS);
    fake.until("one replica", |e| registered(e, "svc-1").is_some())
        .await;
    fake.want(2, 0); // wharf scale svc=2
    fake.until("scaled", |e| registered(e, "svc-2").is_some())
        .await;
    let mut meta_only = spec(1);
    meta_only.meta.insert("team".into(), "blue".into());
    apply(&supervisor, &[meta_only.clone()]).await;
    assert_eq!(
        fake.desired.borrow().unwrap().replicas,
        2,
        "wharf scale's count kept"
    );

    let mut three = meta_only;
    three.replicas = 3;
    let outcomes = apply(&supervisor, &[three]).await;
    assert_eq!(outcomes[0].result, Ok("3 replicas declared".into()));
    fake.until("a third", |e| registered(e, "svc-3").is_some())
        .await;
    supervisor.stop().await;
}

fn with_canary(spec: &mut ServiceSpec) {
    spec.rollout = Some(crate::Rollout {
        weights: vec![50.0, 100.0],
        step: Duration::from_millis(100),
        max_failure_rate: 0.01,
        max_p99: None,
    });
}

fn splits(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Split(_, weight) => Some(*weight),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_canary_that_fails_is_rolled_back_at_its_first_step() {
    let fake = Fake::new(passing);
    let mut first = spec(2);
    with_canary(&mut first);
    let supervisor = start_spec(&fake, first.clone());
    fake.until("two replicas", |e| registered(e, "svc-2").is_some())
        .await;
    fake.answer((1000, 0), (100, 20)); // the canary answers 20 % errors
    let mut broken = first.clone();
    broken.env.insert("BROKEN".into(), "yes".into());
    let outcomes = apply(&supervisor, &[broken]).await;
    let failure = outcomes[0].result.clone().expect_err("rolled back");
    assert!(
        failure.contains("rolled back at 50%") && failure.contains("20.0% of its requests failed"),
        "{failure}"
    );
    let events = fake.events();
    assert_eq!(splits(&events), [0, 50, 0], "{events:#?}");
    assert!(matches!(events.last(), Some(Event::Unsplit)), "{events:#?}");
    let canary = registered(&events, "svc-canary-1-v2").expect("a canary ran");
    let first_share = events
        .iter()
        .position(|e| matches!(e, Event::Split(_, 50)))
        .unwrap();
    assert!(
        canary < first_share,
        "the canary is up before it has a share: {events:#?}"
    );
    assert!(deregistered(&events, "svc-canary-1-v2") > Some(canary));
    assert_eq!(
        deregistered(&events, "svc-1"),
        None,
        "the stable version untouched"
    );
    assert_eq!(supervisor.running().await, [first], "the old spec stays");
    supervisor.stop().await;
}

#[tokio::test]
async fn a_good_canary_is_promoted_and_replaces_the_stable_instances() {
    let fake = Fake::new(passing);
    let mut first = spec(2);
    with_canary(&mut first);
    let supervisor = start_spec(&fake, first.clone());
    fake.until("two replicas", |e| registered(e, "svc-2").is_some())
        .await;
    fake.answer((1000, 1), (500, 0));
    let mut better = first.clone();
    better.env.insert("FASTER".into(), "yes".into());
    let outcomes = apply(&supervisor, &[better.clone()]).await;
    assert_eq!(
        outcomes[0].result,
        Ok("canary v2 promoted: 2 instances replaced".into())
    );
    let events = fake.events();
    assert_eq!(splits(&events), [0, 50, 100, 100], "{events:#?}");
    for slot in ["svc-1", "svc-2"] {
        let new = registered(&events, &format!("{slot}-v2")).expect("replaced");
        assert!(new < deregistered(&events, slot).expect("the old one drained"));
    }
    let unsplit = events
        .iter()
        .position(|e| matches!(e, Event::Unsplit))
        .unwrap();
    assert!(
        unsplit < deregistered(&events, "svc-canary-1-v2").expect("the canary stopped"),
        "the split ends before the canaries go: {events:#?}"
    );
    assert_eq!(supervisor.running().await, [better]);
    supervisor.stop().await;
}

#[tokio::test]
async fn wharf_rollout_abort_and_promote_end_a_canary_at_once() {
    let fake = Fake::new(passing);
    let mut first = spec(1);
    with_canary(&mut first);
    // Steps far longer than the test: only the orders can end them.
    first.rollout.as_mut().unwrap().step = Duration::from_secs(600);
    let supervisor = Arc::new(start_spec(&fake, first.clone()));
    fake.until("one replica", |e| registered(e, "svc-1").is_some())
        .await;
    fake.answer((1000, 0), (100, 0));

    let mut second = first.clone();
    second.env.insert("TRY".into(), "1".into());
    let applying = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { apply(&supervisor, &[second]).await }
    });
    fake.until("the canary at 50 %", |e| splits(e).contains(&50))
        .await;
    fake.order(false);
    let outcomes = applying.await.unwrap();
    let failure = outcomes[0].result.clone().expect_err("aborted");
    assert!(
        failure.contains("aborted by wharf rollout abort"),
        "{failure}"
    );

    let mut third = first.clone();
    third.env.insert("TRY".into(), "2".into());
    let applying = tokio::spawn({
        let supervisor = supervisor.clone();
        let third = third.clone();
        async move { apply(&supervisor, &[third]).await }
    });
    fake.until("the second canary at 50 %", |e| {
        e.iter()
            .filter(|e| matches!(e, Event::Split(_, 50)))
            .count()
            == 2
    })
    .await;
    fake.order(true);
    let outcomes = applying.await.unwrap();
    assert_eq!(
        outcomes[0].result,
        Ok("canary v3 promoted: 1 instance replaced".into())
    );
    assert_eq!(supervisor.running().await, [third]);
    supervisor.stop().await;
}
