//! Helpers for tests that run the real `wharf` binary: start a registry on port 0, talk HTTP
//! to it over a real socket, poll for conditions with a deadline, and stop every process
//! started, even when the test fails (the handles kill on drop).

#[path = "../../crates/store/tests/support/certs.rs"]
#[allow(dead_code)]
pub(crate) mod certs;
pub(crate) mod dns;
#[path = "../../crates/store/tests/support/etcd_server.rs"]
#[allow(dead_code)]
pub(crate) mod etcd_server;
pub(crate) mod hosts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub(crate) const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A `wharf registry` process; killed when dropped.
pub(crate) struct RegistryProcess {
    child: Child,
    pub addr: SocketAddr,
    /// DNS, UDP and TCP on the same port.
    pub dns: SocketAddr,
}

/// `wharf registry` on free loopback ports (HTTP and DNS) with its data in `data_dir`.
pub(crate) fn registry_command(data_dir: &Path) -> Command {
    let mut command = Command::new(WHARF);
    command
        .args([
            "registry",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir);
    command
}

impl RegistryProcess {
    /// Starts a registry on `127.0.0.1:0` with its data in `data_dir`.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> RegistryProcess {
        let mut child = registry_command(data_dir)
            .args(extra)
            .env("WHARF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wharf registry");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the registry's first line");
        let Some(url) = line.trim().rsplit(' ').next().and_then(|u| {
            u.strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
        }) else {
            let _ = child.kill();
            panic!("registry did not announce its address: {line:?}");
        };
        let addr = url.parse().expect("address");
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the registry's DNS line");
        let Some(dns) = line.split_whitespace().nth(4).and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            panic!("registry did not announce its DNS address: {line:?}");
        };
        RegistryProcess { child, addr, dns }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `kill -9`, then wait for the process to be gone.
    pub(crate) fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub(crate) fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, b"")
    }

    /// The value of an unlabelled metric from `/metrics` (0 if absent).
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    pub(crate) fn put(&self, path: &str, body: &str) -> Response {
        request(self.addr, "PUT", path, body.as_bytes())
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn index(&self) -> u64 {
        self.header("x-consul-index")
            .expect("X-Consul-Index header")
            .parse()
            .expect("numeric index")
    }
}

/// A blocking query of `path` at `index`, held on a thread: join it for the answer.
pub(crate) fn held_query(
    addr: SocketAddr,
    path: &str,
    index: u64,
    wait: &str,
) -> std::thread::JoinHandle<Response> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}index={index}&wait={wait}");
    std::thread::spawn(move || request(addr, "GET", &path, b""))
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    request_with(addr, method, path, &[], body)
}

/// [`request`] with extra header fields.
pub(crate) fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(700)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !body.is_empty() {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Polls `condition` until it holds, panicking with `what` after [`DEADLINE`].
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A tiny HTTP server for health checks: answers every request with the current status.
pub(crate) struct HealthEndpoint {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
}

impl HealthEndpoint {
    pub(crate) fn start(status: u16) -> HealthEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(AtomicU16::new(status));
        let served = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let code = served.load(Ordering::SeqCst);
                if code == 0 {
                    break; // stopped
                }
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let body = format!("status {code}");
                let reply = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        HealthEndpoint {
            addr,
            status: shared,
        }
    }

    pub(crate) fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.status.store(0, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop so the thread ends
    }
}

/// Runs `wharf` with `args` against `registry`; returns exit code, stdout, stderr.
pub(crate) fn wharf(registry: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(WHARF)
        .args(args)
        .env("WHARF_REGISTRY", registry)
        .env("WHARF_LOG", "warn")
        .output()
        .expect("run wharf");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Registers `backend` as an instance of `service` with a TCP check every second.
pub(crate) fn register(registry: &RegistryProcess, service: &str, backend: &Backend) {
    register_instance(registry, service, &backend.name, backend.addr(), &[], None);
}

/// Registers whatever listens on `addr` as instance `id` of `service`, TCP-checked every
/// second and passing from the start, with `meta` and a passing weight if given.
pub(crate) fn register_instance(
    registry: &RegistryProcess,
    service: &str,
    id: &str,
    addr: std::net::SocketAddr,
    meta: &[(&str, &str)],
    weight: Option<u32>,
) {
    let registration = wharf_client::Registration {
        name: service.into(),
        id: Some(id.into()),
        address: Some("127.0.0.1".into()),
        port: Some(addr.port()),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        weights: weight.map(|passing| wharf_client::Weights {
            passing,
            warning: 1,
        }),
        check: Some(wharf_client::CheckRegistration {
            tcp: Some(addr.to_string()),
            interval: Some("1s".into()),
            status: Some("passing".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let body = serde_json::to_string(&registration).unwrap();
    assert_eq!(
        registry.put("/v1/agent/service/register", &body).status,
        200
    );
}

/// A backend process (`tests/support/backend.py`) that answers with its name; killed on drop.
pub(crate) struct Backend {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
}

impl Backend {
    pub(crate) fn start(name: &str) -> Backend {
        Backend::start_with(name, &[])
    }

    /// With environment variables (`FAIL_EVERY`, `DELAY_MS`: see backend.py).
    pub(crate) fn start_with(name: &str, env: &[(&str, &str)]) -> Backend {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/support/backend.py"
        );
        let mut child = Command::new("python3")
            .args([script, name])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 backend");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("backend's first line");
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("backend port");
        Backend {
            child: Some(child),
            name: name.to_owned(),
            port,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`, and wait until it is gone.
    pub(crate) fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A `wharf proxy` process on port 0; killed on drop.
pub(crate) struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl ProxyProcess {
    pub(crate) fn start(registry: &str, extra: &[&str]) -> ProxyProcess {
        let mut child = Command::new(WHARF)
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--registry",
                registry,
            ])
            .args(extra)
            .env("WHARF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wharf proxy");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addr_of = |what: &str| -> SocketAddr {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("proxy output");
            line.trim()
                .rsplit(' ')
                .next()
                .and_then(|u| u.strip_prefix("http://"))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("proxy did not announce its {what}: {line:?}"))
        };
        let addr = addr_of("address");
        let admin = addr_of("admin address");
        let proxy = ProxyProcess { child, addr, admin };
        eventually("proxy ready", || {
            request(proxy.admin, "GET", "/ready", b"").status == 200
        });
        proxy
    }

    /// GET `path` with `Host: host`.
    pub(crate) fn get(&self, host: &str, path: &str) -> Response {
        send(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    }

    /// The value of a metric line from `/metrics` that starts with `prefix` (0 if absent).
    pub(crate) fn metric(&self, prefix: &str) -> f64 {
        let text = request(self.admin, "GET", "/metrics", b"").text();
        text.lines()
            .find_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes as a request and reads the whole answer (the request must ask for
/// `Connection: close`).
pub(crate) fn send(addr: SocketAddr, raw: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_response(&bytes)
}

/// Reads one response from a kept-alive connection, using its framing (`Content-Length` or
/// chunked; no body after a HEAD or a 1xx/204/304). The body is returned de-chunked.
pub(crate) fn read_response(reader: &mut impl BufRead, head_request: bool) -> Response {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .expect("read a response head");
        assert!(n > 0, "the connection closed before a response");
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let mut response = parse_response(&head);
    let status = response.status;
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    if no_body {
    } else if chunked {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                .expect("hex chunk size");
            if size == 0 {
                let mut end = String::new();
                while reader.read_line(&mut end).expect("trailers") > 2 {
                    end.clear();
                }
                break;
            }
            let mut data = vec![0; size + 2];
            reader.read_exact(&mut data).expect("chunk data");
            response.body.extend_from_slice(&data[..size]);
        }
    } else if let Some(length) = response.header("content-length") {
        let mut data = vec![0; length.parse().expect("numeric content-length")];
        reader.read_exact(&mut data).expect("body");
        response.body = data;
    }
    response
}

/// A `wharf sidecar` process; killed on drop. Its log (info) goes to `log`.
pub(crate) struct SidecarProcess {
    child: Child,
    pub inbound: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// Each `--upstream` given: its name and where it listens.
    pub upstreams: Vec<(String, SocketAddr)>,
    pub log: std::path::PathBuf,
}

impl SidecarProcess {
    /// A sidecar for `service` in front of the app at `app`, logging into `dir`.
    pub(crate) fn start(
        registry: &str,
        service: &str,
        app: SocketAddr,
        dir: &Path,
        extra: &[&str],
    ) -> SidecarProcess {
        static STARTED: AtomicU16 = AtomicU16::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("sidecar-{service}-{n}.log"));
        let mut child = Command::new(WHARF)
            .args(["sidecar", "--service", service, "--registry", registry])
            .arg("--app")
            .arg(app.to_string())
            .args(extra)
            .env("WHARF_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("sidecar log file"))
            .spawn()
            .expect("start wharf sidecar");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("sidecar output");
        let inbound = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("sidecar did not announce its inbound address: {line:?}"));
        let outbound = if extra.windows(2).any(|w| w == ["--outbound", "none"]) {
            None
        } else {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("sidecar output");
            Some(
                line.trim()
                    .rsplit(' ')
                    .next()
                    .and_then(|u| u.strip_prefix("http://"))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no outbound address: {line:?}")),
            )
        };
        let mut line = String::new();
        stdout.read_line(&mut line).expect("sidecar output");
        let admin = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address: {line:?}"));
        let mut upstreams = Vec::new();
        for _ in extra.iter().filter(|arg| **arg == "--upstream") {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("sidecar output");
            // "wharf sidecar: upstream NAME (TCP) on ADDR"
            let words: Vec<&str> = line.split_whitespace().collect();
            let name = words
                .get(3)
                .unwrap_or_else(|| panic!("no upstream: {line:?}"));
            let addr = words.last().and_then(|a| a.parse().ok());
            upstreams.push((name.to_string(), addr.unwrap_or_else(|| panic!("{line:?}"))));
        }
        SidecarProcess {
            child,
            inbound,
            outbound,
            admin,
            upstreams,
            log,
        }
    }

    /// GET `path` of `service` through this sidecar's outbound side.
    pub(crate) fn call(&self, service: &str, path: &str) -> Response {
        send(
            self.outbound.expect("an outbound side"),
            &format!("GET {path} HTTP/1.1\r\nHost: {service}\r\nConnection: close\r\n\r\n"),
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves h2c on a free port: every request gets `grpc-status: 0` in trailers after a body.
pub(crate) async fn grpc_server() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let te = request.headers().get("te").cloned();
                    // A method named Unavailable fails in its trailers (14), one named
                    // NotFound in a trailers-only answer (5, in the head); others are OK.
                    let path = request.uri().path().to_owned();
                    if path.ends_with("/NotFound") {
                        let mut response = http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()).boxed(),
                        );
                        let headers = response.headers_mut();
                        headers.insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
                        return Ok::<_, std::convert::Infallible>(response);
                    }
                    let status = if path.ends_with("/Unavailable") {
                        "14"
                    } else {
                        "0"
                    };
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                    trailers.insert("grpc-message", http::HeaderValue::from_static("fine"));
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(
                        b"\0\0\0\0\x02\x08\x01",
                    ))
                    .with_trailers(async move { Some(Ok(trailers)) })
                    .boxed();
                    let mut response = http::Response::new(body);
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    if let Some(te) = te {
                        response.headers_mut().insert("x-saw-te", te);
                    }
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Sends one HTTP/2 (h2c, prior knowledge) request for `authority` to a proxy (the gateway
/// or a sidecar's outbound side).
pub(crate) async fn h2_request(
    proxy: std::net::SocketAddr,
    authority: &str,
    path: &str,
    grpc: bool,
) -> (http::response::Parts, bytes::Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder().uri(format!("http://{authority}{path}"));
    if grpc {
        request = request
            .method("POST")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    let response = sender
        .send_request(
            request
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}
