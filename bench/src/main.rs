//! Load generators for `bench/registry.sh`: durable registrations, health reads and held
//! blocking queries against Wharf, and the same HTTP load against etcd's JSON gateway, so
//! that both are measured with one client; and for `bench/mesh.sh`, new mTLS connections
//! ([`handshakes`]). Every loop is bounded by a count and a deadline, and talks to loopback
//! only.

mod handshakes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PUT /v1/agent/service/register with a TTL check, each a new instance.
    Register(Load),
    /// POST /v3/kv/put to etcd's gateway with a value of the same size.
    EtcdPut(Load),
    /// GET /v1/health/service/NAME?passing.
    Read(Load),
    /// POST /v3/kv/range to etcd's gateway for one key.
    EtcdRange(Load),
    /// Hold N blocking queries, report registry memory, then wake them with one change.
    Hold(Hold),
    /// UDP DNS questions at a fixed rate; reports latency percentiles and losses.
    DnsLatency(DnsLatency),
    /// New mTLS connections (full handshakes), one request each.
    Handshakes(handshakes::Handshakes),
    /// A registration through one registry node waking a blocking query held on another.
    Wake(Wake),
    /// PUT /v1/kv/bench/NAME-i with the bytes etcd-put stores, each a new key.
    KvPut(Load),
    /// GET /v1/kv/bench/NAME-1 (written by kv-put first).
    KvRead(Load),
    /// A lock handed over: its holder's session destroyed, the waiter's blocking read
    /// returns and its acquire succeeds.
    LockHandover(LockHandover),
}

#[derive(Parser)]
struct LockHandover {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// The sessions' lock delay, e.g. 0s or 1s.
    #[arg(long, default_value = "0s")]
    lock_delay: String,
}

#[derive(Parser)]
struct Wake {
    /// The node registrations go through.
    #[arg(long)]
    writer: String,
    /// The node the blocking query is held on.
    #[arg(long)]
    reader: String,
    #[arg(long, default_value_t = 200)]
    rounds: u64,
}

#[derive(Parser)]
struct DnsLatency {
    /// Server address, e.g. 127.0.0.1:8600.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// Questions per second.
    #[arg(long)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// NAME:TYPE pairs asked in turn (TYPE: A or SRV).
    #[arg(
        long,
        default_value = "hello.service.wharf:A,hello.service.wharf:SRV",
        value_delimiter = ','
    )]
    questions: Vec<String>,
}

#[derive(Parser)]
struct Load {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests in all (the loop also stops at --seconds).
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value = "bench")]
    service: String,
    /// An ACL token, sent as `?token=` on reads.
    #[arg(long)]
    token: Option<String>,
}

#[derive(Parser)]
struct Hold {
    #[arg(long)]
    url: String,
    /// Process id of the registry, to read its memory.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Spread the watchers over this many services; one of them is then changed.
    #[arg(long, default_value_t = 1)]
    services: usize,
    /// Watch KV keys (`/v1/kv/heldN`) instead of services.
    #[arg(long)]
    kv: bool,
}

fn client(pool: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .build_http()
}

async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn registration(service: &str, i: u64) -> Vec<u8> {
    serde_json::json!({
        "Name": service, "ID": format!("{service}-{i}"), "Address": "127.0.0.1",
        "Port": 1024 + (i % 60000), "Tags": ["bench"], "Check": {"TTL": "1h", "Status": "passing"},
    })
    .to_string()
    .into_bytes()
}

/// Runs `make(i)` requests from `concurrency` tasks; prints rate and latency percentiles.
async fn run_load(
    label: &str,
    load: &Load,
    make: impl Fn(u64) -> (&'static str, String, Vec<u8>) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let client = client(load.concurrency);
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let (client, next, make) = (client.clone(), next.clone(), make.clone());
        let count = load.count;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    return (latencies, errors);
                }
                let (method, url, body) = make(i);
                let sent = Instant::now();
                match send(&client, method, &url, body).await {
                    Ok((200, _)) => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{label}: {} ok, {errors} errors in {:.2}s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms (concurrency {})",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        load.concurrency,
    );
    if latencies.is_empty() {
        bail!("{label}: no request succeeded");
    }
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

async fn held(client: &HttpClient, url: &str) -> anyhow::Result<u64> {
    let (_, body) = send(client, "GET", &format!("{url}/metrics"), Vec::new()).await?;
    let text = String::from_utf8_lossy(&body);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("wharf_registry_blocking_queries_held "))
        .context("held gauge")?;
    Ok(value.trim().parse::<f64>()? as u64)
}

/// Per round: a blocking query held on the reader (its gauge says so), then a registration
/// through the writer; the time from the write's start to the query's answer.
async fn wake(args: Wake) -> anyhow::Result<()> {
    let control = client(4);
    let (writer, reader) = (
        args.writer.trim_end_matches('/').to_owned(),
        args.reader.trim_end_matches('/').to_owned(),
    );
    let mut latencies = Vec::with_capacity(args.rounds as usize);
    for round in 0..args.rounds {
        let request = http::Request::get(format!("{reader}/v1/health/service/wake"))
            .body(Full::new(Bytes::new()))?;
        let response = control.request(request).await?;
        let index: u64 = response.headers()["x-consul-index"].to_str()?.parse()?;
        response.into_body().collect().await?;
        let path = format!("{reader}/v1/health/service/wake?index={index}&wait=30s");
        let watcher = control.clone();
        let query = tokio::spawn(async move { send(&watcher, "GET", &path, Vec::new()).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(&control, &reader).await? < 1 {
            if Instant::now() > deadline {
                bail!("the blocking query was not held on the reader within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        send(
            &control,
            "PUT",
            &format!("{writer}/v1/agent/service/register"),
            registration("wake", round),
        )
        .await?;
        let (status, _) = tokio::time::timeout(Duration::from_secs(30), query).await???;
        if status != 200 {
            bail!("the blocking query answered {status}");
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "wake: {} rounds; from the write on {writer} to the answer on {reader}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    Ok(())
}

async fn hold(args: Hold) -> anyhow::Result<()> {
    let control = client(4);
    let url = args.url.trim_end_matches('/').to_owned();
    let services = args.services.max(1);
    let mut indexes = Vec::with_capacity(services);
    let watched = |s: usize| {
        if args.kv {
            format!("{url}/v1/kv/held{s}")
        } else {
            format!("{url}/v1/health/service/held{s}")
        }
    };
    let change = |s: usize, round: u64| {
        if args.kv {
            (
                format!("{url}/v1/kv/held{s}"),
                round.to_string().into_bytes(),
            )
        } else {
            (
                format!("{url}/v1/agent/service/register"),
                registration(&format!("held{s}"), round),
            )
        }
    };
    for s in 0..services {
        let (target, body) = change(s, 0);
        send(&control, "PUT", &target, body).await?;
        let request = http::Request::get(watched(s)).body(Full::new(Bytes::new()))?;
        let response = control.request(request).await?;
        indexes.push(
            response.headers()["x-consul-index"]
                .to_str()?
                .parse::<u64>()?,
        );
        response.into_body().collect().await?;
    }
    let before = rss_kib(args.pid)?;

    let watchers = client(args.watchers);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for w in 0..args.watchers {
        let (watchers, done_tx) = (watchers.clone(), done_tx.clone());
        let s = w % services;
        let path = format!("{}?index={}&wait=2m", watched(s), indexes[s]);
        tokio::spawn(async move {
            let result = send(&watchers, "GET", &path, Vec::new()).await;
            let _ = done_tx.send((s, Instant::now(), result.is_ok()));
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while held(&control, &url).await? < args.watchers as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} queries held after 60s",
                held(&control, &url).await?,
                args.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = rss_kib(args.pid)?;
    let woken = args.watchers.div_ceil(services);
    let sent = Instant::now();
    let (target, body) = change(0, 1);
    send(&control, "PUT", &target, body).await?;
    let acked = Instant::now();
    let mut from_ack = Vec::with_capacity(woken);
    let mut failed = 0;
    while from_ack.len() < woken {
        let Some((s, at, ok)) =
            tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await?
        else {
            break;
        };
        if s != 0 {
            bail!("a watcher of held{s} woke for a change to held0");
        }
        if !ok {
            failed += 1;
        }
        from_ack.push(at.saturating_duration_since(acked));
    }
    let still_held = held(&control, &url).await?;
    from_ack.sort_unstable();
    let pct = |p: f64| {
        from_ack[((from_ack.len() as f64 * p) as usize).min(from_ack.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "hold: {} watchers over {services} {}; registry RSS {:.1} MiB idle -> {:.1} MiB while holding ({:.1} KiB per query)",
        args.watchers,
        if args.kv { "keys" } else { "services" },
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        (during.saturating_sub(before)) as f64 / args.watchers as f64,
    );
    println!(
        "hold: one change acknowledged in {:.2} ms woke {} watchers: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms after the ack; {failed} failed; {still_held} others still held",
        (acked - sent).as_secs_f64() * 1000.0,
        from_ack.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}

/// Creates a session with `lock_delay`; its id.
async fn session(client: &HttpClient, url: &str, lock_delay: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({"TTL": "30s", "LockDelay": lock_delay}).to_string();
    let (status, answer) = send(
        client,
        "PUT",
        &format!("{url}/v1/session/create"),
        body.into_bytes(),
    )
    .await?;
    if status != 200 {
        bail!("session create answered {status}");
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["ID"].as_str().context("session ID")?.to_owned())
}

/// Per round: a holder's session holds `lock`; a waiter blocks on the key; the holder's
/// session is destroyed; the time until the waiter's blocking read returns and its acquire
/// (retried while the lock delay refuses it) succeeds.
async fn lock_handover(args: LockHandover) -> anyhow::Result<()> {
    let control = client(4);
    let url = args.url.trim_end_matches('/').to_owned();
    // A key of its own per run: the last holder of an earlier run still holds its key.
    let key = format!(
        "{url}/v1/kv/bench/lock-{}-{}",
        args.lock_delay,
        std::process::id()
    );
    let mut holder = session(&control, &url, &args.lock_delay).await?;
    let (status, body) = send(
        &control,
        "PUT",
        &format!("{key}?acquire={holder}"),
        b"0".to_vec(),
    )
    .await?;
    if status != 200 || body.as_ref() != b"true" {
        bail!("the first acquire failed");
    }
    let mut to_read = Vec::new();
    let mut to_acquire = Vec::new();
    let mut refused = 0u64;
    for round in 0..args.rounds {
        let waiter = session(&control, &url, &args.lock_delay).await?;
        let request = http::Request::get(&key).body(Full::new(Bytes::new()))?;
        let response = control.request(request).await?;
        let index: u64 = response.headers()["x-consul-index"].to_str()?.parse()?;
        response.into_body().collect().await?;
        let blocked = control.clone();
        let path = format!("{key}?index={index}&wait=30s");
        let read = tokio::spawn(async move {
            let answer = send(&blocked, "GET", &path, Vec::new()).await;
            (Instant::now(), answer)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(&control, &url).await? < 1 {
            if Instant::now() > deadline {
                bail!("the waiter's read was not held within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        send(
            &control,
            "PUT",
            &format!("{url}/v1/session/destroy/{holder}"),
            Vec::new(),
        )
        .await?;
        let (read_at, answer) = tokio::time::timeout(Duration::from_secs(30), read).await??;
        let (_, body) = answer?;
        let entry: serde_json::Value = serde_json::from_slice(&body)?;
        if entry[0].get("Session").is_some() {
            bail!("round {round}: the read returned with the lock still held");
        }
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, body) = send(
                &control,
                "PUT",
                &format!("{key}?acquire={waiter}"),
                round.to_string().into_bytes(),
            )
            .await?;
            if body.as_ref() == b"true" {
                break;
            }
            refused += 1;
            if Instant::now() > give_up {
                bail!("round {round}: the waiter never got the lock");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_read.push(read_at - started);
        to_acquire.push(started.elapsed());
        holder = waiter;
    }
    let report = |what: &str, latencies: &mut Vec<Duration>| {
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "lock handover (lock delay {}): {} rounds; destroy -> {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            args.lock_delay,
            latencies.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    };
    report("waiter's read returns", &mut to_read);
    report("waiter holds the lock", &mut to_acquire);
    println!("lock handover: {refused} acquires refused by the lock delay on the way");
    Ok(())
}

/// A DNS question in wire format (RD set, class IN).
fn dns_question(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

async fn dns_latency(args: DnsLatency) -> anyhow::Result<()> {
    let questions: Vec<(String, u16)> = args
        .questions
        .iter()
        .map(|q| {
            let (name, kind) = q.rsplit_once(':').context("NAME:TYPE")?;
            let qtype = match kind {
                "A" => 1,
                "SRV" => 33,
                "AAAA" => 28,
                other => bail!("unknown type {other}"),
            };
            Ok((name.to_owned(), qtype))
        })
        .collect::<anyhow::Result<_>>()?;
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    socket.connect(args.server).await?;
    let total = args.rate * args.seconds;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..65_536).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let receiver = {
        let (socket, sent_at) = (socket.clone(), sent_at.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total as usize);
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok(Ok(len)) =
                    tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
                else {
                    return latencies;
                };
                if len < 2 {
                    continue;
                }
                let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                let sent = sent_at[id].swap(0, Ordering::Relaxed);
                if sent != 0 {
                    let now = origin.elapsed().as_nanos() as u64;
                    latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
                }
            }
        })
    };
    // Send in 1 ms slots, each with its share of the rate.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while sent < total && Instant::now() < deadline {
        tick.tick().await;
        let due = ((origin.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
        while sent < due {
            let id = (sent % 65_536) as u16;
            let (name, qtype) = &questions[(sent as usize) % questions.len()];
            sent_at[usize::from(id)]
                .store(origin.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
            let _ = socket.send(&dns_question(id, name, *qtype)).await;
            sent += 1;
        }
    }
    let mut latencies = receiver.await?;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "dns latency at {} q/s for {}s against {}: {} answered of {sent}; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        args.rate,
        args.seconds,
        args.server,
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Register(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            run_load("wharf register", &load, move |i| {
                (
                    "PUT",
                    format!("{url}/v1/agent/service/register"),
                    registration(&service, i),
                )
            })
            .await
        }
        Command::EtcdPut(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            run_load("etcd put", &load, move |i| {
                let key = format!("bench/{service}-{i}");
                let value = registration(&service, i);
                let body =
                    serde_json::json!({"key": base64(key.as_bytes()), "value": base64(&value)});
                (
                    "POST",
                    format!("{url}/v3/kv/put"),
                    body.to_string().into_bytes(),
                )
            })
            .await
        }
        Command::Read(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            let token = load
                .token
                .as_ref()
                .map_or_else(String::new, |t| format!("&token={t}"));
            run_load("wharf health read", &load, move |_| {
                (
                    "GET",
                    format!("{url}/v1/health/service/{service}?passing{token}"),
                    Vec::new(),
                )
            })
            .await
        }
        Command::EtcdRange(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            run_load("etcd range", &load, move |_| {
                let body =
                    serde_json::json!({"key": base64(format!("bench/{service}-1").as_bytes())});
                (
                    "POST",
                    format!("{url}/v3/kv/range"),
                    body.to_string().into_bytes(),
                )
            })
            .await
        }
        Command::Hold(args) => hold(args).await,
        Command::DnsLatency(args) => dns_latency(args).await,
        Command::Handshakes(args) => handshakes::run(args).await,
        Command::Wake(args) => wake(args).await,
        Command::KvPut(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            run_load("wharf kv put", &load, move |i| {
                (
                    "PUT",
                    format!("{url}/v1/kv/bench/{service}-{i}"),
                    registration(&service, i),
                )
            })
            .await
        }
        Command::KvRead(load) => {
            let (url, service) = (load.url.clone(), load.service.clone());
            run_load("wharf kv read", &load, move |_| {
                ("GET", format!("{url}/v1/kv/bench/{service}-1"), Vec::new())
            })
            .await
        }
        Command::LockHandover(args) => lock_handover(args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64(input.as_bytes()), expected);
        }
    }
}
