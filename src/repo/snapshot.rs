//! Snapshot manifests: what one backup holds, encrypted to the repository recipient.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::harbor::config::ConfigPart;
use crate::harbor::db::DatabasePart;
use crate::harbor::registry::RegistryPart;
use crate::ids::{BlobId, SnapshotId};

pub const VERSION: u32 = 1;

pub fn key(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<Utc>,
    pub host: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// The drydock version that wrote it.
    pub program: String,
    /// Harbor's version from /api/v2.0/systeminfo, when the backup was given --harbor-url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harbor_version: Option<String>,
    pub parts: Parts,
    pub summary: Summary,
}

impl Snapshot {
    /// Parse a decrypted manifest and refuse what this drydock cannot read (a newer
    /// version, an unknown part). `what` names the snapshot in errors ("snapshot 1a2b3c4d").
    pub fn parse(plain: &[u8], what: &str) -> Result<Snapshot> {
        let snap: Snapshot = serde_json::from_slice(plain)
            .map_err(|e| Error::Integrity(format!("{what} is malformed: {e}")))?;
        if snap.version > VERSION {
            return Err(Error::Usage(format!(
                "{what} was written by a newer drydock (snapshot version {}); upgrade drydock",
                snap.version
            )));
        }
        if let Some(part) = snap.parts.unknown.keys().next() {
            return Err(Error::Usage(format!(
                "{what} holds a {part:?} part this drydock does not know; upgrade drydock"
            )));
        }
        Ok(snap)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Parts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabasePart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigPart>,
    /// Parts written by a newer drydock; kept so they are reported, not silently dropped.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl Parts {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.database.is_some() {
            v.push("db");
        }
        if self.registry.is_some() {
            v.push("registry");
        }
        if self.config.is_some() {
            v.push("config");
        }
        v
    }

    /// The tree blobs at the roots of every part. `check` and `prune` walk from these: a
    /// tree left out here is neither checked nor kept by prune.
    pub fn root_trees(&self) -> Vec<BlobId> {
        let db = self.database.iter().map(|d| d.tree);
        let registry = self.registry.iter().map(|r| r.blobs);
        db.chain(registry)
            .chain(self.config.iter().flat_map(|c| c.root_trees()))
            .collect()
    }

    /// Data blobs named directly by the manifest (the registry's link list, root files of
    /// the config part).
    pub fn root_data(&self) -> Vec<BlobId> {
        let links = self.registry.iter().flat_map(|r| r.links.iter().copied());
        links
            .chain(self.config.iter().flat_map(|c| c.root_data()))
            .collect()
    }
}

/// Sizes and counts of one backup.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    /// Bytes read from the source.
    pub logical_bytes: u64,
    /// Plaintext bytes of blobs this backup added.
    pub new_bytes: u64,
    /// Plaintext bytes found already in the repository.
    pub reused_bytes: u64,
    /// Bytes this backup uploaded (compressed, encrypted, with pack headers).
    pub stored_bytes: u64,
    pub new_blobs: u64,
    pub duration_secs: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_survive_a_round_trip() {
        // serde_json's default float parser read this back one unit in the last place off.
        let s = Summary {
            duration_secs: 5.9716978588214016e141,
            ..Default::default()
        };
        let back: Summary = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back.duration_secs, s.duration_secs);
    }
}
