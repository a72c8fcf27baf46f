//! An etcd server for tests (Debian's `etcd-server`): started on free loopback ports with a
//! scratch data directory, waited for through its `/health` endpoint, killed on drop. Shared
//! by the store's etcd tests and the end-to-end cluster tests (included by path).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a test needs it, for `#[ignore]` and for the panic when it is missing.
pub(crate) const NEEDS_ETCD: &str = "needs etcd (Debian's etcd-server): bash tests/etcd/run.sh";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd server (a cluster's member, or a cluster of one), killed on drop.
pub(crate) struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    pub(crate) client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    /// The address it listens on (loopback, or a test host's bridge).
    ip: String,
    /// `--cert-file`, `--key-file` and `--trusted-ca-file` (client certificates required):
    /// an etcd that takes TLS only.
    tls: Option<[std::path::PathBuf; 3]>,
}

impl EtcdServer {
    fn new(name: &str, ip: &str) -> EtcdServer {
        let peer_port = free_port();
        EtcdServer {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            name: name.to_owned(),
            client_port: free_port(),
            peer_port,
            initial_cluster: format!("{name}=http://{ip}:{peer_port}"),
            ip: ip.to_owned(),
            tls: None,
        }
    }

    /// Starts a one-member etcd on loopback that takes TLS only (client certificates
    /// required), with `cert` and `key` (PEM files) signed by `ca`; does not wait (its health
    /// endpoint is behind TLS too: poll with a client).
    pub(crate) fn start_tls(cert: &Path, key: &Path, ca: &Path) -> EtcdServer {
        let mut server = EtcdServer::new("test", "127.0.0.1");
        server.tls = Some([cert.to_owned(), key.to_owned(), ca.to_owned()]);
        server.spawn();
        server
    }

    /// Starts a one-member etcd on loopback and waits until it is healthy.
    pub(crate) fn start() -> EtcdServer {
        EtcdServer::start_on("127.0.0.1")
    }

    /// Starts a one-member etcd listening on `ip` (an address of this machine's) and waits
    /// until it is healthy.
    pub(crate) fn start_on(ip: &str) -> EtcdServer {
        let mut server = EtcdServer::new("test", ip);
        server.run();
        server
    }

    /// Starts a cluster of `members` on loopback and waits until every member is healthy.
    pub(crate) fn cluster(members: usize) -> Vec<EtcdServer> {
        let mut servers: Vec<EtcdServer> = (0..members)
            .map(|i| EtcdServer::new(&format!("m{i}"), "127.0.0.1"))
            .collect();
        let initial = servers
            .iter()
            .map(|s| format!("{}=http://127.0.0.1:{}", s.name, s.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for server in &mut servers {
            server.initial_cluster = initial.clone();
            server.spawn();
        }
        for server in &servers {
            server.wait_healthy();
        }
        servers
    }

    /// Starts (again) on the same ports and data; waits until it is healthy.
    pub(crate) fn run(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    /// Starts (again) on the same ports and data, without waiting (a cluster's members
    /// become healthy together).
    pub(crate) fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let mut command = Command::new("etcd");
        if let Some([cert, key, ca]) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-token=wharf-test")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("etcd.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({NEEDS_ETCD}): {e}"));
        self.child = Some(child);
    }

    /// Waits (with a deadline) until this member says it is healthy.
    pub(crate) fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; its log: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn healthy(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect((self.ip.as_str(), self.client_port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n";
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// `http://127.0.0.1:PORT`, for the store's client.
    pub(crate) fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, as `--store` takes it.
    pub(crate) fn store_url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    /// `etcd://H:P,H:P,...` for every member of `cluster`.
    pub(crate) fn cluster_url(cluster: &[EtcdServer]) -> String {
        let members: Vec<String> = cluster
            .iter()
            .map(|s| format!("{}:{}", s.ip, s.client_port))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// Whether this member is the cluster's Raft leader now (asked with `etcdctl`).
    pub(crate) fn is_leader(&self) -> bool {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}:{}", self.ip, self.client_port))
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .expect("etcdctl");
        let text = String::from_utf8_lossy(&output.stdout);
        let number_after = |field: &str| -> Option<String> {
            let start = text.find(field)? + field.len();
            Some(
                text[start..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect(),
            )
        };
        let member = number_after("\"member_id\":");
        member.is_some() && member == number_after("\"leader\":")
    }

    /// Kills the server (its data stays for [`EtcdServer::run`]).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
