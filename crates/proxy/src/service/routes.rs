//! A service's golden metrics by route class, bounded by construction: the first
//! [`MAX_ROUTES`] classes seen get a row each, every other request counts under `other`.
//!
//! On for a service whose instances say so in their meta (`wharf-routes = "on"`), as
//! Linkerd keeps route metrics only for the services a ServiceProfile describes: a route row
//! costs about 5 % more instructions per request at the gateway, paid only where wanted.
//!
//! A class is the method and the path's first segment (`GET /api`, `POST /notes`), or for
//! gRPC the method's whole path (`/pkg.Service/Method`): coarse enough that ids in paths do
//! not make a row each, fine enough to tell a slow endpoint of an API from the rest. Rows are
//! read without a lock (the list is replaced whole when a class joins, which happens at most
//! [`MAX_ROUTES`] times in a service's life).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use wharf_stats::Row;

/// Route classes with a row of their own, per service.
pub const MAX_ROUTES: usize = 20;
/// The longest class kept (a longer first segment is cut).
const MAX_CLASS: usize = 64;
/// Where the rest go.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
pub struct Routes {
    enabled: AtomicBool,
    /// On for every service of the proxy (`--routes`), whatever its meta says.
    always: bool,
    rows: ArcSwap<Vec<(String, Arc<Row>)>>,
    /// Held while a class joins (rare), so two joining at once do not lose one.
    joining: Mutex<()>,
}

/// The parts a request's class is made of: its method (none for gRPC) and the path's part.
fn parts<'r>(method: &'r [u8], path: &'r [u8], grpc: bool) -> (&'r [u8], &'r [u8]) {
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    if grpc {
        return (b"", &path[..path.len().min(MAX_CLASS)]);
    }
    let segment = match path.strip_prefix(b"/") {
        Some(rest) => {
            let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            &path[..end + 1]
        }
        None => path, // `*`, or an absolute form already taken apart
    };
    (method, &segment[..segment.len().min(MAX_CLASS)])
}

/// Whether `name` is the class of these parts (compared without making the name).
fn is_class(name: &str, (method, segment): (&[u8], &[u8])) -> bool {
    let name = name.as_bytes();
    if method.is_empty() {
        return name == segment;
    }
    name.len() == method.len() + 1 + segment.len()
        && name.starts_with(method)
        && name[method.len()] == b' '
        && name.ends_with(segment)
}

/// The class of a request: `METHOD /first-segment`, or `/pkg.Service/Method` for gRPC.
pub fn class(method: &[u8], path: &[u8], grpc: bool) -> String {
    let (method, segment) = parts(method, path, grpc);
    let segment = String::from_utf8_lossy(if segment.is_empty() { b"/" } else { segment });
    if method.is_empty() {
        segment.into_owned()
    } else {
        format!("{} {segment}", String::from_utf8_lossy(method))
    }
}

impl Routes {
    /// Route classes for a service, on from the start if `always`.
    pub fn new(always: bool) -> Routes {
        Routes {
            enabled: AtomicBool::new(always),
            always,
            ..Routes::default()
        }
    }

    /// What the service's meta says (`wharf-routes`); on anyway if `always` (rows are kept
    /// when turned off).
    pub fn enable(&self, on: bool) {
        self.enabled.store(on || self.always, Ordering::Relaxed);
    }

    /// Whether the service's requests are counted by route class: asked before anything
    /// else is looked at, so that a service without routes pays one load.
    #[inline]
    pub fn on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The row of a request's class, made if there is room, else `other`'s.
    pub fn row(&self, method: &[u8], path: &[u8], grpc: bool) -> Arc<Row> {
        let wanted = parts(method, path, grpc);
        let found = |rows: &[(String, Arc<Row>)]| {
            rows.iter()
                .find(|(name, _)| is_class(name, wanted))
                .map(|(_, row)| row.clone())
        };
        if let Some(row) = found(&self.rows.load()) {
            return row;
        }
        let _joining = self.joining.lock().expect("routes lock");
        let rows = self.rows.load();
        if let Some(row) = found(&rows) {
            return row;
        }
        let named = rows.iter().filter(|(name, _)| name != OTHER).count();
        let name = if named < MAX_ROUTES {
            class(method, path, grpc)
        } else {
            OTHER.to_owned()
        };
        if let Some((_, row)) = rows.iter().find(|(n, _)| *n == name) {
            return row.clone();
        }
        let row = Arc::new(Row::new(crate::clock::now_secs()));
        let mut grown = Vec::clone(&rows);
        grown.push((name, row.clone()));
        self.rows.store(Arc::new(grown));
        row
    }

    /// Every class and its row.
    pub fn all(&self) -> Arc<Vec<(String, Arc<Row>)>> {
        self.rows.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_is_the_method_and_first_segment_or_the_grpc_method() {
        assert_eq!(class(b"GET", b"/api/users/42?x=1", false), "GET /api");
        assert_eq!(class(b"POST", b"/notes", false), "POST /notes");
        assert_eq!(class(b"GET", b"/", false), "GET /");
        assert_eq!(class(b"GET", b"/?q=1", false), "GET /");
        assert_eq!(class(b"OPTIONS", b"*", false), "OPTIONS *");
        assert_eq!(
            class(b"POST", b"/grpc.health.v1.Health/Check", true),
            "/grpc.health.v1.Health/Check"
        );
        let long = format!("/{}", "a".repeat(500));
        assert_eq!(
            class(b"GET", long.as_bytes(), false).len(),
            "GET ".len() + MAX_CLASS
        );
    }

    #[test]
    fn classes_beyond_the_bound_count_as_other() {
        let routes = Routes::default();
        assert!(!routes.on(), "off until enabled");
        routes.enable(true);
        assert!(routes.on());
        for i in 0..MAX_ROUTES + 10 {
            routes.row(b"GET", format!("/r{i}/x").as_bytes(), false);
        }
        let all = routes.all();
        assert_eq!(all.len(), MAX_ROUTES + 1);
        assert_eq!(all[3].0, "GET /r3");
        assert_eq!(all.last().unwrap().0, OTHER);
        // A class seen before keeps its row; a new one shares other's.
        let again = routes.row(b"GET", b"/r3?page=2", false);
        assert!(Arc::ptr_eq(&again, &all[3].1));
        let new = routes.row(b"GET", b"/new", false);
        assert!(Arc::ptr_eq(&new, &all[MAX_ROUTES].1));
        let post = routes.row(b"POST", b"/r3", false);
        assert!(!Arc::ptr_eq(&post, &all[3].1));
    }
}
