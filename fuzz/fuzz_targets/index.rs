//! Index objects (FORMAT.md §7): binary, read with either key. The input is tagged with the
//! test key first, so the parser behind the tag check is what gets fuzzed.
#![no_main]

use std::sync::LazyLock;

use drydock::repo::auth::{Authenticator, Kind};
use drydock::repo::index::{self, MasterIndex};
use libfuzzer_sys::fuzz_target;

static AUTH: LazyLock<Authenticator> = LazyLock::new(drydock_fuzz::authenticator);

fuzz_target!(|data: &[u8]| {
    // Untagged bytes never parse.
    assert!(index::parse(data, &AUTH).is_err() || data.len() >= 40);
    let tagged = AUTH.append_tag(Kind::Index, data.to_vec());
    let Ok(file) = index::parse(&tagged, &AUTH) else {
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
        index::encode(&file, &AUTH),
        tagged,
        "the index changes across a round trip"
    );
});
