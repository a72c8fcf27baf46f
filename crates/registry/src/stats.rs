//! The mesh's golden metrics, gathered: the reports proxies push every second
//! (`wharf_stats::report` says why they push rather than being polled), kept in memory and
//! merged when read. They are a live view, not state: nothing of it goes to the store, a
//! restarted registry has figures again within a second, and a proxy that stops reporting
//! drops out after [`STALE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wharf_stats::Report;

/// A report older than this no longer counts (its proxy is gone or cut off).
pub const STALE: Duration = Duration::from_secs(5);

/// The latest report of every proxy.
#[derive(Debug)]
pub struct Board {
    reports: Mutex<HashMap<String, (Instant, Report)>>,
    /// Bumped by every report taken: the index of blocking reads of the stats.
    index: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Board {
        Board {
            reports: Mutex::default(),
            index: watch::channel(1).0,
        }
    }
}

impl Board {
    /// Takes a proxy's report, replacing its previous one.
    pub fn take(&self, report: Report) {
        self.reports
            .lock()
            .expect("stats lock")
            .insert(report.proxy.clone(), (Instant::now(), report));
        self.index.send_modify(|index| *index += 1);
    }

    /// `read` of the reports still fresh (in proxy order), under the board's lock: no copy.
    pub fn read<T>(&self, read: impl FnOnce(&[&Report]) -> T) -> T {
        let mut reports = self.reports.lock().expect("stats lock");
        reports.retain(|_, (at, _)| at.elapsed() < STALE);
        let mut fresh: Vec<&Report> = reports.values().map(|(_, r)| r).collect();
        fresh.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        read(&fresh)
    }

    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_replaces_its_proxy_s_last_and_moves_the_index() {
        let board = Board::default();
        let first = board.index();
        let report = |proxy: &str, caller: &str| Report {
            proxy: proxy.into(),
            caller: caller.into(),
            mtls: false,
            inbound: Vec::new(),
            admin: None,
            open_connections: 0,
            services: Vec::new(),
        };
        board.take(report("a", "gateway"));
        board.take(report("a", "web"));
        board.take(report("b", "gateway"));
        assert_eq!(board.index(), first + 3);
        let callers: Vec<String> =
            board.read(|fresh| fresh.iter().map(|r| r.caller.clone()).collect());
        assert_eq!(callers, ["web", "gateway"]);
    }
}
