//! Index objects (FORMAT.md §7): binary, read with either key.
#![no_main]

use drydock::repo::index::{self, MasterIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = index::parse(data) else {
        return;
    };
    let mut master = MasterIndex::default();
    for (pack, entries) in &file {
        master.add_pack(*pack, entries);
    }
    for (pack, entries) in &file {
        assert!(master.has_pack(pack));
        for e in entries {
            assert!(master.get(&e.id).is_some(), "an indexed blob is not found");
        }
    }
    // The encoding has no free bits: parse ∘ encode is the identity on bytes.
    assert_eq!(
        index::encode(&file),
        data,
        "the index changes across a round trip"
    );
});
