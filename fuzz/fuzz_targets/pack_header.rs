//! The header at the end of a pack (FORMAT.md §6), as `read_pack_header` reads it.
//!
//! Input: `data_len: u64le ‖ header`, for a pack of `data_len` bytes of blobs followed by
//! `header` and a trailer the target adds (`header_len ‖ tag ‖ magic`, tagged with the test
//! key, so that mutations reach the entry parser). The pack's size comes from the store's
//! listing, so it is fuzzed too.
#![no_main]

use std::sync::LazyLock;

use drydock::repo::auth::{Authenticator, Kind};
use drydock::repo::pack::{self, MAGIC, TRAILER_LEN};
use drydock_fuzz::Input;
use libfuzzer_sys::fuzz_target;

static AUTH: LazyLock<Authenticator> = LazyLock::new(drydock_fuzz::authenticator);

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let data_len = input.u64();
    let header = input.rest();
    let mut tail = header.to_vec();
    tail.extend_from_slice(&(header.len() as u32).to_le_bytes());
    tail.extend_from_slice(&AUTH.tag(Kind::Pack, &[header]).0);
    tail.extend_from_slice(MAGIC);
    let Some(pack_len) = data_len.checked_add(tail.len() as u64) else {
        return;
    };
    let _ = pack::header_len(&tail[tail.len() - TRAILER_LEN..], pack_len);
    let Ok(entries) = pack::parse_header(&tail, pack_len, &AUTH) else {
        return;
    };
    // The blobs tile the data before the header, in order.
    let mut offset = 0u64;
    for e in &entries {
        assert_eq!(
            e.offset as u64, offset,
            "blob offset is not where the last one ended"
        );
        offset += e.length as u64;
    }
    assert_eq!(offset, data_len, "the blobs do not fill the pack");
    // Round trip: the header PackBuilder::finish writes for these entries.
    let mut again = (entries.len() as u32).to_le_bytes().to_vec();
    for e in &entries {
        again.push(e.blob_type as u8);
        again.extend_from_slice(&e.id.0);
        again.extend_from_slice(&e.length.to_le_bytes());
        again.extend_from_slice(&e.raw_length.to_le_bytes());
        if let Some(l) = &e.lookup {
            again.extend_from_slice(&l.0);
        }
    }
    assert_eq!(again, header, "the header changes across a round trip");
});
