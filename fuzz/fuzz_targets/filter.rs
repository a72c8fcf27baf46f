//! Any text as a Consul filter expression: parsed or refused with a column inside the text
//! (or just past it), never a panic; what parses evaluates against a health entry without
//! panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_model::filter::Filter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Filter::parse(text) {
        Ok(filter) => {
            let entry = serde_json::json!({
                "Service": {"ID": "a-1", "Tags": ["x"], "Meta": {"version": "v1"}, "Port": 1},
                "Checks": [{"Status": "passing"}, {"Status": "critical"}],
            });
            let _ = filter.matches(&entry);
            let _ = filter.matches(&serde_json::Value::Null);
        }
        Err(e) => assert!(e.column >= 1 && e.column <= text.chars().count().max(wharf_model::filter::MAX_FILTER_LEN) + 1),
    }
});
