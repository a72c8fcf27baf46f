//! Wharf's vocabulary: service instances, health checks, their status, and how the bodies that
//! Consul clients send are turned into them. No I/O lives here, so that every other crate (and
//! the fuzzers) can use these types without pulling in a runtime.

pub mod check;
pub mod duration;
pub mod health;
pub mod registration;
pub mod service;

pub use check::{Check, CheckKind};
pub use duration::{format_go_duration, parse_go_duration};
pub use health::Status;
pub use registration::{
    InvalidRegistration, decode_check_registration, decode_service_registration,
};
pub use service::{ServiceInstance, TaggedAddress, Weights};
