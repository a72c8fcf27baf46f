// Each test binary uses part of what is here.
#![allow(dead_code)]

pub(crate) mod certs;
pub(crate) mod etcd_server;
