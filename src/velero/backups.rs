//! Velero's backups in the same BSL: which exist, and when each expires.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::Store;

/// What drydock reads of `backups/<name>/velero-backup.json`.
#[derive(Deserialize)]
struct BackupObject {
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    expiration: Option<DateTime<Utc>>,
    #[serde(default)]
    phase: Option<String>,
}

/// The state of one Velero backup as its BSL shows it.
#[derive(Debug, PartialEq, Eq)]
pub enum VeleroBackup {
    /// `backups/<name>/velero-backup.json` is gone: Velero deleted the backup.
    Gone,
    Expired(DateTime<Utc>),
    Live {
        phase: Option<String>,
    },
}

/// Look a backup up in a store rooted at the BSL prefix.
pub async fn lookup(velero: &dyn Store, name: &str, now: DateTime<Utc>) -> Result<VeleroBackup> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::Integrity(format!(
            "{name:?} is not a Velero backup name"
        )));
    }
    let key = format!("backups/{name}/velero-backup.json");
    let bytes = match velero.get(&key).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(VeleroBackup::Gone),
        Err(e) => return Err(e),
    };
    let obj: BackupObject = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{key} is not a Velero backup object: {e}")))?;
    Ok(match obj.status.expiration {
        Some(t) if t <= now => VeleroBackup::Expired(t),
        _ => VeleroBackup::Live {
            phase: obj.status.phase,
        },
    })
}
