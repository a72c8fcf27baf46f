//! `frontend`: calls the other services through the mesh's gateway and composes their
//! answers. `GET /?data=X` answers
//! `{"greeting": <hello's answer>, "api": <api's answer>, "notes": <how many notes>}`;
//! `&work=MS` asks hello to take MS milliseconds (load for the demo's autoscaling).
//!
//! It knows no address but the gateway's (`$WHARF_GATEWAY`, set by `wharf up`): the gateway
//! routes by `Host` to a healthy instance, retries and balances, so the frontend does not.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    data: Option<String>,
    /// Passed on to hello (`?work=MS`: it answers after MS ms), to give it load.
    work: Option<u64>,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// GET `path` on `service` through the gateway.
async fn call(client: &HttpClient, service: &str, path: &str) -> Result<String, String> {
    let gateway = std::env::var("WHARF_GATEWAY").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let request = http::Request::get(format!("{gateway}{path}"))
        .header("host", service)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{service}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{service} answered {status}: {text}"))
    }
}

async fn home(
    Query(params): Query<Params>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let data = params.data.unwrap_or_else(|| "frontend".into());
    let bad_gateway = |e: String| (StatusCode::BAD_GATEWAY, format!("{e}\n"));
    let api_path = format!("/api?data={}", urlencode(&data));
    let hello_path = match params.work {
        Some(ms) => format!("/?work={ms}"),
        None => "/".to_owned(),
    };
    let (greeting, api, notes) = tokio::join!(
        call(&client, "hello", &hello_path),
        call(&client, "api", &api_path),
        call(&client, "notes", "/notes"),
    );
    let api: serde_json::Value =
        serde_json::from_str(&api.map_err(bad_gateway)?).map_err(|e| bad_gateway(e.to_string()))?;
    let notes: serde_json::Value = serde_json::from_str(&notes.map_err(bad_gateway)?)
        .map_err(|e| bad_gateway(e.to_string()))?;
    Ok(Json(serde_json::json!({
        "greeting": greeting.map_err(bad_gateway)?,
        "api": api,
        "notes": notes.as_array().map_or(0, Vec::len),
    })))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8004".into());
    let app = Router::new()
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("frontend listening on {}", listener.local_addr()?);
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
