//! HTTP/2 as bytes, no I/O: [`frame`]s (RFC 9113 §4, §6) and [`hpack`] (RFC 7541). What a
//! connection of the mesh's own HTTP/2 reads and writes, and what the fuzzer drives.

pub mod client;
pub mod frame;
pub mod hpack;
