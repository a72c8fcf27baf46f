//! `wharf kv get|put|delete|list|watch` and `wharf lock`: Consul's KV store from the
//! command line, with `consul kv`'s and `consul lock`'s behaviour.
//!
//! `wharf lock PREFIX -- CMD...` holds `PREFIX/.lock` with a session of its own while CMD
//! runs: it waits (blocking on the key) until the lock is free, takes it, starts CMD, renews
//! the session at half its TTL, and watches the key; if the lock is lost (the session
//! invalidated, the key taken or deleted) CMD is stopped (SIGTERM, then SIGKILL after five
//! seconds) and wharf exits 1. When CMD ends the lock is released and the session destroyed,
//! and wharf exits with CMD's status.

use std::io::Read;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use wharf_client::{Blocking, Client, KvPair, KvWrite, SessionSpec};

use crate::cli::{KvCommand, KvDeleteArgs, KvGetArgs, KvKeyArgs, KvListArgs, KvPutArgs, LockArgs};
use crate::client_cmds::client;

/// How long a blocking read of the CLI waits before asking again.
const WAIT: Duration = Duration::from_secs(60);

/// CMD's exit status, for `main` to exit with (nothing printed).
#[derive(Debug)]
pub(crate) struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

pub(crate) async fn run(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get(args) => get(args).await,
        KvCommand::Put(args) => put(args).await,
        KvCommand::Delete(args) => delete(args).await,
        KvCommand::List(args) => list(args).await,
        KvCommand::Watch(args) => watch(args).await,
    }
}

fn text(value: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(value.as_deref().unwrap_or_default()).into_owned()
}

fn detailed(pair: &KvPair) -> String {
    format!(
        "CreateIndex      {}\nFlags            {}\nKey              {}\nLockIndex        {}\nModifyIndex      {}\nSession          {}\nValue            {}",
        pair.create_index,
        pair.flags,
        pair.key,
        pair.lock_index,
        pair.modify_index,
        pair.session.as_deref().unwrap_or("-"),
        text(&pair.value)
    )
}

async fn get(args: KvGetArgs) -> anyhow::Result<()> {
    let client = client(&args.registry)?;
    if args.recurse {
        for pair in client.kv_list(&args.key).await? {
            if args.detailed {
                println!("{}\n", detailed(&pair));
            } else {
                println!("{}:{}", pair.key, text(&pair.value));
            }
        }
        return Ok(());
    }
    match client.kv_get(&args.key, None).await?.0 {
        Some(pair) if args.detailed => println!("{}", detailed(&pair)),
        Some(pair) => println!("{}", text(&pair.value)),
        None => bail!("no key exists at {:?}", args.key),
    }
    Ok(())
}

/// The value as given: text, `-` (standard input) or `@FILE`.
fn value_of(given: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match given {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .context("reading the value from standard input")?;
            Ok(value)
        }
        Some(file) if file.starts_with('@') => std::fs::read(&file[1..])
            .with_context(|| format!("reading the value from {}", &file[1..])),
        Some(text) => Ok(text.as_bytes().to_vec()),
    }
}

async fn put(args: KvPutArgs) -> anyhow::Result<()> {
    let value = value_of(args.value.as_deref())?;
    let write = KvWrite {
        flags: args.flags,
        cas: args.cas,
        ..KvWrite::default()
    };
    if !client(&args.registry)?
        .kv_put(&args.key, value, &write)
        .await?
    {
        bail!(
            "did not write {:?}: its ModifyIndex is not {}",
            args.key,
            args.cas.unwrap_or_default()
        );
    }
    println!("Success! Data written to: {}", args.key);
    Ok(())
}

async fn delete(args: KvDeleteArgs) -> anyhow::Result<()> {
    let client = client(&args.registry)?;
    if !client.kv_delete(&args.key, args.recurse, args.cas).await? {
        bail!(
            "did not delete {:?}: its ModifyIndex is not {}",
            args.key,
            args.cas.unwrap_or_default()
        );
    }
    if args.recurse {
        println!("Success! Deleted keys with prefix: {}", args.key);
    } else {
        println!("Success! Deleted key: {}", args.key);
    }
    Ok(())
}

async fn list(args: KvListArgs) -> anyhow::Result<()> {
    for pair in client(&args.registry)?.kv_list(&args.prefix).await? {
        println!("{}", pair.key);
    }
    Ok(())
}

async fn watch(args: KvKeyArgs) -> anyhow::Result<()> {
    let client = client(&args.registry)?;
    let mut index = 0;
    let mut last: Option<Option<KvPair>> = None;
    loop {
        let blocking = (index > 0).then_some(Blocking { index, wait: WAIT });
        let (pair, next) = match client.kv_get(&args.key, blocking).await {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("wharf: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Consul's advice: an index that goes backwards (a restored store) starts over.
        index = if next < index { 0 } else { next };
        let changed = match (&last, &pair) {
            (None, _) => true,
            (Some(before), now) => {
                before.as_ref().map(|p| p.modify_index) != now.as_ref().map(|p| p.modify_index)
            }
        };
        if changed {
            match &pair {
                Some(pair) => println!("{}", text(&pair.value)),
                None => println!("(absent)"),
            }
        }
        last = Some(pair);
    }
}

/// `wharf lock PREFIX -- CMD...`.
pub(crate) async fn lock(args: LockArgs) -> anyhow::Result<()> {
    let client = client(&args.registry)?;
    let key = format!("{}/.lock", args.prefix.trim_end_matches('/'));
    let spec = SessionSpec {
        name: format!("wharf lock {}", args.prefix),
        ttl: args.ttl,
        lock_delay: args.lock_delay,
        behavior: "release",
    };
    let session = client.session_create(&spec).await?;
    let held = async {
        acquire(&client, &key, &session).await?;
        eprintln!("wharf: holding {key}; running {}", args.command.join(" "));
        hold_while_running(&client, &key, &session, &args).await
    }
    .await;
    // Whatever happened, let go: release the lock and end the session.
    let _ = client
        .kv_put(
            &key,
            Vec::new(),
            &KvWrite {
                release: Some(session.clone()),
                ..KvWrite::default()
            },
        )
        .await;
    let _ = client.session_destroy(&session).await;
    let status = held?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ExitWith(u8::try_from(code).unwrap_or(1)).into()),
        None => Err(ExitWith(1).into()),
    }
}

/// Waits until `session` holds `key`.
async fn acquire(client: &Client, key: &str, session: &str) -> anyhow::Result<()> {
    let take = KvWrite {
        acquire: Some(session.to_owned()),
        ..KvWrite::default()
    };
    let mut announced = false;
    loop {
        let (pair, index) = client.kv_get(key, None).await?;
        let free = pair.as_ref().is_none_or(|p| p.session.is_none());
        if free && client.kv_put(key, Vec::new(), &take).await? {
            return Ok(());
        }
        if !announced {
            eprintln!("wharf: waiting for {key}");
            announced = true;
        }
        // Held by another (or in its lock delay): wait for the key to change, or a while.
        client
            .kv_get(
                key,
                Some(Blocking {
                    index,
                    wait: Duration::from_secs(5),
                }),
            )
            .await?;
    }
}

/// Runs the command while the lock stays ours; its exit status.
async fn hold_while_running(
    client: &Client,
    key: &str,
    session: &str,
    args: &LockArgs,
) -> anyhow::Result<ExitStatus> {
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {:?}", args.command[0]))?;
    let renew = async {
        loop {
            tokio::time::sleep(args.ttl / 2).await;
            match client.session_renew(session).await {
                Ok(true) => {}
                Ok(false) => return "its session was invalidated".to_owned(),
                Err(e) => eprintln!("wharf: could not renew the session: {e}"),
            }
        }
    };
    let lost = async {
        let mut index = 0;
        loop {
            let blocking = (index > 0).then_some(Blocking { index, wait: WAIT });
            match client.kv_get(key, blocking).await {
                Ok((pair, next)) => {
                    if pair.and_then(|p| p.session).as_deref() != Some(session) {
                        return format!("{key} is no longer held by this session");
                    }
                    index = next;
                }
                Err(e) => {
                    eprintln!("wharf: could not read {key}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let why = tokio::select! {
        status = child.wait() => return Ok(status?),
        why = renew => why,
        why = lost => why,
        _ = tokio::signal::ctrl_c() => "interrupted".to_owned(),
        _ = terminate.recv() => "terminated".to_owned(),
    };
    eprintln!("wharf: stopping {}: {why}", args.command[0]);
    stop(&mut child).await;
    bail!("lost the lock on {key}: {why}")
}

/// SIGTERM, then SIGKILL if the child is still running five seconds later.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
