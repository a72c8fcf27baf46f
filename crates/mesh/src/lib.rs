//! The mesh's security model, shared by the registry (which issues and stores) and the
//! sidecars (which verify and enforce), with no I/O of its own:
//!
//! - [`identity`] — SPIFFE identities of services (`spiffe://<trust domain>/ns/…/svc/<name>`);
//! - [`ca`] — the certificate authority: roots, and leaves that follow the X509-SVID rules;
//! - [`intentions`] — who may call whom: Consul's intentions, their precedence, decisions;
//! - [`tls`] — rustls configurations from a leaf and the roots, and the peer's identity.

pub mod ca;
pub mod identity;
pub mod intentions;
pub mod tls;

pub use ca::{CaError, Leaf, Root};
pub use identity::{IdentityError, SpiffeId};
