//! HTTP/2 as bytes, no I/O: [`frame`]s (RFC 9113 §4, §6), [`hpack`] (RFC 7541), and a
//! [`connection`]'s state, client or server side. What the mesh's own HTTP/2 reads and
//! writes, and what the fuzzer drives.

pub mod connection;
pub mod frame;
pub mod hpack;
