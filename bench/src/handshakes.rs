//! New mTLS connections per second, for `bench/mesh.sh`: each task opens a connection, does a
//! full TLS 1.3 handshake with a client certificate (no session resumption, so every
//! connection pays the whole handshake, as a sidecar meeting a new peer does), sends one
//! HTTP/1.1 request, reads the answer and closes. The same client for every server measured,
//! so the servers are compared with one load generator. Bounded by a count and a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Parser)]
pub(crate) struct Handshakes {
    /// The TLS server (a sidecar's inbound side, or a peer proxy's TLS frontend).
    #[arg(long)]
    addr: SocketAddr,
    /// The name the server's certificate is checked against.
    #[arg(long)]
    server_name: String,
    /// PEM files: the trusted roots, this client's certificate and key.
    #[arg(long)]
    roots: String,
    #[arg(long)]
    cert: String,
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn client_config(args: &Handshakes) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let read = |path: &str| std::fs::read(path).with_context(|| format!("reading {path}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &read(&args.roots)?[..]) {
        roots.add(cert?)?;
    }
    let chain =
        rustls_pemfile::certs(&mut &read(&args.cert)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &read(&args.key)?[..])?
        .context("no private key in the key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One connection: handshake, one request, its answer's status line checked.
async fn one(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &ServerName<'static>,
    request: &[u8],
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    tls.write_all(request).await?;
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the answer");
        }
        answer.extend_from_slice(&buf[..n]);
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
    }
    Ok(())
}

pub(crate) async fn run(args: Handshakes) -> anyhow::Result<()> {
    let connector = tokio_rustls::TlsConnector::from(client_config(&args)?);
    let name = ServerName::try_from(args.server_name.clone())?;
    let host = args.server_name.split('.').next().unwrap_or_default();
    let request: Arc<[u8]> = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .into_bytes()
        .into();
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (connector, name, request, next) = (
            connector.clone(),
            name.clone(),
            request.clone(),
            next.clone(),
        );
        let (addr, count) = (args.addr, args.count);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut last_error) = (0u64, 0u64, None);
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                match one(&connector, addr, &name, &request).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e.to_string());
                    }
                }
            }
            (ok, errors, last_error)
        }));
    }
    let (mut ok, mut errors, mut last_error) = (0, 0, None);
    for task in tasks {
        let (o, e, l) = task.await?;
        ok += o;
        errors += e;
        last_error = last_error.or(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "handshakes: {ok} ok, {errors} errors in {elapsed:.2}s = {:.0} connections/s (concurrency {}){}",
        ok as f64 / elapsed,
        args.concurrency,
        last_error
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default(),
    );
    if ok == 0 {
        bail!("no connection succeeded");
    }
    Ok(())
}
