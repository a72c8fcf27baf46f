//! Intentions: who may call whom, as Consul Connect says it (consul-compat, mesh-research
//! §1(b)). An intention names a source and a destination service (either may be `*`) and
//! either an action (L4: the whole connection) or HTTP permissions (L7: each request, the
//! first permission that matches decides).
//!
//! Precedence is Consul's (namespaces are all `default` here): exact → exact 9, `*` → exact 8,
//! exact → `*` 6, `*` → `*` 5. The most precise intention that matches decides; between two
//! of the same precedence, deny wins. When none matches, or an L7 intention's permissions
//! do not match the request, the configured default decides.
//!
//! Consul's L4-only answers (`/v1/connect/intentions/check`, `/v1/agent/connect/authorize`)
//! count an intention with permissions as a deny; a sidecar accepts such a connection and
//! decides per request ([`Intentions::decide_connection`], [`Intentions::decide_request`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::check_name;

/// What an intention (or a permission) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// `allow` or `deny`, as Consul writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// One intention, with Consul's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    /// Only intentions made through the legacy `POST /v1/connect/intentions` have one.
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source_name: String,
    #[serde(default)]
    pub destination_name: String,
    #[serde(rename = "SourceNS", default = "default_ns")]
    pub source_ns: String,
    #[serde(rename = "DestinationNS", default = "default_ns")]
    pub destination_ns: String,
    #[serde(default = "consul")]
    pub source_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Computed; whatever a client sends is ignored.
    #[serde(default)]
    pub precedence: u32,
}

fn default_ns() -> String {
    "default".to_owned()
}

fn consul() -> String {
    "consul".to_owned()
}

/// An L7 permission: an action for the requests that match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Permission {
    pub action: Action,
    #[serde(rename = "HTTP")]
    pub http: HttpMatch,
}

/// Which HTTP requests a permission is about; every part given must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderMatch>,
}

/// A condition on one request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// Why an intention cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentionError {
    #[error("{0}: must be a service name or \"*\"")]
    BadName(&'static str),
    #[error("an intention needs an Action (\"allow\" or \"deny\") or Permissions, not both")]
    ActionOrPermissions,
    #[error("SourceType must be \"consul\"")]
    SourceType,
    #[error("permission {0}: {1}")]
    BadPermission(usize, &'static str),
}

impl Intention {
    /// An L4 intention.
    pub fn new(source: &str, destination: &str, action: Action) -> Intention {
        Intention {
            source_name: source.to_owned(),
            destination_name: destination.to_owned(),
            source_ns: default_ns(),
            destination_ns: default_ns(),
            source_type: consul(),
            action: Some(action),
            ..Intention::default()
        }
    }

    /// Checks what a client sent and fills in what is computed (the precedence).
    pub fn validate(&mut self) -> Result<(), IntentionError> {
        let name_ok = |name: &str| name == "*" || check_name(name).is_ok();
        if !name_ok(&self.source_name) {
            return Err(IntentionError::BadName("SourceName"));
        }
        if !name_ok(&self.destination_name) {
            return Err(IntentionError::BadName("DestinationName"));
        }
        if self.source_type != "consul" {
            return Err(IntentionError::SourceType);
        }
        if self.action.is_some() != self.permissions.is_empty() {
            return Err(IntentionError::ActionOrPermissions);
        }
        for (i, permission) in self.permissions.iter().enumerate() {
            check_http(&permission.http).map_err(|why| IntentionError::BadPermission(i, why))?;
        }
        self.source_name = self.source_name.to_ascii_lowercase();
        self.destination_name = self.destination_name.to_ascii_lowercase();
        self.precedence = precedence(&self.source_name, &self.destination_name);
        Ok(())
    }

    fn matches(&self, source: &str, destination: &str) -> bool {
        (self.source_name == "*" || self.source_name.eq_ignore_ascii_case(source))
            && (self.destination_name == "*"
                || self.destination_name.eq_ignore_ascii_case(destination))
    }

    /// How Consul's logs and `authorize` name it: `web => db (allow)`.
    pub fn describe(&self) -> String {
        let what = match self.action {
            Some(Action::Allow) => "allow",
            Some(Action::Deny) => "deny",
            None => "L7",
        };
        format!("{} => {} ({what})", self.source_name, self.destination_name)
    }
}

fn check_http(http: &HttpMatch) -> Result<(), &'static str> {
    let paths = [&http.path_exact, &http.path_prefix, &http.path_regex]
        .iter()
        .filter(|p| p.is_some())
        .count();
    if paths > 1 {
        return Err("at most one of PathExact, PathPrefix and PathRegex");
    }
    if http.path_regex.is_some() {
        return Err("PathRegex is not supported yet; use PathExact or PathPrefix");
    }
    for path in [&http.path_exact, &http.path_prefix].into_iter().flatten() {
        if !path.starts_with('/') {
            return Err("a path must start with \"/\"");
        }
    }
    for method in &http.methods {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("Methods are upper-case HTTP methods");
        }
    }
    for header in &http.header {
        if header.name.is_empty() {
            return Err("a Header match needs a Name");
        }
        if header.regex.is_some() {
            return Err("Header Regex is not supported yet");
        }
        let conditions = [
            header.present,
            header.exact.is_some(),
            header.prefix.is_some(),
            header.suffix.is_some(),
        ]
        .iter()
        .filter(|c| **c)
        .count();
        if conditions != 1 {
            return Err("a Header match needs exactly one of Present, Exact, Prefix, Suffix");
        }
    }
    if paths == 0 && http.methods.is_empty() && http.header.is_empty() {
        return Err("HTTP needs a path, methods or headers to match");
    }
    Ok(())
}

/// Consul's precedence (OSS, one namespace).
pub fn precedence(source: &str, destination: &str) -> u32 {
    match (source == "*", destination == "*") {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

/// What to do when no intention decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Allow,
    Deny,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    /// The connection is allowed, but only per request: an L7 intention matched.
    pub per_request: bool,
}

/// The facts of a request an L7 permission looks at.
pub trait RequestFacts {
    fn method(&self) -> &str;
    fn path(&self) -> &str;
    /// The first value of a header, by lower-case name.
    fn header(&self, name: &str) -> Option<&str>;
}

/// A set of intentions in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct Intentions {
    sorted: Vec<Intention>,
    default: DefaultAction,
}

impl Intentions {
    pub fn new(mut intentions: Vec<Intention>, default: DefaultAction) -> Intentions {
        sort(&mut intentions);
        Intentions {
            sorted: intentions,
            default,
        }
    }

    pub fn all(&self) -> &[Intention] {
        &self.sorted
    }

    /// The intention that decides between `source` and `destination`, if any.
    pub fn deciding(&self, source: &str, destination: &str) -> Option<&Intention> {
        self.sorted.iter().find(|i| i.matches(source, destination))
    }

    /// Consul's L4 answer: an intention with permissions counts as a deny.
    pub fn check(&self, source: &str, destination: &str) -> Decision {
        match self.deciding(source, destination) {
            Some(i) => Decision {
                allowed: i.action == Some(Action::Allow),
                reason: format!("Matched intention: {}", i.describe()),
                per_request: false,
            },
            None => self.default_decision(),
        }
    }

    /// A sidecar's decision for a new connection: an L7 intention lets it in, to be decided
    /// per request.
    pub fn decide_connection(&self, source: &str, destination: &str) -> Decision {
        match self.deciding(source, destination) {
            Some(i) if i.action.is_none() => Decision {
                allowed: true,
                reason: format!("Matched L7 intention: {}", i.describe()),
                per_request: true,
            },
            _ => self.check(source, destination),
        }
    }

    /// A sidecar's decision for one request: the first permission that matches decides;
    /// when none does, the default.
    pub fn decide_request(
        &self,
        source: &str,
        destination: &str,
        request: &impl RequestFacts,
    ) -> Decision {
        let Some(intention) = self.deciding(source, destination) else {
            return self.default_decision();
        };
        if intention.action.is_some() {
            return self.check(source, destination);
        }
        for (n, permission) in intention.permissions.iter().enumerate() {
            if http_matches(&permission.http, request) {
                return Decision {
                    allowed: permission.action == Action::Allow,
                    reason: format!(
                        "Matched permission {n} of intention: {}",
                        intention.describe()
                    ),
                    per_request: true,
                };
            }
        }
        Decision {
            per_request: true,
            ..self.default_decision()
        }
    }

    fn default_decision(&self) -> Decision {
        let allowed = self.default == DefaultAction::Allow;
        Decision {
            allowed,
            reason: format!(
                "Default behavior configured by ACLs: {}",
                if allowed { "allow" } else { "deny" }
            ),
            per_request: false,
        }
    }
}

/// Evaluation order: precedence, highest first; deny before allow at the same precedence;
/// then by names, so that the order is stable.
pub fn sort(intentions: &mut [Intention]) {
    intentions.sort_by(order);
}

/// The order of [`sort`], for callers that sort something holding intentions.
pub fn order(a: &Intention, b: &Intention) -> std::cmp::Ordering {
    b.precedence
        .cmp(&a.precedence)
        .then_with(|| deny_first(a).cmp(&deny_first(b)))
        .then_with(|| a.source_name.cmp(&b.source_name))
        .then_with(|| a.destination_name.cmp(&b.destination_name))
}

fn deny_first(intention: &Intention) -> u8 {
    match intention.action {
        Some(Action::Deny) => 0,
        _ => 1,
    }
}

fn http_matches(http: &HttpMatch, request: &impl RequestFacts) -> bool {
    let path = request.path();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if http.path_exact.as_deref().is_some_and(|p| p != path) {
        return false;
    }
    if http
        .path_prefix
        .as_deref()
        .is_some_and(|p| !path.starts_with(p))
    {
        return false;
    }
    if !http.methods.is_empty() && !http.methods.iter().any(|m| m == request.method()) {
        return false;
    }
    http.header.iter().all(|h| {
        let value = request.header(&h.name.to_ascii_lowercase());
        let matched = match value {
            None => false,
            Some(v) => {
                h.present
                    || h.exact.as_deref() == Some(v)
                    || h.prefix.as_deref().is_some_and(|p| v.starts_with(p))
                    || h.suffix.as_deref().is_some_and(|s| v.ends_with(s))
            }
        };
        matched != h.invert
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(mut intention: Intention) -> Intention {
        intention.validate().unwrap();
        intention
    }

    struct Request<'a>(&'a str, &'a str, &'a [(&'a str, &'a str)]);

    impl RequestFacts for Request<'_> {
        fn method(&self) -> &str {
            self.0
        }
        fn path(&self) -> &str {
            self.1
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.2.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }
    }

    #[test]
    fn the_most_precise_intention_decides_and_deny_wins_ties() {
        let set = Intentions::new(
            vec![
                valid(Intention::new("*", "*", Action::Deny)),
                valid(Intention::new("web", "*", Action::Allow)),
                valid(Intention::new("*", "db", Action::Deny)),
                valid(Intention::new("web", "db", Action::Allow)),
            ],
            DefaultAction::Allow,
        );
        assert!(set.check("web", "db").allowed, "exact beats every wildcard");
        assert_eq!(
            set.check("web", "db").reason,
            "Matched intention: web => db (allow)"
        );
        assert!(!set.check("api", "db").allowed, "* => db");
        assert!(set.check("web", "cache").allowed, "web => *");
        assert!(!set.check("api", "cache").allowed, "* => *");

        let tie = Intentions::new(
            vec![
                valid(Intention::new("web", "db", Action::Allow)),
                valid(Intention::new("web", "db", Action::Deny)),
            ],
            DefaultAction::Allow,
        );
        assert!(!tie.check("web", "db").allowed);
    }

    #[test]
    fn nothing_matching_takes_the_default() {
        let open = Intentions::new(vec![], DefaultAction::Allow);
        assert!(open.check("a", "b").allowed);
        let closed = Intentions::new(vec![], DefaultAction::Deny);
        let decision = closed.check("a", "b");
        assert!(!decision.allowed);
        assert!(decision.reason.contains("deny"), "{}", decision.reason);
    }

    #[test]
    fn l7_permissions_decide_per_request_first_match_wins() {
        let mut l7 = Intention::new("web", "api", Action::Allow);
        l7.action = None;
        l7.permissions = vec![
            Permission {
                action: Action::Deny,
                http: HttpMatch {
                    path_prefix: Some("/admin".into()),
                    ..HttpMatch::default()
                },
            },
            Permission {
                action: Action::Allow,
                http: HttpMatch {
                    path_prefix: Some("/".into()),
                    methods: vec!["GET".into(), "HEAD".into()],
                    header: vec![HeaderMatch {
                        name: "X-Tenant".into(),
                        prefix: Some("acme".into()),
                        ..HeaderMatch::default()
                    }],
                    ..HttpMatch::default()
                },
            },
        ];
        let set = Intentions::new(vec![valid(l7)], DefaultAction::Deny);
        assert!(
            !set.check("web", "api").allowed,
            "an L4 check counts L7 as deny"
        );
        assert!(set.decide_connection("web", "api").per_request);
        let tenant = [("x-tenant", "acme-1")];
        assert!(
            set.decide_request("web", "api", &Request("GET", "/items?x=1", &tenant))
                .allowed
        );
        assert!(
            !set.decide_request("web", "api", &Request("GET", "/admin/x", &tenant))
                .allowed
        );
        assert!(
            !set.decide_request("web", "api", &Request("POST", "/items", &tenant))
                .allowed
        );
        assert!(
            !set.decide_request("web", "api", &Request("GET", "/items", &[]))
                .allowed
        );
    }

    #[test]
    fn bad_intentions_are_refused_with_a_reason() {
        let refused = |mut i: Intention| i.validate().unwrap_err();
        assert_eq!(
            refused(Intention::new("web/x", "db", Action::Allow)),
            IntentionError::BadName("SourceName")
        );
        let mut neither = Intention::new("web", "db", Action::Allow);
        neither.action = None;
        assert_eq!(refused(neither), IntentionError::ActionOrPermissions);
        let mut regex = Intention::new("web", "db", Action::Allow);
        regex.action = None;
        regex.permissions = vec![Permission {
            action: Action::Allow,
            http: HttpMatch {
                path_regex: Some(".*".into()),
                ..HttpMatch::default()
            },
        }];
        assert!(matches!(
            refused(regex),
            IntentionError::BadPermission(0, _)
        ));
        let unknown: Result<Intention, _> =
            serde_json::from_str(r#"{"SourceName":"a","DestinationName":"b","Action":"maybe"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn consuls_json_shape() {
        let intention: Intention = serde_json::from_str(
            r#"{"SourceName":"web","DestinationName":"db","Action":"allow","Meta":{"a":"b"}}"#,
        )
        .unwrap();
        let mut intention = intention;
        intention.validate().unwrap();
        let json = serde_json::to_value(&intention).unwrap();
        assert_eq!(json["SourceNS"], "default");
        assert_eq!(json["SourceType"], "consul");
        assert_eq!(json["Precedence"], 9);
        assert_eq!(json["Action"], "allow");
        assert!(json.get("ID").is_none());
    }
}
