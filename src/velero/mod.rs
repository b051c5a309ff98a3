//! Living next to Velero: its BackupStorageLocation, its backups, its layout rules.
//!
//! drydock writes only under `<bsl prefix>/plugins/drydock/` — Velero marks a BSL
//! *Unavailable* if any other unknown top-level folder appears — and never touches
//! `backups/`, `restores/`, `kopia/`, `restic/` or `metadata/`.

pub mod backups;
pub mod bsl;

pub use bsl::{AccessMode, Bsl};

/// Where drydock's repository lives inside a BSL prefix.
pub const PLUGIN_DIR: &str = "plugins/drydock";

/// Top-level folders Velero accepts under a BSL prefix.
pub const VELERO_TOP_LEVEL: &[&str] = &[
    "backups", "restores", "restic", "metadata", "plugins", "kopia",
];

/// Snapshot tags drydock sets for Velero.
pub const TAG_BACKUP: &str = "velero.io/backup-name";
pub const TAG_SCHEDULE: &str = "velero.io/schedule-name";

/// The schedule of a Velero backup named `<schedule>-YYYYMMDDhhmmss`, as Velero names them.
pub fn schedule_of(backup: &str) -> Option<&str> {
    let (schedule, stamp) = backup.rsplit_once('-')?;
    (stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()) && !schedule.is_empty())
        .then_some(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_names() {
        assert_eq!(schedule_of("daily-20261121010000"), Some("daily"));
        assert_eq!(
            schedule_of("harbor-nightly-20261121010000"),
            Some("harbor-nightly")
        );
        assert_eq!(schedule_of("manual"), None);
        assert_eq!(schedule_of("daily-2026"), None);
    }
}
