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
    let curl = |(cert, key): &(std::path::PathBuf, std::path::PathBuf)| {
        let port = mesh.api.inbound.port();
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--cacert")
            .arg(&roots)
            .arg("--resolve")
            .arg(format!("api.svc.wharf:{port}:127.0.0.1"))
            .arg(format!("https://api.svc.wharf:{port}/"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&ours), "200");
    let other_dir = tempfile::tempdir().unwrap();
    let other = RegistryProcess::start(other_dir.path(), &[]);
    let theirs = leaf_files(&other, "front", mesh.dir.path(), "theirs");
    assert_eq!(
        curl(&theirs),
        "000",
        "a certificate from another CA is refused"
    );
    assert!(
        mesh.api.log_text().contains("refused a connection"),
        "the sidecar says why"
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
