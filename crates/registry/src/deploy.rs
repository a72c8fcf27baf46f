//! How `wharf apply` reaches the supervisor of the `wharf up` this registry runs in: the
//! registry only carries the request (`PUT /v1/wharf/apply`, an operator's write) to whatever
//! `wharf up` attached with [`Agent::attach_deployer`], and answers what it did. A registry
//! that runs alone (`wharf registry`) has nothing attached and says so.
//!
//! The manifest travels as text, with the path it was read from (its directory is where the
//! services' commands run), and is checked by the same code that checked it at `wharf up`.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::Agent;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A manifest to apply, or with `dry_run` only to plan.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The manifest file's absolute path.
    pub path: String,
    pub manifest: String,
    pub dry_run: bool,
}

/// What an apply planned and, unless a dry run, did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Deployed {
    pub dry_run: bool,
    /// One line per step: `+ notes: start 1 instance`, `~ hello: replicas 3 -> 5`, ...
    pub plan: Vec<String>,
    /// Changes in the manifest that need `wharf up` started again, left as they are.
    pub not_applied: Vec<String>,
    /// How each step went (none on a dry run).
    pub outcomes: Vec<StepOutcome>,
}

/// How one service's step went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StepOutcome {
    pub service: String,
    pub ok: bool,
    pub detail: String,
}

/// What carries out an apply (the supervisor of `wharf up`). A refusal (the manifest does
/// not validate) is a `file:line: reason` and changes nothing.
pub trait Deployer: Send + Sync + 'static {
    fn deploy(&self, deployment: Deployment) -> BoxFuture<Result<Deployed, String>>;
}

/// Why an apply could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no `wharf up` runs with this registry: `wharf apply` changes what `wharf up` runs")]
    NoSupervisor,
    #[error("{0}")]
    Refused(String),
}

impl Agent {
    /// Makes `deployer` carry out this registry's `PUT /v1/wharf/apply`.
    pub fn attach_deployer(&self, deployer: std::sync::Arc<dyn Deployer>) {
        *self.deployer.write().expect("deployer lock") = Some(deployer);
    }

    /// Plans (and unless `dry_run` carries out) a manifest.
    pub async fn deploy(&self, deployment: Deployment) -> Result<Deployed, DeployError> {
        let deployer = self
            .deployer
            .read()
            .expect("deployer lock")
            .clone()
            .ok_or(DeployError::NoSupervisor)?;
        deployer
            .deploy(deployment)
            .await
            .map_err(DeployError::Refused)
    }
}
