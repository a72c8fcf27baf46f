//! `notes`: a service with its own data store. `POST /notes` with a text body stores a note
//! and answers its id; `GET /notes` lists them as JSON; `GET /healthz` answers "ok".
//!
//! The notes live in a redb file under `$WHARF_DATA` (set by `wharf up` to a folder of this
//! service), so they survive restarts of the instance and of the mesh. One replica: the file
//! is this instance's own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const NOTES: TableDefinition<u64, &str> = TableDefinition::new("notes");

type Db = Arc<Database>;

async fn add(State(db): State<Db>, body: String) -> Result<String, (StatusCode, String)> {
    let fail = |e: &dyn std::fmt::Display| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store failed: {e}\n"),
        )
    };
    if body.trim().is_empty() {
        return Err((StatusCode::BAD_REQUEST, "a note needs some text\n".into()));
    }
    let txn = db.begin_write().map_err(|e| fail(&e))?;
    let id = {
        let mut table = txn.open_table(NOTES).map_err(|e| fail(&e))?;
        let id = table
            .last()
            .map_err(|e| fail(&e))?
            .map_or(1, |(k, _)| k.value() + 1);
        table.insert(id, body.trim()).map_err(|e| fail(&e))?;
        id
    };
    txn.commit().map_err(|e| fail(&e))?;
    Ok(format!("{id}\n"))
}

async fn list(State(db): State<Db>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let fail = |e: &dyn std::fmt::Display| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store failed: {e}\n"),
        )
    };
    let txn = db.begin_read().map_err(|e| fail(&e))?;
    let table = match txn.open_table(NOTES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Json(serde_json::json!([]))),
        Err(e) => return Err(fail(&e)),
    };
    let mut notes = Vec::new();
    for entry in table.iter().map_err(|e| fail(&e))? {
        let (id, text) = entry.map_err(|e| fail(&e))?;
        notes.push(serde_json::json!({"id": id.value(), "text": text.value()}));
    }
    Ok(Json(serde_json::Value::Array(notes)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8003".into());
    let dir = std::env::var("WHARF_DATA").unwrap_or_else(|_| ".".into());
    let path = std::path::Path::new(&dir).join("notes.redb");
    let db = Database::create(&path).map_err(std::io::Error::other)?;
    let app = Router::new()
        .route("/notes", get(list).post(add))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(db));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "notes listening on {} with {}",
        listener.local_addr()?,
        path.display()
    );
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
