//! `drydock migrate`: bring a format version 1 repository to version 2 (FORMAT.md §15).
//!
//! Order, so that a run stopped anywhere loses nothing: copy every blob into version 2 packs
//! and indexes (registry blobs stored again under their whole-body ids), rewrite each
//! snapshot's registry blob tree for those ids and save version 2 snapshot objects, and only
//! then write the version 2 `config` and delete the version 1 objects. Until the config is
//! written, version 1 readers see a version 1 repository (they skip objects they cannot
//! parse); after it, a second run only finishes the deletions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::blob::{self, BlobType, EncodedBlob};
use super::config::{self, RepoConfig};
use super::index::MasterIndex;
use super::pack::{self, PackBuilder, PackEntry};
use super::reader::BlobReader;
use super::snapshot::{self, Snapshot};
use super::tree::{RegistryEntry, Tree};
use super::writer::{packer_for, BlobWriter, PACKS_PER_INDEX};
use super::{Keys, Repository};
use crate::chunker::ChunkerParams;
use crate::crypto::{self, ChunkKey, Identity, KeyFile, MaintenanceSecret};
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId, RepoId};
use crate::store::{PutMode, Store};

/// What a run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Migrated {
    pub repository: String,
    /// False when the repository was already version 2 (the run only cleaned up).
    pub converted: bool,
    pub packs_copied: usize,
    pub blobs_copied: usize,
    pub registry_blobs: usize,
    pub snapshots: usize,
    pub objects_deleted: usize,
}

/// The fields of a version 1 `config` that version 2 keeps.
#[derive(Deserialize)]
struct V1Config {
    id: RepoId,
    created: String,
    recipient: String,
    chunker: ChunkerParams,
    pack_size: u64,
    zstd_level: i32,
    sealed_chunk_key: String,
    key_check: String,
}

pub async fn migrate(
    store: Arc<dyn Store>,
    identity: &Identity,
    parallel: usize,
) -> Result<Migrated> {
    let bytes = store
        .get(config::KEY)
        .await
        .map_err(Error::into_integrity)?;
    let mut report = Migrated::default();
    match RepoConfig::probe(&bytes)? {
        1 => {
            let repo = Arc::new(v2_repository(store.clone(), &bytes, identity)?);
            convert(&repo, identity, parallel, &mut report).await?;
            // The switch: from here on the repository is version 2.
            store
                .put(
                    config::KEY,
                    Bytes::from(repo.config.to_bytes()),
                    PutMode::Overwrite,
                )
                .await?;
            report.converted = true;
            report.repository = repo.config.id.to_hex();
        }
        config::VERSION => {
            let repo =
                Repository::open(store.clone(), KeyFile::Identity(Box::new(identity.clone())))
                    .await?;
            report.repository = repo.config.id.to_hex();
        }
        v => {
            return Err(Error::Usage(format!(
            "repository format version {v} is not one this drydock migrates from; upgrade drydock"
        )))
        }
    }
    report.objects_deleted = delete_v1_objects(&store, identity).await?;
    Ok(report)
}

/// The version 2 repository a version 1 config becomes: same id, keys and parameters, a
/// new maintenance secret, tagged by the identity.
fn v2_repository(store: Arc<dyn Store>, v1: &[u8], identity: &Identity) -> Result<Repository> {
    let old: V1Config = serde_json::from_slice(v1)
        .map_err(|e| Error::Integrity(format!("the version 1 config is damaged: {e}")))?;
    if identity.to_public().to_string() != old.recipient {
        return Err(Error::Key(format!(
            "this identity does not belong to repository {}",
            old.id.short()
        )));
    }
    let sealed = hex::decode(&old.sealed_chunk_key)
        .map_err(|_| Error::Integrity("the version 1 config's sealed key is not hex".into()))?;
    let plain = zeroize::Zeroizing::new(crypto::decrypt(identity, &sealed).map_err(|_| {
        Error::Integrity("the version 1 config's sealed key does not open with the identity".into())
    })?);
    let chunk_key = ChunkKey::from_hex(std::str::from_utf8(&plain).unwrap_or_default())?;
    if chunk_key.check_value(&old.id) != old.key_check {
        return Err(Error::Integrity(
            "the version 1 config's key check does not match its sealed key".into(),
        ));
    }
    let maintenance = MaintenanceSecret::generate();
    let recipient = identity.to_public();
    let mut config = RepoConfig::new(&recipient, &chunk_key, &maintenance, None, None);
    config.id = old.id;
    config.created = old.created;
    config.chunker = old.chunker;
    config.pack_size = old.pack_size;
    config.zstd_level = old.zstd_level;
    config.sealed_chunk_key = old.sealed_chunk_key;
    config.key_check = old.key_check;
    config.seal(&chunk_key, Some(identity));
    let keys = Keys::open(
        &config,
        KeyFile::Identity(Box::new(identity.clone())),
        &store.describe(),
    )?;
    Ok(Repository {
        store,
        config,
        keys,
        data_class_override: Default::default(),
    })
}

/// Copies encrypted blobs verbatim into version 2 packs and indexes them, laid out and
/// indexed as [`BlobWriter`] does.
struct Copier<'a> {
    repo: &'a Repository,
    packers: [PackBuilder; 2],
    pending: Vec<(PackId, Vec<PackEntry>)>,
    index: MasterIndex,
    packs: usize,
}

impl Copier<'_> {
    async fn add(&mut self, blob: EncodedBlob) -> Result<()> {
        let p = &mut self.packers[packer_for(blob.blob_type)];
        p.add(blob);
        if p.len() as u64 >= self.repo.config.pack_size {
            let full = std::mem::take(p);
            self.upload(full).await?;
        }
        Ok(())
    }

    async fn upload(&mut self, builder: PackBuilder) -> Result<()> {
        let finished = builder.finish(&self.repo.keys.objects);
        self.repo
            .store
            .put(&pack::key(&finished.id), finished.bytes, PutMode::Overwrite)
            .await?;
        self.index.add_pack(finished.id, &finished.entries);
        self.pending.push((finished.id, finished.entries));
        self.packs += 1;
        if self.pending.len() >= PACKS_PER_INDEX {
            self.flush_index().await?;
        }
        Ok(())
    }

    async fn flush_index(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.repo.write_index(&self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(MasterIndex, usize)> {
        for i in 0..2 {
            let last = std::mem::take(&mut self.packers[i]);
            if !last.is_empty() {
                self.upload(last).await?;
            }
        }
        self.flush_index().await?;
        Ok((self.index, self.packs))
    }
}

/// Version 1 registry blobs by their old id: their plaintext.
type OldRegistry = HashMap<BlobId, Vec<u8>>;

async fn convert(
    repo: &Arc<Repository>,
    identity: &Identity,
    parallel: usize,
    report: &mut Migrated,
) -> Result<()> {
    let mut copier = Copier {
        repo,
        packers: Default::default(),
        pending: Vec::new(),
        index: MasterIndex::default(),
        packs: 0,
    };
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut registry: OldRegistry = HashMap::new();
    for (id, size) in repo.list_packs().await? {
        let bytes = repo.store.get(&pack::key(&id)).await?;
        if bytes.ends_with(pack::MAGIC) {
            continue; // a version 2 pack of an earlier, interrupted run
        }
        let entries = pack::v1::header_len(
            &bytes[bytes.len().saturating_sub(pack::v1::TRAILER_LEN)..],
            size,
        )
        .and_then(|n| pack::v1::parse_header(&bytes[bytes.len() - n..], size));
        let entries = match entries {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(pack = %id.short(), "not migrating a damaged pack: {e}");
                continue;
            }
        };
        for e in entries {
            if !seen.insert(e.id) {
                continue;
            }
            let stored = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            if e.blob_type == BlobType::Registry {
                let plain = blob::decode_v1_registry(
                    identity,
                    repo.keys.chunk_key("migrating")?,
                    &e.id,
                    e.raw_length,
                    stored,
                )?;
                registry.insert(e.id, plain);
                continue;
            }
            copier
                .add(EncodedBlob {
                    blob_type: e.blob_type,
                    id: e.id,
                    raw_length: e.raw_length,
                    bytes: stored.to_vec(),
                    lookup: None,
                })
                .await?;
            report.blobs_copied += 1;
        }
    }
    let (index, packs) = copier.finish().await?;
    report.packs_copied = packs;
    report.registry_blobs = registry.len();
    let snapshots = rewrite_snapshots(repo, identity, index, registry, parallel).await?;
    report.snapshots = snapshots.len();
    for s in &snapshots {
        repo.save_snapshot(s, None).await?;
    }
    Ok(())
}

/// Every version 1 snapshot, its registry blob tree rewritten for the new registry blob ids.
async fn rewrite_snapshots(
    repo: &Arc<Repository>,
    identity: &Identity,
    index: MasterIndex,
    registry: OldRegistry,
    parallel: usize,
) -> Result<Vec<Snapshot>> {
    let writer = Arc::new(BlobWriter::new(repo.clone(), &index, parallel)?);
    let reader = BlobReader::new(repo.clone(), Arc::new(index), "migrating")?;
    let mut renamed: HashMap<BlobId, BlobId> = HashMap::new();
    for (old, plain) in registry {
        let entry = RegistryEntry::parse(&plain).map_err(|e| {
            Error::Integrity(format!("registry blob {} is malformed: {e}", old.short()))
        })?;
        let w = writer.clone();
        let new = tokio::task::spawn_blocking(move || w.save_registry(&entry.digest, &plain))
            .await
            .map_err(|e| Error::Other(format!("save task failed: {e}")))??;
        renamed.insert(old, new);
    }
    let mut out = Vec::new();
    for o in repo.store.list("snapshots/").await? {
        let bytes = repo.store.get(&o.key).await?;
        if bytes.starts_with(snapshot::MAGIC) {
            continue;
        }
        let plain = crypto::decrypt(identity, &bytes)
            .map_err(|_| Error::Integrity(format!("{} does not open with the identity", o.key)))?;
        let mut snap = Snapshot::parse(&plain, &o.key)?;
        if let Some(part) = snap.parts.registry.as_mut() {
            part.blobs = rename_registry_tree(&reader, &writer, part.blobs, &renamed).await?;
        }
        out.push(snap);
    }
    writer.finish().await?;
    Ok(out)
}

/// Save the registry blob tree rooted at `root` again, each node naming its new registry blob.
async fn rename_registry_tree(
    reader: &BlobReader,
    writer: &Arc<BlobWriter>,
    root: BlobId,
    renamed: &HashMap<BlobId, BlobId>,
) -> Result<BlobId> {
    let mut top = reader.load_tree(&root).await?;
    for dir in &mut top.nodes {
        let Some(sub) = dir.subtree else { continue };
        let mut tree = reader.load_tree(&sub).await?;
        for n in &mut tree.nodes {
            if let Some(old) = n.registry {
                n.registry = Some(*renamed.get(&old).ok_or_else(|| {
                    Error::Integrity(format!(
                        "registry blob {} of {} is in no pack",
                        old.short(),
                        crate::term::esc(&n.name)
                    ))
                })?);
            }
        }
        dir.subtree = Some(save_tree(writer, tree).await?);
    }
    save_tree(writer, top).await
}

async fn save_tree(writer: &Arc<BlobWriter>, tree: Tree) -> Result<BlobId> {
    let w = writer.clone();
    tokio::task::spawn_blocking(move || w.save(BlobType::Tree, &tree.to_bytes()))
        .await
        .map_err(|e| Error::Other(format!("save task failed: {e}")))?
}

/// Delete what version 1 left: its packs, index objects, snapshot objects that open with the
/// identity, and deletion records. Only after the version 2 config is in place.
async fn delete_v1_objects(store: &Arc<dyn Store>, identity: &Identity) -> Result<usize> {
    let mut doomed = Vec::new();
    for o in store.list("").await? {
        let family = o.key.split('/').next().unwrap_or_default();
        let is_v1 = match family {
            "packs" => {
                let trailer = store
                    .get_range(&o.key, o.size.saturating_sub(8), 8.min(o.size))
                    .await?;
                trailer.as_ref() == pack::v1::MAGIC
            }
            "index" => store.get_range(&o.key, 0, 8.min(o.size)).await?.as_ref() == b"DDINDX01",
            "snapshots" => {
                let bytes = store.get(&o.key).await?;
                !bytes.starts_with(snapshot::MAGIC) && crypto::decrypt(identity, &bytes).is_ok()
            }
            "deletions" => {
                let bytes = store.get(&o.key).await?;
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v["version"] == 1)
            }
            _ => false,
        };
        if is_v1 {
            doomed.push(o.key);
        }
    }
    for key in &doomed {
        store.delete(key).await?;
    }
    Ok(doomed.len())
}
