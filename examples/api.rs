//! `api`: `GET /api?data=X` answers `{"result": X}`; `GET /healthz` answers "ok". Listens on
//! `127.0.0.1:$PORT`.

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    data: Option<String>,
}

async fn api(Query(params): Query<Params>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "result": params.data }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8002".into());
    let instance = std::env::var("WHARF_INSTANCE").unwrap_or_else(|_| "api".into());
    let app = Router::new()
        .route("/api", get(api))
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
