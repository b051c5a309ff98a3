//! The age envelope of every encrypted object and blob (FORMAT.md §3), opened with a fixed
//! test identity: damaged or foreign bytes must be an error, never a panic.
#![no_main]

use std::sync::LazyLock;

use drydock::crypto::{self, Identity};
use libfuzzer_sys::fuzz_target;

static IDENTITY: LazyLock<Identity> = LazyLock::new(drydock_fuzz::identity);

fuzz_target!(|data: &[u8]| {
    // The sections of a snapshot object (FORMAT.md §9), behind its tag.
    if let Ok(env) = drydock::repo::snapshot::Envelope::split(data, "snapshot") {
        let sealed = env.seal(&drydock_fuzz::authenticator());
        assert!(sealed.len() <= data.len() + 8 + 32, "sections grow on a round trip");
    }
    let Ok(plain) = crypto::decrypt(&IDENTITY, data) else {
        return;
    };
    let sealed = crypto::encrypt(&IDENTITY.to_public(), &plain);
    let again = crypto::decrypt(&IDENTITY, &sealed).expect("what was encrypted decrypts");
    assert_eq!(again, plain, "the plaintext changes across a round trip");
});
