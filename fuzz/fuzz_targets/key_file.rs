//! Key files given with `--key` (FORMAT.md §2): an age identity, a backup-only or a
//! maintenance key line.
#![no_main]

use drydock::crypto::{identity_file_text, KeyFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match KeyFile::parse(text) {
        Ok(KeyFile::Identity(id)) => match KeyFile::parse(&identity_file_text(&id)) {
            Ok(KeyFile::Identity(again)) => assert_eq!(
                again.to_public().to_string(),
                id.to_public().to_string(),
                "the identity changes across a round trip"
            ),
            _ => panic!("a written identity file does not parse as an identity"),
        },
        Ok(KeyFile::BackupOnly(key)) => match KeyFile::parse(&key.to_file_text()) {
            Ok(KeyFile::BackupOnly(again)) => {
                assert_eq!(again.repository, key.repository);
                assert_eq!(again.recipient.to_string(), key.recipient.to_string());
                assert_eq!(again.chunk_key.to_hex(), key.chunk_key.to_hex());
            }
            _ => panic!("a written backup-only key does not parse as one"),
        },
        Ok(KeyFile::Maintenance(key)) => match KeyFile::parse(&key.to_file_text()) {
            Ok(KeyFile::Maintenance(again)) => {
                assert_eq!(again.repository, key.repository);
                assert_eq!(
                    again.identity.to_public().to_string(),
                    key.identity.to_public().to_string()
                );
                assert_eq!(*again.object_key, *key.object_key);
                assert_eq!(again.secret.to_hex(), key.secret.to_hex());
            }
            _ => panic!("a written maintenance key does not parse as one"),
        },
        Err(_) => {}
    }
});
