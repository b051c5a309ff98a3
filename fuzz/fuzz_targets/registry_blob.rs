//! Registry blobs (FORMAT.md §8): `<digest>\n` then the chunk list as JSON.
#![no_main]

use drydock::repo::blob::{blob_id, BlobType};
use drydock::repo::tree::RegistryEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = RegistryEntry::parse(data) else {
        return;
    };
    let bytes = entry.to_bytes();
    let again = RegistryEntry::parse(&bytes).expect("a serialised registry blob parses again");
    assert_eq!(
        again, entry,
        "the registry blob changes across a round trip"
    );
    // The id covers the whole body (format v2): two different bodies never share one.
    let key = drydock_fuzz::chunk_key();
    assert_eq!(
        blob_id(&key, BlobType::Registry, data) == blob_id(&key, BlobType::Registry, &bytes),
        data == bytes.as_slice(),
        "the registry blob's id does not follow its body"
    );
});
