//! Sidecars as users run them: a real registry, real apps, `wharf sidecar` processes, real
//! mutual TLS. Allowed calls work, denied ones get 403 `denied`, strangers and plaintext are
//! refused, certificates rotate under load without a failed request, and traffic between
//! sidecars goes on with the registry gone.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// A registry, an `api` app behind a sidecar, and a `web` sidecar whose outbound side
/// calls it.
struct Mesh {
    dir: tempfile::TempDir,
    registry: RegistryProcess,
    _api_app: Backend,
    api: SidecarProcess,
    web: SidecarProcess,
}

fn mesh(registry_args: &[&str]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), registry_args);
    let api_app = Backend::start("api-1");
    let api = SidecarProcess::start(
        &registry.url(),
        "api",
        api_app.addr(),
        dir.path(),
        &["--outbound", "none"],
    );
    // web's own app is not called in these tests; its sidecar's outbound side is.
    let web = SidecarProcess::start(&registry.url(), "web", api_app.addr(), dir.path(), &[]);
    eventually("web reaches api through the mesh", || {
        web.call("api", "/").status == 200
    });
    Mesh {
        dir,
        registry,
        _api_app: api_app,
        api,
        web,
    }
}

fn intention(registry: &RegistryProcess, source: &str, destination: &str, action: &str) {
    let answer = registry.put(
        &format!("/v1/connect/intentions/exact?source={source}&destination={destination}"),
        &json!({"Action": action}).to_string(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[test]
fn allowed_calls_go_through_and_denied_ones_get_403() {
    let mesh = mesh(&[]);
    let answer = mesh.web.call("api", "/");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "api-1");
    let echoed = mesh.web.call("api", "/echo").json();
    let xfcc = echoed["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.contains("/svc/web") && xfcc.contains("/svc/api"),
        "the app learns who called: {echoed}"
    );

    intention(&mesh.registry, "web", "api", "deny");
    eventually("the deny reaches the api sidecar", || {
        mesh.web.call("api", "/").status == 403
    });
    let denied = mesh.web.call("api", "/");
    assert_eq!(denied.header("x-wharf-error"), Some("denied"));
    assert!(
        denied.text().contains("web => api (deny)"),
        "{}",
        denied.text()
    );

    intention(&mesh.registry, "web", "api", "allow");
    eventually("the allow comes back", || {
        mesh.web.call("api", "/").status == 200
    });
}

/// The inbound connections a sidecar has accepted so far, of `kind` ("mtls" or "plaintext"),
/// from its `/metrics`.
fn inbound_connections(sidecar: &SidecarProcess, kind: &str) -> f64 {
    let metrics = request(sidecar.admin, "GET", "/metrics", b"").text();
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "wharf_sidecar_inbound_connections_total{{kind=\"{kind}\"}} "
            ))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn calls_between_sidecars_share_one_kept_connection() {
    let mesh = mesh(&[]);
    let opened = inbound_connections(&mesh.api, "mtls");
    assert!(opened >= 1.0, "the setup's calls came over mTLS");
    // Each call is a new connection from the app to its sidecar; between the sidecars, the
    // kept HTTP/2 connection carries them all, one after another and at once.
    for _ in 0..30 {
        assert_eq!(mesh.web.call("api", "/").status, 200);
    }
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(mesh.web.call("api", "/").status, 200);
                }
            });
        }
    });
    assert_eq!(
        inbound_connections(&mesh.api, "mtls"),
        opened,
        "70 calls opened no new mTLS connection"
    );
}

#[test]
fn large_and_streamed_bodies_cross_the_sidecars_whole() {
    let mesh = mesh(&[]);
    let outbound = mesh.web.outbound.unwrap();
    // 3 MiB each way: more than an HTTP/2 stream may have in flight (2 MiB) and, over the
    // three calls on the sidecars' one kept connection, more than the connection may (5 MiB),
    // so the window has to be given back as the bytes are read, both ways.
    let large: String = (0..3 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let small = &large[..10 << 10];
    let with_length = |body: &str| {
        format!(
            "POST /echo HTTP/1.1\r\nHost: api\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut chunked = String::from(
        "POST /echo HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for chunk in large.as_bytes().chunks(64 << 10) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    for (what, raw, sent) in [
        (
            "a small body (read whole, sent with the head)",
            with_length(small),
            small,
        ),
        (
            "a large body of known length (streamed)",
            with_length(&large),
            &large[..],
        ),
        ("a chunked body (streamed)", chunked, &large[..]),
    ] {
        let answer = send(outbound, &raw);
        assert_eq!(
            answer.status,
            200,
            "{what}: {}",
            &answer.text()[..answer.text().len().min(300)]
        );
        let echoed = answer.json();
        assert_eq!(echoed["method"], "POST", "{what}");
        assert!(
            echoed["body"].as_str() == Some(sent),
            "{what}: the body changed on the way"
        );
    }

    // Answers of unknown length (the app streams them chunked): chunked again to an
    // HTTP/1.1 client, delimited by the close to an HTTP/1.0 one; a HEAD gets no body.
    let streamed = send(
        outbound,
        "GET /stream/20 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((streamed.status, &streamed.body[..]), (200, &b"ab"[..]));
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    let old_client = send(outbound, "GET /stream/20 HTTP/1.0\r\nHost: api\r\n\r\n");
    assert_eq!((old_client.status, &old_client.body[..]), (200, &b"ab"[..]));
    assert_eq!(old_client.header("transfer-encoding"), None);
    let head = send(
        outbound,
        "HEAD / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5"))
    );
    assert!(head.body.is_empty(), "{:?}", head.body);
}

#[test]
fn an_apps_kept_connection_outlives_the_gateways_idle_limit() {
    // The gateway closes a connection idle for 10 s; a sidecar's app keeps its pool of
    // connections to the sidecar far longer (Go's client: 90 s), and must not find one
    // closed under it.
    let mesh = mesh(&[]);
    let conn = std::net::TcpStream::connect(mesh.web.outbound.unwrap()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    for round in 0..2 {
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut reader, false);
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (200, "api-1"),
            "round {round}"
        );
        if round == 0 {
            // The idle time is what is tested: longer than the gateway's limit.
            std::thread::sleep(Duration::from_secs(11));
        }
    }
}

#[test]
fn plaintext_strangers_and_foreign_certificates_are_refused() {
    let mesh = mesh(&[]);
    // Plaintext to the inbound side gets no HTTP answer.
    let plain = request_raw(mesh.api.inbound, b"GET / HTTP/1.1\r\nHost: api\r\n\r\n");
    assert!(
        !plain.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&plain)
    );

    // A leaf of this mesh works with curl; a leaf of another mesh does not.
    let ours = leaf_files(&mesh.registry, "front", mesh.dir.path(), "ours");
    let roots = mesh.dir.path().join("roots.pem");
    std::fs::write(
        &roots,
        mesh.registry.get("/v1/connect/ca/roots?pem=true").body,
    )
    .unwrap();
    let curl =
        |files: &(std::path::PathBuf, std::path::PathBuf)| curl_inbound(&mesh, files, &roots);
    assert_eq!(curl(&ours), "200");
    let other_dir = tempfile::tempdir().unwrap();
    let other = RegistryProcess::start(other_dir.path(), &[]);
    let theirs = leaf_files(&other, "front", mesh.dir.path(), "theirs");
    assert_eq!(
        curl(&theirs),
        "000",
        "a certificate from another CA is refused"
    );
    eventually("the sidecar says why", || {
        mesh.api.log_text().contains("refused a connection")
    });
}

/// curl with a client certificate against the api sidecar's inbound side: the status, or
/// `000` when the TLS handshake is refused. The inbound side offers `h2` by ALPN, so curl
/// (on nghttp2) speaks HTTP/2 to Wharf's own server: an answer that came is checked to
/// have come over HTTP/2.
fn curl_inbound(
    mesh: &Mesh,
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
    roots: &std::path::Path,
) -> String {
    let port = mesh.api.inbound.port();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(["-m", "10", "--http2"])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--cacert")
        .arg(roots)
        .arg("--resolve")
        .arg(format!("api.svc.wharf:{port}:127.0.0.1"))
        .arg(format!("https://api.svc.wharf:{port}/"))
        .output()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = written.split_once(' ').unwrap_or((&written, ""));
    if status != "000" {
        assert_eq!(
            version, "2",
            "curl spoke HTTP/{version} to the inbound side"
        );
    }
    status.to_owned()
}

#[test]
fn an_expired_certificate_is_refused() {
    let mesh = mesh(&["--leaf-ttl", "2s"]);
    let roots = mesh.dir.path().join("roots.pem");
    std::fs::write(
        &roots,
        mesh.registry.get("/v1/connect/ca/roots?pem=true").body,
    )
    .unwrap();
    let files = leaf_files(&mesh.registry, "front", mesh.dir.path(), "soon-expired");
    let (ok, not_after) = {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-in"])
            .arg(&files.0)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ok, "{not_after}");
    assert_eq!(curl_inbound(&mesh, &files, &roots), "200", "valid now");
    // Polls until the certificate's end has passed (openssl says so: -checkend 0).
    eventually("the leaf has expired", || {
        !Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(&files.0)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    // Validity is checked to the second: within the second of its end both sides may still
    // count it valid, so the refusal is polled for too (it never comes if expiry is ignored).
    eventually(
        &format!("the expired leaf ({}) refused", not_after.trim()),
        || curl_inbound(&mesh, &files, &roots) == "000",
    );
    let fresh = leaf_files(&mesh.registry, "front", mesh.dir.path(), "fresh");
    assert_eq!(
        curl_inbound(&mesh, &fresh, &roots),
        "200",
        "a fresh one from the same CA works"
    );
}

/// Writes the leaf of `service` from `registry` to two files.
fn leaf_files(
    registry: &RegistryProcess,
    service: &str,
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let leaf = registry
        .get(&format!("/v1/agent/connect/ca/leaf/{service}"))
        .json();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, leaf["CertPEM"].as_str().unwrap()).unwrap();
    std::fs::write(&key, leaf["PrivateKeyPEM"].as_str().unwrap()).unwrap();
    (cert, key)
}

/// Writes `raw` and reads whatever comes back until the peer closes (at most 10 s).
fn request_raw(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn leaves_rotate_under_load_without_a_failed_request() {
    let mesh = mesh(&["--leaf-ttl", "3s"]);
    let rotations =
        |sidecar: &SidecarProcess| sidecar.log_text().matches("certificate in use").count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while (rotations(&mesh.api) < 4 || rotations(&mesh.web) < 4) && Instant::now() < deadline {
        let answer = mesh.web.call("api", "/");
        assert_eq!(answer.status, 200, "request {sent}: {}", answer.text());
        sent += 1;
    }
    assert!(
        rotations(&mesh.api) >= 4 && rotations(&mesh.web) >= 4,
        "both sidecars renewed several times while {sent} requests went through"
    );
}

#[test]
fn traffic_between_sidecars_goes_on_with_the_registry_gone() {
    let mesh = mesh(&[]);
    let Mesh {
        registry, web, api, ..
    } = mesh;
    let ready = request(api.admin, "GET", "/ready", b"");
    assert_eq!((ready.status, ready.text().trim()), (200, "ready"));
    registry.kill_9();
    for n in 0..50 {
        let answer = web.call("api", "/");
        assert_eq!(answer.status, 200, "request {n} with the registry gone");
    }
    // The sidecars say they serve from what they hold.
    eventually("the sidecar notices the registry is gone", || {
        let ready = request(api.admin, "GET", "/ready", b"");
        ready.status == 200 && ready.text().contains("fail static")
    });
    let metrics = request(api.admin, "GET", "/metrics", b"").text();
    assert!(
        metrics.contains("wharf_sidecar_registry_reachable 0"),
        "{metrics}"
    );
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_sidecar_leaf_expiry_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the leaf's time to expiry");
    assert!(expiry > 3600.0, "a 72 h leaf: {expiry}");
    assert!(
        metrics.contains(r#"wharf_sidecar_inbound_decisions_total{caller="web",decision="allow"}"#),
        "{metrics}"
    );
}

#[test]
fn a_root_rotation_under_load_fails_no_request() {
    let mesh = mesh(&[]);
    let old_root = mesh.registry.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"].clone();
    let key = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl");
    let key = String::from_utf8(key.stdout).unwrap();
    // Counted before the rotation: it wakes the sidecars' leaf queries at once.
    let in_use =
        |sidecar: &SidecarProcess| sidecar.log_text().matches("certificate in use").count();
    let (api_before, web_before) = (in_use(&mesh.api), in_use(&mesh.web));
    let rotated = mesh.registry.put(
        "/v1/connect/ca/configuration",
        &json!({"Provider": "consul", "Config": {"PrivateKey": key}}).to_string(),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_ne!(
        mesh.registry.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"],
        old_root
    );
    // Both sidecars take a leaf under the new root, while requests keep going.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while (in_use(&mesh.api) < api_before + 1 || in_use(&mesh.web) < web_before + 1)
        && Instant::now() < deadline
    {
        let answer = mesh.web.call("api", "/");
        assert_eq!(answer.status, 200, "request {sent}: {}", answer.text());
        sent += 1;
    }
    for n in 0..20 {
        let answer = mesh.web.call("api", "/");
        assert_eq!(
            answer.status,
            200,
            "request {n} after the rotation: {}",
            answer.text()
        );
    }
    assert!(in_use(&mesh.api) > api_before && in_use(&mesh.web) > web_before);
}

#[test]
fn a_tcp_service_admits_allowed_callers_and_closes_on_denied_ones() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--default-intention", "deny"]);
    // A TCP app that answers every line with "echo: <line>".
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = app.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in app.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                    let _ = writer.write_all(format!("echo: {line}").as_bytes());
                    line.clear();
                }
            });
        }
    });
    let db = SidecarProcess::start(
        &registry.url(),
        "db",
        app_addr,
        dir.path(),
        &["--outbound", "none", "--protocol", "tcp"],
    );
    intention(&registry, "web", "db", "allow");
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, registry.get("/v1/connect/ca/roots?pem=true").body).unwrap();
    let talk = |service: &str| {
        let (cert, key) = leaf_files(&registry, service, dir.path(), service);
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "db.svc.wharf",
            ])
            .arg("-connect")
            .arg(db.inbound.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-CAfile")
            .arg(&roots)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_client");
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 256];
        // Read until the echo comes or the sidecar closes (s_client exits at the close).
        while !out.contains('\n') && Instant::now() < deadline {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        out
    };
    eventually("the db sidecar has heard the intentions", || {
        talk("web") == "echo: hello\n"
    });
    assert_eq!(talk("api"), "", "a denied caller's connection is closed");
    // The line is written as the connection closes: polled, not raced.
    eventually("the sidecar says why", || {
        db.log_text().contains("api may not call db")
    });

    // An app reaches the TCP service through its own sidecar's upstream listener: plain TCP
    // on loopback, mTLS with web's identity between the sidecars.
    let web = SidecarProcess::start(
        &registry.url(),
        "web",
        app_addr,
        dir.path(),
        &["--outbound", "none", "--upstream", "db=127.0.0.1:0"],
    );
    assert_eq!(web.upstreams[0].0, "db");
    let upstream = web.upstreams[0].1;
    let through_upstream = || {
        let mut conn = std::net::TcpStream::connect(upstream).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(b"hi there\n");
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while !out.contains(&b'\n') {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    eventually("web's upstream reaches db", || {
        through_upstream() == "echo: hi there\n"
    });
    intention(&registry, "web", "db", "deny");
    eventually("a denied upstream connection is closed", || {
        through_upstream().is_empty()
    });
}

#[test]
fn a_permissive_sidecar_takes_plaintext_too_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let app = Backend::start("api-1");
    let api = SidecarProcess::start(
        &registry.url(),
        "api",
        app.addr(),
        dir.path(),
        &["--outbound", "none", "--mode", "permissive"],
    );
    let web = SidecarProcess::start(&registry.url(), "web", app.addr(), dir.path(), &[]);
    eventually("mTLS through the permissive side", || {
        web.call("api", "/").status == 200
    });
    // Only mTLS so far: `wharf mesh status` says strict is safe for api.
    let (code, out, err) = wharf(&registry.url(), &["mesh", "status", "api"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("permissive") && out.contains("safe: only mTLS"),
        "{out}"
    );
    let plain = send(
        api.inbound,
        "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (plain.status, plain.text().as_str()),
        (200, "api-1"),
        "plaintext admitted"
    );
    assert!(inbound_connections(&api, "plaintext") >= 1.0);
    assert!(inbound_connections(&api, "mtls") >= 1.0);
    // Now strict would refuse that caller: said, with its address, and exit 2.
    let (code, out, err) = wharf(&registry.url(), &["mesh", "status", "api"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("would refuse 1 plaintext connections")
            && out.contains("127.0.0.1 (1 connections"),
        "{out}"
    );
    let (_, json, _) = wharf(&registry.url(), &["mesh", "status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&json).unwrap();
    let api_status = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Service"] == "api")
        .expect("api's sidecar listed");
    assert_eq!(api_status["WouldRefuse"], true, "{json}");
    assert_eq!(
        api_status["Inbound"]["PlaintextCallers"][0]["Address"],
        "127.0.0.1"
    );
    // A strict sidecar is listed as such and refuses no one by switching.
    let web_status = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Service"] == "web")
        .unwrap();
    assert_eq!(web_status["Inbound"]["Mode"], "strict", "{json}");
    assert_eq!(web_status["WouldRefuse"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http2_clients_go_through_the_sidecars() {
    let grpc_app = grpc_server().await;
    let (_dir, registry, web, _api, _grpc_sidecar, _app) = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let registry = RegistryProcess::start(dir.path(), &[]);
        let grpc_sidecar = SidecarProcess::start(
            &registry.url(),
            "grpc",
            grpc_app,
            dir.path(),
            &["--outbound", "none"],
        );
        let app = Backend::start("api-1");
        let api = SidecarProcess::start(
            &registry.url(),
            "api",
            app.addr(),
            dir.path(),
            &["--outbound", "none"],
        );
        let web = SidecarProcess::start(&registry.url(), "web", app.addr(), dir.path(), &[]);
        eventually("web reaches api", || web.call("api", "/").status == 200);
        (dir, registry, web, api, grpc_sidecar, app)
    })
    .await
    .unwrap();
    let outbound = web.outbound.unwrap();

    // gRPC: h2c from the app to its sidecar, HTTP/2 over mTLS between the sidecars, h2c to
    // the gRPC app, and the trailers all the way back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (parts, body, trailers) = loop {
        let answer = h2_request(outbound, "grpc", "/grpc.health.v1.Health/Check", true).await;
        if answer.0.status == 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parts.status, 200, "{body:?}");
    assert_eq!(
        parts.headers.get("x-saw-te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );
    assert_eq!(&body[..], b"\0\0\0\0\x02\x08\x01");
    let trailers = trailers.expect("trailers through both sidecars");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "fine");

    // An HTTP/2 client of an HTTP/1.1 app.
    let (parts, body, _) = h2_request(outbound, "api", "/", false).await;
    assert_eq!(
        (parts.status, &body[..]),
        (http::StatusCode::OK, &b"api-1"[..])
    );

    // A denied gRPC caller gets its refusal as an HTTP answer, not a hang.
    intention(&registry, "web", "grpc", "deny");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (parts, _, _) =
            h2_request(outbound, "grpc", "/grpc.health.v1.Health/Check", true).await;
        if parts.status == 403 {
            assert_eq!(parts.headers.get("x-wharf-error").unwrap(), "denied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deny never reached the grpc sidecar"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of an access log once it holds at least `n`, each parsed.
fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    eventually(&format!("{n} lines in {}", path.display()), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        lines.len() >= n
    });
    lines
}

/// The callee's sidecar sees every caller: one with a sidecar of its own (whose outbound
/// report is the edge), and a plaintext stranger no proxy of its own reports (the edge
/// `unknown → api` comes from api's inbound side), each counted once in api's figures; its
/// access log names both callers, and `wharf tap api` streams its requests.
#[test]
fn every_caller_shows_once_in_the_edges_the_access_log_and_the_tap() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let app = Backend::start("api-1");
    let log = dir.path().join("api-access.log");
    let api = SidecarProcess::start(
        &registry.url(),
        "api",
        app.addr(),
        dir.path(),
        &[
            "--outbound",
            "none",
            "--mode",
            "permissive",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let web = SidecarProcess::start(&registry.url(), "web", app.addr(), dir.path(), &[]);
    eventually("web reaches api", || web.call("api", "/").status == 200);
    for _ in 0..9 {
        assert_eq!(web.call("api", "/from-web").status, 200);
    }
    for _ in 0..3 {
        let plain = send(
            api.inbound,
            "GET /from-a-stranger HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(plain.status, 200);
    }

    // The edges: web → api over mTLS (web's own report), unknown → api in plaintext (api's).
    let mut stats = serde_json::Value::Null;
    eventually("both edges, api's total the sum of the two", || {
        stats = registry.get("/v1/wharf/stats").json();
        let edge = |source: &str| {
            stats["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["source"] == source && e["destination"] == "api")
                .cloned()
        };
        let (Some(from_web), Some(stranger)) = (edge("web"), edge("unknown")) else {
            return false;
        };
        let api_total = stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "api")
            .map_or(0, |s| s["minute"]["requests"].as_u64().unwrap());
        from_web["mtls"] == true
            && stranger["mtls"] == false
            && stranger["minute"]["requests"] == 3
            && from_web["minute"]["requests"].as_u64() >= Some(10)
            && api_total == from_web["minute"]["requests"].as_u64().unwrap() + 3
    });

    // The access log: one line per request, the caller named by identity or as unknown.
    let lines = log_lines(&log, 13);
    let from = |caller: &str| {
        lines
            .iter()
            .filter(|l| l["caller"] == caller && l["direction"] == "inbound")
            .count()
    };
    assert!(from("web") >= 10, "{lines:?}");
    assert_eq!(from("unknown"), 3, "{lines:?}");
    let stranger = lines
        .iter()
        .find(|l| l["path"] == "/from-a-stranger")
        .unwrap();
    assert_eq!(stranger["authority"], "api");
    assert_eq!(stranger["status"], 200);
    assert_eq!(stranger["method"], "GET");
    assert!(stranger["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(stranger["time"].as_str().unwrap().ends_with('Z'));

    // `wharf tap api`: finds api's sidecar (and web's, which calls api) through the
    // registry, and prints each request as it happens.
    let mut tap = std::process::Command::new(WHARF)
        .args(["tap", "api", "--registry", &registry.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let taps = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collected = taps.clone();
    let stdout = tap.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            collected.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let stderr = tap.stderr.take().unwrap();
    let notes = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let noted = notes.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            noted.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    eventually("the tap found both sidecars", || {
        notes.lock().unwrap().matches(" through ").count() >= 2
    });
    // Requests keep coming until the tap has printed one from each side (its streams open
    // a moment after it says so); bounded by the deadline.
    eventually("the tap shows web's calls, in and out", || {
        assert_eq!(web.call("api", "/tapped").status, 200);
        let taps = taps.lock().unwrap();
        let shown = |direction: &str| {
            taps.lines().any(|l| {
                l.contains(direction) && l.contains("web → api") && l.contains("GET /tapped  200")
            })
        };
        shown("inbound") && shown("outbound")
    });
    let _ = tap.kill();
    let _ = tap.wait();
}
