//! A snapshot's maintenance summary (FORMAT.md §9.2), decrypted: what a maintenance key
//! judges and keeps a snapshot by. Malformed heads, counts or lengths must be an error.
#![no_main]

use drydock::repo::maintenance::Summary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Summary::parse(data, "snapshot") {
        assert!(
            32 * (s.references.len() + s.registry.len()) <= data.len(),
            "more ids than bytes"
        );
        assert!(!s.closed || s.registry.is_empty());
    }
});
