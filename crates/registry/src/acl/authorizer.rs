//! What one token may do: its policies' rules merged, asked per resource.
//!
//! Consul's resolution: for a named resource the exact rule wins, else the longest prefix
//! rule that matches, else the default policy; rules for the same thing in several of the
//! token's policies merge with a deny winning, then the stronger grant. Managing ACLs is
//! never granted by a default of `allow`, only by a rule (or the management policy).

use std::collections::HashMap;
use std::fmt;

use super::rules::{Access, Global, Kind, Rules};

/// The policy for what no rule names (`[registry] acl.default_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPolicy {
    #[default]
    Allow,
    Deny,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Write => "write",
        }
    }
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Service(&'a str),
    /// The intentions whose destination is this service.
    Intention(&'a str),
    Node(&'a str),
    Agent(&'a str),
    Key(&'a str),
    Session(&'a str),
    /// User events of this name (`/v1/event/...`).
    Event(&'a str),
    Acl,
    Operator,
    Mesh,
}

impl Scope<'_> {
    fn name(&self) -> &'static str {
        match self {
            Scope::Service(_) => "service",
            Scope::Intention(_) => "intention",
            Scope::Node(_) => "node",
            Scope::Agent(_) => "agent",
            Scope::Key(_) => "key",
            Scope::Session(_) => "session",
            Scope::Event(_) => "event",
            Scope::Acl => "acl",
            Scope::Operator => "operator",
            Scope::Mesh => "mesh",
        }
    }

    fn on(&self) -> Option<&str> {
        match self {
            Scope::Service(n)
            | Scope::Intention(n)
            | Scope::Node(n)
            | Scope::Agent(n)
            | Scope::Key(n)
            | Scope::Session(n)
            | Scope::Event(n) => Some(n),
            Scope::Acl | Scope::Operator | Scope::Mesh => None,
        }
    }
}

/// A refusal, worded as Consul words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub accessor: String,
    pub permission: String,
    pub on: Option<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Permission denied: token with AccessorID '{}' lacks permission '{}'",
            self.accessor, self.permission
        )?;
        match &self.on {
            Some(on) => write!(f, " on {on:?}"),
            None => Ok(()),
        }
    }
}

/// Rules for one kind of named resource: exact names, and prefixes longest first.
#[derive(Debug, Default)]
struct Named {
    exact: HashMap<String, Access>,
    prefixes: Vec<(String, Access)>,
}

impl Named {
    fn add(&mut self, name: &str, prefix: bool, access: Access) {
        if prefix {
            match self.prefixes.iter_mut().find(|(p, _)| p == name) {
                Some((_, existing)) => *existing = existing.merge(access),
                None => self.prefixes.push((name.to_owned(), access)),
            }
        } else {
            self.exact
                .entry(name.to_owned())
                .and_modify(|existing| *existing = existing.merge(access))
                .or_insert(access);
        }
    }

    fn sort(&mut self) {
        self.prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    }

    fn lookup(&self, name: &str) -> Option<Access> {
        self.exact.get(name).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|(_, access)| *access)
        })
    }
}

#[derive(Debug)]
enum Grants {
    /// The management policy: everything.
    All,
    Rules {
        named: HashMap<Kind, Named>,
        intentions: Named,
        globals: HashMap<Global, Access>,
        default: DefaultPolicy,
    },
}

/// What one token may do.
#[derive(Debug)]
pub struct Authorizer {
    accessor: String,
    grants: Grants,
}

impl Authorizer {
    /// Everything, for a request when ACLs are off.
    pub fn allow_all() -> Authorizer {
        Authorizer::management(String::new())
    }

    pub fn management(accessor: String) -> Authorizer {
        Authorizer {
            accessor,
            grants: Grants::All,
        }
    }

    /// The merge of `rules` (a token's policies and identities), with `default` for what
    /// none of them names.
    pub fn from_rules<'r>(
        accessor: String,
        rules: impl IntoIterator<Item = &'r Rules>,
        default: DefaultPolicy,
    ) -> Authorizer {
        let mut named: HashMap<Kind, Named> = HashMap::new();
        let mut intentions = Named::default();
        let mut globals: HashMap<Global, Access> = HashMap::new();
        for rules in rules {
            for rule in &rules.rules {
                named
                    .entry(rule.kind)
                    .or_default()
                    .add(&rule.name, rule.prefix, rule.policy);
                if rule.kind == Kind::Service {
                    // Consul: a readable service's intentions are readable unless said.
                    let on_intentions = rule.intentions.unwrap_or(match rule.policy {
                        Access::Read | Access::Write => Access::Read,
                        Access::Deny | Access::List => Access::Deny,
                    });
                    intentions.add(&rule.name, rule.prefix, on_intentions);
                }
            }
            for (global, access) in &rules.globals {
                globals
                    .entry(*global)
                    .and_modify(|existing| *existing = existing.merge(*access))
                    .or_insert(*access);
            }
        }
        named.values_mut().for_each(Named::sort);
        intentions.sort();
        Authorizer {
            accessor,
            grants: Grants::Rules {
                named,
                intentions,
                globals,
                default,
            },
        }
    }

    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    pub fn is_management(&self) -> bool {
        matches!(self.grants, Grants::All)
    }

    /// Whether this token may do `need` on `scope`.
    pub fn allows(&self, scope: Scope<'_>, need: Need) -> bool {
        let Grants::Rules {
            named,
            intentions,
            globals,
            default,
        } = &self.grants
        else {
            return true;
        };
        let found = match scope {
            Scope::Service(n) => named.get(&Kind::Service).and_then(|r| r.lookup(n)),
            Scope::Intention(n) => intentions.lookup(n),
            Scope::Node(n) => named.get(&Kind::Node).and_then(|r| r.lookup(n)),
            Scope::Agent(n) => named.get(&Kind::Agent).and_then(|r| r.lookup(n)),
            Scope::Key(n) => named.get(&Kind::Key).and_then(|r| r.lookup(n)),
            Scope::Session(n) => named.get(&Kind::Session).and_then(|r| r.lookup(n)),
            Scope::Event(n) => named.get(&Kind::Event).and_then(|r| r.lookup(n)),
            // Managing ACLs takes a rule: the default never grants it.
            Scope::Acl => return globals.get(&Global::Acl).is_some_and(|a| grants(*a, need)),
            Scope::Operator => globals.get(&Global::Operator).copied(),
            // Consul: without a mesh rule, the operator rule decides.
            Scope::Mesh => globals
                .get(&Global::Mesh)
                .or_else(|| globals.get(&Global::Operator))
                .copied(),
        };
        match found {
            Some(access) => grants(access, need),
            None => *default == DefaultPolicy::Allow,
        }
    }

    /// [`Authorizer::allows`], or the refusal Consul gives.
    pub fn require(&self, scope: Scope<'_>, need: Need) -> Result<(), Denied> {
        if self.allows(scope, need) {
            return Ok(());
        }
        Err(Denied {
            accessor: self.accessor.clone(),
            permission: format!("{}:{}", scope.name(), need.name()),
            on: scope.on().map(str::to_owned),
        })
    }
}

fn grants(access: Access, need: Need) -> bool {
    match (access, need) {
        (Access::Write, _) => true,
        (Access::Read, Need::Read) => true,
        (Access::Read, Need::Write) | (Access::List, _) | (Access::Deny, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::parse;
    use super::*;

    fn authorizer(texts: &[&str], default: DefaultPolicy) -> Authorizer {
        let rules: Vec<Rules> = texts.iter().map(|t| parse(t).unwrap()).collect();
        Authorizer::from_rules("a-1".into(), &rules, default)
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_wins() {
        let a = authorizer(
            &[r#"
            service_prefix "" { policy = "read" }
            service_prefix "api-" { policy = "write" }
            service_prefix "api-internal" { policy = "deny" }
            service "api-internal-ok" { policy = "write" }
            "#],
            DefaultPolicy::Deny,
        );
        assert!(a.allows(Scope::Service("db"), Need::Read));
        assert!(!a.allows(Scope::Service("db"), Need::Write));
        assert!(a.allows(Scope::Service("api-web"), Need::Write));
        assert!(!a.allows(Scope::Service("api-internal-x"), Need::Read));
        assert!(a.allows(Scope::Service("api-internal-ok"), Need::Write));
    }

    #[test]
    fn the_default_decides_what_no_rule_names_but_never_grants_acl() {
        let deny = authorizer(
            &[r#"service "web" { policy = "write" }"#],
            DefaultPolicy::Deny,
        );
        assert!(!deny.allows(Scope::Service("db"), Need::Read));
        assert!(!deny.allows(Scope::Node("n1"), Need::Read));
        let allow = authorizer(
            &[r#"service "web" { policy = "deny" }"#],
            DefaultPolicy::Allow,
        );
        assert!(allow.allows(Scope::Service("db"), Need::Write));
        assert!(!allow.allows(Scope::Service("web"), Need::Read));
        assert!(!allow.allows(Scope::Acl, Need::Read));
        let acl = authorizer(&[r#"acl = "read""#], DefaultPolicy::Deny);
        assert!(acl.allows(Scope::Acl, Need::Read));
        assert!(!acl.allows(Scope::Acl, Need::Write));
    }

    #[test]
    fn policies_of_one_token_merge_with_deny_first() {
        let a = authorizer(
            &[
                r#"service "web" { policy = "read" } service "db" { policy = "write" }"#,
                r#"service "web" { policy = "write" } service "db" { policy = "deny" }"#,
            ],
            DefaultPolicy::Deny,
        );
        assert!(a.allows(Scope::Service("web"), Need::Write));
        assert!(!a.allows(Scope::Service("db"), Need::Read));
    }

    #[test]
    fn intentions_follow_the_service_unless_said() {
        let a = authorizer(
            &[r#"
            service "web" { policy = "read" }
            service "api" { policy = "read" intentions = "write" }
            service "db" { policy = "write" intentions = "deny" }
            "#],
            DefaultPolicy::Deny,
        );
        assert!(a.allows(Scope::Intention("web"), Need::Read));
        assert!(!a.allows(Scope::Intention("web"), Need::Write));
        assert!(a.allows(Scope::Intention("api"), Need::Write));
        assert!(!a.allows(Scope::Intention("db"), Need::Read));
        assert!(!a.allows(Scope::Intention("other"), Need::Read));
    }

    #[test]
    fn mesh_falls_back_to_operator() {
        let a = authorizer(&[r#"operator = "write""#], DefaultPolicy::Deny);
        assert!(a.allows(Scope::Mesh, Need::Write));
        let b = authorizer(
            &[r#"operator = "write" mesh = "read""#],
            DefaultPolicy::Deny,
        );
        assert!(!b.allows(Scope::Mesh, Need::Write));
    }

    #[test]
    fn a_refusal_reads_as_consuls() {
        let a = authorizer(&[""], DefaultPolicy::Deny);
        let denied = a.require(Scope::Service("db"), Need::Write).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "Permission denied: token with AccessorID 'a-1' lacks permission 'service:write' on \"db\""
        );
        let denied = a.require(Scope::Acl, Need::Read).unwrap_err();
        assert!(denied.to_string().ends_with("lacks permission 'acl:read'"));
        assert!(Authorizer::management("m".into()).allows(Scope::Acl, Need::Write));
    }
}
