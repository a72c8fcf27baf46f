//! Consul's filter expressions (`?filter=`, and the `Filter` of a `service-resolver`'s
//! subsets): `Service.Meta.version == v2 and "canary" in Service.Tags`.
//!
//! The grammar is hashicorp/go-bexpr's, which Consul evaluates its filters with:
//!
//! ```text
//! expression := or
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | "(" expression ")" | match
//! match      := selector ("==" | "!=") value
//!             | selector "is" ["not"] "empty"
//!             | value ["not"] "in" selector
//!             | selector ["not"] ("contains" | "matches") value
//! selector   := name ("." name | "[" string "]")*
//! value      := "string" | `string` | a bare word (number, true, false, text)
//! ```
//!
//! An expression is evaluated against JSON (the answer's shape, field names as Consul writes
//! them). A selector that passes through a list selects from every element, and a match on
//! several values holds if any holds (`Checks.Status == critical`: some check is critical);
//! its negations hold if none does. A missing field is empty and equals nothing. Written by
//! hand: no crate parses bexpr, and the grammar is small; a parse error names the column.

use std::fmt;

use serde_json::Value;

/// A parsed filter, ready to be evaluated many times.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

/// Why an expression does not parse: the column (from 1) and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: at column {column}: {reason}")]
pub struct FilterError {
    pub column: usize,
    pub reason: String,
}

/// Filters longer than this are refused (a filter is a query parameter, not a program).
pub const MAX_FILTER_LEN: usize = 4096;
/// Nesting deeper than this is refused, so that evaluation and parsing stay shallow.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Match(Match),
}

#[derive(Debug, Clone)]
struct Match {
    selector: Vec<String>,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    NotEqual(String),
    Empty,
    NotEmpty,
    Contains(String),
    NotContains(String),
    Matches(Box<regex_automata::meta::Regex>),
    NotMatches(Box<regex_automata::meta::Regex>),
}

impl Filter {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError {
                column: MAX_FILTER_LEN,
                reason: format!("a filter is at most {MAX_FILTER_LEN} bytes"),
            });
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            end: text.chars().count() + 1,
            depth: 0,
        };
        let root = parser.or()?;
        if let Some(token) = parser.peek() {
            return Err(parser.error_at(
                token.column,
                format!(
                    "unexpected {}: expected \"and\", \"or\" or the end",
                    token.kind
                ),
            ));
        }
        Ok(Filter { root })
    }

    /// Whether `value` passes.
    pub fn matches(&self, value: &Value) -> bool {
        self.root.eval(value)
    }
}

impl Node {
    fn eval(&self, value: &Value) -> bool {
        match self {
            Node::And(a, b) => a.eval(value) && b.eval(value),
            Node::Or(a, b) => a.eval(value) || b.eval(value),
            Node::Not(a) => !a.eval(value),
            Node::Match(m) => m.eval(value),
        }
    }
}

impl Match {
    fn eval(&self, value: &Value) -> bool {
        let mut selected = Vec::new();
        select(value, &self.selector, &mut selected);
        match &self.test {
            Test::Equal(literal) => selected.iter().any(|v| equals(v, literal)),
            Test::NotEqual(literal) => !selected.iter().any(|v| equals(v, literal)),
            Test::Empty => selected.iter().all(|v| is_empty(v)),
            Test::NotEmpty => !selected.iter().all(|v| is_empty(v)),
            Test::Contains(literal) => selected.iter().any(|v| contains(v, literal)),
            Test::NotContains(literal) => !selected.iter().any(|v| contains(v, literal)),
            Test::Matches(regex) => selected
                .iter()
                .any(|v| v.as_str().is_some_and(|s| regex.is_match(s))),
            Test::NotMatches(regex) => !selected
                .iter()
                .any(|v| v.as_str().is_some_and(|s| regex.is_match(s))),
        }
    }
}

/// The values `path` selects from `value`, through lists element by element.
fn select<'v>(value: &'v Value, path: &[String], out: &mut Vec<&'v Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(inner) = map.get(first) {
                select(inner, rest, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                select(item, path, out);
            }
        }
        _ => {}
    }
}

fn equals(value: &Value, literal: &str) -> bool {
    match value {
        Value::String(s) => s == literal,
        Value::Bool(b) => literal.parse::<bool>().is_ok_and(|l| l == *b),
        Value::Number(n) => match (n.as_f64(), literal.parse::<f64>()) {
            (Some(n), Ok(l)) => n == l,
            _ => false,
        },
        // A list equals a literal if an element does (`Service.Tags == v2`).
        Value::Array(items) => items.iter().any(|item| equals(item, literal)),
        Value::Null | Value::Object(_) => false,
    }
}

fn contains(value: &Value, literal: &str) -> bool {
    match value {
        Value::String(s) => s.contains(literal),
        Value::Array(items) => items.iter().any(|item| equals(item, literal)),
        Value::Object(map) => map.contains_key(literal),
        _ => false,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

// === tokens ===

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Word(String),
    Quoted(String),
    Equal,
    NotEqual,
    Open,
    Close,
    Dot,
    Index(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Word(w) => write!(f, "{w:?}"),
            Kind::Quoted(q) => write!(f, "the string {q:?}"),
            Kind::Equal => f.write_str("\"==\""),
            Kind::NotEqual => f.write_str("\"!=\""),
            Kind::Open => f.write_str("\"(\""),
            Kind::Close => f.write_str("\")\""),
            Kind::Dot => f.write_str("\".\""),
            Kind::Index(key) => write!(f, "[{key:?}]"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Column of its first character, from 1.
    column: usize,
    /// Whether whitespace comes right before it (`Service . Meta` is no selector).
    spaced: bool,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut spaced = true;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            spaced = true;
            i += 1;
            continue;
        }
        let (kind, next) = match c {
            '(' => (Kind::Open, i + 1),
            ')' => (Kind::Close, i + 1),
            '.' => (Kind::Dot, i + 1),
            '=' if chars.get(i + 1) == Some(&'=') => (Kind::Equal, i + 2),
            '!' if chars.get(i + 1) == Some(&'=') => (Kind::NotEqual, i + 2),
            '"' | '`' => {
                let (text, next) = quoted(&chars, i)?;
                (Kind::Quoted(text), next)
            }
            '[' => {
                let Some(quote @ ('"' | '`')) = chars.get(i + 1).copied() else {
                    return Err(error(column, "expected a quoted key after \"[\""));
                };
                let _ = quote;
                let (key, next) = quoted(&chars, i + 1)?;
                if chars.get(next) != Some(&']') {
                    return Err(error(next + 1, "expected \"]\" after the key"));
                }
                (Kind::Index(key), next + 1)
            }
            c if is_word(c) => {
                let end = (i..chars.len())
                    .find(|&j| !is_word(chars[j]))
                    .unwrap_or(chars.len());
                (Kind::Word(chars[i..end].iter().collect()), end)
            }
            other => return Err(error(column, &format!("unexpected character {other:?}"))),
        };
        tokens.push(Token {
            kind,
            column,
            spaced,
        });
        spaced = false;
        i = next;
    }
    Ok(tokens)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | ':' | '+' | '*' | '@')
}

/// A string from the quote at `start` to its match; `\` escapes in double quotes.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((out, i + 1)),
            '\\' if quote == '"' && i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(error(start + 1, "a string that is never closed"))
}

fn error(column: usize, reason: &str) -> FilterError {
    FilterError {
        column,
        reason: reason.to_owned(),
    }
}

// === parser ===

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// The column just past the end, for errors there.
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += token.is_some() as usize;
        token
    }

    fn error_at(&self, column: usize, reason: String) -> FilterError {
        FilterError { column, reason }
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end, |t| t.column)
    }

    /// Whether the next token is the keyword `word`; taken if so.
    fn keyword(&mut self, word: &str) -> bool {
        let is = matches!(self.peek(), Some(Token { kind: Kind::Word(w), .. }) if w.eq_ignore_ascii_case(word));
        self.at += is as usize;
        is
    }

    fn keyword_at(&self, offset: usize, word: &str) -> bool {
        matches!(self.tokens.get(self.at + offset), Some(Token { kind: Kind::Word(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    fn deeper(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(self.column(), format!("nested more than {MAX_DEPTH} deep")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, FilterError> {
        self.deeper()?;
        let mut node = self.and()?;
        while self.keyword("or") {
            node = Node::Or(Box::new(node), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(node)
    }

    fn and(&mut self) -> Result<Node, FilterError> {
        let mut node = self.not()?;
        while self.keyword("and") {
            node = Node::And(Box::new(node), Box::new(self.not()?));
        }
        Ok(node)
    }

    fn not(&mut self) -> Result<Node, FilterError> {
        // `not` before a selector or a parenthesis negates; `not in` is part of a match.
        if self.keyword_at(0, "not") && !self.keyword_at(1, "in") {
            self.at += 1;
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::Open,
                ..
            })
        ) {
            self.at += 1;
            let inner = self.or()?;
            match self.next() {
                Some(Token {
                    kind: Kind::Close, ..
                }) => return Ok(inner),
                Some(token) => {
                    return Err(self.error_at(
                        token.column,
                        format!("unexpected {}: expected \")\"", token.kind),
                    ));
                }
                None => return Err(self.error_at(self.end, "expected \")\"".to_owned())),
            }
        }
        self.matching().map(Node::Match)
    }

    fn matching(&mut self) -> Result<Match, FilterError> {
        // `value [not] in selector`: a value first, then `in`.
        let in_at = usize::from(self.keyword_at(1, "not")) + 1;
        if self.keyword_at(in_at, "in") {
            let value = self.value()?;
            let negated = self.keyword("not");
            self.keyword("in");
            let selector = self.selector()?;
            let test = match negated {
                false => Test::Contains(value),
                true => Test::NotContains(value),
            };
            return Ok(Match { selector, test });
        }
        let selector = self.selector()?;
        let column = self.column();
        let test = match self.next().map(|t| t.kind) {
            Some(Kind::Equal) => Test::Equal(self.value()?),
            Some(Kind::NotEqual) => Test::NotEqual(self.value()?),
            Some(Kind::Word(w)) if w.eq_ignore_ascii_case("is") => {
                let negated = self.keyword("not");
                if !self.keyword("empty") {
                    return Err(self.error_at(self.column(), "expected \"empty\"".to_owned()));
                }
                if negated { Test::NotEmpty } else { Test::Empty }
            }
            Some(Kind::Word(w)) if w.eq_ignore_ascii_case("not") => {
                if self.keyword("contains") {
                    Test::NotContains(self.value()?)
                } else if self.keyword("matches") {
                    Test::NotMatches(self.regex()?)
                } else {
                    return Err(self.error_at(
                        self.column(),
                        "expected \"contains\" or \"matches\" after \"not\"".to_owned(),
                    ));
                }
            }
            Some(Kind::Word(w)) if w.eq_ignore_ascii_case("contains") => {
                Test::Contains(self.value()?)
            }
            Some(Kind::Word(w)) if w.eq_ignore_ascii_case("matches") => {
                Test::Matches(self.regex()?)
            }
            Some(other) => {
                return Err(self.error_at(
                    column,
                    format!(
                        "unexpected {other}: expected \"==\", \"!=\", \"is empty\", \"contains\" or \"matches\""
                    ),
                ));
            }
            None => {
                return Err(self.error_at(
                    column,
                    "expected \"==\", \"!=\", \"is empty\", \"contains\" or \"matches\"".to_owned(),
                ));
            }
        };
        Ok(Match { selector, test })
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        let column = self.column();
        let mut path = match self.next().map(|t| t.kind) {
            Some(Kind::Word(w)) if !is_keyword(&w) => vec![w],
            Some(other) => {
                return Err(self.error_at(
                    column,
                    format!("unexpected {other}: expected a selector such as Service.Meta.version"),
                ));
            }
            None => return Err(self.error_at(column, "expected a selector".to_owned())),
        };
        loop {
            match self.peek() {
                Some(Token {
                    kind: Kind::Dot,
                    spaced: false,
                    ..
                }) => {
                    self.at += 1;
                    let column = self.column();
                    match self.next() {
                        Some(Token {
                            kind: Kind::Word(w),
                            spaced: false,
                            ..
                        }) => path.push(w),
                        _ => {
                            return Err(self
                                .error_at(column, "expected a field name after \".\"".to_owned()));
                        }
                    }
                }
                Some(Token {
                    kind: Kind::Index(key),
                    spaced: false,
                    ..
                }) => {
                    path.push(key.clone());
                    self.at += 1;
                }
                _ => return Ok(path),
            }
        }
    }

    fn value(&mut self) -> Result<String, FilterError> {
        let column = self.column();
        match self.next().map(|t| t.kind) {
            Some(Kind::Quoted(q)) => Ok(q),
            Some(Kind::Word(w)) if !is_keyword(&w) => {
                // A bare value may be dotted (`1.5`, `v1.2`): the words and dots that touch.
                let mut text = w;
                while let Some(Token {
                    kind: Kind::Dot,
                    spaced: false,
                    ..
                }) = self.peek()
                {
                    self.at += 1;
                    text.push('.');
                    if let Some(Token {
                        kind: Kind::Word(w),
                        spaced: false,
                        ..
                    }) = self.peek().cloned()
                    {
                        self.at += 1;
                        text.push_str(&w);
                    }
                }
                Ok(text)
            }
            Some(other) => {
                Err(self.error_at(column, format!("unexpected {other}: expected a value")))
            }
            None => Err(self.error_at(column, "expected a value".to_owned())),
        }
    }

    fn regex(&mut self) -> Result<Box<regex_automata::meta::Regex>, FilterError> {
        let column = self.column();
        let pattern = self.value()?;
        regex_automata::meta::Regex::new(&pattern)
            .map(Box::new)
            .map_err(|e| self.error_at(column, format!("not a regular expression: {e}")))
    }
}

fn is_keyword(word: &str) -> bool {
    [
        "and", "or", "not", "in", "is", "empty", "contains", "matches",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry() -> Value {
        json!({
            "Node": {"Node": "vm", "Meta": {}},
            "Service": {
                "ID": "hello-1",
                "Service": "hello",
                "Tags": ["v2", "canary"],
                "Meta": {"version": "v2", "team name": "blue"},
                "Port": 8001,
                "Weights": {"Passing": 1}
            },
            "Checks": [{"Status": "passing"}, {"Status": "critical"}]
        })
    }

    fn holds(filter: &str) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&entry())
    }

    #[test]
    fn equality_membership_and_emptiness() {
        assert!(holds("Service.Meta.version == v2"));
        assert!(holds("Service.Meta.version == \"v2\""));
        assert!(!holds("Service.Meta.version != v2"));
        assert!(holds("Service.Port == 8001"));
        assert!(holds("v2 in Service.Tags"));
        assert!(holds("prod not in Service.Tags"));
        assert!(holds("Service.Tags contains canary"));
        assert!(holds("Service.Tags not contains prod"));
        assert!(holds("Service.Meta contains version"));
        assert!(holds("Service.ID contains ello"));
        assert!(holds("Node.Meta is empty"));
        assert!(holds("Service.Missing is empty"));
        assert!(holds("Service.Tags is not empty"));
        assert!(holds("Service.Meta[\"team name\"] == blue"));
        assert!(
            !holds("Service.Missing == x"),
            "a missing field equals nothing"
        );
    }

    #[test]
    fn through_lists_any_element_may_match_and_negations_need_none() {
        assert!(holds("Checks.Status == critical"));
        assert!(holds("Checks.Status == passing"));
        assert!(!holds("Checks.Status != critical"));
        assert!(holds("Checks.Status != warning"));
    }

    #[test]
    fn logic_binds_not_then_and_then_or() {
        assert!(holds(
            "Service.Port == 1 or Service.Port == 8001 and v2 in Service.Tags"
        ));
        assert!(!holds(
            "(Service.Port == 1 or Service.Port == 8001) and prod in Service.Tags"
        ));
        assert!(holds("not Service.Meta.version == v1"));
        assert!(holds("not (Service.Port == 1 and v2 in Service.Tags)"));
        assert!(holds("Service.ID matches \"^hello-[0-9]+$\""));
        assert!(holds("Service.ID not matches \"^api\""));
        assert!(holds("Service.Meta.version == v2 AND Service.Port == 8001"));
    }

    #[test]
    fn bad_expressions_name_the_column() {
        let error = |text: &str| Filter::parse(text).expect_err(text);
        assert_eq!(error("Service.Meta.version ==").column, 24);
        assert_eq!(error("Service.Meta.version = v2").column, 22);
        assert_eq!(error("(Service.Port == 1").column, 19);
        assert_eq!(error("Service.Port == 1 xor 2").column, 19);
        assert_eq!(error("Service.ID matches \"[\"").column, 20);
        assert_eq!(error("\"open").column, 1);
        assert!(error("== v2").reason.contains("selector"));
        let deep = format!("{}Service.Port == 1{}", "(".repeat(40), ")".repeat(40));
        assert!(error(&deep).reason.contains("nested"));
        assert!(
            error(&"x".repeat(MAX_FILTER_LEN + 1))
                .reason
                .contains("at most")
        );
    }
}
