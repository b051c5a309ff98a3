//! The maintenance view of a snapshot (FORMAT.md §9.2): what a maintenance key judges and
//! keeps a snapshot by, without reading any of its content.
//!
//! A writer adds a *summary* to every snapshot of a repository that has a maintenance
//! recipient: the snapshot's [`Meta`] and the ids of every blob it uses, age-encrypted to
//! that recipient. A backup knows every blob it stored or found stored, except the chunks
//! of a registry blob it reused by digest; those the maintenance key reads from the
//! registry blob itself, which writers encrypt to the maintenance recipient too. A summary
//! that the identity wrote by walking the snapshot's trees is *closed*: it already lists
//! those chunks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::blob::{self, BlobType};
use super::index::MasterIndex;
use super::reader::BlobReader;
use super::snapshot::{Meta, Snapshot};
use super::tree::RegistryEntry;
use super::{pack, prune, Repository};
use crate::crypto::{self, DecryptFailure, Identity, Recipient};
use crate::error::{Error, Result};
use crate::ids::BlobId;

pub const VERSION: u32 = 1;

/// The JSON head of a summary; the blob ids follow it in binary.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Head {
    version: u32,
    #[serde(flatten)]
    meta: Meta,
    closed: bool,
    references: u64,
    /// How many registry blob ids follow the references.
    #[serde(default)]
    registry: u64,
}

/// A snapshot as the maintenance key sees it.
#[derive(Clone, Debug)]
pub struct Summary {
    pub meta: Meta,
    /// Whether `references` holds the chunks of every registry blob it lists as well.
    pub closed: bool,
    /// Every blob the snapshot uses (with the exception above), sorted.
    pub references: Vec<BlobId>,
    /// The registry blobs among them, sorted: what a reader expands. Listed by the writer,
    /// which knows each blob's type, so that no index (which a holder of the backup-only
    /// key can forge) decides which blobs are expanded.
    pub registry: Vec<BlobId>,
}

/// Summaries larger than this are refused before anything is sized by them.
const MAX_REFERENCES: u64 = 1 << 28;

impl Summary {
    pub fn new(
        meta: Meta,
        closed: bool,
        references: impl IntoIterator<Item = BlobId>,
        registry: impl IntoIterator<Item = BlobId>,
    ) -> Self {
        let sorted = |ids: Vec<BlobId>| {
            let mut ids = ids;
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        Summary {
            meta,
            closed,
            references: sorted(references.into_iter().collect()),
            registry: sorted(registry.into_iter().collect()),
        }
    }

    /// `u32le head length ‖ head JSON ‖ 32-byte ids`, encrypted to the maintenance recipient.
    pub fn seal(&self, recipient: &Recipient) -> Vec<u8> {
        let head = serde_json::to_vec(&Head {
            version: VERSION,
            meta: self.meta.clone(),
            closed: self.closed,
            references: self.references.len() as u64,
            registry: self.registry.len() as u64,
        })
        .expect("summaries serialise");
        let n = self.references.len() + self.registry.len();
        let mut plain = Vec::with_capacity(4 + head.len() + 32 * n);
        plain.extend_from_slice(&(head.len() as u32).to_le_bytes());
        plain.extend_from_slice(&head);
        for id in self.references.iter().chain(&self.registry) {
            plain.extend_from_slice(&id.0);
        }
        crypto::encrypt(recipient, &plain)
    }

    /// Decrypt and parse a summary section; `what` names the snapshot in errors.
    pub fn open(identity: &Identity, sealed: &[u8], what: &str) -> Result<Summary> {
        let bad = |why: &str| Error::Integrity(format!("{what}: its summary is malformed: {why}"));
        let plain = crypto::decrypt(identity, sealed).map_err(|e| match e {
            DecryptFailure::WrongKey => Error::Key(format!(
                "{what}: its summary is not encrypted to this maintenance key (the repository's maintenance key was replaced since); write a new key with `drydock key maintenance`"
            )),
            DecryptFailure::Corrupt(why) => bad(&why),
        })?;
        Self::parse(&plain, what)
    }

    /// Parse a decrypted summary (FORMAT.md §9.2).
    pub fn parse(plain: &[u8], what: &str) -> Result<Summary> {
        let bad = |why: &str| Error::Integrity(format!("{what}: its summary is malformed: {why}"));
        let head_len = plain
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("truncated"))?;
        let head = plain
            .get(4..4 + head_len)
            .ok_or_else(|| bad("the head is longer than the section"))?;
        let head: Head = serde_json::from_slice(head).map_err(|e| bad(&e.to_string()))?;
        if head.version != VERSION {
            return Err(Error::Usage(format!(
                "{what}: summary version {} is not {VERSION}; upgrade drydock",
                head.version
            )));
        }
        let ids = &plain[4 + head_len..];
        let n = head.references.checked_add(head.registry);
        if n.is_none_or(|n| n > MAX_REFERENCES || ids.len() as u64 != 32 * n) {
            return Err(bad("its id count does not match its length"));
        }
        if let Some(p) = head
            .meta
            .parts
            .iter()
            .find(|p| !["db", "registry", "config"].contains(&p.as_str()))
        {
            return Err(bad(&format!("unknown part \"{}\"", crate::term::esc(p))));
        }
        if head.closed && head.registry > 0 {
            return Err(bad("a closed summary lists registry blobs to expand"));
        }
        let mut all = ids
            .chunks_exact(32)
            .map(|c| BlobId(c.try_into().expect("32 bytes")));
        let references = all.by_ref().take(head.references as usize).collect();
        Ok(Summary {
            meta: head.meta,
            closed: head.closed,
            references,
            registry: all.collect(),
        })
    }

    /// A closed summary of a snapshot, walked with the identity (migration, and
    /// `key maintenance` for snapshots written before the repository had a maintenance key).
    pub async fn walk(reader: &BlobReader, snapshot: &Snapshot) -> Result<Summary> {
        let used = prune::referenced(reader, std::slice::from_ref(snapshot)).await?;
        Ok(Summary::new(snapshot.meta(), true, used, []))
    }
}

/// Every blob the summaries reach: their references, and the chunks of each registry blob
/// an open summary lists, read with the maintenance identity. Fails rather than guess: a
/// registry blob with no copy it can open (none indexed, or only forged ones) stops it.
pub async fn referenced(
    repo: &Repository,
    index: &MasterIndex,
    summaries: &[Summary],
) -> Result<HashSet<BlobId>> {
    let identity = repo
        .keys
        .maintenance_identity()
        .ok_or_else(|| Error::Key("reading snapshot summaries needs the maintenance key".into()))?;
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut registry: HashSet<BlobId> = HashSet::new();
    for s in summaries {
        used.extend(s.references.iter().chain(&s.registry).copied());
        registry.extend(s.registry.iter().copied());
    }
    for id in registry {
        used.extend(registry_content(repo, index, identity, &id).await?);
    }
    Ok(used)
}

/// The chunks of a registry blob, united over every copy the maintenance identity opens. A
/// backup-only key can store a copy with a shorter chunk list under the same id, and the
/// maintenance key cannot check ids, so no single copy is believed to be the whole list.
async fn registry_content(
    repo: &Repository,
    index: &MasterIndex,
    identity: &Identity,
    id: &BlobId,
) -> Result<HashSet<BlobId>> {
    let mut content = HashSet::new();
    let mut opened = 0;
    let open = |stored: &[u8], raw_length| {
        blob::open_for_maintenance(identity, id, raw_length, stored).and_then(|plain| {
            RegistryEntry::parse(&plain).map_err(|e| Error::Integrity(e.to_string()))
        })
    };
    let locations: Vec<_> = index
        .locations(id)
        .into_iter()
        .filter(|l| l.blob_type == BlobType::Registry)
        .collect();
    for loc in &locations {
        let stored = match repo
            .store
            .get_range(&pack::key(&loc.pack), loc.offset as u64, loc.length as u64)
            .await
        {
            Ok(b) => b,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        if let Ok(entry) = open(&stored, loc.raw_length) {
            opened += 1;
            content.extend(entry.content);
        }
    }
    // Under Object Lock, packs a bucket writer overwrote are read from earlier versions.
    if opened == 0 {
        for loc in &locations {
            let Some(pack) = repo.recovered_pack(&loc.pack).await? else {
                continue;
            };
            let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
            if let Some(Ok(entry)) = pack.get(range).map(|b| open(b, loc.raw_length)) {
                opened += 1;
                content.extend(entry.content);
            }
        }
    }
    if opened == 0 {
        return Err(Error::Integrity(format!(
            "registry blob {} that a snapshot uses has no copy the maintenance key can read (written before the repository had a maintenance key, or damaged); run `drydock key maintenance` with the identity once, or prune with the identity",
            id.short()
        )));
    }
    Ok(content)
}

/// What [`install`] did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Installed {
    /// Snapshots rewritten with a summary: (old id, new id).
    pub snapshots: Vec<(crate::ids::SnapshotId, crate::ids::SnapshotId)>,
    /// Registry blobs stored again, encrypted to the new maintenance recipient as well.
    pub registry_blobs: usize,
}

/// Give the repository a new maintenance key (the identity's operation, FORMAT.md §9.2):
/// a new maintenance recipient and deletion secret in the config (which revokes any earlier
/// maintenance key), every snapshot written again with a closed summary and its old object
/// deleted, and every registry blob a snapshot uses stored once more, encrypted to the new
/// recipient too. Rerunnable: an interrupted run leaves duplicates that the next one (or
/// prune) removes.
pub async fn install(
    store: std::sync::Arc<dyn crate::store::Store>,
    identity: &Identity,
    parallel: usize,
) -> Result<(crate::crypto::MaintenanceKey, Installed)> {
    use std::sync::Arc;
    let repo = Repository::open(
        store.clone(),
        crate::crypto::KeyFile::Identity(Box::new(identity.clone())),
    )
    .await?;
    repo.config.check_writable()?;
    let chunk_key = repo.keys.chunk_key("installing a maintenance key")?.clone();
    let key_identity = Identity::generate();
    let secret = crate::crypto::MaintenanceSecret::generate();
    let mut config = repo.config.clone();
    config.maintenance_recipient = Some(key_identity.to_public().to_string());
    config.reseal_maintenance(&secret)?;
    config.seal(&chunk_key, Some(identity));
    store
        .put(
            super::config::KEY,
            bytes::Bytes::from(config.to_bytes()),
            crate::store::PutMode::Overwrite,
        )
        .await?;
    let key = super::keys::maintenance_key(&config, &chunk_key, key_identity, secret)?;
    // Reopened: the keys now carry the new maintenance recipient, which writers encrypt to.
    let repo = Arc::new(
        Repository::open(
            store,
            crate::crypto::KeyFile::Identity(Box::new(identity.clone())),
        )
        .await?,
    );
    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index.clone(), "installing a maintenance key")?;
    let mut report = Installed::default();
    let mut registry: HashSet<BlobId> = HashSet::new();
    let mut held = Vec::new();
    let recipient = repo
        .keys
        .maintenance_recipient
        .clone()
        .expect("just written");
    for (old, snapshot) in repo.load_snapshots().await? {
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(Error::Unauthentic(why)) => {
                tracing::warn!("not summarising snapshots/{old}: {why}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let summary = Summary::walk(&reader, &snapshot).await?;
        registry.extend(summary.references.iter().copied().filter(|id| {
            index
                .locations(id)
                .iter()
                .any(|l| l.blob_type == BlobType::Registry)
        }));
        // A registry blob a forged index hides is not stored again here; a later backup
        // that reuses it lists it, and prune then stops until `check` finds it.
        let new = repo
            .put_snapshot(&snapshot, Some(summary.seal(&recipient)))
            .await?;
        let key = super::snapshot::key(&old);
        if new != old && !super::lock::delete_unless_retained(repo.store.as_ref(), &key).await? {
            held.push(old);
        }
        report.snapshots.push((old, new));
    }
    // Under Object Lock the old objects stay until their date: marked forgotten, so that
    // nothing counts them twice, and deleted by a later prune.
    if !held.is_empty() {
        super::prune::write_record(&repo, Vec::new(), held, chrono::Utc::now()).await?;
    }
    report.registry_blobs = restore_registry_blobs(&repo, &reader, registry, parallel).await?;
    Ok((key, report))
}

/// Store the registry blobs again through a writer that knows of no blob, so each gets a
/// new copy encrypted to the maintenance recipient as well.
async fn restore_registry_blobs(
    repo: &std::sync::Arc<Repository>,
    reader: &BlobReader,
    ids: HashSet<BlobId>,
    parallel: usize,
) -> Result<usize> {
    use std::sync::Arc;
    if ids.is_empty() {
        return Ok(0);
    }
    let writer = Arc::new(super::writer::BlobWriter::new(
        repo.clone(),
        &MasterIndex::default(),
        parallel,
    )?);
    let n = ids.len();
    for id in ids {
        let body = reader.load(&id, BlobType::Registry).await?;
        let entry = RegistryEntry::parse(&body).map_err(|e| {
            Error::Integrity(format!("registry blob {} is malformed: {e}", id.short()))
        })?;
        let w = writer.clone();
        let stored = tokio::task::spawn_blocking(move || w.save_registry(&entry.digest, &body))
            .await
            .map_err(|e| Error::Other(format!("a worker failed: {e}")))?;
        match stored {
            Ok(new) if new == id => {}
            Ok(_) => {
                return Err(Error::Integrity(format!(
                    "registry blob {} changed its id when stored again",
                    id.short()
                )))
            }
            Err(e) => return Err(writer.abort(e).await),
        }
    }
    writer.finish().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            time: chrono::Utc::now(),
            host: "harbor".into(),
            tags: Default::default(),
            expires: None,
            parts: vec!["registry".into()],
            program: "drydock".into(),
        }
    }

    #[test]
    fn summaries_round_trip_and_refuse_bad_counts() {
        let id = Identity::generate();
        let s = Summary::new(
            meta(),
            false,
            [BlobId([2; 32]), BlobId([1; 32])],
            [BlobId([1; 32])],
        );
        let back = Summary::open(&id, &s.seal(&id.to_public()), "s").unwrap();
        assert_eq!(back.references, vec![BlobId([1; 32]), BlobId([2; 32])]);
        assert_eq!(back.registry, vec![BlobId([1; 32])]);
        assert!(matches!(
            Summary::open(&Identity::generate(), &s.seal(&id.to_public()), "s"),
            Err(Error::Key(_))
        ));
        let plain = crypto::decrypt(&id, &s.seal(&id.to_public())).unwrap();
        for cut in [0, 3, 10, plain.len() - 1] {
            assert!(Summary::parse(&plain[..cut], "s").is_err(), "cut {cut}");
        }
        let mut bad = meta();
        bad.parts = vec!["\x1b[5m".into()];
        let s = Summary::new(bad, false, [], []);
        let plain = crypto::decrypt(&id, &s.seal(&id.to_public())).unwrap();
        assert!(Summary::parse(&plain, "s").is_err());
    }

    /// The vector of FORMAT.md §9.2.
    #[test]
    fn test_vector() {
        let head = br#"{"version":1,"time":"2026-12-01T00:00:00Z","host":"h","parts":["registry"],"program":"p","closed":false,"references":1,"registry":1}"#;
        assert_eq!(head.len(), 132);
        let mut plain = hex::decode("84000000").unwrap();
        plain.extend_from_slice(head);
        plain.extend_from_slice(&[0x11; 32]);
        plain.extend_from_slice(&[0x22; 32]);
        assert_eq!(plain.len(), 200);
        let s = Summary::parse(&plain, "v").unwrap();
        assert_eq!(s.references, vec![BlobId([0x11; 32])]);
        assert_eq!(s.registry, vec![BlobId([0x22; 32])]);
        assert!(Summary::parse(&plain[..199], "v").is_err());
        let mut two = plain.clone();
        let at = 4
            + head
                .windows(14)
                .position(|w| w == b"\"references\":1")
                .unwrap()
            + 13;
        two[at] = b'2';
        assert!(Summary::parse(&two, "v").is_err());
    }

    #[test]
    fn the_fuzz_seeds_parse() {
        for seed in ["seed-open", "seed-closed"] {
            let path = format!("{}/fuzz/corpus/summary/{seed}", env!("CARGO_MANIFEST_DIR"));
            Summary::parse(&std::fs::read(path).unwrap(), seed).unwrap();
        }
    }
}
