//! Blob decoding after decryption (FORMAT.md §5): the compression frame, the claimed raw
//! length from the index, and the id check.
//!
//! Input: `type: u8 ‖ raw_length: u32le ‖ framed plaintext`. The framed plaintext is
//! encrypted to the test recipient (the fuzzer cannot forge age's MACs, so this is how it
//! reaches what lies behind them) and decoded as the index entry claims.
#![no_main]

use std::sync::LazyLock;

use drydock::crypto::{self, ChunkKey, Identity};
use drydock::repo::blob::{self, blob_id, BlobType};
use drydock_fuzz::Input;
use libfuzzer_sys::fuzz_target;

static IDENTITY: LazyLock<Identity> = LazyLock::new(drydock_fuzz::identity);
static CHUNK_KEY: LazyLock<ChunkKey> = LazyLock::new(drydock_fuzz::chunk_key);

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(blob_type) = BlobType::from_byte(input.u8() % 3) else {
        return;
    };
    let raw_length = input.u32();
    let framed = input.rest();
    let recipient = IDENTITY.to_public();
    // An id that fits when the frame is uncompressed, so that path reaches success.
    let id = blob_id(&CHUNK_KEY, blob_type, framed.get(1..).unwrap_or_default());
    let sealed = crypto::encrypt(&recipient, framed);
    if let Ok(plain) = blob::decode(&IDENTITY, &CHUNK_KEY, blob_type, &id, raw_length, &sealed) {
        assert_eq!(
            plain.len(),
            raw_length as usize,
            "decoded length is not the claimed one"
        );
    }
    // Round trip: any plaintext survives encode and decode.
    let e = blob::encode(&CHUNK_KEY, &recipient, blob_type, framed, 1);
    let back = blob::decode(
        &IDENTITY,
        &CHUNK_KEY,
        blob_type,
        &e.id,
        e.raw_length,
        &e.bytes,
    )
    .expect("an encoded blob decodes");
    assert_eq!(back, framed, "the blob changes across a round trip");
});
