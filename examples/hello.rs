//! `hello`: the smallest service of the mesh. `GET /` answers "Hello, World!" (or `$GREETING`:
//! a manifest edit to roll out with `wharf apply`), `GET /healthz` answers "ok". Listens on
//! `127.0.0.1:$PORT` (the supervisor sets `PORT`). `GET /?work=MS` answers after MS
//! milliseconds (at most 5 s): requests that take time, for the demo's autoscaling.
//! `$FAIL_PERCENT` (0 by default) answers that share of `GET /` with a 500, one request in
//! every hundred per percent: a bad version, for a canary to be rolled back.
//! `GET /max-in-flight` answers the most requests it has had in flight at once.
//!
//! Run under the mesh: `cargo build --release --bins --examples && ./target/release/wharf up`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;

#[derive(serde::Deserialize)]
struct Work {
    /// Milliseconds of "work" before the answer.
    work: Option<u64>,
}

/// What `GET /` answers, and how often it fails.
struct Answer {
    greeting: String,
    fail_percent: u64,
    served: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// One request in flight, counted until it ends (or is dropped with its connection).
struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn hello(
    State(answer): State<Arc<Answer>>,
    Query(work): Query<Work>,
) -> (axum::http::StatusCode, String) {
    let now = answer.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _counted = Counted(&answer.in_flight);
    answer.max_in_flight.fetch_max(now, Ordering::Relaxed);
    if let Some(ms) = work.work {
        tokio::time::sleep(Duration::from_millis(ms.min(5_000))).await;
    }
    let n = answer.served.fetch_add(1, Ordering::Relaxed);
    if n % 100 < answer.fail_percent {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "failing on purpose (FAIL_PERCENT)".into(),
        );
    }
    (axum::http::StatusCode::OK, answer.greeting.clone())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8001".into());
    let instance = std::env::var("WHARF_INSTANCE").unwrap_or_else(|_| "hello".into());
    let answer = Arc::new(Answer {
        greeting: std::env::var("GREETING").unwrap_or_else(|_| "Hello, World!".into()),
        fail_percent: std::env::var("FAIL_PERCENT")
            .ok()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            .min(100),
        served: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/", get(hello))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/max-in-flight",
            get(|State(answer): State<Arc<Answer>>| async move {
                answer.max_in_flight.load(Ordering::Relaxed).to_string()
            }),
        )
        .with_state(answer);
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
