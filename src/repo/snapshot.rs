//! Snapshot manifests: what one backup holds, encrypted to the repository recipient.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{Authenticator, Kind, Tag};
use crate::error::{Error, Result};
use crate::harbor::config::ConfigPart;
use crate::harbor::db::DatabasePart;
use crate::harbor::registry::RegistryPart;
use crate::ids::{BlobId, SnapshotId};

pub const VERSION: u32 = 1;

pub fn key(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// The snapshot object (FORMAT.md §9): `"DDSNAP02" ‖ sections ‖ tag`, a section being
/// `kind: u8 ‖ length: u32le ‖ bytes`, the tag the object key's over all before it.
pub const MAGIC: &[u8; 8] = b"DDSNAP02";
/// The manifest, age-encrypted to the recipient. Exactly one.
const SECTION_MANIFEST: u8 = 1;
/// The maintenance summary, age-encrypted to the maintenance recipient
/// ([`super::maintenance::Summary`]). At most one.
const SECTION_SUMMARY: u8 = 2;
/// The repository's config as the writer opened it: what `key recover-config` rebuilds from.
const SECTION_CONFIG: u8 = 3;

/// The sections of a snapshot object.
pub struct Envelope {
    /// The manifest's age ciphertext.
    pub manifest: Vec<u8>,
    /// The maintenance summary's age ciphertext, in repositories with a maintenance key.
    pub summary: Option<Vec<u8>>,
    /// The config copy, if the writer added one.
    pub config: Option<Vec<u8>>,
}

impl Envelope {
    pub fn seal(&self, auth: &Authenticator) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let sections = std::iter::once((SECTION_MANIFEST, &self.manifest))
            .chain(self.summary.iter().map(|c| (SECTION_SUMMARY, c)))
            .chain(self.config.iter().map(|c| (SECTION_CONFIG, c)));
        for (kind, bytes) in sections {
            out.push(kind);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        auth.append_tag(Kind::Snapshot, out)
    }

    /// Authenticate and split a snapshot object.
    pub fn open(bytes: &[u8], auth: &Authenticator, what: &str) -> Result<Envelope> {
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(Error::Unauthentic(format!(
                "{what} is not a version 2 snapshot object: no key holder wrote it"
            )));
        }
        let body = auth.open_tagged(Kind::Snapshot, bytes).ok_or_else(|| {
            Error::Unauthentic(format!(
                "{what} is not authentic: its tag does not match, so no key holder wrote it"
            ))
        })?;
        Self::split(&body[8..], what)
    }

    /// The sections of a snapshot object, its tag not checked: for `key recover-config`,
    /// which learns the chunk key to check it with from the config copy inside.
    pub fn unverified(bytes: &[u8], what: &str) -> Result<Envelope> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .and_then(|b| b.get(..b.len().checked_sub(Tag::LEN)?))
            .ok_or_else(|| {
                Error::Unauthentic(format!("{what} is not a version 2 snapshot object"))
            })?;
        Self::split(body, what)
    }

    /// Split the sections between the magic and the tag.
    pub fn split(mut rest: &[u8], what: &str) -> Result<Envelope> {
        let bad = |why: &str| Error::Integrity(format!("{what} is malformed: {why}"));
        let (mut manifest, mut summary, mut config) = (None, None, None);
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err(bad("truncated section"));
            }
            let kind = rest[0];
            let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
            let bytes = rest
                .get(5..5 + len)
                .ok_or_else(|| bad("a section is longer than the object"))?;
            rest = &rest[5 + len..];
            let slot = match kind {
                SECTION_MANIFEST => &mut manifest,
                SECTION_SUMMARY => &mut summary,
                SECTION_CONFIG => &mut config,
                _ => continue, // kinds a newer drydock may add are skipped
            };
            if slot.replace(bytes.to_vec()).is_some() {
                return Err(bad("a section appears twice"));
            }
        }
        Ok(Envelope {
            manifest: manifest.ok_or_else(|| bad("no manifest section"))?,
            summary,
            config,
        })
    }
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
    /// Whether the application was held still (Harbor read-only) for the whole backup;
    /// absent in snapshots of drydock before 0.2 (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesced: Option<bool>,
    pub parts: Parts,
    pub summary: Summary,
}

/// What retention and `latest` judge a snapshot by: all a maintenance key learns of it
/// besides the blobs it uses (FORMAT.md §9.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub time: DateTime<Utc>,
    pub host: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// The part names, as [`Parts::names`] gives them.
    pub parts: Vec<String>,
    pub program: String,
}

impl Snapshot {
    pub fn meta(&self) -> Meta {
        Meta {
            time: self.time,
            host: self.host.clone(),
            tags: self.tags.clone(),
            expires: self.expires,
            parts: self.parts.names().into_iter().map(String::from).collect(),
            program: self.program.clone(),
        }
    }

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
        // Databases are restored and verified by name: two of one name would be ambiguous.
        let mut names = std::collections::BTreeSet::new();
        if let Some(d) = snap
            .parts
            .databases
            .iter()
            .find(|d| !names.insert(&d.database))
        {
            return Err(Error::Integrity(format!(
                "{what} holds two databases named {:?}",
                d.database
            )));
        }
        Ok(snap)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "PartsRepr", into = "PartsRepr")]
pub struct Parts {
    /// Every database captured (`backup --postgres` repeated), in the order given.
    pub databases: Vec<DatabasePart>,
    pub registry: Option<RegistryPart>,
    pub config: Option<ConfigPart>,
    /// Parts written by a newer drydock; kept so they are reported, not silently dropped.
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Parts as stored (FORMAT.md §9): one database goes in `database`, as every earlier
/// drydock wrote it and can read it; several go in `databases`, which an older drydock
/// reports as a part it does not know instead of restoring only one.
#[derive(Clone, Serialize, Deserialize)]
struct PartsRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<DatabasePart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    databases: Vec<DatabasePart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<RegistryPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ConfigPart>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

impl From<PartsRepr> for Parts {
    fn from(r: PartsRepr) -> Parts {
        Parts {
            databases: r.database.into_iter().chain(r.databases).collect(),
            registry: r.registry,
            config: r.config,
            unknown: r.unknown,
        }
    }
}

impl From<Parts> for PartsRepr {
    fn from(mut p: Parts) -> PartsRepr {
        let database = match p.databases.len() {
            1 => p.databases.pop(),
            _ => None,
        };
        PartsRepr {
            database,
            databases: p.databases,
            registry: p.registry,
            config: p.config,
            unknown: p.unknown,
        }
    }
}

impl Parts {
    /// The database part named `name` (its database name at backup).
    pub fn database(&self, name: &str) -> Option<&DatabasePart> {
        self.databases.iter().find(|d| d.database == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.databases.is_empty() {
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
        let db = self.databases.iter().map(|d| d.tree);
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

    fn database(name: &str) -> serde_json::Value {
        serde_json::json!({"server_version": "18.1", "server_version_num": 180001,
            "database": name, "pg_dump_version": "18.1", "tree": "00".repeat(32),
            "tables": [], "sequences": []})
    }

    /// FORMAT.md §9: one database is stored as `database`, several as `databases`; a
    /// reader takes either, and refuses two of one name.
    #[test]
    fn one_database_is_written_as_earlier_drydocks_read_it() {
        let one: Parts =
            serde_json::from_value(serde_json::json!({"database": database("registry")})).unwrap();
        assert_eq!(one.databases.len(), 1);
        let back = serde_json::to_value(&one).unwrap();
        assert!(
            back.get("database").is_some() && back.get("databases").is_none(),
            "{back}"
        );
        let two: Parts = serde_json::from_value(serde_json::json!(
            {"databases": [database("registry"), database("notary_server")]}))
        .unwrap();
        let back = serde_json::to_value(&two).unwrap();
        assert!(back.get("database").is_none(), "{back}");
        assert_eq!(back["databases"].as_array().unwrap().len(), 2);
        assert_eq!(two.names(), vec!["db"]);
        let mut manifest = serde_json::json!({"version": 1, "time": "2026-12-01T00:00:00Z",
            "host": "h", "program": "p", "summary": Summary::default(),
            "parts": {"databases": [database("registry"), database("registry")]}});
        let e = Snapshot::parse(manifest.to_string().as_bytes(), "snapshot x").unwrap_err();
        assert!(e.to_string().contains("two databases named"), "{e}");
        manifest["parts"] = serde_json::json!({"database": database("registry")});
        let s = Snapshot::parse(manifest.to_string().as_bytes(), "snapshot x").unwrap();
        assert_eq!(s.parts.databases[0].database, "registry");
        assert_eq!(s.quiesced, None);
    }

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
