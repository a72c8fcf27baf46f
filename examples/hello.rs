//! `hello`: the smallest service of the mesh. `GET /` answers "Hello, World!" (or `$GREETING`:
//! a manifest edit to roll out with `wharf apply`), `GET /healthz` answers "ok". Listens on `127.0.0.1:$PORT` (the supervisor sets `PORT`). `GET /?work=MS`
//! answers after MS milliseconds (at most 5 s): requests that take time, for the demo's
//! autoscaling.
//!
//! Run under the mesh: `cargo build --release --bins --examples && ./target/release/wharf up`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;

#[derive(serde::Deserialize)]
struct Work {
    /// Milliseconds of "work" before the answer.
    work: Option<u64>,
}

async fn hello(State(greeting): State<Arc<str>>, Query(work): Query<Work>) -> String {
    if let Some(ms) = work.work {
        tokio::time::sleep(Duration::from_millis(ms.min(5_000))).await;
    }
    greeting.to_string()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8001".into());
    let instance = std::env::var("WHARF_INSTANCE").unwrap_or_else(|_| "hello".into());
    let greeting: Arc<str> = std::env::var("GREETING")
        .unwrap_or_else(|_| "Hello, World!".into())
        .into();
    let app = Router::new()
        .route("/", get(hello))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(greeting);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("{instance} listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated())
        .await
}

async fn terminated() {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        term.recv().await;
    }
}
