//! Consul's ACLs, the part that keeps strangers out of the API: policies of rules, tokens
//! linked to policies (or to a service's or node's identity), bootstrap once, and the
//! anonymous token for requests that carry none.
//!
//! - [`rules`] — the policy language, parsed;
//! - [`authorizer`] — what one token may do;
//! - this module — the records as the store keeps them (`wharf/acl/...`, so every registry
//!   node on one store shares them), their in-memory view in the catalog, and their writes.
//!
//! A request's token is resolved from the catalog's view, never from the store, and the
//! merged rules of a token are kept until any ACL record changes, so a request pays a map
//! lookup for its authorizer. Secrets come from the operating system's random source.

pub mod authorizer;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wharf_store::{Compare, Op, Txn};

pub use authorizer::{Authorizer, DefaultPolicy, Denied, Need, Scope};
use rules::{Access, Kind, Rule, Rules};

use crate::agent::{Agent, RegistryError};
use crate::catalog::Stored;
use crate::keys;

/// The built-in policy that grants everything.
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";
/// The token of requests that carry none.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_SECRET: &str = "anonymous";

/// How ACLs run (`[registry] acl = { enabled, default_policy }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub enabled: bool,
    /// What no rule names gets (Consul's default: allow).
    pub default_policy: DefaultPolicy,
}

/// A policy as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: String,
    #[serde(default)]
    pub datacenters: Vec<String>,
}

/// A token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor_id: String,
    pub secret_id: String,
    #[serde(default)]
    pub description: String,
    /// Linked policies, by id.
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub service_identities: Vec<ServiceIdentity>,
    #[serde(default)]
    pub node_identities: Vec<NodeIdentity>,
    #[serde(default)]
    pub local: bool,
    /// Milliseconds since the epoch.
    pub create_time: u64,
    /// Milliseconds since the epoch after which the token is unknown.
    #[serde(default)]
    pub expiration_time: Option<u64>,
}

/// Consul's service identity: write on the service (and its sidecar proxy), read on every
/// service and node, which is what an instance needs to register and discover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceIdentity {
    pub service_name: String,
    #[serde(default)]
    pub datacenters: Vec<String>,
}

/// Consul's node identity: write on the node, read on every service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_name: String,
    #[serde(default)]
    pub datacenter: String,
}

/// The record that bootstrap happened, and with which token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub accessor_id: String,
}

/// Why a request's token does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Consul's answer for an unknown or expired secret (403).
    #[error("ACL not found")]
    NotFound,
}

/// The ACL records of the catalog.
#[derive(Debug, Default)]
pub struct AclState {
    /// Policies by id, the built-in management policy not among them.
    pub policies: BTreeMap<String, Stored<Policy>>,
    /// Each policy's rules, parsed when loaded.
    rules: HashMap<String, Arc<Rules>>,
    /// Tokens by accessor id (the anonymous token once it has been written).
    pub tokens: BTreeMap<String, Stored<Token>>,
    /// Accessor ids by secret.
    by_secret: HashMap<String, String>,
    pub bootstrap: Option<Stored<Bootstrap>>,
    /// The last change of any ACL record.
    pub index: u64,
    /// Merged rules by accessor, dropped on any change.
    authorizers: Mutex<HashMap<String, Arc<Authorizer>>>,
}

/// A record under `wharf/acl/`.
#[derive(Debug)]
pub(crate) enum AclRecord {
    Policy(Policy),
    Token(Token),
    Bootstrap(Bootstrap),
}

pub(crate) fn decode(key: &str, value: &[u8]) -> Result<AclRecord, serde_json::Error> {
    if key.starts_with(keys::ACL_POLICIES) {
        serde_json::from_slice(value).map(AclRecord::Policy)
    } else if key.starts_with(keys::ACL_TOKENS) {
        serde_json::from_slice(value).map(AclRecord::Token)
    } else {
        serde_json::from_slice(value).map(AclRecord::Bootstrap)
    }
}

impl AclState {
    /// Applies one change of the record at `key` (`None`: deleted).
    pub(crate) fn apply(
        &mut self,
        key: &str,
        record: Option<AclRecord>,
        create: u64,
        revision: u64,
    ) {
        self.index = self.index.max(revision);
        self.authorizers.lock().expect("authorizer cache").clear();
        fn stored<T>(value: T, create: u64, revision: u64) -> Stored<T> {
            Stored {
                value,
                create_index: create,
                modify_index: revision,
            }
        }
        if let Some(id) = key.strip_prefix(keys::ACL_POLICIES) {
            self.policies.remove(id);
            self.rules.remove(id);
            if let Some(AclRecord::Policy(policy)) = record {
                // Rules were checked when written; a record that does not parse grants
                // nothing rather than stopping the registry.
                let parsed = rules::parse(&policy.rules).unwrap_or_else(|e| {
                    tracing::warn!(policy = %policy.name, error = %e, "ACL policy rules unreadable");
                    Rules::default()
                });
                self.rules.insert(id.to_owned(), Arc::new(parsed));
                self.policies
                    .insert(id.to_owned(), stored(policy, create, revision));
            }
        } else if let Some(accessor) = key.strip_prefix(keys::ACL_TOKENS) {
            if let Some(old) = self.tokens.remove(accessor) {
                self.by_secret.remove(&old.value.secret_id);
            }
            if let Some(AclRecord::Token(token)) = record {
                self.by_secret
                    .insert(token.secret_id.clone(), accessor.to_owned());
                self.tokens
                    .insert(accessor.to_owned(), stored(token, create, revision));
            }
        } else if key == keys::ACL_BOOTSTRAP {
            self.bootstrap = match record {
                Some(AclRecord::Bootstrap(b)) => Some(stored(b, create, revision)),
                _ => None,
            };
        }
    }

    /// The anonymous token: as written, or as it is before anyone touched it (no policies).
    pub fn anonymous(&self) -> Stored<Token> {
        self.tokens
            .get(ANONYMOUS_ACCESSOR)
            .cloned()
            .unwrap_or_else(|| Stored {
                value: Token {
                    accessor_id: ANONYMOUS_ACCESSOR.to_owned(),
                    secret_id: ANONYMOUS_SECRET.to_owned(),
                    description: "Anonymous Token".to_owned(),
                    policies: Vec::new(),
                    service_identities: Vec::new(),
                    node_identities: Vec::new(),
                    local: false,
                    create_time: 0,
                    expiration_time: None,
                },
                create_index: 0,
                modify_index: 0,
            })
    }

    /// The token with `accessor`, the anonymous one included.
    pub fn token(&self, accessor: &str) -> Option<Stored<Token>> {
        match self.tokens.get(accessor) {
            Some(token) => Some(token.clone()),
            None if accessor == ANONYMOUS_ACCESSOR => Some(self.anonymous()),
            None => None,
        }
    }

    /// Every token, the anonymous one included, by accessor id.
    pub fn all_tokens(&self) -> Vec<Stored<Token>> {
        let mut all: Vec<Stored<Token>> = self.tokens.values().cloned().collect();
        if !self.tokens.contains_key(ANONYMOUS_ACCESSOR) {
            all.push(self.anonymous());
            all.sort_by(|a, b| a.value.accessor_id.cmp(&b.value.accessor_id));
        }
        all
    }

    /// The token whose secret is `secret`, unless it has expired at `now_ms`.
    pub fn token_by_secret(&self, secret: &str, now_ms: u64) -> Option<Stored<Token>> {
        let token = match self.by_secret.get(secret) {
            Some(accessor) => self.tokens.get(accessor).cloned()?,
            None if secret == ANONYMOUS_SECRET => self.anonymous(),
            None => return None,
        };
        let expired = token.value.expiration_time.is_some_and(|at| at <= now_ms);
        (!expired).then_some(token)
    }

    /// The policy with `id`, the built-in one included.
    pub fn policy(&self, id: &str) -> Option<Stored<Policy>> {
        if id == MANAGEMENT_POLICY_ID {
            return Some(management_policy());
        }
        self.policies.get(id).cloned()
    }

    /// The policy named `name`, the built-in one included.
    pub fn policy_named(&self, name: &str) -> Option<Stored<Policy>> {
        if name == MANAGEMENT_POLICY_NAME {
            return Some(management_policy());
        }
        self.policies
            .values()
            .find(|p| p.value.name == name)
            .cloned()
    }

    /// Every policy, the built-in one first.
    pub fn all_policies(&self) -> Vec<Stored<Policy>> {
        std::iter::once(management_policy())
            .chain(self.policies.values().cloned())
            .collect()
    }

    /// What the bearer of `secret` (none: the anonymous token) may do.
    pub fn authorizer(
        &self,
        secret: Option<&str>,
        default: DefaultPolicy,
        now_ms: u64,
    ) -> Result<Arc<Authorizer>, AclError> {
        let token = self
            .token_by_secret(secret.unwrap_or(ANONYMOUS_SECRET), now_ms)
            .ok_or(AclError::NotFound)?
            .value;
        let mut cache = self.authorizers.lock().expect("authorizer cache");
        if let Some(found) = cache.get(&token.accessor_id) {
            return Ok(found.clone());
        }
        let authorizer = Arc::new(self.build(&token, default));
        cache.insert(token.accessor_id.clone(), authorizer.clone());
        Ok(authorizer)
    }

    fn build(&self, token: &Token, default: DefaultPolicy) -> Authorizer {
        if token.policies.iter().any(|id| id == MANAGEMENT_POLICY_ID) {
            return Authorizer::management(token.accessor_id.clone());
        }
        // A link to a deleted policy grants nothing.
        let mut all: Vec<Arc<Rules>> = token
            .policies
            .iter()
            .filter_map(|id| self.rules.get(id).cloned())
            .collect();
        all.extend(
            token
                .service_identities
                .iter()
                .map(|s| Arc::new(service_identity_rules(&s.service_name))),
        );
        all.extend(
            token
                .node_identities
                .iter()
                .map(|n| Arc::new(node_identity_rules(&n.node_name))),
        );
        Authorizer::from_rules(
            token.accessor_id.clone(),
            all.iter().map(|r| r.as_ref()),
            default,
        )
    }
}

fn rule(kind: Kind, name: &str, prefix: bool, policy: Access) -> Rule {
    Rule {
        kind,
        name: name.to_owned(),
        prefix,
        policy,
        intentions: None,
    }
}

/// Consul's synthetic policy of a service identity.
pub fn service_identity_rules(service: &str) -> Rules {
    Rules {
        rules: vec![
            rule(Kind::Service, service, false, Access::Write),
            rule(
                Kind::Service,
                &format!("{service}-sidecar-proxy"),
                false,
                Access::Write,
            ),
            rule(Kind::Service, "", true, Access::Read),
            rule(Kind::Node, "", true, Access::Read),
        ],
        globals: Vec::new(),
    }
}

/// Consul's synthetic policy of a node identity.
pub fn node_identity_rules(node: &str) -> Rules {
    Rules {
        rules: vec![
            rule(Kind::Node, node, false, Access::Write),
            rule(Kind::Service, "", true, Access::Read),
        ],
        globals: Vec::new(),
    }
}

/// The built-in management policy, as Consul shows it.
fn management_policy() -> Stored<Policy> {
    Stored {
        value: Policy {
            id: MANAGEMENT_POLICY_ID.to_owned(),
            name: MANAGEMENT_POLICY_NAME.to_owned(),
            description: "Builtin Policy that grants unlimited access".to_owned(),
            rules: "\nacl = \"write\"\nagent_prefix \"\" {\n  policy = \"write\"\n}\n\
                    event_prefix \"\" {\n  policy = \"write\"\n}\nkey_prefix \"\" {\n  \
                    policy = \"write\"\n}\nkeyring = \"write\"\nnode_prefix \"\" {\n  \
                    policy = \"write\"\n}\noperator = \"write\"\nmesh = \"write\"\n\
                    peering = \"write\"\nquery_prefix \"\" {\n  policy = \"write\"\n}\n\
                    service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"write\"\n}\n\
                    session_prefix \"\" {\n  policy = \"write\"\n}"
                .to_owned(),
            datacenters: Vec::new(),
        },
        create_index: 0,
        modify_index: 0,
    }
}

/// A random UUID from the operating system's random source: token secrets must not be
/// guessable.
pub fn secret_uuid() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source");
    crate::node::uuid_from(bytes)
}

/// Whether `name` can name a policy (Consul: letters, digits, `-` and `_`, 1 to 128).
fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a policy write asks for.
#[derive(Debug, Clone, Default)]
pub struct PolicyRequest {
    /// `None` to create.
    pub id: Option<String>,
    pub name: String,
    pub description: String,
    pub rules: String,
    pub datacenters: Vec<String>,
}

/// What a token write asks for; links to policies by id or by name.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub accessor_id: Option<String>,
    pub secret_id: Option<String>,
    pub description: String,
    pub policy_ids: Vec<String>,
    pub policy_names: Vec<String>,
    pub service_identities: Vec<ServiceIdentity>,
    pub node_identities: Vec<NodeIdentity>,
    pub local: bool,
    /// Milliseconds since the epoch.
    pub expiration_time: Option<u64>,
}

impl Agent {
    /// Makes the first management token, once for the whole store (whichever node gets
    /// there first); afterwards a 403 with the reset index, as Consul answers.
    pub async fn acl_bootstrap(
        &self,
        secret: Option<String>,
    ) -> Result<Stored<Token>, RegistryError> {
        let token = Token {
            accessor_id: secret_uuid(),
            secret_id: secret.unwrap_or_else(secret_uuid),
            description: "Bootstrap Token (Global Management)".to_owned(),
            policies: vec![MANAGEMENT_POLICY_ID.to_owned()],
            service_identities: Vec::new(),
            node_identities: Vec::new(),
            local: false,
            create_time: crate::now_ms(),
            expiration_time: None,
        };
        let bootstrap = Bootstrap {
            accessor_id: token.accessor_id.clone(),
        };
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: keys::ACL_BOOTSTRAP.to_owned(),
                revision: 0,
            })
            .op(Op::put(keys::ACL_BOOTSTRAP, to_vec(&bootstrap)))
            .op(Op::put(
                &keys::acl_token_key(&token.accessor_id),
                to_vec(&token),
            ));
        if !self.commit_when(txn).await? {
            let reset = self
                .catalog
                .read(|s| s.acl.bootstrap.as_ref().map_or(0, |b| b.modify_index + 1));
            return Err(RegistryError::Forbidden(format!(
                "ACL bootstrap no longer allowed (reset index: {reset})"
            )));
        }
        self.stored_token(&token.accessor_id)
    }

    fn stored_token(&self, accessor: &str) -> Result<Stored<Token>, RegistryError> {
        self.catalog
            .read(|s| s.acl.token(accessor))
            .ok_or_else(|| RegistryError::NotFound(format!("token {accessor} vanished")))
    }

    /// Creates a policy, or replaces the one with `request.id`.
    pub async fn acl_write_policy(
        &self,
        request: PolicyRequest,
    ) -> Result<Stored<Policy>, RegistryError> {
        if !valid_policy_name(&request.name) {
            return Err(RegistryError::BadRequest(format!(
                "Invalid Policy: invalid Name {:?}: use 1 to 128 letters, digits, '-' or '_'",
                request.name
            )));
        }
        rules::parse(&request.rules)
            .map_err(|e| RegistryError::BadRequest(format!("Failed to parse ACL rules: {e}")))?;
        let (existing, clash) = self.catalog.read(|s| {
            let existing = request
                .id
                .as_ref()
                .map(|id| s.acl.policies.get(id).cloned());
            let clash = s
                .acl
                .policy_named(&request.name)
                .filter(|p| Some(&p.value.id) != request.id.as_ref());
            (existing, clash)
        });
        if request.id.as_deref() == Some(MANAGEMENT_POLICY_ID) {
            return Err(RegistryError::BadRequest(
                "Changing the builtin global-management policy is not permitted".to_owned(),
            ));
        }
        if let Some(clash) = clash {
            return Err(RegistryError::BadRequest(format!(
                "Invalid Policy: A Policy with Name {:?} already exists ({})",
                request.name, clash.value.id
            )));
        }
        let (id, revision) = match (request.id, existing) {
            (Some(id), Some(Some(stored))) => (id, stored.modify_index),
            (Some(id), _) => {
                return Err(RegistryError::NotFound(format!(
                    "Cannot find policy {id:?}"
                )));
            }
            (None, _) => (secret_uuid(), 0),
        };
        let policy = Policy {
            id: id.clone(),
            name: request.name,
            description: request.description,
            rules: request.rules,
            datacenters: request.datacenters,
        };
        self.put_unless_changed(&keys::acl_policy_key(&id), revision, &policy, "policy")
            .await?;
        self.catalog
            .read(|s| s.acl.policies.get(&id).cloned())
            .ok_or_else(|| RegistryError::NotFound(format!("policy {id} vanished")))
    }

    /// Deletes a policy; tokens linked to it lose what it granted.
    pub async fn acl_delete_policy(&self, id: &str) -> Result<(), RegistryError> {
        if id == MANAGEMENT_POLICY_ID {
            return Err(RegistryError::BadRequest(
                "Delete of the builtin global-management policy is not permitted".to_owned(),
            ));
        }
        if !self.catalog.read(|s| s.acl.policies.contains_key(id)) {
            return Err(RegistryError::NotFound(format!(
                "Cannot find policy {id:?}"
            )));
        }
        self.commit(Txn::new().op(Op::delete(&keys::acl_policy_key(id))))
            .await
    }

    /// Creates a token, or replaces the one with `request.accessor_id` (keeping its secret
    /// and creation time). Policies named must exist.
    pub async fn acl_write_token(
        &self,
        request: TokenRequest,
        create: bool,
    ) -> Result<Stored<Token>, RegistryError> {
        let (policies, existing) = self.catalog.read(|s| {
            let mut ids = Vec::new();
            for id in &request.policy_ids {
                s.acl.policy(id).ok_or_else(|| {
                    RegistryError::BadRequest(format!("Cannot find policy with ID {id:?}"))
                })?;
                ids.push(id.clone());
            }
            for name in &request.policy_names {
                let policy = s.acl.policy_named(name).ok_or_else(|| {
                    RegistryError::BadRequest(format!("Cannot find policy named {name:?}"))
                })?;
                ids.push(policy.value.id);
            }
            ids.dedup();
            let existing = request.accessor_id.as_ref().and_then(|a| s.acl.token(a));
            let secret_taken = request.secret_id.as_ref().is_some_and(|secret| {
                s.acl
                    .by_secret
                    .get(secret)
                    .is_some_and(|owner| Some(owner) != request.accessor_id.as_ref())
            });
            if secret_taken {
                return Err(RegistryError::BadRequest(
                    "Invalid Token: SecretID is already in use".to_owned(),
                ));
            }
            Ok((ids, existing))
        })?;
        for identity in &request.service_identities {
            if identity.service_name.is_empty() {
                return Err(RegistryError::BadRequest(
                    "Invalid Token: ServiceIdentity is missing the ServiceName field".to_owned(),
                ));
            }
        }
        for identity in &request.node_identities {
            if identity.node_name.is_empty() {
                return Err(RegistryError::BadRequest(
                    "Invalid Token: NodeIdentity is missing the NodeName field".to_owned(),
                ));
            }
        }
        let (accessor, secret, created, revision) = match (existing, create) {
            (Some(_), true) => {
                return Err(RegistryError::BadRequest(
                    "Invalid Token: AccessorID is already in use".to_owned(),
                ));
            }
            (Some(old), false) => {
                if request
                    .secret_id
                    .as_ref()
                    .is_some_and(|s| *s != old.value.secret_id)
                {
                    return Err(RegistryError::BadRequest(
                        "Changing a token's SecretID is not permitted".to_owned(),
                    ));
                }
                let revision =
                    if old.value.accessor_id == ANONYMOUS_ACCESSOR && old.modify_index == 0 {
                        0
                    } else {
                        old.modify_index
                    };
                (
                    old.value.accessor_id,
                    old.value.secret_id,
                    old.value.create_time,
                    revision,
                )
            }
            (None, false) => {
                return Err(RegistryError::NotFound(format!(
                    "Cannot find token {:?}",
                    request.accessor_id.unwrap_or_default()
                )));
            }
            (None, true) => (
                request.accessor_id.clone().unwrap_or_else(secret_uuid),
                request.secret_id.clone().unwrap_or_else(secret_uuid),
                crate::now_ms(),
                0,
            ),
        };
        let token = Token {
            accessor_id: accessor.clone(),
            secret_id: secret,
            description: request.description,
            policies,
            service_identities: request.service_identities,
            node_identities: request.node_identities,
            local: request.local,
            create_time: created,
            expiration_time: request.expiration_time,
        };
        self.put_unless_changed(&keys::acl_token_key(&accessor), revision, &token, "token")
            .await?;
        self.stored_token(&accessor)
    }

    /// Writes `value` at `key` if the key is still at `revision` (0: absent); a write that
    /// lost a race is a 400 asking to try again.
    async fn put_unless_changed(
        &self,
        key: &str,
        revision: u64,
        value: &impl Serialize,
        what: &str,
    ) -> Result<(), RegistryError> {
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: key.to_owned(),
                revision,
            })
            .op(Op::put(key, to_vec(value)));
        if self.commit_when(txn).await? {
            Ok(())
        } else {
            Err(RegistryError::BadRequest(format!(
                "the {what} changed while it was being written; try again"
            )))
        }
    }

    /// Deletes a token; not the anonymous one, nor the one the request is made with.
    pub async fn acl_delete_token(
        &self,
        accessor: &str,
        requested_by: &str,
    ) -> Result<(), RegistryError> {
        if accessor == ANONYMOUS_ACCESSOR {
            return Err(RegistryError::Forbidden(
                "Delete of the anonymous token is not permitted".to_owned(),
            ));
        }
        if accessor == requested_by {
            return Err(RegistryError::Forbidden(
                "Deletion of the request's authorization token is not permitted".to_owned(),
            ));
        }
        if !self.catalog.read(|s| s.acl.tokens.contains_key(accessor)) {
            return Err(RegistryError::NotFound(format!(
                "Cannot find token {accessor:?}"
            )));
        }
        self.commit(Txn::new().op(Op::delete(&keys::acl_token_key(accessor))))
            .await
    }

    /// The management token this node's own parts (`wharf up`'s supervisor, gateway and
    /// sidecars) call the API with: made once per node name and kept in the store, so a
    /// restart finds it again. Its accessor id is derived from the node's name.
    pub async fn acl_node_token(&self) -> Result<String, RegistryError> {
        let node = self.node().name.clone();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("wharf-node-token/{node}").as_bytes(),
        );
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        let accessor = crate::node::uuid_from(bytes);
        if let Some(token) = self.catalog.read(|s| s.acl.token(&accessor)) {
            return Ok(token.value.secret_id);
        }
        let token = self
            .acl_write_token(
                TokenRequest {
                    accessor_id: Some(accessor),
                    description: format!("wharf: the parts of node {node}"),
                    policy_ids: vec![MANAGEMENT_POLICY_ID.to_owned()],
                    local: true,
                    ..TokenRequest::default()
                },
                true,
            )
            .await?;
        Ok(token.value.secret_id)
    }
}

fn to_vec(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("ACL records serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(accessor: &str, secret: &str, policies: &[&str]) -> Token {
        Token {
            accessor_id: accessor.into(),
            secret_id: secret.into(),
            description: String::new(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            service_identities: Vec::new(),
            node_identities: Vec::new(),
            local: false,
            create_time: 0,
            expiration_time: None,
        }
    }

    fn put(state: &mut AclState, key: String, record: AclRecord, revision: u64) {
        state.apply(&key, Some(record), revision, revision);
    }

    #[test]
    fn tokens_resolve_by_secret_to_their_policies() {
        let mut state = AclState::default();
        put(
            &mut state,
            keys::acl_policy_key("p1"),
            AclRecord::Policy(Policy {
                id: "p1".into(),
                name: "web".into(),
                description: String::new(),
                rules: r#"service "web" { policy = "write" }"#.into(),
                datacenters: Vec::new(),
            }),
            2,
        );
        put(
            &mut state,
            keys::acl_token_key("a1"),
            AclRecord::Token(token("a1", "s1", &["p1"])),
            3,
        );
        let web = state
            .authorizer(Some("s1"), DefaultPolicy::Deny, 0)
            .unwrap();
        assert!(web.allows(Scope::Service("web"), Need::Write));
        assert!(!web.allows(Scope::Service("db"), Need::Write));
        assert_eq!(
            state
                .authorizer(Some("nope"), DefaultPolicy::Deny, 0)
                .unwrap_err(),
            AclError::NotFound
        );
        // No token: the anonymous one, with nothing under default deny.
        let anonymous = state.authorizer(None, DefaultPolicy::Deny, 0).unwrap();
        assert_eq!(anonymous.accessor(), ANONYMOUS_ACCESSOR);
        assert!(!anonymous.allows(Scope::Service("web"), Need::Read));

        // Changing the policy changes what the token may do (the cache is dropped).
        put(
            &mut state,
            keys::acl_policy_key("p1"),
            AclRecord::Policy(Policy {
                id: "p1".into(),
                name: "web".into(),
                description: String::new(),
                rules: r#"service "db" { policy = "write" }"#.into(),
                datacenters: Vec::new(),
            }),
            4,
        );
        let changed = state
            .authorizer(Some("s1"), DefaultPolicy::Deny, 0)
            .unwrap();
        assert!(changed.allows(Scope::Service("db"), Need::Write));
        assert!(!changed.allows(Scope::Service("web"), Need::Write));

        // Deleted: unknown.
        state.apply(&keys::acl_token_key("a1"), None, 0, 5);
        assert!(
            state
                .authorizer(Some("s1"), DefaultPolicy::Deny, 0)
                .is_err()
        );
        assert_eq!(state.index, 5);
    }

    #[test]
    fn an_expired_token_is_unknown_and_management_grants_all() {
        let mut state = AclState::default();
        let mut expiring = token("a2", "s2", &[MANAGEMENT_POLICY_ID]);
        expiring.expiration_time = Some(1_000);
        put(
            &mut state,
            keys::acl_token_key("a2"),
            AclRecord::Token(expiring),
            2,
        );
        let live = state
            .authorizer(Some("s2"), DefaultPolicy::Deny, 999)
            .unwrap();
        assert!(live.is_management());
        assert!(
            state
                .authorizer(Some("s2"), DefaultPolicy::Deny, 1_000)
                .is_err()
        );
    }

    #[test]
    fn identities_grant_what_consul_s_do() {
        let mut state = AclState::default();
        let mut t = token("a3", "s3", &[]);
        t.service_identities.push(ServiceIdentity {
            service_name: "web".into(),
            datacenters: Vec::new(),
        });
        put(
            &mut state,
            keys::acl_token_key("a3"),
            AclRecord::Token(t),
            2,
        );
        let a = state
            .authorizer(Some("s3"), DefaultPolicy::Deny, 0)
            .unwrap();
        assert!(a.allows(Scope::Service("web"), Need::Write));
        assert!(a.allows(Scope::Service("web-sidecar-proxy"), Need::Write));
        assert!(a.allows(Scope::Service("db"), Need::Read));
        assert!(!a.allows(Scope::Service("db"), Need::Write));
        assert!(a.allows(Scope::Node("n1"), Need::Read));
    }

    #[test]
    fn secrets_are_uuids_and_differ() {
        let a = secret_uuid();
        assert_eq!(a.len(), 36);
        assert_ne!(a, secret_uuid());
    }
}
