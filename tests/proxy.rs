//! The gateway proxy as users run it: a real registry, real backend processes, a real
//! `wharf proxy`, real sockets. No timing assertions; conditions are polled with a deadline.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

/// A TCP server that writes `answer` to every connection, whatever it is sent.
fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(answer);
        }
    });
    addr
}

/// A client connection to `addr` whose reads give up after 20 s rather than hang a test.
fn connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

fn backend_of(response: &Response) -> String {
    response.header("x-backend").unwrap_or("none").to_owned()
}

/// A registry, `n` backends of `hello` registered and passing, and a proxy in front.
fn mesh(
    n: usize,
    proxy_args: &[&str],
) -> (
    tempfile::TempDir,
    RegistryProcess,
    Vec<Backend>,
    ProxyProcess,
) {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backends: Vec<Backend> = (1..=n)
        .map(|i| Backend::start(&format!("hello-{i}")))
        .collect();
    for backend in &backends {
        register(&registry, "hello", backend);
    }
    let proxy = ProxyProcess::start(&registry.url(), proxy_args);
    (dir, registry, backends, proxy)
}

#[test]
fn round_robin_spreads_requests_evenly() {
    let (_dir, _registry, _backends, proxy) = mesh(3, &[]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let response = proxy.get("hello", "/");
        assert_eq!(response.status, 200, "{}", response.text());
        *counts.entry(backend_of(&response)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (backend, count) in &counts {
        assert!(
            (99..=101).contains(count),
            "{backend} got {count} of 300: {counts:?}"
        );
    }
}

#[test]
fn host_forms_and_errors_that_say_why() {
    let (_dir, registry, _backends, proxy) =
        mesh(1, &["--try-timeout", "300ms", "--timeout", "600ms"]);
    for host in [
        "hello",
        "hello:8080",
        "hello.service.wharf",
        "HELLO.service.consul:80",
    ] {
        assert_eq!(proxy.get(host, "/").status, 200, "{host}");
    }
    let unknown = proxy.get("nope", "/");
    assert_eq!(
        (unknown.status, unknown.header("x-wharf-error")),
        (404, Some("unknown-service"))
    );

    registry.put(
        "/v1/agent/service/register",
        r#"{"Name":"down","Check":{"TTL":"1h"}}"#,
    );
    eventually("catalog seen by the proxy", || {
        proxy.get("down", "/").status != 404
    });
    let down = proxy.get("down", "/");
    assert_eq!(
        (down.status, down.header("x-wharf-error")),
        (503, Some("no-healthy-instance"))
    );

    let slow = proxy.get("hello", "/slow/3000");
    assert_eq!(
        (slow.status, slow.header("x-wharf-error")),
        (504, Some("timeout"))
    );

    // The backend's own 5xx is passed through, not dressed up as the proxy's.
    let own = proxy.get("hello", "/status/500");
    assert_eq!((own.status, own.header("x-wharf-error")), (500, None));
    assert_eq!(backend_of(&own), "hello-1");
}

#[test]
fn upstream_errors_retries_and_the_retry_budget() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let live = Backend::start("live");
    let upstream_dead = format!("dead={closed}");
    let upstream_mixed = format!("mixed={closed},{}", live.addr());
    let proxy = ProxyProcess::start(
        &registry.url(),
        &["--upstream", &upstream_dead, "--upstream", &upstream_mixed],
    );

    // A dead endpoint beside a live one costs clients nothing: connect failures are retried.
    for _ in 0..20 {
        let response = proxy.get("mixed", "/");
        assert_eq!(
            (response.status, backend_of(&response).as_str()),
            (200, "live")
        );
    }
    let retried = proxy.metric("wharf_proxy_retries_total{service=\"mixed\"}");
    assert!(retried >= 1.0);
    // The golden metrics count them too, in the last minute.
    let stats: Value = request(proxy.admin, "GET", "/stats", b"").json();
    let mixed = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mixed")
        .unwrap();
    assert_eq!(mixed["retries"].as_f64(), Some(retried), "{mixed}");

    let first = proxy.get("dead", "/");
    assert_eq!(
        (first.status, first.header("x-wharf-error")),
        (502, Some("upstream-error"))
    );
    assert!(
        first.text().contains("Connection refused") || first.text().contains("connect"),
        "{}",
        first.text()
    );
    // Retries are budgeted (20% of requests plus 10/s): a dead service soon stops being retried.
    let mut exhausted = false;
    for _ in 0..300 {
        let response = proxy.get("dead", "/");
        if response.header("x-wharf-error") == Some("retry-budget-exhausted") {
            assert_eq!(response.status, 503);
            exhausted = true;
            break;
        }
    }
    assert!(exhausted, "the retry budget never ran out");
}

#[test]
fn idempotent_requests_are_retried_and_posts_are_not() {
    let (_dir, _registry, _backends, proxy) = mesh(2, &[]);
    let before = proxy.metric("wharf_proxy_retries_total{service=\"hello\"}");
    let get = proxy.get("hello", "/status/503");
    assert_eq!(
        get.status, 503,
        "every attempt answered 503: the last answer is passed through"
    );
    assert!(
        proxy.metric("wharf_proxy_retries_total{service=\"hello\"}") > before,
        "the GET was retried"
    );
    let retries = proxy.metric("wharf_proxy_retries_total{service=\"hello\"}");
    let post = send(
        proxy.addr,
        "POST /status/503 HTTP/1.1\r\nHost: hello\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(post.status, 503);
    assert_eq!(
        proxy.metric("wharf_proxy_retries_total{service=\"hello\"}"),
        retries,
        "a POST is not retried"
    );
}

#[test]
fn kill_9_of_an_instance_under_load_fails_no_request() {
    let (_dir, registry, mut backends, proxy) = mesh(3, &[]);
    let addr = proxy.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..5_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let response = send(
                        addr,
                        "GET / HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n",
                    );
                    if response.status != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!(
                            "failed: {} {:?} {}",
                            response.status,
                            response.header("x-wharf-error"),
                            response.text()
                        );
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually("load running", || done.load(Ordering::SeqCst) >= 200);
    backends[1].kill_9();
    let at_kill = done.load(Ordering::SeqCst);
    // The registry's TCP check notices within a few seconds; the proxy drops the instance.
    eventually("hello-2 leaves the healthy set", || {
        let healthy = registry.get("/v1/health/service/hello?passing").json();
        healthy.as_array().unwrap().len() == 2
    });
    eventually("load after the kill", || {
        done.load(Ordering::SeqCst) >= at_kill + 400
    });
    let attempts_on_dead = proxy.metric(
        "wharf_proxy_upstream_duration_seconds_count{service=\"hello\",endpoint=\"hello-2\"}",
    );
    let more = done.load(Ordering::SeqCst) + 200;
    eventually("more load", || done.load(Ordering::SeqCst) >= more);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no client saw the instance die"
    );
    let later = proxy.metric(
        "wharf_proxy_upstream_duration_seconds_count{service=\"hello\",endpoint=\"hello-2\"}",
    );
    assert_eq!(
        later, attempts_on_dead,
        "the dead instance got no new traffic"
    );
}

#[test]
fn instances_come_and_go_without_a_restart() {
    let (_dir, registry, _backends, proxy) = mesh(1, &[]);
    assert_eq!(backend_of(&proxy.get("hello", "/")), "hello-1");
    let second = Backend::start("hello-2");
    register(&registry, "hello", &second);
    eventually("hello-2 takes traffic", || {
        (0..4).any(|_| backend_of(&proxy.get("hello", "/")) == "hello-2")
    });
    assert_eq!(
        registry
            .put("/v1/agent/service/deregister/hello-1", "")
            .status,
        200
    );
    eventually("hello-1 stops getting traffic", || {
        (0..6).all(|_| backend_of(&proxy.get("hello", "/")) == "hello-2")
    });
}

#[test]
fn forwarding_headers_and_hop_by_hop() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &[]);
    let response = send(
        proxy.addr,
        "GET /echo HTTP/1.1\r\nHost: hello\r\nConnection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.1.1\r\nX-Kept: yes\r\n\r\n",
    );
    let seen: Value = response.json();
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-kept"], "yes");
    assert!(
        headers.get("x-secret").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert!(headers.get("keep-alive").is_none());
    let trace = headers["traceparent"].as_str().unwrap();
    assert!(
        trace.starts_with("00-") && trace.len() == 55,
        "a trace starts at the edge: {trace}"
    );
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = send(
        proxy.addr,
        &format!(
            "GET /echo HTTP/1.1\r\nHost: hello\r\ntraceparent: {given}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(
        traced.json()["headers"]["traceparent"],
        given,
        "a valid traceparent passes unchanged"
    );
    // Bodies reach the backend intact.
    let post = send(
        proxy.addr,
        "POST /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(post.json()["body"], "hello");
}

#[test]
fn protocol_upgrades_pass_through_and_hold_their_slot() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &["--max-concurrency", "1"]);
    let mut stream = connect(proxy.addr);
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: hello\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .unwrap();
    let head = read_head(&mut stream).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping", "bytes flow both ways after the switch");
    // The open tunnel is a request in flight: with one slot, others wait their turn.
    let refused = proxy.get("hello", "/");
    assert_eq!(
        (refused.status, refused.header("x-wharf-error")),
        (503, Some("overloaded"))
    );
    drop(stream);
    eventually("the slot is free once the tunnel closes", || {
        proxy.get("hello", "/").status == 200
    });
}

/// Reads a response head byte by byte, leaving what follows unread.
fn read_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn concurrency_limit_refuses_with_a_reason() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &["--max-concurrency", "1"]);
    let addr = proxy.addr;
    // Two slow requests and quick ones race for one slot: whoever comes second is refused.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                send(
                    addr,
                    "GET /slow/2000 HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    let mut responses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !slow.iter().all(|s| s.is_finished()) && Instant::now() < deadline {
        responses.push(proxy.get("hello", "/"));
    }
    responses.extend(slow.into_iter().map(|s| s.join().unwrap()));
    let refused: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    assert!(!refused.is_empty(), "a request beyond the limit is refused");
    assert!(
        refused
            .iter()
            .all(|r| r.header("x-wharf-error") == Some("overloaded"))
    );
    assert!(
        responses.iter().any(|r| r.status == 200),
        "the one in the slot is served"
    );
}

#[test]
fn bad_requests_get_4xx_and_harm_no_one() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &[]);
    let garbage = send(proxy.addr, "GARBAGE\r\n\r\n");
    assert_eq!(
        (garbage.status, garbage.header("x-wharf-error")),
        (400, Some("malformed-request"))
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: hello\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let huge = send(proxy.addr, &huge);
    assert_eq!(
        (huge.status, huge.header("x-wharf-error")),
        (431, Some("head-too-large"))
    );
    let no_host = send(proxy.addr, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (no_host.status, no_host.header("x-wharf-error")),
        (400, Some("no-host"))
    );
    // A client that disconnects mid-request and one that sends half a header stall nobody.
    drop(std::net::TcpStream::connect(proxy.addr).unwrap());
    let mut half = std::net::TcpStream::connect(proxy.addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: hel").unwrap();
    assert_eq!(proxy.get("hello", "/").status, 200);
    let ready = request(proxy.admin, "GET", "/ready", b"");
    assert_eq!(ready.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_grpc_trailers() {
    let grpc = grpc_server().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backend = Backend::start("hello-1");
    register(&registry, "hello", &backend);
    let upstream = format!("grpc={grpc}");
    let proxy = tokio::task::spawn_blocking({
        let url = registry.url();
        move || ProxyProcess::start(&url, &["--upstream", &upstream, "--routes"])
    })
    .await
    .unwrap();

    // An h2c client reaches an HTTP/1.1 backend; the service is named by :authority.
    let (parts, body, _) = h2_request(proxy.addr, "hello.service.wharf", "/", false).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(&body[..], b"hello-1");

    // gRPC goes upstream over HTTP/2 with `te: trailers`, and its trailers come back intact.
    let (parts, body, trailers) =
        h2_request(proxy.addr, "grpc", "/grpc.health.v1.Health/Check", true).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers.get("x-saw-te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );
    assert_eq!(&body[..], b"\0\0\0\0\x02\x08\x01");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "fine");

    // gRPC's status wins over HTTP's 200 in the golden metrics: one failing in its trailers,
    // one in a trailers-only answer, beside the OK one above.
    let (parts, _, trailers) = h2_request(proxy.addr, "grpc", "/test.Svc/Unavailable", true).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        trailers.expect("trailers").get("grpc-status").unwrap(),
        "14"
    );
    let (parts, _, _) = h2_request(proxy.addr, "grpc", "/test.Svc/NotFound", true).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers.get("grpc-status").unwrap(), "5");
    let admin = proxy.admin;
    let minute = tokio::task::spawn_blocking(move || {
        let mut minute = Value::Null;
        eventually("three gRPC calls, two failed", || {
            let stats: Value = request(admin, "GET", "/stats", b"").json();
            minute = stats["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "grpc")
                .map_or(Value::Null, |s| s["minute"].clone());
            minute["requests"] == 3 && minute["failures"] == 2
        });
        minute
    })
    .await
    .unwrap();
    assert!((minute["success_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    // A gRPC method is its own route class, its failure in its trailers counted there too.
    let stats: Value =
        tokio::task::spawn_blocking(move || request(admin, "GET", "/stats", b"").json())
            .await
            .unwrap();
    let grpc_stats = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "grpc")
        .unwrap();
    // HTTP/2 bodies are counted too: the OK answer's 7 bytes at least.
    assert!(
        grpc_stats["bytes_out"].as_u64().unwrap() >= 7,
        "{grpc_stats}"
    );
    let routes = grpc_stats["routes"].clone();
    let unavailable = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/test.Svc/Unavailable")
        .unwrap_or_else(|| panic!("{routes}"));
    assert_eq!(
        (
            &unavailable["minute"]["requests"],
            &unavailable["minute"]["failures"]
        ),
        (&Value::from(1), &Value::from(1))
    );
    drop(proxy);
}

/// A client that goes away before its answer counts as `client-gone` on both transports: an
/// HTTP/1.1 client that hangs up mid-upload, an HTTP/2 client that drops its connection while
/// its request waits on a slow backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_counted_the_same_on_both_paths() {
    let (_dir, _registry, _backends, proxy) =
        tokio::task::spawn_blocking(|| mesh(1, &[])).await.unwrap();
    let gone = r#"wharf_proxy_errors_total{service="hello",reason="client-gone"}"#;
    let metric = |name: &'static str| {
        let admin = proxy.admin;
        async move {
            tokio::task::spawn_blocking(move || {
                let text = request(admin, "GET", "/metrics", b"").text();
                text.lines()
                    .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .await
            .unwrap()
        }
    };
    let until = |name: &'static str, at_least: f64| {
        let metric = &metric;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while metric(name).await < at_least {
                assert!(Instant::now() < deadline, "{name} never reached {at_least}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // HTTP/1.1: a streamed upload that stops half-way with the connection.
    {
        let mut upload = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        upload
            .write_all(b"PUT /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 1000000\r\n\r\n")
            .await
            .unwrap();
        upload.write_all(&[b'x'; 100 * 1024]).await.unwrap();
    }
    until(gone, 1.0).await;

    // HTTP/2: the connection dropped while the request waits for its answer.
    let requests = metric("wharf_proxy_requests_total").await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let waiting = tokio::spawn(async move {
        let request = http::Request::builder()
            .uri("http://hello/slow/10000")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _ = sender.send_request(request).await;
    });
    until("wharf_proxy_requests_total", requests + 1.0).await;
    waiting.abort();
    connection.abort();
    until(gone, 2.0).await;
}

#[test]
fn slow_clients_are_cut_off_without_stalling_others() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &["--header-timeout", "1s"]);
    let mut slow = connect(proxy.addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: hel").unwrap();
    assert_eq!(
        proxy.get("hello", "/").status,
        200,
        "others are served meanwhile"
    );
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "the proxy closed the slow connection rather than waiting forever: {read:?}"
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn a_response_still_streaming_holds_its_concurrency_slot() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &["--max-concurrency", "1"]);
    let mut streaming = connect(proxy.addr);
    streaming
        .write_all(b"GET /stream/3000 HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read the head: the body is still on its way.
    assert!(read_head(&mut streaming).starts_with("HTTP/1.1 200"));
    let refused = proxy.get("hello", "/");
    assert_eq!(
        (refused.status, refused.header("x-wharf-error")),
        (503, Some("overloaded"))
    );
    let mut rest = Vec::new();
    streaming.read_to_end(&mut rest).unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains('b'),
        "the body completes"
    );
    eventually("the slot is free again", || {
        proxy.get("hello", "/").status == 200
    });
}

#[test]
fn one_connection_carries_head_chunked_expect_and_pipelined_exchanges() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &[]);
    let stream = connect(proxy.addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);

    // HEAD: the length of the body that a GET would get, and no body.
    writer
        .write_all(b"HEAD / HTTP/1.1\r\nHost: hello\r\n\r\n")
        .unwrap();
    let head = read_response(&mut reader, true);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("7"))
    );

    // A chunked upload reaches the backend whole.
    writer
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
    let echo = read_response(&mut reader, false);
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.json()["body"], "hello world");

    // A chunked download, streamed by the backend in two parts.
    writer
        .write_all(b"GET /stream/20 HTTP/1.1\r\nHost: hello\r\n\r\n")
        .unwrap();
    let streamed = read_response(&mut reader, false);
    assert_eq!((streamed.status, streamed.text().as_str()), (200, "ab"));

    // Expect: 100-continue is answered before the body is sent.
    writer
        .write_all(
            b"PUT /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut reader, false).status, 100);
    writer.write_all(b"howdy").unwrap();
    let put = read_response(&mut reader, false);
    assert_eq!(put.json()["body"], "howdy");
    assert_eq!(put.json()["method"], "PUT");

    // Two requests in one write are answered in order.
    writer
        .write_all(
            b"GET /status/201 HTTP/1.1\r\nHost: hello\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: hello\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut reader, false).status, 201);
    assert_eq!(read_response(&mut reader, false).status, 202);

    // A refusal keeps the connection when the request had no body.
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: nosuch\r\n\r\nGET / HTTP/1.1\r\nHost: hello\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader, false).status, 404);
    assert_eq!(read_response(&mut reader, false).text(), "hello-1");

    // All of it went over one kept connection to the instance.
    assert_eq!(
        proxy.metric("wharf_proxy_upstream_connections_total{service=\"hello\"}"),
        1.0
    );
}

#[test]
fn http_1_0_clients_get_bodies_without_chunks_and_a_close() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &[]);
    let mut stream = connect(proxy.addr);
    stream
        .write_all(b"GET /stream/10 HTTP/1.0\r\nHost: hello\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body, "ab", "the body, delimited by the close");
}

#[test]
fn ambiguous_framing_is_refused_and_smuggles_nothing() {
    let (_dir, _registry, _backends, proxy) = mesh(1, &[]);
    // Content-Length and Transfer-Encoding together: a front end and a back end could
    // disagree on where the request ends, so it is refused and the connection closed.
    let mut stream = connect(proxy.addr);
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /status/500 HTTP/1.1\r\nHost: hello\r\n\r\n",
        )
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(raw.matches("HTTP/1.1").count(), 1, "{raw}");
    assert_eq!(proxy.get("hello", "/").status, 200);
}

#[test]
fn upstream_garbage_an_unasked_101_and_early_hints() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    // An "instance" that answers anything with bytes that are not HTTP.
    let junk_addr = answering(b"SSH-2.0-OpenSSH\r\n\0\0garbage\r\n\r\n");
    register_instance(&registry, "junk", "junk-1", junk_addr, &[], None);
    // And one that switches protocols when nobody asked it to.
    let switcher = answering(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nxxxx");
    register_instance(&registry, "switcher", "switcher-1", switcher, &[], None);
    let hinting = answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    register_instance(&registry, "hinting", "hinting-1", hinting, &[], None);
    let backend = Backend::start("hello-1");
    register(&registry, "hello", &backend);
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    let answer = proxy.get("junk", "/");
    assert_eq!(
        (answer.status, answer.header("x-wharf-error")),
        (502, Some("upstream-error")),
        "{}",
        answer.text()
    );
    assert!(answer.text().contains("bad response"), "{}", answer.text());
    // Interim answers reach the client before the final one.
    let mut client = connect(proxy.addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: hinting\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(client);
    let hints = read_response(&mut reader, false);
    assert_eq!(
        (hints.status, hints.header("link")),
        (103, Some("</style.css>; rel=preload"))
    );
    let last = read_response(&mut reader, false);
    assert_eq!((last.status, last.text().as_str()), (200, "ok"));
    let switched = proxy.get("switcher", "/");
    assert_eq!(
        (switched.status, switched.header("x-wharf-error")),
        (502, Some("upstream-error")),
        "{}",
        switched.text()
    );
    assert_eq!(proxy.get("hello", "/").status, 200, "others are unaffected");
}

#[test]
fn an_upstream_that_closes_kept_connections_costs_no_request() {
    // An instance that answers one request per connection and then closes it, without
    // saying so (as servers with short keep-alive timeouts do): the proxy must notice before
    // reusing the connection, or POSTs, which it may not retry, would fail.
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let once = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let once_addr = once.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut conn in once.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.is_empty() {
                continue; // the registry's TCP check
            }
            let length = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = conn.read_exact(&mut body);
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            drop(conn);
            let _ = closed_tx.send(());
        }
    });
    register_instance(&registry, "once", "once-1", once_addr, &[], None);
    let proxy = ProxyProcess::start(&registry.url(), &["--threads", "1"]);
    let stream = connect(proxy.addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    for i in 0..20 {
        let request = if i % 2 == 0 {
            "POST /orders HTTP/1.1\r\nHost: once\r\nContent-Length: 3\r\n\r\nabc".to_owned()
        } else {
            "GET / HTTP/1.1\r\nHost: once\r\n\r\n".to_owned()
        };
        writer.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut reader, false);
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "ok"),
            "request {i}: {:?}",
            response.header("x-wharf-error")
        );
        // The next request goes once the instance has closed the connection (a request
        // racing the close is the one case no proxy can save for a POST).
        closed_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        20,
        "each request reached the instance once"
    );
}

#[test]
fn per_service_policies_from_service_meta() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backends: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("hello-{i}")))
        .collect();
    let ring = [
        ("wharf-balance", "ring-hash"),
        ("wharf-hash-header", "x-user"),
    ];
    for backend in &backends {
        register_instance(
            &registry,
            "hello",
            &backend.name,
            backend.addr(),
            &ring,
            None,
        );
    }
    let heavy = Backend::start("api-heavy");
    let light = Backend::start("api-light");
    for (backend, weight) in [(&heavy, 9), (&light, 1)] {
        let weighted = [("wharf-balance", "weighted")];
        register_instance(
            &registry,
            "api",
            &backend.name,
            backend.addr(),
            &weighted,
            Some(weight),
        );
    }
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    eventually("all three hello instances known", || {
        (0..30)
            .map(|i| {
                let raw = format!(
                    "GET / HTTP/1.1\r\nHost: hello\r\nx-user: user-{i}\r\nConnection: close\r\n\r\n"
                );
                backend_of(&send(proxy.addr, &raw))
            })
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 3
    });

    // ring-hash on x-user: each user sticks to one instance; users spread over all three.
    for user in ["alice", "bob", "carol"] {
        let raw =
            format!("GET / HTTP/1.1\r\nHost: hello\r\nx-user: {user}\r\nConnection: close\r\n\r\n");
        let seen: std::collections::HashSet<String> = (0..20)
            .map(|_| backend_of(&send(proxy.addr, &raw)))
            .collect();
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
    }

    // weighted 9:1: of 400 requests the heavy instance gets most (expected 360; a split
    // this uneven by chance is beyond one in a billion).
    let mut counts: HashMap<String, usize> = HashMap::new();
    eventually("both api instances known", || {
        backend_of(&proxy.get("api", "/")) == "api-light"
    });
    for _ in 0..400 {
        *counts
            .entry(backend_of(&proxy.get("api", "/")))
            .or_default() += 1;
    }
    let heavy_share = counts.get("api-heavy").copied().unwrap_or(0);
    assert!(
        (300..=399).contains(&heavy_share),
        "weighted 9:1 gave {counts:?}"
    );
}

/// The golden metrics at `/stats` for a known load: 200 requests round robin over two
/// instances, one answering every fifth request 500 after 20 ms, the other at once and
/// always well: 10 % failures, the failing instance's rate 20 %, the slow one in p99, and an
/// imbalance of round robin near 1.
#[test]
fn golden_metrics_reflect_a_known_load() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let fast = Backend::start("fast");
    let slow = Backend::start_with("slow", &[("FAIL_EVERY", "5"), ("DELAY_MS", "20")]);
    register(&registry, "hello", &fast);
    register(&registry, "hello", &slow);
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    both_instances_routed(&proxy);
    let before = stats_of(&proxy, "hello");
    // Linkerd's names count the same load.
    const FAILED_500: &str = "response_total{direction=\"outbound\",authority=\"hello\",classification=\"failure\",status_code=\"500\"}";
    const LATENCY_COUNT: &str =
        "response_latency_ms_count{direction=\"outbound\",authority=\"hello\"}";
    let (failed_before, timed_before) = (proxy.metric(FAILED_500), proxy.metric(LATENCY_COUNT));
    let (mut failures, mut latencies) = (0, Vec::new());
    for _ in 0..200 {
        let started = Instant::now();
        let response = proxy.get("hello", "/");
        latencies.push(started.elapsed());
        if response.status == 500 {
            failures += 1;
        }
    }
    assert_eq!(failures, 20, "the load itself");
    assert_eq!(proxy.metric(FAILED_500) - failed_before, 20.0);
    assert_eq!(proxy.metric(LATENCY_COUNT) - timed_before, 200.0);
    let text = request(proxy.admin, "GET", "/metrics", b"").text();
    assert!(
        text.contains(
            "response_latency_ms_bucket{le=\"5.0\",direction=\"outbound\",authority=\"hello\"}"
        ) || text.contains(
            "response_latency_ms_bucket{direction=\"outbound\",authority=\"hello\",le=\"5.0\"}"
        ),
        "Linkerd's buckets: {text}"
    );
    assert!(
        text.contains("wharf_proxy_responses_total"),
        "Wharf's own names stay"
    );
    let after = stats_of(&proxy, "hello");
    let minute = |s: &Value, key: &str| s["minute"][key].as_u64().unwrap();
    assert_eq!(
        minute(&after, "requests") - minute(&before, "requests"),
        200
    );
    assert_eq!(minute(&after, "failures") - minute(&before, "failures"), 20);
    let instance = |id: &str| {
        after["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {after}"))
            .clone()
    };
    let (fast_row, slow_row) = (instance("fast"), instance("slow"));
    assert!(
        fast_row["minute"]["latency_ms"]["p99"].is_null(),
        "instances keep counts only"
    );
    // The warm-up requests count too, and did not fail: the slow one's rate is a shade
    // under 20 %, the fast one's 0.
    let slow_rate = slow_row["failure_rate"].as_f64().unwrap();
    assert!((0.18..=0.2).contains(&slow_rate), "{slow_row}");
    assert_eq!(fast_row["failure_rate"], 0.0);
    // The slow instance shows in the service's p99: at least its 20 ms, less the sketch's 2 %.
    let p = |row: &Value, q: &str| row["minute"]["latency_ms"][q].as_f64().unwrap();
    assert!(p(&after, "p99") >= 20.0 * 0.98, "{after}");
    // The proxy's p99 is within the sketch's 2 % of what the client measured, or below it
    // (the client's includes its own connection set-up).
    latencies.sort();
    let client_p99 = latencies[197].as_secs_f64() * 1000.0;
    assert!(
        p(&after, "p99") <= client_p99 * 1.02,
        "{after} vs client {client_p99} ms"
    );
    // Round robin over two: equal loads, imbalance 1; F the mean of 0 and about 0.2.
    let imbalance = after["models"]["imbalance"].as_f64().unwrap();
    assert!((0.95..=1.05).contains(&imbalance), "{after}");
    let f = after["models"]["mean_failure_rate"].as_f64().unwrap();
    assert!((0.09..=0.1).contains(&f), "{after}");
    assert!(after["ten_minutes"]["requests"].as_u64().unwrap() >= 200);
    let history: u64 = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point[0].as_u64().unwrap())
        .sum();
    // Every request since the proxy started is in its 10-second history too.
    assert_eq!(history, after["ten_minutes"]["requests"].as_u64().unwrap());
}

/// Waits until the proxy routes `hello` to both of its instances.
fn both_instances_routed(proxy: &ProxyProcess) {
    eventually("both instances in the proxy", || {
        let seen: std::collections::HashSet<String> = (0..4)
            .map(|_| backend_of(&proxy.get("hello", "/")))
            .collect();
        seen.len() == 2
    });
}

/// The `/stats` row of `service` on the proxy.
fn stats_of(proxy: &ProxyProcess, service: &str) -> Value {
    let stats = request(proxy.admin, "GET", "/stats", b"").json();
    stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .cloned()
        .unwrap_or_else(|| panic!("no {service} in {stats}"))
}

/// The registry gathers what the gateway reports: `/v1/wharf/stats` and `wharf stat` show the
/// same known load (10 % failures, all on one instance), with the catalog's health counts,
/// the gateway → service edge, and a blocking read woken by the next report.
#[test]
fn the_registry_gathers_the_proxies_golden_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let fast = Backend::start("fast");
    let flaky = Backend::start_with("flaky", &[("FAIL_EVERY", "5")]);
    register(&registry, "hello", &fast);
    register(&registry, "hello", &flaky);
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    both_instances_routed(&proxy);
    for _ in 0..200 {
        proxy.get("hello", "/");
    }
    // The registry's view is the proxy's: poll until a report carries all of it.
    let own = stats_of(&proxy, "hello");
    let total = own["minute"]["requests"].as_u64().unwrap();
    let gathered = || {
        let stats = registry.get("/v1/wharf/stats").json();
        stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "hello")
            .cloned()
            .unwrap()
    };
    eventually("the registry has the proxy's figures", || {
        gathered()["minute"]["requests"].as_u64() == Some(total)
    });
    let hello = gathered();
    assert_eq!(hello["minute"]["failures"], own["minute"]["failures"]);
    assert!(
        hello["minute"]["failures"].as_u64().unwrap() >= 20,
        "{hello}"
    );
    assert_eq!(hello["health"]["passing"], 2, "{hello}");
    let flaky_row = hello["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "flaky")
        .unwrap()
        .clone();
    assert!(
        flaky_row["failure_rate"].as_f64().unwrap() > 0.15,
        "{flaky_row}"
    );
    let stats = registry.get("/v1/wharf/stats").json();
    let edge = &stats["edges"][0];
    assert_eq!(
        (edge["source"].as_str(), edge["destination"].as_str()),
        (Some("gateway"), Some("hello"))
    );

    // A blocking read is woken by the next report (every second).
    let index = registry.get("/v1/wharf/stats").index();
    let woken = held_query(registry.addr, "/v1/wharf/stats", index, "30s")
        .join()
        .unwrap();
    assert!(woken.index() > index);

    // `wharf stat` prints the same, as a table and as JSON.
    let (code, table, err) = wharf(&registry.url(), &["stat"]);
    assert_eq!(code, 0, "{err}");
    let line = table
        .lines()
        .find(|l| l.starts_with("hello"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("2/2"), "{table}");
    let (code, json, err) = wharf(&registry.url(), &["stat", "hello", "--json"]);
    assert_eq!(code, 0, "{err}");
    let one: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(one["name"], "hello");
    assert!(one["minute"]["requests"].as_u64().unwrap() >= total);
    let (code, instances, _) = wharf(&registry.url(), &["stat", "hello"]);
    assert_eq!(code, 0);
    assert!(
        instances.contains("flaky") && instances.contains("fast"),
        "{instances}"
    );
    let (code, _, err) = wharf(&registry.url(), &["stat", "nope"]);
    assert_eq!(code, 2, "{err}");
}

/// `--access-log`: a JSON line per request, for answers and refusals alike.
#[test]
fn the_access_log_has_a_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backend = Backend::start("hello-1");
    // Route classes on for hello, by its meta.
    let routes = [("wharf-routes", "on")];
    register_instance(&registry, "hello", "hello-1", backend.addr(), &routes, None);
    let log = dir.path().join("access.log");
    let proxy = ProxyProcess::start(&registry.url(), &["--access-log", log.to_str().unwrap()]);
    eventually("hello through the gateway", || {
        proxy.get("hello", "/").status == 200
    });
    assert_eq!(proxy.get("hello", "/logged?x=1").status, 200);
    assert_eq!(proxy.get("nope", "/").status, 404);
    let mut lines: Vec<Value> = Vec::new();
    eventually("both requests logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        lines.iter().any(|l| l["authority"] == "nope")
    });
    let answered = lines.iter().find(|l| l["path"] == "/logged?x=1").unwrap();
    assert_eq!(answered["status"], 200);
    assert_eq!(answered["authority"], "hello");
    assert_eq!(answered["caller"], "gateway");
    assert_eq!(answered["direction"], "outbound");
    assert_eq!(answered["instance"], "hello-1");
    assert_eq!(answered["upstream"], backend.addr().to_string());
    assert_eq!(answered["protocol"], "HTTP/1.1");
    assert!(
        answered["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let refused = lines.iter().find(|l| l["authority"] == "nope").unwrap();
    assert_eq!(refused["status"], 404);
    assert_eq!(refused["error"], "unknown-service");
    assert!(refused.get("instance").is_none());

    // The golden metrics by route class: the method and the path's first segment.
    let stats: Value = request(proxy.admin, "GET", "/stats", b"").json();
    let hello = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hello")
        .unwrap();
    let route = |name: &str| {
        hello["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .map(|r| r["minute"]["requests"].as_u64().unwrap())
    };
    assert_eq!(route("GET /logged"), Some(1), "{hello}");
    assert!(route("GET /").unwrap() >= 1, "{hello}");
    // Bytes both ways: every request's head came in, every answer carried `hello-1`.
    let answered = hello["minute"]["requests"].as_u64().unwrap();
    assert!(
        hello["bytes_in"].as_u64().unwrap() >= answered * 16,
        "{hello}"
    );
    assert!(
        hello["bytes_out"].as_u64().unwrap() >= answered * 7,
        "{hello}"
    );

    // A client's connection held open shows in the registry's count of open connections.
    let held = std::net::TcpStream::connect(proxy.addr).unwrap();
    eventually("the held connection counted", || {
        registry.get("/v1/wharf/stats").json()["open_connections"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    drop(held);
}

/// The example `hello` (axum; fast enough for thousands of requests a test) on a port of its
/// own choosing, answering `greeting`; killed on drop.
struct Hello {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Hello {
    fn start(greeting: &str) -> Hello {
        use std::io::BufRead;
        let program = std::path::Path::new(WHARF)
            .parent()
            .unwrap()
            .join("examples/hello");
        let mut child = std::process::Command::new(program)
            .env("PORT", "0")
            .env("GREETING", greeting)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start examples/hello");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("hello did not say where it listens: {line:?}"));
        Hello { child, addr }
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One example `hello` per (name, version), each registered as an instance of `service` with
/// its `version` (and `meta`) in its meta, answering its name.
fn start_versions(
    registry: &RegistryProcess,
    service: &str,
    versions: &[(&str, &str)],
    meta: &[(&str, &str)],
) -> Vec<Hello> {
    versions
        .iter()
        .map(|(name, version)| {
            let backend = Hello::start(name);
            let mut all = vec![("version", *version)];
            all.extend_from_slice(meta);
            register_instance(registry, service, name, backend.addr, &all, None);
            backend
        })
        .collect()
}

/// A `service-resolver` of `service` with subsets `v1` and `v2` by `Service.Meta.version`.
fn versions_resolver(service: &str) -> Value {
    serde_json::json!({
        "Kind": "service-resolver", "Name": service,
        "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"},
            "v2": {"Filter": "Service.Meta.version == v2"},
        },
    })
}

/// Which backend answered each of `count` requests to `service` through the proxy (its
/// body), over one HTTP/1.1 connection kept alive, or over one HTTP/2 connection with 16
/// streams at a time.
async fn answered_by(
    proxy: std::net::SocketAddr,
    service: &str,
    count: usize,
    http2: bool,
) -> HashMap<String, usize> {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let request = || {
        http::Request::builder()
            .uri(format!("http://{service}/"))
            .header("host", service)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    async fn backend(response: http::Response<hyper::body::Incoming>) -> String {
        use http_body_util::BodyExt;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }
    let mut counts = HashMap::new();
    if http2 {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..count / 16 {
            let batch: Vec<_> = (0..16)
                .map(|_| {
                    let mut sender = sender.clone();
                    let request = request();
                    tokio::spawn(async move {
                        backend(sender.send_request(request).await.unwrap()).await
                    })
                })
                .collect();
            for answer in batch {
                *counts.entry(answer.await.unwrap()).or_insert(0) += 1;
            }
        }
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        for _ in 0..count {
            sender.ready().await.unwrap();
            let name = backend(sender.send_request(request()).await.unwrap()).await;
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_gives_each_subset_its_share_of_requests_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backends = start_versions(
        &registry,
        "hello",
        &[("v1-a", "v1"), ("v1-b", "v1"), ("v2", "v2")],
        &[],
    );
    let proxy = tokio::task::spawn_blocking({
        let url = registry.url();
        move || ProxyProcess::start(&url, &[])
    })
    .await
    .unwrap();
    let put = |body: Value| {
        let answer = tokio::task::block_in_place(|| registry.put("/v1/config", &body.to_string()));
        assert_eq!(
            (answer.status, answer.text()),
            (200, "true".to_owned()),
            "{body}"
        );
    };
    put(versions_resolver("hello"));
    let split = |v1: f64, v2: f64| {
        serde_json::json!({
            "Kind": "service-splitter", "Name": "hello",
            "Splits": [{"Weight": v1, "ServiceSubset": "v1"}, {"Weight": v2, "ServiceSubset": "v2"}],
        })
    };
    // All to v2 first, so that the switch to the split measured is seen when v1 answers.
    put(split(0.0, 100.0));
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered_by(proxy.addr, "hello", 30, false).await.get("v2") != Some(&30) {
        assert!(
            Instant::now() < deadline,
            "the proxy never sent everything to v2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(split(99.0, 1.0));
    while answered_by(proxy.addr, "hello", 1, false)
        .await
        .contains_key("v2")
    {
        assert!(
            Instant::now() < deadline,
            "the proxy never took the 99/1 split"
        );
    }

    // 1 % of 10,000 requests on one kept-alive connection: 100 ± 50 (±0.5 %).
    let counts = answered_by(proxy.addr, "hello", 10_000, false).await;
    let v2 = counts.get("v2").copied().unwrap_or(0);
    eprintln!("99/1 over 10,000 HTTP/1.1 requests: {counts:?}");
    assert!((50..=150).contains(&v2), "{counts:?}");
    assert!(
        counts["v1-a"].abs_diff(counts["v1-b"]) <= 100,
        "v1 balanced: {counts:?}"
    );

    // 10 % over HTTP/2 streams of one connection: each stream drawn on its own.
    put(split(90.0, 10.0));
    while answered_by(proxy.addr, "hello", 100, true)
        .await
        .get("v2")
        .copied()
        .unwrap_or(0)
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "the proxy never took the 90/10 split"
        );
    }
    let counts = answered_by(proxy.addr, "hello", 10_000, true).await;
    let v2 = counts.get("v2").copied().unwrap_or(0);
    eprintln!("90/10 over 10,000 HTTP/2 streams: {counts:?}");
    assert!((950..=1050).contains(&v2), "{counts:?}");

    // Each subset's golden metrics reach the registry, and `wharf stat` shows them.
    let subsets = |registry: &RegistryProcess| {
        let stats = registry.get("/v1/wharf/stats").json();
        let hello = stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "hello")
            .cloned()
            .unwrap_or_default();
        let requests = |name: &str| {
            hello["subsets"].as_array().and_then(|all| {
                all.iter()
                    .find(|s| s["subset"] == name)
                    .and_then(|s| s["minute"]["requests"].as_u64())
            })
        };
        (requests("v1"), requests("v2"))
    };
    tokio::task::block_in_place(|| {
        eventually(
            "the subsets' figures in the registry",
            || matches!(subsets(&registry), (Some(v1), Some(v2)) if v1 >= 18_900 && v2 >= 1_100),
        );
        let (code, out, err) = wharf(&registry.url(), &["stat", "hello"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("SUBSET") && out.contains("v2"), "{out}");
    });

    // A split naming a subset the resolver lacks, or not adding up, is refused.
    let bad =
        tokio::task::block_in_place(|| registry.put("/v1/config", &split(90.0, 5.0).to_string()));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("must be 100"), "{}", bad.text());
    let unknown = serde_json::json!({"Kind": "service-splitter", "Name": "hello",
        "Splits": [{"Weight": 100, "ServiceSubset": "v3"}]});
    let bad = tokio::task::block_in_place(|| registry.put("/v1/config", &unknown.to_string()));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("no such subset"), "{}", bad.text());
    // ... and a share to a subset no instance is in: nothing would answer it.
    put(serde_json::json!({
        "Kind": "service-resolver", "Name": "hello",
        "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"},
            "v2": {"Filter": "Service.Meta.version == v2"},
            "v3": {"Filter": "Service.Meta.version == v3"},
        },
    }));
    let empty = serde_json::json!({"Kind": "service-splitter", "Name": "hello",
        "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v3"}]});
    let bad = tokio::task::block_in_place(|| registry.put("/v1/config", &empty.to_string()));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("matches no instance"), "{}", bad.text());
    drop(backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_sticky_by_its_hash_header_keeps_each_user_on_one_subset() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let backends = start_versions(
        &registry,
        "sticky",
        &[("v1", "v1"), ("v2", "v2")],
        &[("wharf-hash-header", "x-user")],
    );
    let proxy = tokio::task::spawn_blocking({
        let url = registry.url();
        move || ProxyProcess::start(&url, &[])
    })
    .await
    .unwrap();
    let put = |body: Value| {
        let answer = tokio::task::block_in_place(|| registry.put("/v1/config", &body.to_string()));
        assert_eq!(answer.status, 200, "{}", answer.text());
    };
    put(versions_resolver("sticky"));
    put(serde_json::json!({
        "Kind": "service-splitter", "Name": "sticky",
        "Splits": [{"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "ServiceSubset": "v2"}],
    }));
    let ask = |user: String| {
        let proxy = proxy.addr;
        tokio::task::block_in_place(move || {
            send(
                proxy,
                &format!(
                    "GET / HTTP/1.1\r\nHost: sticky\r\nx-user: {user}\r\nConnection: close\r\n\r\n"
                ),
            )
            .text()
        })
    };
    // Once the proxy has the split, each user's requests all reach one version, and the
    // users spread over both.
    let mut users = std::collections::BTreeMap::new();
    eventually("each user on one version, both versions used", || {
        users.clear();
        for n in 0..20 {
            let answers: std::collections::BTreeSet<String> =
                (0..10).map(|_| ask(format!("user-{n}"))).collect();
            users.insert(n, answers);
        }
        users.values().all(|a| a.len() == 1)
            && users.values().any(|a| a.contains("v1"))
            && users.values().any(|a| a.contains("v2"))
    });
    drop(backends);
}
