//! A Velero BackupStorageLocation given with `--velero-bsl` (YAML).
#![no_main]

use drydock::velero::bsl::Bsl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bsl) = Bsl::parse(text) else {
        return;
    };
    let secrets = std::path::Path::new("/nonexistent");
    let _ = (
        bsl.repo_url(),
        bsl.velero_url(),
        bsl.s3_options(None, secrets),
    );
});
