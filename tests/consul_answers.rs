//! Answers a Consul client can act on safely, from a real `wharf registry` over real sockets:
//! 501 for every family of Consul's API not answered yet, a reason in every refusal,
//! Consul's validation, Consul's limits on one client, and indexes that a restart leaves
//! alone.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use wharf_registry::api::unimplemented::FAMILIES;

/// Paths to try for one entry of the table: an exact path as it is; a prefix bare, with one
/// segment and with several.
fn sample_paths(path: &str) -> Vec<String> {
    match path.strip_suffix('/') {
        Some(prefix) => vec![
            format!("{prefix}/"),
            format!("{prefix}/web"),
            format!("{prefix}/a/b%2Fc"),
        ],
        None => vec![path.to_owned()],
    }
}

#[test]
fn every_family_not_answered_yet_is_501_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let mut tried = 0;
    for family in FAMILIES {
        for path in family.paths {
            for sample in sample_paths(path) {
                for method in ["GET", "PUT", "POST", "DELETE"] {
                    let response = request(registry.addr, method, &sample, b"{}");
                    assert_eq!(response.status, 501, "{method} {sample}");
                    let text = response.text();
                    assert_eq!(
                        text.trim_end(),
                        family.reason(),
                        "{method} {sample}: the reason names the family"
                    );
                    assert!(text.contains(family.name), "{method} {sample}: {text}");
                    assert!(
                        response.header("x-consul-index").is_none(),
                        "{method} {sample}: no index, which clients could read as an answer"
                    );
                    assert!(
                        response
                            .header("content-type")
                            .is_some_and(|t| t.starts_with("text/plain"))
                    );
                    tried += 1;
                }
            }
        }
    }
    assert!(tried > 200, "the whole table was tried ({tried} requests)");

    // Not Consul's at all: still 404, so that typos are not dressed up as missing features.
    for path in [
        "/v1/kvx",
        "/v1/sessions",
        "/v2/kv/web",
        "/v1/agent/memberz",
        "/kv/web",
    ] {
        let response = registry.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert!(response.text().contains("no such endpoint"), "{path}");
    }
}

/// The 501 table in docs/consul-compat.md lists exactly the families the registry refuses.
#[test]
fn the_compat_doc_lists_exactly_the_501_families() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/consul-compat.md"
    ))
    .unwrap();
    let section = doc
        .split("## Answered 501 Not Implemented")
        .nth(1)
        .expect("docs/consul-compat.md has a 501 section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut documented: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let paths = l.split('|').nth(1).unwrap();
            paths
                .split(',')
                .map(|p| p.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut refused: Vec<String> = FAMILIES
        .iter()
        .flat_map(|f| f.paths.iter().map(|p| p.to_string()))
        .collect();
    documented.sort();
    refused.sort();
    assert_eq!(documented, refused);
}

#[test]
fn every_refusal_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);

    // 405 names the method and keeps Allow.
    let response = registry.get("/v1/agent/service/register");
    assert_eq!(response.status, 405);
    assert_eq!(response.text(), "method GET not allowed\n");
    assert_eq!(response.header("allow"), Some("PUT,POST"));
    let response = request(registry.addr, "DELETE", "/v1/catalog/services", b"");
    assert_eq!(response.status, 405);
    assert_eq!(response.text(), "method DELETE not allowed\n");

    // Maintenance is not caught by `GET /v1/agent/service/<id>`; `enable` is required.
    registry.put("/v1/agent/service/register", r#"{"Name":"web"}"#);
    let response = registry.put("/v1/agent/service/maintenance/web", "");
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.text(), "Missing value for enable\n");
    let response = registry.put("/v1/agent/service/maintenance/web?enable=true", "");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        registry.get("/v1/agent/service/web").status,
        200,
        "the instance itself is still answered"
    );

    // 414 for a long request line, 431 for large header fields, each with its limit.
    let long = format!("/v1/catalog/services?filler={}", "a".repeat(5 * 1024));
    let response = registry.get(&long);
    assert_eq!(response.status, 414);
    assert!(
        response.text().starts_with("Request URI too long") && response.text().contains("4096"),
        "{}",
        response.text()
    );
    let raw = format!(
        "GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(5 * 1024)
    );
    let response = send(registry.addr, &raw);
    assert_eq!(response.status, 431);
    assert!(
        response.text().contains("Request header fields too large"),
        "{}",
        response.text()
    );
    // A head past the 8 KiB read buffer never reaches the API: hyper's bare 431, then close.
    let raw = format!(
        "GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    assert_eq!(send(registry.addr, &raw).status, 431);

    // 413, whether the size is announced or only found while reading a chunked body.
    let big = format!(
        r#"{{"Name":"big","Meta":{{"k":"{}"}}}}"#,
        "x".repeat(1100 * 1024)
    );
    let response = registry.put("/v1/agent/service/register", &big);
    assert_eq!(response.status, 413);
    assert!(response.text().contains("at most 1048576 bytes"));
    let mut stream = TcpStream::connect(registry.addr).unwrap();
    stream
        .write_all(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..17 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if stream.write_all(&framed).is_err() {
            break; // the registry answered and closed before the end
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let response = read_response(&mut BufReader::new(stream), false);
    assert_eq!(response.status, 413);
    assert!(response.text().contains("at most 1048576 bytes"));

    // An empty name in a path, and a bad escape, are 400s that say so.
    for (path, reason) in [
        ("/v1/catalog/service/", "Missing service name"),
        ("/v1/health/service/", "Missing service name"),
        ("/v1/health/checks/", "Missing service name"),
        ("/v1/health/node/", "Missing node name"),
        ("/v1/health/state/", "Missing check state"),
        ("/v1/catalog/node/", "Missing node name"),
        ("/v1/agent/service/", "Missing service ID"),
        ("/v1/catalog/service/%zzweb", "invalid URL escape \"%zz\""),
        ("/v1/health/service/web%4", "invalid URL escape \"%4\""),
    ] {
        let response = registry.get(path);
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.text().trim_end(), reason, "{path}");
    }
    for (path, reason) in [
        ("/v1/agent/service/deregister/", "Missing service ID"),
        ("/v1/agent/check/pass/", "Missing check ID"),
        ("/v1/agent/check/update/", "Missing check ID"),
        ("/v1/wharf/scale/", "Missing service name"),
    ] {
        let response = registry.put(path, "");
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.text().trim_end(), reason, "{path}");
    }
    // Raw UTF-8 after a `%` (hyper lets it into the path): a reason, never a panic.
    let response = send(
        registry.addr,
        "GET /v1/catalog/service/%\u{e9}t\u{e9} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        response.status == 400,
        "{} {}",
        response.status,
        response.text()
    );
    assert_eq!(
        registry.get("/v1/agent/service/web").status,
        200,
        "nothing lost, still serving"
    );
}

#[test]
fn registrations_are_validated_and_shown_as_consul_does() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    for (body, reason) in [
        (
            json!({"Name": "a", "Check": {"TTL": "10s", "Interval": "10s"}}),
            "Interval and TTL cannot both be specified",
        ),
        (json!({"Name": "a", "Port": 80.5}), "must be an integer"),
        (json!({"Name": "a", "Port": "80"}), "expected an integer"),
    ] {
        let response = registry.put("/v1/agent/service/register", &body.to_string());
        assert_eq!(response.status, 400, "{body}");
        assert!(
            response.text().contains(reason),
            "{body}: {}",
            response.text()
        );
    }
    // A bare number is nanoseconds to Consul: 10 ns, shown as it is used, raised to 1 s.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let body = json!({"Name": "n", "Check": {"TCP": target.local_addr().unwrap().to_string(), "Interval": 10}});
    let response = registry.put("/v1/agent/service/register", &body.to_string());
    assert_eq!(response.status, 200, "{}", response.text());
    let checks = registry.get("/v1/health/checks/n").json();
    assert_eq!(checks[0]["Interval"], "1s");
    assert_eq!(checks[0]["Definition"]["Interval"], "1s");
    assert!(
        registry.get("/v1/catalog/service/a").json() == json!([]),
        "nothing refused was kept"
    );
}

#[test]
fn a_check_that_starts_critical_says_why_from_its_first_probe() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let body = json!({"Name": "down", "Checks": [
        {"CheckID": "tcp", "TCP": closed.to_string(), "Interval": "1s"},
        {"CheckID": "http", "HTTP": format!("http://{closed}/health"), "Interval": "1s"},
    ]});
    assert_eq!(
        registry
            .put("/v1/agent/service/register", &body.to_string())
            .status,
        200
    );
    let output = |id: &str| -> (String, String) {
        let check = &registry.get("/v1/agent/checks").json()[id];
        (
            check["Status"].as_str().unwrap().to_owned(),
            check["Output"].as_str().unwrap().to_owned(),
        )
    };
    for id in ["tcp", "http"] {
        eventually(&format!("{id} check shows why it is down"), || {
            !output(id).1.is_empty()
        });
        let (status, text) = output(id);
        assert_eq!(status, "critical");
        assert!(text.to_lowercase().contains("refused"), "{id}: {text}");
    }
}

/// Reads from a connection without blocking: `Some(true)` if the registry closed it,
/// `Some(false)` if it is open with nothing to read, `None` if data arrived.
fn closed_by_peer(stream: &TcpStream) -> Option<bool> {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let result = match (&*stream).read(&mut byte) {
        Ok(0) => Some(true),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::WouldBlock => Some(false),
        Err(_) => Some(true), // reset
    };
    stream.set_nonblocking(false).unwrap();
    result
}

#[test]
fn one_client_is_held_to_its_connections_and_its_pace() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(
        dir.path(),
        &[
            "--http-max-conns-per-client",
            "3",
            "--http-read-timeout",
            "1s",
        ],
    );
    // Two held blocking queries (the first connection asks for the index first, so that no
    // other connection is still closing when the limit is tested) and one connection that
    // never sends anything.
    let mut first = TcpStream::connect(registry.addr).unwrap();
    let mut first_reader = BufReader::new(first.try_clone().unwrap());
    first
        .write_all(b"GET /v1/health/service/web HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let index = read_response(&mut first_reader, false).index();
    let blocking_query =
        format!("GET /v1/health/service/web?index={index}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n");
    first.write_all(blocking_query.as_bytes()).unwrap();
    let mut second = TcpStream::connect(registry.addr).unwrap();
    let second_reader = BufReader::new(second.try_clone().unwrap());
    second.write_all(blocking_query.as_bytes()).unwrap();
    let held = [(first, first_reader), (second, second_reader)];
    let idle = TcpStream::connect(registry.addr).unwrap();

    // A fourth connection from the same address is answered 429 with Consul's reason.
    let response = registry.get("/v1/catalog/services");
    assert_eq!(response.status, 429);
    assert!(
        response.text().contains("too many concurrent connections"),
        "{}",
        response.text()
    );

    // The idle connection is closed after the read timeout...
    eventually("the idle connection is closed", || {
        closed_by_peer(&idle) == Some(true)
    });
    // ...while the held queries, older than it, are still held: holding is not idling.
    for (stream, _) in &held {
        assert_eq!(
            closed_by_peer(stream),
            Some(false),
            "a held query is kept open"
        );
    }
    // Its slot is free again.
    eventually("a slot is free again", || {
        registry.get("/v1/catalog/services").status == 200
    });

    // A body that stops moving is answered 408 and does not keep its slot.
    let mut stalled = TcpStream::connect(registry.addr).unwrap();
    stalled
        .write_all(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"Name\":")
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let response = read_response(&mut BufReader::new(stalled), false);
    assert_eq!(response.status, 408);
    assert!(
        response.text().contains("Request body stalled"),
        "{}",
        response.text()
    );

    // The held queries answer when what they watch changes. (The stalled connection may
    // still be closing: a 429 is retried.)
    eventually("the registration is accepted", || {
        registry
            .put("/v1/agent/service/register", r#"{"Name":"web"}"#)
            .status
            == 200
    });
    for (stream, mut reader) in held {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let response = read_response(&mut reader, false);
        assert_eq!(response.status, 200);
        assert!(response.index() > index);
        assert_eq!(response.json()[0]["Service"]["Service"], "web");
    }
}

#[test]
fn a_restart_moves_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"a","Check":{"TTL":"1h","Status":"passing"}}"#,
    );
    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"gone","ID":"gone-1"}"#,
    );
    registry.put("/v1/agent/service/deregister/gone-1", "");
    registry.put("/v1/agent/service/register", r#"{"Name":"b"}"#);
    let paths = [
        "/v1/health/service/a",
        "/v1/catalog/service/a",
        "/v1/health/service/gone",
        "/v1/health/service/never",
        "/v1/catalog/services",
        "/v1/health/state/any",
    ];
    let indexes = |registry: &RegistryProcess| -> Vec<u64> {
        paths.iter().map(|p| registry.get(p).index()).collect()
    };
    let before = indexes(&registry);
    registry.kill_9();
    let registry = RegistryProcess::start(dir.path(), &[]);
    assert_eq!(indexes(&registry), before, "{paths:?}");
    let b = registry.get("/v1/health/service/b").index();
    assert!(b > before[0], "a kept the index of its own last change");
}

/// A 501 reads the request's body before it answers, so the connection stays usable for the
/// client's next call (hyper closes a connection whose body was left unread, and a client
/// reusing it raced that close: python-consul2's `session.list` after `session.create`, when
/// sessions were not answered yet).
#[test]
fn a_connection_stays_open_after_a_501_with_a_body() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let mut conn = std::net::TcpStream::connect(registry.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = vec![b'x'; 200_000];
    write!(
        conn,
        "PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let read_answer = |reader: &mut std::io::BufReader<std::net::TcpStream>| -> String {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut content = vec![0u8; length];
        reader.read_exact(&mut content).unwrap();
        status
    };
    assert!(read_answer(&mut reader).contains(" 501 "));
    conn.write_all(b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        read_answer(&mut reader).contains(" 200 "),
        "the same connection answers the next call"
    );
}
