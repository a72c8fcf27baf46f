//! Any bytes as a DNS question, over UDP and TCP, against a catalog with a few instances:
//! the answer is silence or a well-formed message within the transport's size limit, and
//! nothing panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wharf_model::{decode_service_registration, Check, ServiceInstance};
use wharf_registry::dns::{answer::answer, Transport, Zone};
use wharf_registry::{CatalogState, NodeInfo};

fn catalog() -> &'static (Zone, CatalogState) {
    static CATALOG: OnceLock<(Zone, CatalogState)> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut instances: Vec<ServiceInstance> = Vec::new();
        let mut checks: Vec<Check> = Vec::new();
        for body in [
            r#"{"Name":"web","ID":"web-1","Address":"127.0.0.1","Port":80,"Tags":["v1"],"Check":{"TTL":"1h","Status":"passing"}}"#,
            r#"{"Name":"web","ID":"web-2","Address":"::1","Port":81,"Check":{"TTL":"1h","Status":"warning"}}"#,
            r#"{"Name":"web","ID":"web-3","Port":82,"Check":{"TTL":"1h"}}"#,
            r#"{"Name":"db","Address":"db.example","Port":5432}"#,
        ]
        {
            let registration = decode_service_registration(body.as_bytes()).expect("fixture");
            instances.push(registration.service);
            checks.extend(registration.checks);
        }
        let zone = Zone::new("wharf", NodeInfo::local("fuzz".into())).expect("zone");
        (zone, CatalogState::from_records(instances, checks))
    })
}

fuzz_target!(|data: &[u8]| {
    let (zone, state) = catalog();
    for (transport, limit) in [(Transport::Udp, 4096), (Transport::Tcp, 65_535)] {
        if let Some(reply) = answer(zone, state, data, transport) {
            assert!(reply.len() <= limit);
            assert!(hickory_proto_check(&reply));
        }
    }
});

/// The reply starts with a response header carrying the question's id.
fn hickory_proto_check(reply: &[u8]) -> bool {
    reply.len() >= 12 && reply[2] & 0x80 != 0
}
