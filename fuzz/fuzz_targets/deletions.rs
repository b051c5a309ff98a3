//! `deletions/` records written by prune (FORMAT.md §11): plaintext JSON.
#![no_main]

use drydock::repo::prune::DeletionRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = DeletionRecord::parse(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&rec).expect("records serialise");
    let again = DeletionRecord::parse(&bytes).expect("a serialised record parses again");
    assert_eq!(
        serde_json::to_vec(&again).expect("records serialise"),
        bytes,
        "the deletion record changes across a round trip"
    );
});
