//! A service watch as a stream of endpoint changes.
//!
//! Consumers (`wharf watch` today) want to hear "this endpoint came, that one went", not to
//! re-diff full lists everywhere (tower's `discover`, linkerd's `resolve`). The
//! watch follows the passing instances ([`crate::Follower`]) and turns each answer into the
//! difference with the previous one; after an error it starts over with a [`Change::Reset`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Client, ClientError, Follower, Health, ServiceEntry};

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
    follower: Follower<Health>,
    known: Option<BTreeMap<String, Endpoint>>,
    pending: std::collections::VecDeque<Change>,
}

impl ServiceWatch {
    pub(crate) fn new(client: Client, name: String) -> ServiceWatch {
        ServiceWatch {
            follower: client.follow(Health::passing(&name)),
            known: None,
            pending: Default::default(),
        }
    }

    /// How long each blocking query is held.
    pub fn set_wait(&mut self, wait: Duration) {
        self.follower.wait = wait;
    }

    /// The next change. Errors are returned (for the caller to report) and the watch keeps
    /// going on the next call, after a backoff, with a fresh [`Change::Reset`].
    pub async fn next(&mut self) -> Result<Change, ClientError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            match self.follower.next().await {
                Ok(entries) => self.diff(entries),
                Err(e) => {
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
                .push_back(Change::Reset(current.values().cloned().collect())),
            Some(known) => {
                for (id, endpoint) in &current {
                    if known.get(id) != Some(endpoint) {
                        self.pending.push_back(Change::Add(endpoint.clone()));
                    }
                }
                for id in known.keys().filter(|id| !current.contains_key(*id)) {
                    self.pending.push_back(Change::Remove(id.clone()));
                }
            }
        }
        self.known = Some(current);
    }
}
