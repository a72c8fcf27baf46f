//! ACL rules: the policy language of Consul's ACLs, in HCL or in the same shape as JSON.
//!
//! ```hcl
//! service "web" { policy = "write" }
//! service_prefix "" { policy = "read"  intentions = "read" }
//! node_prefix "" { policy = "read" }
//! operator = "read"
//! ```
//!
//! Written by hand: rules use a small corner of HCL (blocks `kind "name" { attr = "value" }`
//! and top-level `kind = "value"`), and an HCL crate would bring a whole language, and its
//! surface to fuzz, for it. Unlike Consul's decoder, an unknown kind or attribute is an
//! error rather than ignored, so that a typo (`servcie`) cannot silently grant nothing.
//! Errors name the line and column.

use std::fmt;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Deny,
    /// Keys only: list the keys, without reading their values.
    List,
    Read,
    Write,
}

impl Access {
    fn parse(text: &str) -> Option<Access> {
        match text {
            "deny" => Some(Access::Deny),
            "list" => Some(Access::List),
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }

    /// Which of two grants for the same thing in two policies of one token wins, as Consul
    /// merges them: a deny, then the stronger grant.
    pub fn merge(self, other: Access) -> Access {
        let rank = |a: Access| match a {
            Access::Deny => 3,
            Access::Write => 2,
            Access::Read => 1,
            Access::List => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// What a rule with a name applies to (`service "web"`, `key_prefix "app/"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Service,
    Node,
    Key,
    Agent,
    Session,
    Event,
    Query,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::Node,
        Kind::Key,
        Kind::Agent,
        Kind::Session,
        Kind::Event,
        Kind::Query,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Node => "node",
            Kind::Key => "key",
            Kind::Agent => "agent",
            Kind::Session => "session",
            Kind::Event => "event",
            Kind::Query => "query",
        }
    }

    /// `service` → (Service, exact), `service_prefix` → (Service, prefix).
    fn parse(word: &str) -> Option<(Kind, bool)> {
        let (base, prefix) = match word.strip_suffix("_prefix") {
            Some(base) => (base, true),
            None => (word, false),
        };
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == base)
            .map(|k| (k, prefix))
    }
}

/// What a rule without a name applies to (`operator = "read"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Global {
    Acl,
    Operator,
    Mesh,
    Keyring,
    Peering,
}

impl Global {
    pub const ALL: [Global; 5] = [
        Global::Acl,
        Global::Operator,
        Global::Mesh,
        Global::Keyring,
        Global::Peering,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Global::Acl => "acl",
            Global::Operator => "operator",
            Global::Mesh => "mesh",
            Global::Keyring => "keyring",
            Global::Peering => "peering",
        }
    }
}

/// One rule with a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub name: String,
    /// `service_prefix "we"` rather than `service "we"`.
    pub prefix: bool,
    pub policy: Access,
    /// For services: what it grants on intentions to it (Consul: read when the service is
    /// readable, unless said).
    pub intentions: Option<Access>,
}

/// A policy's rules, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub globals: Vec<(Global, Access)>,
}

/// Why rules do not parse: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.reason
        )
    }
}

impl std::error::Error for RulesError {}

/// Parses rules written in HCL, or in JSON when the text starts with `{`.
pub fn parse(text: &str) -> Result<Rules, RulesError> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        Parser::new(text).rules()
    }
}

/// Builds the rules from their parts, validating what HCL and JSON share.
#[derive(Default)]
struct Builder {
    rules: Rules,
}

impl Builder {
    fn global(&mut self, word: &str, value: &str) -> Result<(), String> {
        let global = Global::ALL
            .into_iter()
            .find(|g| g.name() == word)
            .ok_or_else(|| unknown_kind(word))?;
        let access = Access::parse(value)
            .filter(|a| *a != Access::List)
            .ok_or_else(|| {
                format!("invalid {word} policy {value:?}: expected read, write or deny")
            })?;
        self.rules.globals.push((global, access));
        Ok(())
    }

    fn rule(&mut self, word: &str, name: &str, attrs: &[(String, String)]) -> Result<(), String> {
        let (kind, prefix) = Kind::parse(word).ok_or_else(|| unknown_kind(word))?;
        let mut policy = None;
        let mut intentions = None;
        for (attr, value) in attrs {
            match attr.as_str() {
                "policy" => {
                    let access = Access::parse(value).ok_or_else(|| {
                        format!("invalid {word} policy {value:?}: expected read, write or deny")
                    })?;
                    if access == Access::List && kind != Kind::Key {
                        return Err(format!(
                            "invalid {word} policy \"list\": list is only for key rules"
                        ));
                    }
                    policy = Some(access);
                }
                "intentions" if kind == Kind::Service => {
                    intentions = Some(
                        Access::parse(value)
                            .filter(|a| *a != Access::List)
                            .ok_or_else(|| {
                                format!(
                                    "invalid intentions policy {value:?}: expected read, \
                                     write or deny"
                                )
                            })?,
                    );
                }
                other => {
                    return Err(format!(
                        "unknown attribute {other:?} in {word} {name:?}: expected policy{}",
                        if kind == Kind::Service {
                            " or intentions"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        let policy = policy.ok_or_else(|| format!("{word} {name:?} has no policy"))?;
        self.rules.rules.push(Rule {
            kind,
            name: name.to_owned(),
            prefix,
            policy,
            intentions,
        });
        Ok(())
    }
}

fn unknown_kind(word: &str) -> String {
    format!(
        "unknown rule {word:?}: expected service, node, key, agent, session, event or query \
         (each also with _prefix), or acl, operator, mesh, keyring or peering"
    )
}

fn parse_json(text: &str) -> Result<Rules, RulesError> {
    // serde_json counts the column of an error at a line's start as 0; ours start at 1.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| RulesError {
        line: e.line().max(1),
        column: e.column().max(1),
        reason: format!("invalid JSON: {e}"),
    })?;
    let at_start = |reason: String| RulesError {
        line: 1,
        column: 1,
        reason,
    };
    let top = value
        .as_object()
        .ok_or_else(|| at_start("rules must be a JSON object".into()))?;
    let mut builder = Builder::default();
    for (word, body) in top {
        match body {
            serde_json::Value::String(value) => builder.global(word, value).map_err(at_start)?,
            serde_json::Value::Object(named) => {
                for (name, attrs) in named {
                    let attrs = attrs
                        .as_object()
                        .ok_or_else(|| at_start(format!("{word} {name:?} must be an object")))?;
                    let attrs: Vec<(String, String)> = attrs
                        .iter()
                        .map(|(k, v)| {
                            v.as_str()
                                .map(|v| (k.clone(), v.to_owned()))
                                .ok_or_else(|| {
                                    at_start(format!("{word} {name:?}: {k} must be a string"))
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    builder.rule(word, name, &attrs).map_err(at_start)?;
                }
            }
            _ => return Err(at_start(format!("{word} must be a string or an object"))),
        }
    }
    Ok(builder.rules)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Equals,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w}"),
            Token::Text(t) => write!(f, "{t:?}"),
            Token::Open => f.write_str("'{'"),
            Token::Close => f.write_str("'}'"),
            Token::Equals => f.write_str("'='"),
            Token::Comma => f.write_str("','"),
            Token::End => f.write_str("the end of the rules"),
        }
    }
}

/// A recursive-descent parser over the characters, tracking line and column.
struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn error(&self, line: usize, column: usize, reason: impl Into<String>) -> RulesError {
        RulesError {
            line,
            column,
            reason: reason.into(),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    /// Skips whitespace and comments (`#`, `//` to the end of the line, `/* ... */`).
    fn skip_blank(&mut self) -> Result<(), RulesError> {
        loop {
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => self.skip_line(),
                Some('/') => {
                    let (line, column) = (self.line, self.column);
                    self.bump();
                    match self.bump() {
                        Some('/') => self.skip_line(),
                        Some('*') => loop {
                            match self.bump() {
                                Some('*') if self.chars.peek() == Some(&'/') => {
                                    self.bump();
                                    break;
                                }
                                Some(_) => {}
                                None => {
                                    return Err(self.error(line, column, "unclosed comment"));
                                }
                            }
                        },
                        _ => return Err(self.error(line, column, "unexpected '/'")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
    }

    /// The next token and where it starts.
    fn next(&mut self) -> Result<(Token, usize, usize), RulesError> {
        self.skip_blank()?;
        let (line, column) = (self.line, self.column);
        let Some(c) = self.bump() else {
            return Ok((Token::End, line, column));
        };
        let token = match c {
            '{' => Token::Open,
            '}' => Token::Close,
            '=' => Token::Equals,
            ',' => Token::Comma,
            '"' => Token::Text(self.text(line, column)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&c) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        word.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Token::Word(word)
            }
            other => return Err(self.error(line, column, format!("unexpected {other:?}"))),
        };
        Ok((token, line, column))
    }

    /// The rest of a quoted string, its opening quote read.
    fn text(&mut self, line: usize, column: usize) -> Result<String, RulesError> {
        let mut text = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(text),
                Some('\\') => {
                    // Where the backslash was (the column is already past it).
                    let (at_line, at_column) = (self.line, self.column - 1);
                    let escaped = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        other => {
                            return Err(self.error(
                                at_line,
                                at_column,
                                format!("unknown escape \\{}", other.unwrap_or(' ').escape_debug()),
                            ));
                        }
                    };
                    text.push(escaped);
                }
                Some('\n') | None => {
                    return Err(self.error(line, column, "unterminated string"));
                }
                Some(c) => text.push(c),
            }
        }
    }

    fn rules(mut self) -> Result<Rules, RulesError> {
        let mut builder = Builder::default();
        loop {
            let (token, line, column) = self.next()?;
            let word = match token {
                Token::End => return Ok(builder.rules),
                Token::Word(word) => word,
                other => {
                    return Err(self.error(
                        line,
                        column,
                        format!("expected a rule, found {other}"),
                    ));
                }
            };
            let (token, at_line, at_column) = self.next()?;
            match token {
                Token::Equals => {
                    let (value, vl, vc) = self.next()?;
                    let Token::Text(value) = value else {
                        return Err(self.error(
                            vl,
                            vc,
                            format!("expected a quoted policy after {word} =, found {value}"),
                        ));
                    };
                    builder
                        .global(&word, &value)
                        .map_err(|reason| self.error(line, column, reason))?;
                }
                Token::Text(name) => {
                    let attrs = self.block(&word, &name)?;
                    builder
                        .rule(&word, &name, &attrs)
                        .map_err(|reason| self.error(line, column, reason))?;
                }
                other => {
                    return Err(self.error(
                        at_line,
                        at_column,
                        format!("expected a quoted name or '=' after {word}, found {other}"),
                    ));
                }
            }
        }
    }

    /// `[=] { attr = "value" ... }` after `kind "name"`.
    fn block(&mut self, word: &str, name: &str) -> Result<Vec<(String, String)>, RulesError> {
        let (mut token, mut line, mut column) = self.next()?;
        if token == Token::Equals {
            (token, line, column) = self.next()?;
        }
        if token != Token::Open {
            return Err(self.error(
                line,
                column,
                format!("expected '{{' after {word} {name:?}, found {token}"),
            ));
        }
        let mut attrs = Vec::new();
        loop {
            let (token, line, column) = self.next()?;
            let attr = match token {
                Token::Close => return Ok(attrs),
                Token::Comma => continue,
                Token::Word(attr) => attr,
                other => {
                    return Err(self.error(
                        line,
                        column,
                        format!("expected an attribute or '}}' in {word} {name:?}, found {other}"),
                    ));
                }
            };
            let (token, l, c) = self.next()?;
            if token != Token::Equals {
                return Err(self.error(l, c, format!("expected '=' after {attr}, found {token}")));
            }
            let (token, l, c) = self.next()?;
            let Token::Text(value) = token else {
                return Err(self.error(
                    l,
                    c,
                    format!("expected a quoted value after {attr} =, found {token}"),
                ));
            };
            attrs.push((attr, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_blocks_and_globals() {
        let rules = parse(
            r#"
            # the web team
            service "web" { policy = "write" }
            service_prefix "" {
                policy = "read"
                intentions = "read"
            }
            key_prefix "app/" { policy = "list" } // keys only
            /* global */ operator = "read"
            "#,
        )
        .unwrap();
        assert_eq!(rules.rules.len(), 3);
        assert_eq!(rules.rules[0].kind, Kind::Service);
        assert_eq!(rules.rules[0].name, "web");
        assert!(!rules.rules[0].prefix);
        assert_eq!(rules.rules[0].policy, Access::Write);
        assert!(rules.rules[1].prefix);
        assert_eq!(rules.rules[1].intentions, Some(Access::Read));
        assert_eq!(rules.rules[2].policy, Access::List);
        assert_eq!(rules.globals, vec![(Global::Operator, Access::Read)]);
    }

    #[test]
    fn json_is_the_same_rules() {
        // (JSON objects come back in key order; the order of rules means nothing.)
        let hcl = parse(
            r#"node_prefix "" { policy = "read" } service "web" { policy = "write" } acl = "write""#,
        )
        .unwrap();
        let json = parse(
            r#"{"service": {"web": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}}, "acl": "write"}"#,
        )
        .unwrap();
        assert_eq!(hcl, json);
    }

    #[test]
    fn errors_say_where_and_why() {
        let cases = [
            (
                "servcie \"web\" { policy = \"write\" }",
                1,
                1,
                "unknown rule \"servcie\"",
            ),
            (
                "service \"web\" {\n  policy = \"writ\"\n}",
                1,
                1,
                "invalid service policy",
            ),
            (
                "service \"web\" { policy = \"write\" ",
                1,
                34,
                "found the end",
            ),
            (
                "node \"n\" { policy = \"list\" }",
                1,
                1,
                "only for key rules",
            ),
            ("service \"web\" {}", 1, 1, "has no policy"),
            (
                "service \"web\" { color = \"red\" }",
                1,
                1,
                "unknown attribute \"color\"",
            ),
            ("\n  service web", 2, 11, "expected a quoted name"),
            ("service \"web", 1, 9, "unterminated string"),
            ("acl = write", 1, 7, "expected a quoted policy"),
            ("{\"service\": 3}", 1, 1, "must be a string or an object"),
            ("{\"service\": ", 1, 12, "invalid JSON"),
            ("{\"\n", 2, 1, "invalid JSON"), // found by the fuzzer: serde_json says column 0
            ("\"ab\\\n", 1, 4, "unknown escape \\\\n"), // found by the fuzzer: column 0
            ("/* open", 1, 1, "unclosed comment"),
            ("service \"a\\q\"", 1, 11, "unknown escape \\q"),
        ];
        for (text, line, column, reason) in cases {
            let error = parse(text).expect_err(text);
            assert!(
                error.reason.contains(reason) && error.line == line && error.column == column,
                "{text:?}: got {error}, wanted line {line}, column {column}: {reason}"
            );
        }
    }

    #[test]
    fn merging_prefers_deny_then_the_stronger_grant() {
        assert_eq!(Access::Read.merge(Access::Write), Access::Write);
        assert_eq!(Access::Write.merge(Access::Deny), Access::Deny);
        assert_eq!(Access::Deny.merge(Access::Write), Access::Deny);
        assert_eq!(Access::List.merge(Access::Read), Access::Read);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a valid text, and some noise, parses or fails cleanly.
        let text =
            "service \"w\\\"eb\" = { policy = \"write\", intentions = \"deny\" } acl = \"read\"";
        for end in 0..=text.len() {
            if text.is_char_boundary(end) {
                let _ = parse(&text[..end]);
            }
        }
        for noise in ["\u{0}", "{", "}", "=", "\"", "é\"", "/", "*/", "a=\"b\"="] {
            let _ = parse(noise);
        }
    }
}
