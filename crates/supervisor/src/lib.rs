//! The supervisor: runs each service of a manifest as local processes and keeps them running.
//!
//! Per replica, one task does the whole life cycle:
//! 1. pick a free port and start the command in its own process group, with `PORT`,
//!    `WHARF_SERVICE`, `WHARF_INSTANCE` and `WHARF_REGISTRY` in its environment, its output
//!    prefixed with its name;
//! 2. once the port accepts connections, register the instance (id `<service>-<n>`) with its
//!    check, through the registry's HTTP API only;
//! 3. if the process exits, or its check stays critical past [`CRITICAL_GRACE`], start it
//!    again after a backoff (100 ms doubling to 30 s, back to 100 ms after a minute of good
//!    running), re-registering with the new port and the restart count in its meta, so that
//!    a crash loop shows in `wharf instances`;
//! 4. on stop: deregister first (so no new traffic is sent), wait [`DRAIN`], then SIGTERM to
//!    the process group, SIGKILL after [`STOP_GRACE`]; nothing is left behind.
//!
//! A controller per service keeps the number of replicas at the desired count stored in the
//! registry (`wharf scale`), and replaces them one at a time on `wharf restart`.

mod logs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use wharf_client::{CheckRegistration, Client, Registration};

pub use logs::LogStyle;

/// A check stays critical this long before its process is restarted.
pub const CRITICAL_GRACE: Duration = Duration::from_secs(30);
/// Time between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Between deregistration and SIGTERM: time for proxies to hear of the change and for
/// requests in flight to finish.
pub const DRAIN: Duration = Duration::from_millis(500);
/// A process must open its port within this long after starting.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Running this long resets the backoff.
const RAN_WELL: Duration = Duration::from_secs(60);

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
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// argv; `command[0]` is resolved by the caller.
    pub command: Vec<String>,
    pub replicas: u32,
    pub env: BTreeMap<String, String>,
    pub check: CheckSpec,
    /// Working directory of the processes.
    pub dir: PathBuf,
}

/// Runs services until stopped.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Starts every service; `registry_url` is what the processes are told. Each service's
    /// replica count follows its desired state in the registry, so `wharf scale` changes it.
    pub fn start(
        client: Client,
        registry_url: String,
        specs: Vec<ServiceSpec>,
        style: LogStyle,
    ) -> Supervisor {
        let (stop, stop_rx) = watch::channel(false);
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(color, spec)| {
                let controller = Controller {
                    client: client.clone(),
                    registry_url: registry_url.clone(),
                    spec: Arc::new(spec),
                    color,
                    style,
                    replicas: Vec::new(),
                };
                tokio::spawn(controller.run(stop_rx.clone()))
            })
            .collect();
        Supervisor { stop, tasks }
    }

    /// Deregisters every instance and stops every process.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Keeps one service at its desired number of replicas.
struct Controller {
    client: Client,
    registry_url: String,
    spec: Arc<ServiceSpec>,
    color: usize,
    style: LogStyle,
    replicas: Vec<Running>,
}

/// A replica task and the handle that stops it.
struct Running {
    id: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Controller {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Declare the service with the manifest's count; retry while the registry starts.
        let mut delay = BACKOFF_START;
        while let Err(e) = self
            .client
            .declare_service(&self.spec.name, self.spec.replicas)
            .await
        {
            tracing::warn!(service = %self.spec.name, error = %e, "cannot declare service; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        self.set_count(self.spec.replicas).await;
        let mut index = 0;
        let mut generation: Option<u64> = None;
        loop {
            let blocking = (index > 0).then_some(wharf_client::Blocking {
                index,
                wait: Duration::from_secs(60),
            });
            let answer = tokio::select! {
                answer = self.client.desired(blocking) => answer,
                _ = stopped(&mut stop) => break,
            };
            match answer {
                Ok((desired, next)) => {
                    index = next;
                    if let Some(wanted) = desired.get(&self.spec.name) {
                        self.set_count(wanted.replicas).await;
                        if generation.is_some_and(|g| wanted.restart > g) {
                            self.rolling_restart(wanted.restart, &mut stop).await;
                        }
                        generation = Some(wanted.restart);
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %self.spec.name, error = %e, "cannot read desired state");
                    index = 0;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut stop) => break,
                    }
                }
            }
        }
        self.set_count(0).await;
    }

    fn spawn(&self, id: String) -> Running {
        let replica = Replica {
            client: self.client.clone(),
            registry_url: self.registry_url.clone(),
            spec: self.spec.clone(),
            style: self.style.for_service(self.color).named(&id),
            id: id.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        Running {
            id,
            stop,
            task: tokio::spawn(replica.run(stop_rx)),
        }
    }

    /// Starts or stops replicas, the highest-numbered first, until `wanted` run.
    async fn set_count(&mut self, wanted: u32) {
        let wanted = wanted as usize;
        if wanted != self.replicas.len() {
            tracing::info!(service = %self.spec.name, from = self.replicas.len(), to = wanted, "scaling");
        }
        while self.replicas.len() < wanted {
            let id = format!("{}-{}", self.spec.name, self.replicas.len() + 1);
            let running = self.spawn(id);
            self.replicas.push(running);
        }
        while self.replicas.len() > wanted {
            let Some(running) = self.replicas.pop() else {
                break;
            };
            running.stop().await;
        }
    }

    /// Replaces the replicas one at a time: the new instance (id `<name>-<n>-r<generation>`)
    /// must pass its check before the old one is deregistered, drained and stopped, so that
    /// clients through the gateway see no failure. A replacement that never passes is
    /// stopped and the old instance kept.
    async fn rolling_restart(&mut self, generation: u64, stop: &mut watch::Receiver<bool>) {
        tracing::info!(service = %self.spec.name, generation, "rolling restart");
        for slot in 0..self.replicas.len() {
            let id = format!("{}-{}-r{generation}", self.spec.name, slot + 1);
            let replacement = self.spawn(id.clone());
            let deadline = Instant::now() + START_DEADLINE + CRITICAL_GRACE;
            let passing = loop {
                match self
                    .client
                    .health_service(&self.spec.name, true, None)
                    .await
                {
                    Ok((entries, _)) if entries.iter().any(|e| e.service.id == id) => break true,
                    _ if Instant::now() > deadline || *stop.borrow() => break false,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if !passing {
                tracing::warn!(service = %self.spec.name, instance = %id, "replacement never passed; keeping the old instance");
                replacement.stop().await;
                return;
            }
            let old = std::mem::replace(&mut self.replicas[slot], replacement);
            tracing::info!(service = %self.spec.name, old = %old.id, new = %id, "replaced");
            old.stop().await;
        }
    }
}

struct Replica {
    client: Client,
    registry_url: String,
    spec: Arc<ServiceSpec>,
    id: String,
    style: logs::Prefix,
}

/// Why a running process is being replaced.
enum Ended {
    Exited(String),
    Critical,
    Stop,
}

impl Replica {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
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
                    "check critical for {CRITICAL_GRACE:?}; restarting"
                )),
            }
            if started.elapsed() >= RAN_WELL {
                backoff = BACKOFF_START;
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
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Starts the process, registers it, and waits until it ends or must be stopped.
    async fn start_once(
        &self,
        restarts: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let mut command = Command::new(&self.spec.command[0]);
        command
            .args(&self.spec.command[1..])
            .current_dir(&self.spec.dir)
            .envs(&self.spec.env)
            .env("PORT", port.to_string())
            .env("WHARF_SERVICE", &self.spec.name)
            .env("WHARF_INSTANCE", &self.id)
            .env("WHARF_REGISTRY", &self.registry_url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.spec.command[0]))?;
        let pid = child.id().unwrap_or(0);
        self.style.attach(&mut child);
        self.style
            .note(&format!("started pid {pid} on port {port}"));

        // Wait for the port, the process's death, or a stop.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Ended::Exited(format!(
                    "exited before opening port {port}: {status}"
                )));
            }
            if *stop.borrow() {
                terminate(&mut child, pid).await;
                return Ok(Ended::Stop);
            }
            if Instant::now() > deadline {
                terminate(&mut child, pid).await;
                return Ok(Ended::Exited(format!(
                    "did not open port {port} within {START_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = self.register(port, pid, restarts).await {
            self.style.note(&format!("cannot register: {e}"));
        }

        let mut critical_since: Option<Instant> = None;
        let mut health = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Ok(Ended::Exited(format!("exited: {status}")));
                }
                _ = stopped(stop) => {
                    // Deregister first, so that no new request is sent to it, give clients
                    // that already picked it a moment to finish, then stop it.
                    self.deregister().await;
                    tokio::time::sleep(DRAIN).await;
                    terminate(&mut child, pid).await;
                    return Ok(Ended::Stop);
                }
                _ = health.tick() => {
                    if self.is_critical().await {
                        let since = *critical_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= CRITICAL_GRACE {
                            terminate(&mut child, pid).await;
                            return Ok(Ended::Critical);
                        }
                    } else {
                        critical_since = None;
                    }
                }
            }
        }
    }

    async fn register(
        &self,
        port: u16,
        pid: u32,
        restarts: u32,
    ) -> Result<(), wharf_client::ClientError> {
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
        let body = Registration {
            name: self.spec.name.clone(),
            id: Some(self.id.clone()),
            address: Some("127.0.0.1".into()),
            port: Some(port),
            meta: [
                ("wharf-pid".to_owned(), pid.to_string()),
                ("wharf-restarts".to_owned(), restarts.to_string()),
            ]
            .into(),
            check: Some(check),
            ..Registration::default()
        };
        self.client.register(&body).await
    }

    async fn deregister(&self) {
        match self.client.deregister(&self.id).await {
            Ok(()) | Err(wharf_client::ClientError::Refused { .. }) => {}
            Err(e) => self.style.note(&format!("cannot deregister: {e}")),
        }
    }

    /// Whether the registry holds this instance critical (unknown counts as not critical).
    async fn is_critical(&self) -> bool {
        match self
            .client
            .health_service(&self.spec.name, false, None)
            .await
        {
            Ok((entries, _)) => entries
                .iter()
                .any(|e| e.service.id == self.id && e.aggregate_status() == "critical"),
            Err(_) => false,
        }
    }
}

/// Resolves once a stop is asked for.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// SIGTERM to the whole process group, SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut Child, pid: u32) {
    // The child leads its own group; 0 or 1 would mean our own group or every process.
    let group = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw);
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
    // Children of the process that outlived it are in its group too.
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
}
