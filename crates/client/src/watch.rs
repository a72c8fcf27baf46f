//! A service watch as a stream of endpoint changes.
//!
//! Consumers (`wharf watch` today) want to hear "this endpoint came, that one went", not to
//! re-diff full lists everywhere (tower's `discover`, linkerd's `resolve`). The
//! watch holds one blocking query at a time on the passing instances and turns each answer
//! into the difference with the previous one; after an error it backs off and starts over
//! with a [`Change::Reset`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Blocking, Client, ClientError, ServiceEntry};

/// A reachable, passing instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

impl Endpoint {
    fn of(entry: &ServiceEntry) -> Endpoint {
        Endpoint {
            id: entry.service.id.clone(),
            address: entry.address().to_owned(),
            port: entry.service.port,
            tags: entry.service.tags.clone(),
        }
    }
}

/// One change to the set of endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The whole set, replacing whatever the consumer had.
    Reset(Vec<Endpoint>),
    /// A new endpoint, or a changed one (same id).
    Add(Endpoint),
    Remove(String),
}

/// Follows one service's passing instances.
pub struct ServiceWatch {
    client: Client,
    name: String,
    index: u64,
    known: Option<BTreeMap<String, Endpoint>>,
    pending: Vec<Change>,
    failures: u32,
    /// How long each blocking query is held.
    pub wait: Duration,
}

impl ServiceWatch {
    pub(crate) fn new(client: Client, name: String) -> ServiceWatch {
        ServiceWatch {
            client,
            name,
            index: 0,
            known: None,
            pending: Vec::new(),
            failures: 0,
            wait: Duration::from_secs(60),
        }
    }

    /// The next change. Errors are returned (for the caller to report) and the watch keeps
    /// going on the next call, after a backoff, with a fresh [`Change::Reset`].
    pub async fn next(&mut self) -> Result<Change, ClientError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            if self.failures > 0 {
                let backoff = Duration::from_millis(100) * 2u32.pow(self.failures.min(8));
                tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
            }
            let blocking = (self.index > 0).then_some(Blocking {
                index: self.index,
                wait: self.wait,
            });
            match self.client.health_service(&self.name, true, blocking).await {
                Ok((entries, index)) => {
                    self.failures = 0;
                    // An index that went backwards means the registry was reset: start over.
                    self.index = if index < self.index { 0 } else { index };
                    self.diff(entries);
                }
                Err(e) => {
                    self.failures += 1;
                    self.index = 0;
                    self.known = None;
                    return Err(e);
                }
            }
        }
    }

    fn diff(&mut self, entries: Vec<ServiceEntry>) {
        let current: BTreeMap<String, Endpoint> = entries
            .iter()
            .map(|e| (e.service.id.clone(), Endpoint::of(e)))
            .collect();
        match &self.known {
            None => self
                .pending
                .push(Change::Reset(current.values().cloned().collect())),
            Some(known) => {
                for (id, endpoint) in &current {
                    if known.get(id) != Some(endpoint) {
                        self.pending.push(Change::Add(endpoint.clone()));
                    }
                }
                for id in known.keys().filter(|id| !current.contains_key(*id)) {
                    self.pending.push(Change::Remove(id.clone()));
                }
            }
        }
        self.known = Some(current);
    }
}
