//! Any bytes as a registration body: the decoders answer a value or a reason, never panic,
//! and what they accept is internally consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_model::{
    decode_catalog_deregistration, decode_catalog_registration, decode_check_registration,
    decode_service_registration,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(registration) = decode_service_registration(data) {
        assert!(!registration.service.name.is_empty());
        assert!(!registration.service.id.is_empty());
        for check in &registration.checks {
            assert_eq!(check.service_id, registration.service.id);
            assert!(!check.id.is_empty());
        }
    }
    if let Ok(check) = decode_check_registration(data) {
        assert!(!check.id.is_empty() && !check.name.is_empty());
    }
    if let Ok(registration) = decode_catalog_registration(data) {
        assert!(!registration.node.is_empty() && !registration.node.contains('/'));
        assert!(!registration.address.is_empty() || registration.skip_node_update);
        if let Some(service) = &registration.service {
            assert_eq!(service.node, registration.node);
        }
        for check in &registration.checks {
            assert!(!check.id.is_empty());
            assert_eq!(check.node, registration.node);
        }
    }
    if let Ok(deregistration) = decode_catalog_deregistration(data) {
        assert!(!deregistration.node.is_empty());
    }
});
