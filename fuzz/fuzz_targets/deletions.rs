//! `deletions/` records written by prune (FORMAT.md §11): compact JSON and the deletion
//! key's tag, which the target adds so that mutations reach the JSON parser.
#![no_main]

use std::sync::LazyLock;

use drydock::repo::auth::{Authenticator, Kind};
use drydock::repo::prune::DeletionRecord;
use libfuzzer_sys::fuzz_target;

static AUTH: LazyLock<Authenticator> = LazyLock::new(drydock_fuzz::deletion_authenticator);

fuzz_target!(|data: &[u8]| {
    let _ = DeletionRecord::parse(data, None);
    let tagged = AUTH.append_tag(Kind::Deletion, data.to_vec());
    let Ok(rec) = DeletionRecord::parse(&tagged, Some(&AUTH)) else {
        return;
    };
    let bytes = rec.to_bytes(&AUTH);
    let again = DeletionRecord::parse(&bytes, Some(&AUTH)).expect("a written record parses again");
    assert_eq!(
        again.to_bytes(&AUTH),
        bytes,
        "the deletion record changes across a round trip"
    );
});
