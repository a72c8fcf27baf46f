//! One way to follow the registry: a loop of blocking queries (Consul's `?index=&wait=`)
//! turned into a stream of answers, each one new. Every consumer (the proxy's discovery, the
//! supervisor, `wharf watch`) follows through this, so that index handling and backoff are
//! written once:
//!
//! - the first query does not block; each next one blocks on the index of the last answer;
//! - an answer whose index did not move (the wait ran out) is not passed on;
//! - an index that goes backwards means the registry started over: the answer is passed on
//!   and the next query blocks on the new index (Consul's advice: reset, never go back);
//! - after an error the next query waits first ([`backoff`]) and does not block, so that the
//!   caller hears the whole state again as soon as the registry answers.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Blocking, Client, ClientError, Desired, ServiceEntry};

/// How long each blocking query is held by default.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The pause before query `failures + 1` after `failures` errors in a row: 100 ms doubling,
/// at most 10 s.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    (Duration::from_millis(100) * 2u32.pow(failures.min(8))).min(Duration::from_secs(10))
}

/// What a follower asks the registry, again and again.
pub trait Query {
    type Answer;

    fn fetch<'a>(
        &'a self,
        client: &'a Client,
        blocking: Option<Blocking>,
    ) -> impl Future<Output = Result<(Self::Answer, u64), ClientError>> + Send + 'a;
}

/// `/v1/catalog/services`: which names exist, with their tags.
#[derive(Debug, Clone)]
pub struct Services;

impl Query for Services {
    type Answer = BTreeMap<String, Vec<String>>;

    fn fetch<'a>(
        &'a self,
        client: &'a Client,
        blocking: Option<Blocking>,
    ) -> impl Future<Output = Result<(Self::Answer, u64), ClientError>> + Send + 'a {
        client.services_blocking(blocking)
    }
}

/// `/v1/health/service/NAME`: its instances with their checks (or with `connect`,
/// `/v1/health/connect/NAME`: its Connect proxies).
#[derive(Debug, Clone)]
pub struct Health {
    pub name: String,
    /// Only instances whose checks all pass (`?passing`).
    pub passing: bool,
    /// The service's Connect proxies (sidecars) rather than its instances.
    pub connect: bool,
}

impl Health {
    /// The instances that receive traffic.
    pub fn passing(name: &str) -> Health {
        Health {
            name: name.to_owned(),
            passing: true,
            connect: false,
        }
    }

    /// Every instance, whatever its checks say.
    pub fn all(name: &str) -> Health {
        Health {
            name: name.to_owned(),
            passing: false,
            connect: false,
        }
    }

    /// The passing Connect proxies of the service: where a sidecar sends calls for it.
    pub fn connect(name: &str) -> Health {
        Health {
            name: name.to_owned(),
            passing: true,
            connect: true,
        }
    }
}

impl Query for Health {
    type Answer = Vec<ServiceEntry>;

    fn fetch<'a>(
        &'a self,
        client: &'a Client,
        blocking: Option<Blocking>,
    ) -> impl Future<Output = Result<(Self::Answer, u64), ClientError>> + Send + 'a {
        let kind = if self.connect { "connect" } else { "service" };
        client.health(kind, &self.name, self.passing, blocking)
    }
}

/// `/v1/wharf/services`: what the supervisor should run.
#[derive(Debug, Clone)]
pub struct DesiredState;

impl Query for DesiredState {
    type Answer = BTreeMap<String, Desired>;

    fn fetch<'a>(
        &'a self,
        client: &'a Client,
        blocking: Option<Blocking>,
    ) -> impl Future<Output = Result<(Self::Answer, u64), ClientError>> + Send + 'a {
        client.desired(blocking)
    }
}

/// Any other read of the API, decoded as `T`: `Read::new("/v1/connect/intentions")`.
#[derive(Debug, Clone)]
pub struct Read<T> {
    path: String,
    _answer: std::marker::PhantomData<fn() -> T>,
}

impl<T> Read<T> {
    pub fn new(path: impl Into<String>) -> Read<T> {
        Read {
            path: path.into(),
            _answer: std::marker::PhantomData,
        }
    }
}

impl<T: serde::de::DeserializeOwned + Send> Query for Read<T> {
    type Answer = T;

    fn fetch<'a>(
        &'a self,
        client: &'a Client,
        blocking: Option<Blocking>,
    ) -> impl Future<Output = Result<(Self::Answer, u64), ClientError>> + Send + 'a {
        client.read(&self.path, blocking)
    }
}

/// Follows one query; see the module doc.
#[derive(Debug)]
pub struct Follower<Q> {
    client: Client,
    query: Q,
    index: u64,
    failures: u32,
    /// How long each blocking query is held.
    pub wait: Duration,
}

impl<Q: Query> Follower<Q> {
    pub fn new(client: Client, query: Q) -> Follower<Q> {
        Follower {
            client,
            query,
            index: 0,
            failures: 0,
            wait: DEFAULT_WAIT,
        }
    }

    pub fn query(&self) -> &Q {
        &self.query
    }

    /// The next new answer. An error is returned for the caller to report; the next call
    /// goes on after a backoff. Dropping the future (to stop) loses nothing.
    pub async fn next(&mut self) -> Result<Q::Answer, ClientError> {
        loop {
            tokio::time::sleep(backoff(self.failures)).await;
            let blocking = (self.index > 0).then_some(Blocking {
                index: self.index,
                wait: self.wait,
            });
            match self.query.fetch(&self.client, blocking).await {
                Ok((answer, index)) => {
                    self.failures = 0;
                    let moved = blocking.is_none() || index != self.index;
                    self.index = index;
                    if moved {
                        return Ok(answer);
                    }
                }
                Err(e) => {
                    self.failures += 1;
                    self.index = 0;
                    return Err(e);
                }
            }
        }
    }
}

impl Client {
    /// Follows `query` (see [`Follower`]).
    pub fn follow<Q: Query>(&self, query: Q) -> Follower<Q> {
        Follower::new(self.clone(), query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry that answers `/v1/catalog/services` with the scripted indexes in turn
    /// and records each request's target.
    async fn scripted(indexes: Vec<u64>) -> (Client, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut targets = Vec::new();
            for index in indexes {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if stream.read(&mut byte).await.unwrap() == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                targets.push(head.split(' ').nth(1).unwrap().to_owned());
                let body = format!("{{\"at-{index}\": []}}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nX-Consul-Index: {index}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            targets
        });
        (Client::new(&base).unwrap(), server)
    }

    #[tokio::test]
    async fn passes_on_new_answers_and_starts_over_when_the_index_goes_back() {
        let (client, server) = scripted(vec![5, 5, 7, 3]).await;
        let mut follower = client.follow(Services);
        let names = |answer: BTreeMap<String, Vec<String>>| answer.into_keys().collect::<Vec<_>>();
        assert_eq!(names(follower.next().await.unwrap()), ["at-5"]);
        // The answer at 5 again (the wait ran out) is not passed on; 7 is.
        assert_eq!(names(follower.next().await.unwrap()), ["at-7"]);
        // The registry started over at 3: passed on, and followed from there.
        assert_eq!(names(follower.next().await.unwrap()), ["at-3"]);
        let targets = server.await.unwrap();
        let indexes: Vec<Option<&str>> = targets
            .iter()
            .map(|t| {
                t.split_once("index=")
                    .map(|(_, rest)| rest.split('&').next().unwrap())
            })
            .collect();
        assert_eq!(indexes, [None, Some("5"), Some("5"), Some("7")]);
    }

    #[tokio::test]
    async fn an_error_is_returned_and_the_next_query_starts_afresh() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener); // nothing listens: unreachable
        let mut follower = Client::new(&base).unwrap().follow(Services);
        assert!(matches!(
            follower.next().await,
            Err(ClientError::Unreachable { .. })
        ));
        assert_eq!((follower.failures, follower.index), (1, 0));
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
