//! Golden metrics in bounded memory, computed where the traffic is (the proxies) and merged
//! where they are gathered.
//!
//! - [`sketch`] — a mergeable latency sketch with a stated relative error;
//! - [`window`] — counts and sketches in rolling windows (the last minute, the last ten),
//!   the rows a proxy keeps per service, instance and edge;
//! - [`report`] — what a proxy pushes to the registry, and their merge;
//! - [`view`] — the figures as the API and the dashboard show them.
//!
//! Written here rather than taken from a crate: the goal is a row (a service, an instance or
//! an edge, both windows) in under 4 KiB, so that 10,000 rows stay under 40 MB. The DDSketch
//! and HDR crates keep dense bins (DDSketch's Rust port: one `f64` per bin from the lowest to
//! the highest value seen, about 2 KiB for 1–100 ms at 1 %; HDR: kilobytes per histogram
//! whatever it holds), and a rolling window needs one per slot. The sketch here is DDSketch's
//! logarithmic mapping (so its error bound is DDSketch's) with sparse `u32` bins, typically a
//! few hundred bytes.

pub mod report;
pub mod sketch;
pub mod view;
pub mod window;

pub use report::{
    CallerReport, EdgeReport, InstanceReport, Report, RouteReport, ServiceReport, SubsetReport,
    WindowReport,
};
pub use sketch::{Bucket, RELATIVE_ERROR, Sketch};
pub use view::{InstanceView, Models, RouteView, ServiceView, SubsetView, WindowView};
pub use window::{Counts, Outcome, Row, Summary, Volume};
