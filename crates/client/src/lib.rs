//! A typed async client of the registry's HTTP API (the Consul subset Wharf answers).
//!
//! Used by the CLI, the supervisor and the proxy, which must also work against a real
//! Consul: so it speaks only the public API, never the store. Everything that follows the
//! registry does it through one [`Follower`] (blocking queries, index handling, backoff);
//! [`ServiceWatch`] turns a follower of a service into endpoint changes ([`Change`]).
//! Instances are registered from a typed [`Registration`]. Every request carries the
//! client's ACL token, if it has one (`WHARF_TOKEN`, else `CONSUL_HTTP_TOKEN`, as Consul's
//! CLI reads it; or [`Client::with_token`]).

mod follow;
mod kv;
mod registration;
mod watch;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use wharf_model::error_chain;

pub use follow::{DesiredState, Follower, Health, Query, Read, Services, backoff};
pub use http::Method;
pub use kv::{KvPair, KvWrite, SessionSpec};
pub use registration::{CheckRegistration, ProxyRegistration, Registration};
pub use watch::{Change, Endpoint, ServiceWatch};

/// What a call to the registry can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid registry address {0:?}: expected http://HOST:PORT")]
    BadAddress(String),
    #[error("cannot reach the registry at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The registry refused the request (4xx): the input was wrong.
    #[error("registry refused the request ({status}): {reason}")]
    Refused { status: StatusCode, reason: String },
    /// The registry failed (5xx).
    #[error("registry failed ({status}): {reason}")]
    Failed { status: StatusCode, reason: String },
    #[error("unexpected answer from the registry: {0}")]
    Decode(String),
    #[error("the ACL token cannot be sent: it is not a valid HTTP header value")]
    BadToken,
    /// TLS to an `https://` registry cannot be set up.
    #[error("{0}")]
    Tls(String),
}

/// A registry client; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Sent as `X-Consul-Token` with every request.
    token: Option<http::HeaderValue>,
}

/// What a client presents and trusts: its ACL token and the CA of an `https://` registry.
/// [`Credentials::from_env`] reads them as Consul's CLI does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// A PEM file of the CA(s) an `https://` registry's certificate is checked against.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Credentials {
    /// `WHARF_TOKEN` (else `CONSUL_HTTP_TOKEN`) and `WHARF_CACERT` (else `CONSUL_CACERT`).
    pub fn from_env() -> Credentials {
        let var = |names: [&str; 2]| {
            names
                .into_iter()
                .filter_map(|name| std::env::var(name).ok())
                .map(|v| v.trim().to_owned())
                .find(|v| !v.is_empty())
        };
        Credentials {
            token: var(["WHARF_TOKEN", "CONSUL_HTTP_TOKEN"]),
            ca_file: var(["WHARF_CACERT", "CONSUL_CACERT"]).map(Into::into),
        }
    }

    /// These, with what the environment has for what these leave unset.
    pub fn or_env(self) -> Credentials {
        let env = Credentials::from_env();
        Credentials {
            token: self.token.or(env.token),
            ca_file: self.ca_file.or(env.ca_file),
        }
    }
}

/// The TLS a client speaks to an `https://` registry: the roots in `ca_file`. Plain
/// `http://` needs none.
fn tls_config(
    needed: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if needed {
        let path = ca_file.ok_or_else(|| {
                ClientError::Tls(
                    "an https:// registry needs the CA of its certificate: set WHARF_CACERT (or CONSUL_CACERT) to a PEM file".into(),
                )
            })?;
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("bad CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("bad CA certificate: {e}")))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

/// An instance with its health, from `/v1/health/service/<name>`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: NodeEntry,
    pub service: AgentService,
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// The worst status of the instance's checks (`passing` without checks).
    pub fn aggregate_status(&self) -> &str {
        let rank = |s: &str| match s {
            "passing" => 0,
            "warning" => 1,
            _ => 2,
        };
        self.checks
            .iter()
            .map(|c| c.status.as_str())
            .max_by_key(|s| rank(s))
            .unwrap_or("passing")
    }

    /// Where to reach the instance: its own address, else its node's.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeEntry {
    pub node: String,
    pub address: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub weights: Option<Weights>,
}

/// What the supervisor should run of one service.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Desired {
    pub replicas: u32,
    /// Bumped by each `wharf restart`.
    #[serde(default)]
    pub restart: u64,
    /// An autoscaled service's bounds.
    #[serde(default)]
    pub min: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
    /// Bumped by each `wharf rollout promote` and `wharf rollout abort`.
    #[serde(default)]
    pub promote: u64,
    #[serde(default)]
    pub abort: u64,
    /// An autoscaled service's target of requests in flight per instance, if it has one.
    #[serde(default)]
    pub target_concurrency: Option<f64>,
}

/// The count a scale set, from its answer `{"Replicas": N}`.
fn scaled(answer: &[u8]) -> Result<u32, ClientError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Scaled {
        replicas: u32,
    }
    let scaled: Scaled = serde_json::from_slice(answer)
        .map_err(|e| ClientError::Decode(format!("scale answer: {e}")))?;
    Ok(scaled.replicas)
}

/// A service's load now, as an autoscaler reads it (`GET /v1/wharf/load/NAME`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Load {
    /// Requests in flight over its instances, at every proxy.
    pub in_flight: u64,
    /// Requests per second over the last minute.
    pub rps: f64,
    /// How many proxies' reports it was summed from.
    pub proxies: u64,
}

/// Consul's relative weights of an instance.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HealthCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Output", default)]
    pub output: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
}

/// A blocking query: return once the index moves past `index`, or after `wait`.
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

impl Client {
    /// A client of the registry at `base` (`http://H:P`, or `https://H:P` with the CA of its
    /// certificate in the file `WHARF_CACERT` or `CONSUL_CACERT` names), with the token of
    /// `WHARF_TOKEN` or `CONSUL_HTTP_TOKEN`, as Consul's CLI takes them.
    pub fn new(base: &str) -> Result<Client, ClientError> {
        Client::connect(base, &Credentials::from_env())
    }

    /// A client of the registry at `base` with `credentials`.
    pub fn connect(base: &str, credentials: &Credentials) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|_| ClientError::BadAddress(base.to_owned()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(ClientError::BadAddress(base.to_owned())),
        };
        if uri.host().is_none() {
            return Err(ClientError::BadAddress(base.to_owned()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls, credentials.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let client = Client {
            base: base.to_owned(),
            http,
            token: None,
        };
        client.with_token(credentials.token.clone())
    }

    /// The same client with `token` (`None`: no token) on every request.
    pub fn with_token(mut self, token: Option<String>) -> Result<Client, ClientError> {
        self.token = token
            .map(|t| http::HeaderValue::from_str(&t).map_err(|_| ClientError::BadToken))
            .transpose()?;
        if let Some(token) = &mut self.token {
            token.set_sensitive(true);
        }
        Ok(self)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Service names and their tags.
    pub async fn services(&self) -> Result<BTreeMap<String, Vec<String>>, ClientError> {
        Ok(self.get_json("/v1/catalog/services", None).await?.0)
    }

    /// Service names and their tags, as a blocking query; returns the index to block on next.
    pub async fn services_blocking(
        &self,
        blocking: Option<Blocking>,
    ) -> Result<(BTreeMap<String, Vec<String>>, u64), ClientError> {
        self.get_json("/v1/catalog/services", blocking).await
    }

    /// Instances of `name` with their checks; `passing_only` drops any with a non-passing
    /// check. Returns the entries and the index to block on next.
    pub async fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        blocking: Option<Blocking>,
    ) -> Result<(Vec<ServiceEntry>, u64), ClientError> {
        self.health("service", name, passing_only, blocking).await
    }

    /// `/v1/health/<kind>/NAME`: `service` for the instances, `connect` for the proxies.
    async fn health(
        &self,
        kind: &str,
        name: &str,
        passing_only: bool,
        blocking: Option<Blocking>,
    ) -> Result<(Vec<ServiceEntry>, u64), ClientError> {
        let mut path = format!("/v1/health/{kind}/{}", encode(name));
        if passing_only {
            path.push_str("?passing=1");
        }
        self.get_json(&path, blocking).await
    }

    /// Registers an instance.
    pub async fn register(&self, registration: &Registration) -> Result<(), ClientError> {
        let body =
            serde_json::to_vec(registration).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::PUT, "/v1/agent/service/register", body)
            .await
            .map(drop)
    }

    /// Registers an instance from a Consul registration body as given (a user's file, with
    /// whatever fields it has).
    pub async fn register_json(&self, registration: &serde_json::Value) -> Result<(), ClientError> {
        let body =
            serde_json::to_vec(registration).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::PUT, "/v1/agent/service/register", body)
            .await
            .map(drop)
    }

    /// Declares a supervised service with its replicas (`PUT /v1/wharf/services/NAME`), and
    /// its bounds (min, max) if it is autoscaled.
    pub async fn declare_service(
        &self,
        name: &str,
        replicas: u32,
        bounds: Option<(u32, u32)>,
        target_concurrency: Option<f64>,
    ) -> Result<(), ClientError> {
        let mut body = serde_json::json!({ "Replicas": replicas });
        if let Some((min, max)) = bounds {
            body["Min"] = min.into();
            body["Max"] = max.into();
        }
        if let Some(target) = target_concurrency {
            body["TargetConcurrency"] = target.into();
        }
        let body = serde_json::to_vec(&body).expect("json");
        self.call(
            Method::PUT,
            &format!("/v1/wharf/services/{}", encode(name)),
            body,
        )
        .await
        .map(drop)
    }

    /// The supervisor stops running `name`: its desired state goes.
    pub async fn forget_service(&self, name: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/wharf/services/{}", encode(name)),
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// `wharf scale NAME=N`: the count set (within an autoscaled service's bounds).
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<u32, ClientError> {
        let path = format!("/v1/wharf/scale/{}?replicas={replicas}", encode(name));
        let (_, answer) = self.call(Method::PUT, &path, Vec::new()).await?;
        scaled(&answer)
    }

    /// An autoscaler's change of count, with what it was made from (`decision`: the fields of
    /// `/v1/wharf/services`' `Decision`). The count set.
    pub async fn autoscale(
        &self,
        name: &str,
        replicas: u32,
        decision: serde_json::Value,
    ) -> Result<u32, ClientError> {
        let body = serde_json::json!({ "Replicas": replicas, "Decision": decision });
        let body = serde_json::to_vec(&body).expect("json");
        let path = format!("/v1/wharf/scale/{}", encode(name));
        let (_, answer) = self.call(Method::PUT, &path, body).await?;
        scaled(&answer)
    }

    /// A service's load now (`GET /v1/wharf/load/NAME`).
    pub async fn load(&self, name: &str) -> Result<Load, ClientError> {
        let path = format!("/v1/wharf/load/{}", encode(name));
        self.read(&path, None).await.map(|(load, _)| load)
    }

    /// `wharf restart NAME`: a rolling restart of a supervised service.
    pub async fn restart(&self, name: &str) -> Result<(), ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/wharf/restart/{}", encode(name)),
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// `wharf rollout promote|abort NAME`: `order` is `promote` or `abort`.
    pub async fn rollout(&self, name: &str, order: &str) -> Result<(), ClientError> {
        let path = format!("/v1/wharf/rollout/{}?order={}", encode(name), encode(order));
        self.call(Method::PUT, &path, Vec::new()).await.map(drop)
    }

    /// Desired replicas of supervised services, as a blocking query.
    pub async fn desired(
        &self,
        blocking: Option<Blocking>,
    ) -> Result<(BTreeMap<String, Desired>, u64), ClientError> {
        self.get_json("/v1/wharf/services", blocking).await
    }

    pub async fn deregister(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/agent/service/deregister/{}", encode(id));
        self.call(Method::PUT, &path, Vec::new()).await.map(drop)
    }

    /// Creates or replaces the intention from `source` to `destination` (`*` for any):
    /// `action` is `allow` or `deny`.
    pub async fn upsert_intention(
        &self,
        source: &str,
        destination: &str,
        action: &str,
        description: &str,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "Action": action, "Description": description, "SourceType": "consul",
        }))
        .expect("json");
        self.call(
            Method::PUT,
            &intention_path("exact", source, destination),
            body,
        )
        .await
        .map(drop)
    }

    pub async fn delete_intention(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &intention_path("exact", source, destination),
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// Whether `source` may call `destination`, as the intentions say now.
    pub async fn check_intention(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<bool, ClientError> {
        let (answer, _): (serde_json::Value, u64) = self
            .get_json(&intention_path("check", source, destination), None)
            .await?;
        Ok(answer["Allowed"].as_bool().unwrap_or(false))
    }

    /// Every intention, in evaluation order.
    pub async fn intentions(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        Ok(self.get_json("/v1/connect/intentions", None).await?.0)
    }

    /// Follows the healthy instances of `name` as a stream of changes.
    pub fn watch(&self, name: &str) -> ServiceWatch {
        ServiceWatch::new(self.clone(), name.to_owned())
    }

    /// Any read of the API, decoded as `T`, with the index to block on next.
    pub async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        blocking: Option<Blocking>,
    ) -> Result<(T, u64), ClientError> {
        self.get_json(path, blocking).await
    }

    /// Any call to the API with a JSON body (or none), answered with JSON: for the parts of
    /// the API without a typed method here (the ACL endpoints, say).
    pub async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
        let (_, answer) = self.call(method, path, body).await?;
        if answer.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A call with a body already encoded as JSON; the answer's body as it came.
    pub async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        Ok(self.call(method, path, body).await?.1)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        blocking: Option<Blocking>,
    ) -> Result<(T, u64), ClientError> {
        let path = with_blocking(path, blocking);
        let (headers, body) = self.call(Method::GET, &path, Vec::new()).await?;
        let index = index_of(&headers);
        let value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((value, index))
    }

    /// A GET whose 404 is an answer too (a missing KV key): its headers and body.
    async fn call_allowing_404(&self, path: &str) -> Result<(http::HeaderMap, Bytes), ClientError> {
        self.send(Method::GET, path, Vec::new(), true).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(http::HeaderMap, Bytes), ClientError> {
        self.send(method, path, body, false).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        allow_404: bool,
    ) -> Result<(http::HeaderMap, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("x-consul-token", token.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ClientError::BadAddress(url.clone()))?;
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(&error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        let reason = || String::from_utf8_lossy(&body).trim().to_owned();
        match parts.status {
            s if s.is_success() => Ok((parts.headers, body)),
            StatusCode::NOT_FOUND if allow_404 => Ok((parts.headers, body)),
            s if s.is_client_error() => Err(ClientError::Refused {
                status: s,
                reason: reason(),
            }),
            s => Err(ClientError::Failed {
                status: s,
                reason: reason(),
            }),
        }
    }
}

/// `path` with the query of a blocking read, if any.
fn with_blocking(path: &str, blocking: Option<Blocking>) -> String {
    let mut path = path.to_owned();
    if let Some(b) = blocking {
        let sep = if path.contains('?') { '&' } else { '?' };
        path.push_str(&format!(
            "{sep}index={}&wait={}ms",
            b.index,
            b.wait.as_millis()
        ));
    }
    path
}

/// An answer's `X-Consul-Index` (0 without one).
fn index_of(headers: &http::HeaderMap) -> u64 {
    headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn intention_path(what: &str, source: &str, destination: &str) -> String {
    format!(
        "/v1/connect/intentions/{what}?source={}&destination={}",
        encode(source),
        encode(destination)
    )
}

/// Percent-encodes a path segment (or a query value) of an API path.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_addresses_it_cannot_use() {
        assert!(Client::new("http://127.0.0.1:8500").is_ok());
        assert!(Client::new("127.0.0.1:8500").is_err());
        assert!(Client::new("https://127.0.0.1:8500").is_err());
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("service:web-1"), "service%3Aweb-1");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
