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

/// When a Velero backup named `<schedule>-YYYYMMDDhhmmss` started (Velero names a
/// schedule's backups by their UTC creation time).
pub fn started_of(backup: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    schedule_of(backup)?;
    let stamp = backup.rsplit_once('-')?.1;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_backups_carry_their_start() {
        let t = started_of("daily-20261121010203").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T01:02:03+00:00");
        assert!(started_of("daily-20261399010203").is_none());
        assert!(started_of("manual").is_none());
    }

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
