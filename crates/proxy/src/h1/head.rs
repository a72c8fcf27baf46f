//! HTTP/1.x heads: parsed in place with `httparse` (the parser hyper uses), kept as offsets
//! into the connection's buffer so that nothing is copied or allocated per request, read for
//! what a hop needs to know (framing, keep-alive, upgrade…), and written back out with a
//! proxy hop's changes (RFC 9110 §7.6, RFC 9112): hop-by-hop headers removed, those named in
//! `Connection` included; `x-forwarded-for` appended, `x-forwarded-proto` set, a W3C
//! `traceparent` kept when valid or started; framing headers rewritten to match the body.
//! The rules themselves are [`crate::hop`]'s, shared with the HTTP/2 path; this module
//! applies them to raw bytes.
//!
//! Ambiguous framing is refused rather than guessed (request smuggling): both
//! `Transfer-Encoding` and `Content-Length`, differing `Content-Length`s, a request coding
//! other than chunked last.

use std::mem::MaybeUninit;

use super::body::Framing;
use crate::hop::{
    PROTO, TRACEPARENT, X_FORWARDED_FOR, X_FORWARDED_PROTO, is_hop_by_hop, is_valid_traceparent,
    keeps_trailers, tokens, write_new_traceparent,
};

/// Largest head accepted, request or response.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a head.
pub const MAX_HEADERS: usize = 100;

/// A range of the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part` lies in `base`. A part from elsewhere (httparse answers a reason phrase
    /// that is not UTF-8 with a static `""`) is an empty span.
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if start > base.len() || base.len() - start < part.len() {
            return Span::default();
        }
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub fn get<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The span as a range of the buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// A parsed head: the request line's or status line's parts and the header fields.
#[derive(Debug, Default)]
pub struct Head {
    /// Bytes of the head, the blank line included.
    pub len: usize,
    /// `HTTP/1.<minor>`.
    pub minor: u8,
    pub method: Span,
    pub target: Span,
    pub status: u16,
    pub reason: Span,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the head has more than {MAX_HEADERS} header fields")]
    TooManyFields,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> HeadError {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyFields,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
        }
    }
}

/// Parses a request head at the start of `buf` into `head`; `Ok(false)` when more bytes are
/// needed.
pub fn parse_request(buf: &[u8], head: &mut Head) -> Result<bool, HeadError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(buf, &mut fields)? {
        httparse::Status::Partial => partial(buf),
        httparse::Status::Complete(len) => {
            head.len = len;
            head.minor = request.version.unwrap_or(1);
            head.method = Span::of(buf, request.method.unwrap_or_default().as_bytes());
            head.target = Span::of(buf, request.path.unwrap_or_default().as_bytes());
            keep_fields(buf, request.headers, head);
            Ok(true)
        }
    }
}

/// Parses a response head at the start of `buf` into `head`; `Ok(false)` when more bytes are
/// needed.
pub fn parse_response(buf: &[u8], head: &mut Head) -> Result<bool, HeadError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    )? {
        httparse::Status::Partial => partial(buf),
        httparse::Status::Complete(len) => {
            head.len = len;
            head.minor = response.version.unwrap_or(1);
            head.status = response.code.unwrap_or(0);
            head.reason = Span::of(buf, response.reason.unwrap_or_default().as_bytes());
            keep_fields(buf, response.headers, head);
            Ok(true)
        }
    }
}

fn partial(buf: &[u8]) -> Result<bool, HeadError> {
    if buf.len() >= MAX_HEAD {
        Err(HeadError::TooLarge)
    } else {
        Ok(false)
    }
}

fn keep_fields(buf: &[u8], parsed: &[httparse::Header<'_>], head: &mut Head) {
    head.fields.clear();
    head.fields.extend(parsed.iter().map(|field| Field {
        name: Span::of(buf, field.name.as_bytes()),
        value: Span::of(buf, field.value),
    }));
}

/// What a hop needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    /// Where the service name comes from: `Host`, or the authority of an absolute-form target.
    pub host: Option<Span>,
    /// The target in origin form (`/path?query`), or `*`.
    pub path: Span,
    /// An absolute-form target without a `Host` field: the authority must be sent as `Host`.
    pub host_from_target: bool,
    pub body: Framing,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub expect_continue: bool,
    pub idempotent: bool,
    pub is_head: bool,
    pub is_connect: bool,
}

/// Reads a parsed request head for what the hop needs; refuses ambiguous or malformed
/// framing.
pub fn request_facts(buf: &[u8], head: &Head) -> Result<RequestFacts, HeadError> {
    let method = head.method.get(buf);
    let mut facts = RequestFacts {
        host: None,
        path: head.target,
        host_from_target: false,
        body: Framing::Empty,
        keep_alive: false,
        upgrade: false,
        expect_continue: false,
        idempotent: crate::hop::is_idempotent(method),
        is_head: method == b"HEAD",
        is_connect: method == b"CONNECT",
    };
    let mut framed = Framed::default();
    let mut has_upgrade_field = false;
    for field in &head.fields {
        let name = field.name.get(buf);
        let value = field.value.get(buf);
        if framed.read(name, value)? {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            if facts.host.is_some() {
                return Err(HeadError::Malformed("more than one Host field"));
            }
            facts.host = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            has_upgrade_field = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            facts.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    facts.keep_alive = framed.persistent(head.minor);
    facts.upgrade = head.minor >= 1 && has_upgrade_field && framed.upgrade;
    facts.body = match (framed.chunked, framed.length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(HeadError::Malformed(
                "a request's last transfer coding must be chunked",
            ));
        }
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let target = head.target.get(buf);
    if let Some(rest) = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
    {
        // Absolute form (RFC 9112 §3.2.2): the target's authority wins over Host.
        let authority_len = rest.iter().position(|&b| b == b'/' || b == b'?');
        let authority = &rest[..authority_len.unwrap_or(rest.len())];
        facts.host_from_target = facts.host.is_none();
        facts.host = Some(Span::of(buf, authority));
        facts.path = match authority_len {
            Some(at) => Span::of(buf, &rest[at..]),
            None => Span::default(), // written as "/"
        };
    }
    Ok(facts)
}

/// What any head says about its body's framing and its connection.
#[derive(Default)]
struct Framed {
    length: Option<u64>,
    /// Whether the last transfer coding is chunked, when there is a `Transfer-Encoding`.
    chunked: Option<bool>,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl Framed {
    /// Reads `name: value` if it is a framing or connection field (`Ok(false)` if not).
    fn read(&mut self, name: &[u8], value: &[u8]) -> Result<bool, HeadError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = parse_length(value)?;
            if self.length.is_some_and(|l| l != parsed) {
                return Err(HeadError::Malformed("conflicting Content-Length fields"));
            }
            self.length = Some(parsed);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.chunked = Some(last_coding_is_chunked(value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether the connection stays open after the message: HTTP/1.1 unless it says `close`,
    /// HTTP/1.0 only if it says `keep-alive`.
    fn persistent(&self, minor: u8) -> bool {
        !self.close && (minor >= 1 || self.keep_alive)
    }
}

/// What a hop needs to know about a response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFacts {
    pub status: u16,
    pub body: Framing,
    /// The upstream may be sent another request on this connection afterwards.
    pub reusable: bool,
}

/// Reads a parsed response head: its framing (RFC 9112 §6.3) given the request it answers.
pub fn response_facts(
    buf: &[u8],
    head: &Head,
    request: &RequestFacts,
) -> Result<ResponseFacts, HeadError> {
    response_facts_for(buf, head, request.is_head)
}

/// [`response_facts`], for a request known only by whether it was a `HEAD`.
pub fn response_facts_for(
    buf: &[u8],
    head: &Head,
    is_head: bool,
) -> Result<ResponseFacts, HeadError> {
    let mut framed = Framed::default();
    for field in &head.fields {
        framed.read(field.name.get(buf), field.value.get(buf))?;
    }
    let mut reusable = framed.persistent(head.minor);
    let status = head.status;
    let body = if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (framed.chunked, framed.length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if body == Framing::UntilClose {
        reusable = false;
    }
    Ok(ResponseFacts {
        status,
        body,
        reusable,
    })
}

/// Writes the request head to send upstream.
pub fn write_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    facts: &RequestFacts,
    client: &[u8],
) {
    out.extend_from_slice(head.method.get(buf));
    out.push(b' ');
    if facts.path.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(facts.path.get(buf));
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = connection_fields(buf, head);
    let mut forwarded_proto = false;
    let mut traceparent = false;
    let mut trailers = false;
    for field in &head.fields {
        let name = field.name.get(buf);
        let value = field.value.get(buf);
        if name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_bytes()) {
            continue; // written last, with this client appended
        }
        if name.eq_ignore_ascii_case(b"te") {
            trailers |= keeps_trailers(value);
            continue;
        }
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || is_named_in(name, buf, &connection)
        {
            continue;
        }
        if name.eq_ignore_ascii_case(TRACEPARENT.as_bytes()) {
            if traceparent || !is_valid_traceparent(value) {
                continue;
            }
            traceparent = true;
        }
        forwarded_proto |= name.eq_ignore_ascii_case(X_FORWARDED_PROTO.as_bytes());
        write_field(out, name, value);
    }
    // All earlier hops, then this client, in one field. (A `Vec` never fails a write.)
    out.extend_from_slice(X_FORWARDED_FOR.as_bytes());
    out.extend_from_slice(b": ");
    for field in &head.fields {
        if field
            .name
            .get(buf)
            .eq_ignore_ascii_case(X_FORWARDED_FOR.as_bytes())
        {
            let value = field.value.get(buf).trim_ascii();
            if !value.is_empty() {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\n");
    if !forwarded_proto {
        write_field(out, X_FORWARDED_PROTO.as_bytes(), PROTO.as_bytes());
    }
    if !traceparent {
        out.extend_from_slice(TRACEPARENT.as_bytes());
        out.extend_from_slice(b": ");
        write_new_traceparent(out);
        out.extend_from_slice(b"\r\n");
    }
    if facts.host_from_target
        && let Some(host) = facts.host
    {
        write_field(out, b"host", host.get(buf));
    }
    if trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    write_framing(out, facts.body);
    if facts.upgrade {
        for field in &head.fields {
            if field.name.get(buf).eq_ignore_ascii_case(b"upgrade") {
                write_field(out, b"upgrade", field.value.get(buf));
            }
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub body: Framing,
    /// Remove the chunked framing (an HTTP/1.0 client): the body is then delimited by close.
    pub dechunk: bool,
    /// The client connection closes after this response.
    pub close: bool,
}

/// Writes the response head to send to the client. A response without a body keeps its
/// `Content-Length` (the length a HEAD or 304 describes).
pub fn write_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    delivery: Delivery,
    client_minor: u8,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let switching = head.status == 101;
    let connection = connection_fields(buf, head);
    for field in &head.fields {
        let name = field.name.get(buf);
        let keep = if switching && name.eq_ignore_ascii_case(b"upgrade") {
            true
        } else if name.eq_ignore_ascii_case(b"content-length") {
            delivery.body == Framing::Empty && head.status != 204 && head.status >= 200
        } else {
            !is_hop_by_hop(name) && !is_named_in(name, buf, &connection)
        };
        if keep {
            write_field(out, name, field.value.get(buf));
        }
    }
    if switching {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else {
        if !delivery.dechunk {
            write_framing(out, delivery.body);
        }
        if delivery.close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client_minor == 0 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn write_framing(out: &mut Vec<u8>, body: Framing) {
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

pub(super) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The values of the head's `Connection` fields; more than a few is unheard of, and those
/// beyond are ignored.
#[derive(Default)]
pub(super) struct ConnectionFields {
    values: [Span; 4],
    count: usize,
}

pub(super) fn connection_fields(buf: &[u8], head: &Head) -> ConnectionFields {
    let mut fields = ConnectionFields::default();
    for field in &head.fields {
        if fields.count < fields.values.len()
            && field.name.get(buf).eq_ignore_ascii_case(b"connection")
        {
            fields.values[fields.count] = field.value;
            fields.count += 1;
        }
    }
    fields
}

/// Whether `name` is listed in a `Connection` field, which makes it hop-by-hop.
pub(super) fn is_named_in(name: &[u8], buf: &[u8], connection: &ConnectionFields) -> bool {
    connection.values[..connection.count]
        .iter()
        .any(|value| tokens(value.get(buf)).any(|token| token.eq_ignore_ascii_case(name)))
}

pub(super) fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    tokens(value)
        .last()
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
}

fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let bad = HeadError::Malformed("invalid Content-Length");
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    Ok(value
        .iter()
        .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')))
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> (Head, Result<RequestFacts, HeadError>) {
        let mut head = Head::default();
        assert_eq!(parse_request(raw, &mut head), Ok(true));
        let facts = request_facts(raw, &head);
        (head, facts)
    }

    fn upstream_head(raw: &[u8]) -> String {
        let (head, facts) = request(raw);
        let mut out = Vec::new();
        write_request(&mut out, raw, &head, &facts.unwrap(), b"10.1.2.3");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_are_refused() {
        let mut head = Head::default();
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut head),
            Ok(false)
        );
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(MAX_HEAD, b'a');
        assert_eq!(parse_request(&huge, &mut head), Err(HeadError::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&many, &mut head),
            Err(HeadError::TooManyFields)
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", &mut head),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn framing_is_read_strictly() {
        let framing = |raw: &[u8]| request(raw).1.map(|f| f.body);
        assert_eq!(framing(b"GET / HTTP/1.1\r\n\r\n"), Ok(Framing::Empty));
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        for smuggling in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                framing(smuggling).is_err(),
                "{:?}",
                String::from_utf8_lossy(smuggling)
            );
        }
    }

    #[test]
    fn keep_alive_and_upgrade_follow_the_version_and_connection() {
        let facts = |raw: &[u8]| request(raw).1.unwrap();
        assert!(facts(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!facts(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!facts(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(facts(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            facts(
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .upgrade
        );
        assert!(!facts(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade);
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_and_adds_forwarding() {
        let head = upstream_head(
            b"GET /a?b HTTP/1.1\r\nHost: hello\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\n\
              Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nx-kept: yes\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
        );
        assert!(
            head.starts_with("GET /a?b HTTP/1.1\r\nHost: hello\r\n"),
            "{head}"
        );
        assert!(!head.to_ascii_lowercase().contains("secret"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("keep-alive"), "{head}");
        assert!(
            head.contains("x-forwarded-for: 10.0.0.1, 10.1.2.3\r\n"),
            "{head}"
        );
        assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
        assert!(head.contains("te: trailers\r\n"), "{head}");
        assert!(head.contains("x-kept: yes\r\n"), "{head}");
        assert!(
            head.contains(
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
            ),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn numbers_are_written_without_fmt() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 204, 18_446_744_073_709_551_615] {
            out.clear();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn a_trace_is_started_when_absent_or_invalid() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\ntraceparent: garbage\r\n\r\n",
        ] {
            let head = upstream_head(raw);
            let trace = head
                .lines()
                .find_map(|l| l.strip_prefix("traceparent: "))
                .expect("a traceparent");
            assert!(is_valid_traceparent(trace.as_bytes()), "{trace}");
            assert_eq!(head.matches("traceparent").count(), 1);
        }
    }

    #[test]
    fn absolute_form_targets_route_by_their_authority() {
        let raw = b"GET http://hello.service.wharf:80/x HTTP/1.1\r\n\r\n";
        let (_, facts) = request(raw);
        let facts = facts.unwrap();
        assert_eq!(facts.host.unwrap().get(raw), b"hello.service.wharf:80");
        assert_eq!(facts.path.get(raw), b"/x");
        let head = upstream_head(raw);
        assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: hello.service.wharf:80\r\n"), "{head}");
    }

    #[test]
    fn response_framing_follows_the_request_and_status() {
        let get = request(b"GET / HTTP/1.1\r\n\r\n").1.unwrap();
        let head_request = request(b"HEAD / HTTP/1.1\r\n\r\n").1.unwrap();
        let facts = |raw: &[u8], request: &RequestFacts| {
            let mut head = Head::default();
            assert_eq!(parse_response(raw, &mut head), Ok(true));
            response_facts(raw, &head, request).unwrap()
        };
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(facts(ok, &get).body, Framing::Length(5));
        assert_eq!(facts(ok, &head_request).body, Framing::Empty);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(facts(chunked, &get).body, Framing::Chunked);
        let unframed = facts(b"HTTP/1.1 200 OK\r\n\r\n", &get);
        assert_eq!(unframed.body, Framing::UntilClose);
        assert!(!unframed.reusable);
        assert!(
            !facts(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                &get
            )
            .reusable
        );
        assert_eq!(
            facts(b"HTTP/1.1 304 Not Modified\r\n\r\n", &get).body,
            Framing::Empty
        );
    }

    #[test]
    fn a_reason_phrase_that_is_not_utf8_is_dropped() {
        let raw = b"HTTP/1.1 200 \xcc\xdd\r\nContent-Length: 0\r\n\r\n";
        let mut head = Head::default();
        assert_eq!(parse_response(raw, &mut head), Ok(true));
        let mut out = Vec::new();
        let delivery = Delivery {
            body: Framing::Empty,
            dechunk: false,
            close: false,
        };
        write_response(&mut out, raw, &head, delivery, 1);
        assert!(out.starts_with(b"HTTP/1.1 200 \r\n"), "{out:?}");
    }

    #[test]
    fn the_client_head_keeps_end_to_end_fields_and_says_how_the_body_comes() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-app: 1\r\n\r\n";
        let mut head = Head::default();
        assert_eq!(parse_response(raw, &mut head), Ok(true));
        let mut out = Vec::new();
        let delivery = Delivery {
            body: Framing::Length(5),
            dechunk: false,
            close: true,
        };
        write_response(&mut out, raw, &head, delivery, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nx-app: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }
}
