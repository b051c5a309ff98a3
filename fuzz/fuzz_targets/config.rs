//! The `config` object (FORMAT.md §4): plaintext JSON read before any key is known.
#![no_main]

use std::sync::LazyLock;

use drydock::crypto::Identity;
use drydock::repo::config::RepoConfig;
use libfuzzer_sys::fuzz_target;

static IDENTITY: LazyLock<Identity> = LazyLock::new(drydock_fuzz::identity);

fuzz_target!(|data: &[u8]| {
    let Ok(config) = RepoConfig::parse(data) else {
        return;
    };
    // What `Repository::open` does next: the recipient, then the sealed chunk key (the
    // seeds are sealed to the test identity, so mutations reach the age decryption).
    let _ = config.recipient();
    let _ = config.vouched_by(&IDENTITY);
    if let Ok(unsealed) = config.unseal(&IDENTITY) {
        config
            .verify_chunk_key(&unsealed.chunk_key)
            .expect("an unsealed key verifies");
        assert!(config.authentic_for(&unsealed.chunk_key));
    }
    let bytes = config.to_bytes();
    let again = RepoConfig::parse(&bytes).expect("a serialised config parses again");
    assert_eq!(
        again.to_bytes(),
        bytes,
        "the config changes across a round trip"
    );
});
