//! Wharf's vocabulary: service instances, health checks, their status, and how the bodies that
//! Consul clients send are turned into them. No I/O lives here, so that every other crate (and
//! the fuzzers) can use these types without pulling in a runtime.

pub mod catalog_registration;
pub mod check;
pub mod duration;
pub mod filter;
pub mod health;
pub mod registration;
pub mod service;
pub mod threshold;
pub mod traffic;

pub use catalog_registration::{
    CatalogDeregistration, CatalogRegistration, TxnNode, decode_catalog_deregistration,
    decode_catalog_registration, decode_txn_check, decode_txn_node, decode_txn_service,
};
pub use check::{Check, CheckKind};
pub use duration::{format_go_duration, parse_go_duration};
pub use health::Status;
pub use registration::{
    InvalidRegistration, decode_check_registration, decode_service_registration,
};
pub use service::{ServiceInstance, TaggedAddress, Weights};
pub use threshold::{Streak, Thresholds};

/// An error and all its causes on one line, `outer: inner: root`, for logs and for the
/// one-line reasons the API and the proxy answer with.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
