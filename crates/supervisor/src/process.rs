//! Process control: start an instance's command in its own process group, wait for its port,
//! and stop the whole group (SIGTERM, then SIGKILL after a grace), leaving nothing behind.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::spec::ServiceSpec;

/// A started instance process.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

/// How waiting for the port ended, when it did not open.
pub(crate) enum NotListening {
    Exited(String),
    Stop,
}

/// Starts the command on `port`, with `PORT`, `WHARF_SERVICE`, `WHARF_INSTANCE` and
/// `WHARF_REGISTRY` in its environment (and `extra`), in its own process group.
pub(crate) fn start(
    spec: &ServiceSpec,
    id: &str,
    registry_url: &str,
    port: u16,
    extra: &[(String, String)],
) -> Result<Process, String> {
    let mut command = Command::new(&spec.command[0]);
    command
        .args(&spec.command[1..])
        .current_dir(&spec.dir)
        .envs(&spec.env)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .env("PORT", port.to_string())
        .env("WHARF_SERVICE", &spec.name)
        .env("WHARF_INSTANCE", id)
        .env("WHARF_REGISTRY", registry_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", spec.command[0]))?;
    let pid = child.id().unwrap_or(0);
    Ok(Process { child, pid, port })
}

impl Process {
    /// Waits until the port accepts connections, the process dies, `deadline` passes (the
    /// process is then stopped) or a stop is asked for (likewise).
    pub(crate) async fn wait_listening(
        &mut self,
        deadline: Duration,
        stop_grace: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), NotListening> {
        let until = Instant::now() + deadline;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotListening::Exited(format!(
                    "exited before opening port {}: {status}",
                    self.port
                )));
            }
            if *stop.borrow() {
                self.terminate(stop_grace).await;
                return Err(NotListening::Stop);
            }
            if Instant::now() > until {
                self.terminate(stop_grace).await;
                return Err(NotListening::Exited(format!(
                    "did not open port {} within {deadline:?}",
                    self.port
                )));
            }
            // A connect attempt is the only portable way to see a port open; it is cheap.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to the whole process group, SIGKILL after `grace`.
    pub(crate) async fn terminate(&mut self, grace: Duration) {
        // The child leads its own group; 0 or 1 would mean our own group or every process.
        let group = i32::try_from(self.pid)
            .ok()
            .filter(|p| *p > 1)
            .map(Pid::from_raw);
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = self.child.kill().await;
        }
        // Children of the process that outlived it are in its group too.
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
