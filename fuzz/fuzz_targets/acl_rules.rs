//! Any text as ACL rules (HCL or JSON): parsed or refused with a position inside the text,
//! never a panic; what parses gives an authorizer that answers without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_registry::acl::rules::parse;
use wharf_registry::acl::{Authorizer, DefaultPolicy, Need, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(rules) => {
            let authorizer =
                Authorizer::from_rules("fuzz".into(), std::iter::once(&rules), DefaultPolicy::Deny);
            for name in ["", "web", "web-sidecar-proxy"] {
                let _ = authorizer.allows(Scope::Service(name), Need::Write);
                let _ = authorizer.allows(Scope::Intention(name), Need::Read);
            }
            let _ = authorizer.allows(Scope::Acl, Need::Read);
        }
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1);
            assert!(e.line <= text.lines().count().max(1) + 1);
        }
    }
});
