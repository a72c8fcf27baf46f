//! Wharf's integration tests, one binary: the real `wharf` binary, real sockets and processes,
//! driven the way users drive them (one module per part), with the support code they share.
//! One binary links once, and support code any module uses is not dead code.

mod support;

mod acl;
mod cluster;
mod connect;
mod consul_answers;
mod dns;
mod external;
mod kv;
mod mesh;
mod proxy;
mod registry;
mod top;
mod up;
