//! One replica's whole life, in one task: start the process, register it once its port is
//! open, keep it running (restart with backoff when it exits or its check stays critical past
//! the grace), and on stop deregister first, drain, then stop the process.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use wharf_client::{CheckRegistration, ClientError, Registration};

use crate::companion::{Attached, Companion};
use crate::logs;
use crate::process::{self, NotListening, Process};
use crate::registry::{HealthView, Registry};
use crate::spec::{CheckSpec, ServiceSpec, Timings};

pub(crate) struct Replica<R> {
    pub(crate) registry: Arc<R>,
    pub(crate) registry_url: String,
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) timings: Timings,
    pub(crate) id: String,
    pub(crate) style: logs::Prefix,
    /// The service's instances' health, followed once for all its replicas.
    pub(crate) health: watch::Receiver<Arc<HealthView>>,
    /// What runs beside each process (its sidecar), if anything.
    pub(crate) companion: Option<Arc<dyn Companion>>,
}

/// Why a running process is being replaced.
enum Ended {
    Exited(String),
    Critical,
    Stop,
}

impl<R: Registry> Replica<R> {
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.timings.backoff_start;
        let mut restarts = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let ended = match self.start_once(restarts, &mut stop).await {
                Ok(ended) => ended,
                Err(reason) => Ended::Exited(reason),
            };
            match ended {
                Ended::Stop => {
                    self.deregister().await;
                    return;
                }
                Ended::Exited(reason) => self.style.note(&reason),
                Ended::Critical => self.style.note(&format!(
                    "check critical for {:?}; restarting",
                    self.timings.critical_grace
                )),
            }
            if started.elapsed() >= self.timings.ran_well {
                backoff = self.timings.backoff_start;
            }
            restarts += 1;
            self.style
                .note(&format!("restart {restarts} in {backoff:?}"));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => {
                    self.deregister().await;
                    return;
                }
            }
            backoff = (backoff * 2).min(self.timings.backoff_max);
        }
    }

    /// Starts the process, registers it, and waits until it ends or must be stopped.
    async fn start_once(
        &mut self,
        restarts: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let port = process::free_port().map_err(|e| format!("no free port: {e}"))?;
        let mut attached = match &self.companion {
            Some(companion) => Some(
                companion
                    .attach(&self.spec.name, &self.id, port, &self.spec.meta)
                    .await?,
            ),
            None => None,
        };
        let env = attached.as_ref().map(|a| a.env.clone()).unwrap_or_default();
        let started = process::start(&self.spec, &self.id, &self.registry_url, port, &env);
        let mut process = match started {
            Ok(process) => process,
            Err(e) => {
                detach(&mut attached).await;
                return Err(e);
            }
        };
        let ended = self
            .supervise(&mut process, restarts, stop, &mut attached)
            .await;
        detach(&mut attached).await;
        ended
    }

    /// Waits for the port, registers, and watches until the process ends or must stop.
    async fn supervise(
        &mut self,
        process: &mut Process,
        restarts: u32,
        stop: &mut watch::Receiver<bool>,
        attached: &mut Option<Attached>,
    ) -> Result<Ended, String> {
        self.style.attach(&mut process.child);
        self.style.note(&format!(
            "started pid {} on port {}",
            process.pid, process.port
        ));
        let timings = self.timings;
        match process
            .wait_listening(timings.start_deadline, timings.stop_grace, stop)
            .await
        {
            Ok(()) => {}
            Err(NotListening::Exited(reason)) => return Ok(Ended::Exited(reason)),
            Err(NotListening::Stop) => return Ok(Ended::Stop),
        }
        if let Err(e) = self.register(process, restarts).await {
            self.style.note(&format!("cannot register: {e}"));
        }

        // Critical as the registry last said (it may say so still of the previous process,
        // which the grace covers), and from then on as it changes.
        let mut critical_since = self.is_critical().then(tokio::time::Instant::now);
        let mut health_followed = true;
        loop {
            let grace_over = critical_since.map(|since| since + timings.critical_grace);
            tokio::select! {
                status = process.child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Ok(Ended::Exited(format!("exited: {status}")));
                }
                _ = stopped(stop) => {
                    // Deregister first, so that no new request is sent to it, give clients
                    // that already picked it a moment to finish, then stop it.
                    self.deregister().await;
                    detach(attached).await;
                    tokio::time::sleep(timings.drain).await;
                    process.terminate(timings.stop_grace).await;
                    return Ok(Ended::Stop);
                }
                changed = self.health.changed(), if health_followed => {
                    // The health follower ends only as the supervisor stops.
                    health_followed = changed.is_ok();
                    critical_since = match (self.is_critical(), critical_since) {
                        (true, since) => since.or_else(|| Some(tokio::time::Instant::now())),
                        (false, _) => None,
                    };
                }
                _ = sleep_until(grace_over), if grace_over.is_some() => {
                    process.terminate(timings.stop_grace).await;
                    return Ok(Ended::Critical);
                }
            }
        }
    }

    /// Whether the registry holds this instance critical (unknown counts as not critical).
    fn is_critical(&mut self) -> bool {
        self.health
            .borrow_and_update()
            .get(&self.id)
            .map(String::as_str)
            == Some("critical")
    }

    async fn register(&self, process: &Process, restarts: u32) -> Result<(), ClientError> {
        let port = process.port;
        let check = match &self.spec.check {
            CheckSpec::Http {
                path,
                interval,
                timeout,
            } => CheckRegistration {
                http: Some(format!("http://127.0.0.1:{port}{path}")),
                interval: Some(interval.clone()),
                timeout: Some(timeout.clone()),
                ..CheckRegistration::default()
            },
            CheckSpec::Tcp { interval, timeout } => CheckRegistration {
                tcp: Some(format!("127.0.0.1:{port}")),
                interval: Some(interval.clone()),
                timeout: Some(timeout.clone()),
                ..CheckRegistration::default()
            },
        };
        let registration = Registration {
            name: self.spec.name.clone(),
            id: Some(self.id.clone()),
            address: Some("127.0.0.1".into()),
            port: Some(port),
            meta: {
                let mut meta = self.spec.meta.clone();
                meta.insert("wharf-pid".to_owned(), process.pid.to_string());
                meta.insert("wharf-restarts".to_owned(), restarts.to_string());
                meta
            },
            check: Some(check),
            ..Registration::default()
        };
        self.registry.register(&registration).await
    }

    async fn deregister(&self) {
        match self.registry.deregister(&self.id).await {
            Ok(()) | Err(ClientError::Refused { .. }) => {}
            Err(e) => self.style.note(&format!("cannot deregister: {e}")),
        }
    }
}

/// Stops what runs beside the process, once.
async fn detach(attached: &mut Option<Attached>) {
    if let Some(attached) = attached.take() {
        (attached.stop)().await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once a stop is asked for.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
