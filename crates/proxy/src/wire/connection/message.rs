//! Heads as HTTP/2 sends them (RFC 9113 §8.3): a request's or a response's fields written in
//! order, and read back into a request, a status and a header map, or trailers, checked as
//! §8.1.1 asks (what breaks a rule makes the message malformed: the stream's error, not the
//! connection's).

use http::header::{CONTENT_LENGTH, HeaderMap, HeaderValue, TE};
use http::{Method, Request, StatusCode, Uri};

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

/// Writes a response's head: its status, then its fields.
pub(super) fn write_response(
    encoder: &mut Encoder,
    status: StatusCode,
    fields: &HeaderMap,
    out: &mut Vec<u8>,
) {
    encoder.begin(out);
    encoder.status(status, out);
    write_fields(encoder, fields, out);
}

/// Writes a header map's fields (what trailers are, whole).
pub(super) fn write_fields(encoder: &mut Encoder, fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        encoder.field(name, value, out);
    }
}

/// What a header block on a stream is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Request,
    Response,
    Trailers,
}

/// A request's pseudo-headers, as they came.
#[derive(Debug, Default)]
struct RequestLine {
    method: Option<HeaderValue>,
    scheme: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    path: Option<HeaderValue>,
}

/// A response head or trailers, read field by field as the decoder hands them over.
#[derive(Debug)]
pub(super) struct Incoming {
    expect: Expect,
    pub(super) status: Option<StatusCode>,
    line: RequestLine,
    pub(super) fields: HeaderMap,
    regular_seen: bool,
    pub(super) malformed: Option<&'static str>,
}

impl Incoming {
    pub(super) fn new(expect: Expect) -> Incoming {
        Incoming {
            expect,
            status: None,
            line: RequestLine::default(),
            // Room for a typical answer's fields without growing the map as they come.
            fields: HeaderMap::with_capacity(match expect {
                Expect::Request | Expect::Response => 8,
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
            Name::Pseudo(pseudo) if self.expect == Expect::Request => {
                if self.regular_seen {
                    return self.refuse("a pseudo-header after a regular field");
                }
                let slot = match pseudo {
                    Pseudo::Method => &mut self.line.method,
                    Pseudo::Scheme => &mut self.line.scheme,
                    Pseudo::Authority => &mut self.line.authority,
                    Pseudo::Path => &mut self.line.path,
                    // Extended CONNECT is not offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL).
                    Pseudo::Status | Pseudo::Protocol => {
                        return self.refuse("a pseudo-header a request does not have");
                    }
                };
                if slot.replace(value).is_some() {
                    self.refuse("a pseudo-header twice");
                }
            }
            Name::Pseudo(_) => self.refuse("a pseudo-header this message does not have"),
            Name::Field(name) => {
                let trailers_only = self.expect == Expect::Request
                    && name == TE
                    && value.as_bytes().eq_ignore_ascii_case(b"trailers");
                if is_connection_specific(&name) && !trailers_only {
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

    /// The request the pseudo-headers make (§8.3.1): a method, then a scheme and a path,
    /// or for CONNECT an authority alone.
    pub(super) fn request(&mut self) -> Option<Request<()>> {
        if self.malformed.is_some() {
            return None;
        }
        let line = std::mem::take(&mut self.line);
        let Some(method) = line
            .method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        else {
            self.refuse("a request without a valid :method");
            return None;
        };
        let uri = if method == Method::CONNECT {
            if line.scheme.is_some() || line.path.is_some() {
                self.refuse("CONNECT with :scheme or :path");
                return None;
            }
            line.authority
                .and_then(|a| Uri::builder().authority(a.as_bytes()).build().ok())
        } else {
            match (line.scheme, line.path) {
                (Some(scheme), Some(path)) if !path.is_empty() => {
                    let uri = Uri::builder().path_and_query(path.as_bytes());
                    // Without :authority (a client may give `host` instead) the URI is the
                    // path alone: `http::Uri` holds no scheme without an authority.
                    match &line.authority {
                        Some(authority) => uri
                            .scheme(scheme.as_bytes())
                            .authority(authority.as_bytes()),
                        None => uri,
                    }
                    .build()
                    .ok()
                }
                _ => None,
            }
        };
        let Some(uri) = uri else {
            self.refuse("a request without a valid :scheme, :path or :authority");
            return None;
        };
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = std::mem::take(&mut self.fields);
        Some(request)
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
/// requests only, and only as "trailers".
fn is_connection_specific(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}
