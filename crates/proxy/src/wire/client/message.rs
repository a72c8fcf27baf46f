//! Heads as HTTP/2 sends them (RFC 9113 §8.3): a request's fields written in order, and a
//! response's or trailers' fields read back into a status and a header map, checked as §8.1.1
//! asks (what breaks a rule makes the message malformed: the stream's error, not the
//! connection's).

use http::header::{CONTENT_LENGTH, HeaderMap};
use http::{Request, StatusCode};

use crate::wire::hpack::{Encoder, Field, Malformed, Name, Pseudo};

/// Writes `head`'s fields: the pseudo-headers from its method and URI, then its header map
/// (which the caller has rid of HTTP/1's connection-specific fields, §8.2.2).
pub(super) fn write_request(encoder: &mut Encoder, head: &Request<()>, out: &mut Vec<u8>) {
    encoder.begin(out);
    let uri = head.uri();
    encoder.pseudo(Pseudo::Method, head.method().as_str().as_bytes(), out);
    encoder.pseudo(
        Pseudo::Scheme,
        uri.scheme_str().unwrap_or("https").as_bytes(),
        out,
    );
    if let Some(authority) = uri.authority() {
        encoder.pseudo(Pseudo::Authority, authority.as_str().as_bytes(), out);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    encoder.pseudo(Pseudo::Path, path.as_bytes(), out);
    write_fields(encoder, head.headers(), out);
}

/// Writes a header map's fields (what trailers are, whole).
pub(super) fn write_fields(encoder: &mut Encoder, fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        encoder.field(name, value, out);
    }
}

/// What a header block on a client's stream is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Response,
    Trailers,
}

/// A response head or trailers, read field by field as the decoder hands them over.
#[derive(Debug)]
pub(super) struct Incoming {
    expect: Expect,
    pub(super) status: Option<StatusCode>,
    pub(super) fields: HeaderMap,
    regular_seen: bool,
    pub(super) malformed: Option<&'static str>,
}

impl Incoming {
    pub(super) fn new(expect: Expect) -> Incoming {
        Incoming {
            expect,
            status: None,
            // Room for a typical answer's fields without growing the map as they come.
            fields: HeaderMap::with_capacity(match expect {
                Expect::Response => 8,
                Expect::Trailers => 2,
            }),
            regular_seen: false,
            malformed: None,
        }
    }

    fn refuse(&mut self, why: &'static str) {
        self.malformed.get_or_insert(why);
    }

    pub(super) fn push(&mut self, field: Result<Field, Malformed>) {
        if self.malformed.is_some() {
            return;
        }
        let Ok(Field { name, value }) = field else {
            return self.refuse("a field that is not valid HTTP");
        };
        match name {
            Name::Pseudo(Pseudo::Status) if self.expect == Expect::Response => {
                if self.regular_seen || self.status.is_some() {
                    return self.refuse(":status twice, or after a regular field");
                }
                match StatusCode::from_bytes(value.as_bytes()) {
                    Ok(status) => self.status = Some(status),
                    Err(_) => self.refuse("a :status that is not a status code"),
                }
            }
            Name::Pseudo(_) => self.refuse("a pseudo-header a response does not have"),
            Name::Field(name) => {
                if is_connection_specific(&name) {
                    return self.refuse("a connection-specific field");
                }
                self.regular_seen = true;
                self.fields.append(name, value);
            }
        }
    }

    /// The checks that need the whole block.
    pub(super) fn finish(&mut self) {
        if self.expect == Expect::Response && self.status.is_none() && self.malformed.is_none() {
            self.refuse("a response without :status");
        }
        if self.status == Some(StatusCode::SWITCHING_PROTOCOLS) {
            self.refuse("101 in HTTP/2");
        }
    }

    /// The length `content-length` announces, if any (malformed when it is not a number).
    pub(super) fn content_length(&mut self) -> Option<u64> {
        let value = self.fields.get(CONTENT_LENGTH)?;
        let length = value.to_str().ok().and_then(|v| v.parse().ok());
        if length.is_none() {
            self.refuse("a content-length that is not a number");
        }
        length
    }
}

/// HTTP/1's connection-specific fields, which HTTP/2 forbids (§8.2.2); `te` is allowed in
/// requests only, and only as "trailers", so never in what a client reads.
fn is_connection_specific(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}
