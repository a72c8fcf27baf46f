//! `frontend`: calls the other services through the mesh's gateway and composes their
//! answers. `GET /?data=X` answers
//! `{"greeting": <hello's answer>, "api": <api's answer>, "notes": <how many notes>}`;
//! `&work=MS` asks hello to take MS milliseconds (load for the demo's autoscaling).
//!
//! It knows no address but the gateway's (`$WHARF_GATEWAY`, set by `wharf up`): the gateway
//! routes by `Host` to a healthy instance, retries and balances, so the frontend does not.
//!
//! Its configuration lives in the registry's KV store, as Consul users keep theirs: the key
//! `frontend/message`, when set, is added to every answer as `"message"`. The frontend follows
//! it with a blocking query (`GET /v1/kv/frontend/message?raw&index=N&wait=5m` on
//! `$WHARF_REGISTRY`), so `wharf kv put frontend/message TEXT` changes what every running
//! instance answers within moments, without a restart or a poll.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Query, State};
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

/// The KV key the frontend takes its message from.
const MESSAGE_KEY: &str = "frontend/message";

/// The message as last read from KV (`None` while the key is not set).
type Message = Arc<RwLock<Option<String>>>;

/// Follows [`MESSAGE_KEY`] with blocking queries: each returns when the key changes (or after
/// the wait), carrying the index to wait on next. A registry that cannot be reached is tried
/// again a second later; the last message read stays meanwhile.
async fn follow_message(client: HttpClient, registry: String, message: Message) {
    let mut index = 0u64;
    loop {
        let url = format!("{registry}/v1/kv/{MESSAGE_KEY}?raw&index={index}&wait=5m");
        match blocking_read(&client, &url).await {
            Ok((status, new_index, body)) if status == 200 || status == 404 => {
                // An index that went backwards (a new store) starts over, as Consul advises.
                index = if new_index < index { 0 } else { new_index };
                let value =
                    (status == 200).then(|| String::from_utf8_lossy(&body).trim().to_owned());
                *message.write().expect("message lock") = value;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// One blocking read: its status, `X-Consul-Index` and body.
async fn blocking_read(client: &HttpClient, url: &str) -> Result<(u16, u64, Bytes), String> {
    let request = http::Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let (head, body) = send(client, request).await?;
    let index = head
        .headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((head.status.as_u16(), index, body))
}

/// Sends `request` and reads its whole answer.
async fn send(
    client: &HttpClient,
    request: http::Request<Empty<Bytes>>,
) -> Result<(http::response::Parts, Bytes), String> {
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let (head, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((head, body))
}

/// GET `path` on `service` through the gateway.
async fn call(client: &HttpClient, service: &str, path: &str) -> Result<String, String> {
    let gateway = std::env::var("WHARF_GATEWAY").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let request = http::Request::get(format!("{gateway}{path}"))
        .header("host", service)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let (head, body) = send(client, request)
        .await
        .map_err(|e| format!("{service}: {e}"))?;
    let status = head.status;
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{service} answered {status}: {text}"))
    }
}

async fn home(
    State(message): State<Message>,
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
    let mut answer = serde_json::json!({
        "greeting": greeting.map_err(bad_gateway)?,
        "api": api,
        "notes": notes.as_array().map_or(0, Vec::len),
    });
    if let Some(message) = message.read().expect("message lock").clone() {
        answer["message"] = message.into();
    }
    Ok(Json(answer))
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
    let message = Message::default();
    if let Ok(registry) = std::env::var("WHARF_REGISTRY") {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let registry = registry.trim_end_matches('/').to_owned();
        tokio::spawn(follow_message(client, registry, message.clone()));
    }
    let app = Router::new()
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(message);
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
