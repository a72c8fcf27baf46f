//! Every request as it is answered, for people: the JSON access log (`--access-log`, off by
//! default) and the stream `wharf tap` reads (`/tap` on the admin listener). One line per
//! request when its answer's head goes out: when, which way, who called (the caller's
//! identity and the client's address), method, authority, path, status, the time to the
//! answer's head, the instance that answered, and the reason when the proxy answered itself.
//!
//! Both cost one flag and one atomic load per request while nobody asks: the line is only
//! made when a log is open or a tap is listening. The log is written by a thread of its own
//! from a bounded queue, in batches, so a slow disk never holds a request; a line that finds
//! the queue full is dropped, and the log says so where the gap is (`{"dropped": N}`). A tap is
//! sampled: at most its rate of lines a second, the rest counted in a `{"skipped": N}` line.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::answers::Refusal;
use crate::service::Endpoint;

/// The longest path a line carries (longer ones are cut, marked with `…`).
const MAX_PATH: usize = 2048;
/// Lines waiting for the log's writer before new ones are dropped.
const LOG_QUEUE: usize = 16 * 1024;
/// A tap's lines a second unless it asks for another rate, and the most it may ask for.
const TAP_RATE: u32 = 100;
const MAX_TAP_RATE: u32 = 10_000;

/// One request, as the log and the tap show it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLine {
    /// When the request arrived, RFC 3339 in UTC.
    pub time: String,
    /// `outbound` (a gateway or a sidecar calling out) or `inbound` (a sidecar's app called).
    pub direction: &'static str,
    /// Who called: the caller's mTLS identity (a service), `gateway` for a gateway's clients,
    /// `unknown` for a plaintext caller of a sidecar.
    pub caller: String,
    /// The client's address.
    pub client: SocketAddr,
    pub protocol: &'static str,
    pub method: String,
    /// The service asked for.
    pub authority: String,
    pub path: String,
    pub status: u16,
    /// Time from the request's arrival to its answer's head.
    pub latency_ms: f64,
    /// The instance that answered, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// When the proxy answered itself: why (`x-wharf-error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// A request on its way, remembered only while someone is looking.
#[derive(Debug)]
pub struct Pending {
    started: Instant,
    at: SystemTime,
    client: SocketAddr,
    protocol: &'static str,
    method: String,
    authority: String,
    path: String,
}

/// An open access log: lines go to its writer thread. Cloned, the clones share the file.
#[derive(Debug, Clone)]
pub struct AccessLog {
    lines: std::sync::mpsc::SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Appends to `path`, or writes to standard output for `-`.
    pub fn open(path: &str) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (lines, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(LOG_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("wharf-access-log".into())
            .spawn(move || write_lines(out, &queue, &counted))?;
        Ok(AccessLog { lines, dropped })
    }
}

/// The writer: whatever is queued, in one write, flushed whenever the queue runs dry, with a
/// note of the lines dropped since the last.
fn write_lines(
    out: Box<dyn Write + Send>,
    queue: &std::sync::mpsc::Receiver<Vec<u8>>,
    dropped: &AtomicU64,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = queue.recv() {
        let mut written = out.write_all(&line);
        while let Ok(line) = queue.try_recv() {
            written = written.and_then(|()| out.write_all(&line));
        }
        let gap = dropped.swap(0, Ordering::Relaxed);
        if gap > 0 {
            written = written.and_then(|()| writeln!(out, "{{\"dropped\":{gap}}}"));
        }
        if written.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Who is looking at a proxy's requests: its access log, if open, and its taps.
#[derive(Debug)]
pub struct Observers {
    direction: &'static str,
    caller: String,
    log: Option<AccessLog>,
    tap: broadcast::Sender<Arc<RequestLine>>,
    taps: Arc<AtomicUsize>,
}

impl Observers {
    /// For a proxy whose requests go `direction`, called by `caller` (see [`RequestLine`]).
    pub fn new(direction: &'static str, caller: &str, log: Option<AccessLog>) -> Observers {
        Observers {
            direction,
            caller: caller.to_owned(),
            log,
            tap: broadcast::channel(1024).0,
            taps: Arc::default(),
        }
    }

    /// Whether a request's line is wanted at all.
    #[inline]
    pub fn wanted(&self) -> bool {
        self.log.is_some() || self.taps.load(Ordering::Relaxed) > 0
    }

    /// The start of a request's line, if anyone is looking.
    pub fn begin(
        &self,
        client: SocketAddr,
        protocol: &'static str,
        method: &str,
        authority: &str,
        path: &str,
    ) -> Option<Pending> {
        if !self.wanted() {
            return None;
        }
        let path = match path.char_indices().nth(MAX_PATH) {
            Some((cut, _)) => format!("{}…", &path[..cut]),
            None => path.to_owned(),
        };
        Some(Pending {
            started: Instant::now(),
            at: SystemTime::now(),
            client,
            protocol,
            method: method.to_owned(),
            authority: authority.to_owned(),
            path,
        })
    }

    /// An endpoint answered with `status`.
    pub fn answered(&self, pending: Pending, status: u16, endpoint: &Endpoint) {
        self.emit(pending, status, Some(endpoint), None, None);
    }

    /// The proxy answered itself.
    pub fn refused(&self, pending: Pending, refusal: &Refusal) {
        self.emit(
            pending,
            refusal.status().as_u16(),
            None,
            Some(refusal.reason()),
            None,
        );
    }

    /// A sidecar's inbound side: its app answered (`caller` from the peer's certificate).
    pub fn inbound(
        &self,
        pending: Pending,
        caller: &str,
        status: u16,
        error: Option<&'static str>,
    ) {
        self.emit(pending, status, None, error, Some(caller));
    }

    /// [`Observers::inbound`] for a refusal of the sidecar's own (a denied caller).
    pub fn inbound_refused(&self, pending: Pending, caller: &str, refusal: &Refusal) {
        let status = refusal.status().as_u16();
        self.emit(pending, status, None, Some(refusal.reason()), Some(caller));
    }

    fn emit(
        &self,
        pending: Pending,
        status: u16,
        endpoint: Option<&Endpoint>,
        error: Option<&'static str>,
        caller: Option<&str>,
    ) {
        let line = RequestLine {
            time: rfc3339(pending.at),
            // A caller named per line is one calling in.
            direction: if caller.is_some() {
                "inbound"
            } else {
                self.direction
            },
            caller: caller.unwrap_or(&self.caller).to_owned(),
            client: pending.client,
            protocol: pending.protocol,
            method: pending.method,
            authority: pending.authority,
            path: pending.path,
            status,
            latency_ms: pending.started.elapsed().as_secs_f64() * 1000.0,
            instance: endpoint.map(|e| e.id.clone()),
            upstream: endpoint.map(|e| e.addr),
            error,
        };
        if let Some(log) = &self.log {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            if log.lines.try_send(bytes).is_err() {
                log.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.taps.load(Ordering::Relaxed) > 0 {
            let _ = self.tap.send(Arc::new(line));
        }
    }

    /// `/tap?service=NAME&rate=N`: this proxy's requests for NAME (every service without
    /// it), one JSON line each as they are answered, at most N a second (100 by default).
    pub fn tap(&self, query: Option<&str>) -> Response<AdminBody> {
        let mut service = None;
        let mut rate = TAP_RATE;
        for (key, value) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
        {
            match key {
                "service" => service = Some(value.to_ascii_lowercase()),
                "rate" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_TAP_RATE).contains(&n) => rate = n,
                    _ => {
                        return plain(
                            StatusCode::BAD_REQUEST,
                            format!("rate must be a number from 1 to {MAX_TAP_RATE}\n"),
                        );
                    }
                },
                _ => {}
            }
        }
        let (lines, body) = mpsc::channel(64);
        let subscription = Subscription::new(self.taps.clone());
        let requests = self.tap.subscribe();
        tokio::spawn(stream_tap(requests, lines, service, rate, subscription));
        let mut response = Response::new(TapBody(body).boxed());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }
}

/// The body type of the admin listeners: whole answers, and the tap's stream.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// A whole plain-text answer.
pub fn plain(status: StatusCode, text: String) -> Response<AdminBody> {
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(text)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// A tap counts as listening while it lives.
struct Subscription(Arc<AtomicUsize>);

impl Subscription {
    fn new(taps: Arc<AtomicUsize>) -> Subscription {
        taps.fetch_add(1, Ordering::Relaxed);
        Subscription(taps)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One tap: the lines it wants, sampled to `rate` a second, until its client goes.
async fn stream_tap(
    mut requests: broadcast::Receiver<Arc<RequestLine>>,
    lines: mpsc::Sender<Bytes>,
    service: Option<String>,
    rate: u32,
    _subscription: Subscription,
) {
    let mut second = Instant::now();
    let (mut sent, mut skipped) = (0u32, 0u64);
    loop {
        let next = tokio::select! {
            next = requests.recv() => next,
            () = lines.closed() => return,
        };
        if second.elapsed() >= Duration::from_secs(1) {
            if skipped > 0 {
                let note = format!("{{\"skipped\":{skipped}}}\n");
                if lines.send(Bytes::from(note)).await.is_err() {
                    return;
                }
            }
            second = Instant::now();
            (sent, skipped) = (0, 0);
        }
        let line = match next {
            Ok(line) => line,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                skipped += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if service.as_ref().is_some_and(|s| *s != line.authority) {
            continue;
        }
        if sent >= rate {
            skipped += 1;
            continue;
        }
        sent += 1;
        let mut bytes = serde_json::to_vec(&*line).unwrap_or_default();
        bytes.push(b'\n');
        if lines.send(Bytes::from(bytes)).await.is_err() {
            return;
        }
    }
}

/// The tap's lines as a response body.
struct TapBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for TapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// `at` as RFC 3339 in UTC with milliseconds (the civil date from days since the epoch, by
/// Howard Hinnant's algorithm: no date crate for one format).
fn rfc3339(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_in_utc() {
        let at = |secs: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_160_600, 123), "2026-12-01T21:30:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn nothing_is_made_while_nobody_looks() {
        let observers = Observers::new("outbound", "gateway", None);
        let client = "127.0.0.1:1".parse().unwrap();
        assert!(
            observers
                .begin(client, "HTTP/1.1", "GET", "web", "/")
                .is_none()
        );
        let subscription = Subscription::new(observers.taps.clone());
        assert!(
            observers
                .begin(client, "HTTP/1.1", "GET", "web", "/")
                .is_some()
        );
        drop(subscription);
        assert!(!observers.wanted());
    }

    #[test]
    fn a_long_path_is_cut() {
        let observers = Observers::new("outbound", "gateway", None);
        let _subscription = Subscription::new(observers.taps.clone());
        let client = "127.0.0.1:1".parse().unwrap();
        let long = "/é".repeat(MAX_PATH);
        let pending = observers
            .begin(client, "HTTP/1.1", "GET", "web", &long)
            .unwrap();
        assert_eq!(pending.path.chars().count(), MAX_PATH + 1);
        assert!(pending.path.ends_with('…'));
    }

    #[tokio::test]
    async fn a_tap_gets_its_service_s_lines_sampled_to_its_rate() {
        let observers = Observers::new("outbound", "gateway", None);
        let response = observers.tap(Some("service=web&rate=3"));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(observers.wanted());
        let client = "127.0.0.1:1".parse().unwrap();
        for authority in ["api", "web", "web", "web", "web", "web"] {
            let pending = observers
                .begin(client, "HTTP/1.1", "GET", authority, "/x")
                .unwrap();
            observers.refused(pending, &Refusal::NoHost);
        }
        let mut body = response.into_body();
        let mut lines = Vec::new();
        while lines.len() < 3 {
            let frame = body.frame().await.unwrap().unwrap();
            lines.push(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap());
        }
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["authority"], "web");
            assert_eq!(value["status"], 400);
            assert_eq!(value["caller"], "gateway");
        }
        assert_eq!(
            observers.tap(Some("rate=0")).status(),
            StatusCode::BAD_REQUEST
        );
        drop(body);
    }
}
