//! `wharf`: the one binary. Thin glue: parse the command line, build a validated
//! configuration, run the parts. Exit codes: 0 success, 1 the operation failed, 2 bad usage
//! or bad input.

mod acl_cmd;
mod apply_cmd;
mod cli;
mod client_cmds;
mod deployer;
mod kv_cmd;
mod manifest;
mod mesh_cmd;
mod proxy_cmd;
mod registry_cmd;
mod rollout_cmd;
mod stat_cmd;
mod stats_answer;
mod table;
mod tap_cmd;
mod top;
mod up_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: the proxy allocates per request (header maps,
/// frames), and mimalloc spends about half the instructions per allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error that is the user's input, not a failure: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// `wharf intention check` said denied: exit 2, as `consul intention check` does.
#[derive(Debug, thiserror::Error)]
#[error("denied")]
pub struct Denied;

/// A line on stdout, for people and for scripts that wait for it. A reader that has gone (a
/// closed pipe) is no failure of a running server: the line is dropped, where `println!`
/// would panic and take the server down with it.
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if prints_for_a_pipe(&cli.command) {
        quiet_on_a_closed_pipe();
    }
    // A sidecar runs one event loop unless told otherwise (no work stealing, no cross-thread
    // wake-ups on its request path); everything else shares a runtime of one thread per core.
    let mut builder = match &cli.command {
        Command::Sidecar(args) if args.threads == 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Sidecar(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(args.threads));
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Registry(args) => registry_cmd::run(args).await,
            Command::Proxy(args) => proxy_cmd::run(args).await,
            Command::Sidecar(args) => proxy_cmd::sidecar(args).await,
            Command::Up(args) => up_cmd::run(args.file, args.watch).await,
            Command::Services(args) => client_cmds::services(args).await,
            Command::Instances(args) => client_cmds::instances(args).await,
            Command::Register(args) => client_cmds::register(args).await,
            Command::Deregister(args) => client_cmds::deregister(args).await,
            Command::Watch(args) => client_cmds::watch(args).await,
            Command::Scale(args) => client_cmds::scale(args).await,
            Command::Restart(args) => client_cmds::restart(args).await,
            Command::Apply(args) => apply_cmd::run(args).await,
            Command::Rollout(command) => rollout_cmd::run(command).await,
            Command::Intention(command) => client_cmds::intention(command).await,
            Command::Mesh(cli::MeshCommand::Status(args)) => mesh_cmd::status(args).await,
            Command::Acl(command) => acl_cmd::run(command).await,
            Command::Stat(args) => stat_cmd::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Tap(args) => tap_cmd::run(args).await,
            Command::Kv(command) => kv_cmd::run(command).await,
            Command::Lock(args) => kv_cmd::lock(args).await,
            Command::Maint(args) => client_cmds::maint(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(kv_cmd::ExitWith(code)) = e.downcast_ref() {
                return ExitCode::from(*code);
            }
            eprintln!("wharf: {e:#}");
            if e.is::<Denied>() || e.is::<mesh_cmd::WouldRefuse>() {
                return ExitCode::from(2);
            }
            if is_bad_input(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Commands whose output goes to people and pipes (`wharf stat | head`), as opposed to the
/// servers (`up`, `registry`, `proxy`, `sidecar`) and the terminal UI (`top`).
fn prints_for_a_pipe(command: &Command) -> bool {
    !matches!(
        command,
        Command::Registry(_)
            | Command::Proxy(_)
            | Command::Sidecar(_)
            | Command::Up(_)
            | Command::Top(_)
    )
}

/// A closed stdout ends the command quietly, as it ends `ls` or `grep`, instead of a panic
/// message from `println!`: the exit status is a SIGPIPE death's (141). (Restoring SIGPIPE's
/// default would take `unsafe`; and a server must live through a peer closing its socket.)
fn quiet_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

fn is_bad_input(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<BadInput>()
            || matches!(
                cause.downcast_ref::<wharf_client::ClientError>(),
                Some(
                    wharf_client::ClientError::Refused { .. }
                        | wharf_client::ClientError::BadAddress(_)
                )
            )
    })
}

/// Logs to stderr; `WHARF_LOG` (or `RUST_LOG`) sets the filter, `info` by default.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("WHARF_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
