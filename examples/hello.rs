//! `hello`: the smallest service of the mesh. `GET /` answers "Hello, World!", `GET /healthz`
//! answers "ok". Listens on `127.0.0.1:$PORT` (the supervisor sets `PORT`).
//!
//! Run under the mesh: `cargo build --release --bins --examples && ./target/release/wharf up`.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8001".into());
    let instance = std::env::var("WHARF_INSTANCE").unwrap_or_else(|_| "hello".into());
    let app = Router::new()
        .route("/", get(|| async { "Hello, World!" }))
        .route("/healthz", get(|| async { "ok" }));
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
