//! The repository format: config, packs, index, trees and snapshots (docs/FORMAT.md).
//!
//! Objects under the repository root:
//! - `config` — [`config::RepoConfig`]
//! - `packs/<2 hex>/<64 hex>` — [`pack`]
//! - `index/<64 hex>` — [`index`]
//! - `snapshots/<64 hex>` — [`snapshot`]
//!
//! Writers never modify an object after writing it and take no lock: packs are written
//! before the index objects naming them, and index objects before the snapshots that need
//! them, so a crash at any instant leaves only unreferenced objects behind.

pub mod auth;
pub mod blob;
pub mod check;
pub mod config;
pub mod index;
pub mod keys;
pub mod lock;
pub mod maintenance;
pub mod migrate;
pub mod pack;
pub mod prune;
pub mod reader;
pub mod recover;
pub mod repack;
pub mod restorer;
pub mod retention;
pub mod snapshot;
pub mod thaw;
pub mod tree;
pub mod writer;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::crypto::{self, ChunkKey, DecryptFailure, Identity, KeyFile, Recipient};
use crate::error::{Error, Result};
use crate::ids::{sha256, IndexId, PackId, SnapshotId};
use crate::store::{PutMode, PutOutcome, Store};
use config::RepoConfig;
use index::MasterIndex;
pub use keys::Keys;
use pack::PackEntry;
use retention::WriteTimes;
use snapshot::Snapshot;

/// How many objects to fetch at once while loading indexes and snapshots.
const LOAD_CONCURRENCY: usize = 16;

/// What `init` made: the config and the secrets the key files are written from.
pub struct Created {
    pub config: RepoConfig,
    pub chunk_key: ChunkKey,
    pub maintenance: crypto::MaintenanceSecret,
}

pub struct Repository {
    pub store: Arc<dyn Store>,
    pub config: RepoConfig,
    pub keys: Keys,
    /// `backup --storage-class`: the class for this run's data packs, over the config's.
    pub data_class_override: std::sync::OnceLock<crate::store::StorageClass>,
}

/// Parse a snapshot object and check it is the one its name promises.
fn check_named(bytes: &[u8], expected: &[u8; 32], what: &str) -> Result<()> {
    if &sha256(bytes) != expected {
        return Err(Error::Integrity(format!(
            "{what} is corrupt: its content does not match its name"
        )));
    }
    Ok(())
}

/// In a bucket with Object Lock, a `config` a bucket writer hid behind a delete marker: its
/// last version, read in the store's locked mode (set again from the config right after).
async fn hidden_config(store: &Arc<dyn Store>) -> Result<Option<Bytes>> {
    if !store
        .bucket_lock()
        .await
        .ok()
        .flatten()
        .is_some_and(|b| b.enabled)
    {
        return Ok(None);
    }
    store.set_write_retention(Some(crate::store::WriteRetention {
        mode: crate::store::LockMode::Governance,
        days: 1,
    }));
    match store.get(config::KEY).await {
        Ok(b) => Ok(Some(b)),
        Err(Error::NotFound(_)) => {
            store.set_write_retention(None);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// No `config` object: no repository here — or a repository that lost its config, when
/// index or snapshot objects are there (an integrity error, not a wrong location).
async fn missing_config(store: &Arc<dyn Store>) -> Error {
    for prefix in ["snapshots/", "index/"] {
        if store.list(prefix).await.is_ok_and(|v| !v.is_empty()) {
            return Error::Integrity(format!(
                "the repository at {} has lost its config object ({prefix} objects are there, `config` is not); `drydock key recover-config` with the identity rebuilds it from a snapshot",
                store.describe()
            ));
        }
    }
    Error::Usage(format!(
        "no drydock repository at {}; create one with `drydock init` or fix --repo",
        store.describe()
    ))
}

impl Repository {
    /// Create a repository; fails if one already exists there. `maintenance` is the
    /// recipient of a maintenance key made with it, if any.
    pub async fn init(
        store: Arc<dyn Store>,
        recipient: &Recipient,
        maintenance: Option<&Recipient>,
        object_lock: Option<crate::store::WriteRetention>,
        data_class: Option<&crate::store::StorageClass>,
        identity: Option<&Identity>,
    ) -> Result<Created> {
        if let Some(r) = &object_lock {
            lock::require(store.as_ref(), r).await?;
            store.set_write_retention(Some(*r));
        }
        if !store.list("").await?.is_empty() {
            if store.get(config::KEY).await.is_ok() {
                return Err(Error::Usage(format!(
                    "a repository already exists at {}",
                    store.describe()
                )));
            }
            return Err(Error::Usage(format!(
                "{} is not empty; give an empty directory or prefix for a new repository",
                store.describe()
            )));
        }
        let chunk_key = ChunkKey::generate();
        let secret = crypto::MaintenanceSecret::generate();
        let mut config = RepoConfig::new(recipient, &chunk_key, &secret, maintenance, identity);
        if let Some(r) = object_lock {
            config.object_lock = Some(r.to_string());
        }
        config.storage_class = data_class.map(ToString::to_string);
        config.seal(&chunk_key, identity);
        let bytes = Bytes::from(config.to_bytes());
        let created = Created {
            config,
            chunk_key,
            maintenance: secret,
        };
        match store
            .put(config::KEY, bytes.clone(), PutMode::CreateNew)
            .await?
        {
            PutOutcome::Written => Ok(created),
            // Our own write, whose answer was lost and whose retry found it (the config holds
            // a random id, so nobody else wrote these bytes).
            PutOutcome::AlreadyExists if store.get(config::KEY).await? == bytes => Ok(created),
            PutOutcome::AlreadyExists => Err(Error::Usage(format!(
                "a repository was created at {} at the same time; use that one",
                store.describe()
            ))),
        }
    }

    pub async fn open(store: Arc<dyn Store>, key: KeyFile) -> Result<Self> {
        let bytes = match store.get(config::KEY).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => match hidden_config(&store).await? {
                Some(b) => b,
                None => return Err(missing_config(&store).await),
            },
            Err(e) => return Err(e),
        };
        let config = RepoConfig::parse(&bytes)?;
        // Before anything else is read or written: every write carries the retention, and
        // reads and listings see past delete markers a bucket writer planted.
        store.set_write_retention(lock::configured(&config)?);
        let keys = Keys::open(&config, key, &store.describe())?;
        Ok(Repository {
            store,
            config,
            keys,
            data_class_override: Default::default(),
        })
    }

    /// The storage class data packs are written in: `backup --storage-class`, else the
    /// config's, else none (the bucket's default, STANDARD). Metadata never takes it.
    pub fn data_class(&self) -> Result<Option<crate::store::StorageClass>> {
        match self.data_class_override.get() {
            Some(c) => Ok(Some(c.clone())),
            None => self.config.data_class(),
        }
    }

    /// The packs in a delayed storage class (GLACIER, DEEP_ARCHIVE), by one listing.
    pub async fn archived_packs(&self) -> Result<std::collections::HashSet<PackId>> {
        Ok(self
            .store
            .list_classes(pack::PREFIX)
            .await?
            .into_iter()
            .filter(|o| o.class.delayed())
            .filter_map(|o| pack::id_of_key(&o.key))
            .collect())
    }

    /// Every index object, parsed and checked against its name.
    pub async fn load_index_files(&self) -> Result<Vec<(IndexId, Result<index::IndexFile>)>> {
        let listed = self.store.list("index/").await?;
        stream::iter(listed)
            .map(|o| async move {
                let Ok(id) = IndexId::from_hex(o.key.trim_start_matches("index/")) else {
                    tracing::warn!(key = %crate::term::esc(&o.key), "ignoring an unexpected object under index/");
                    return Ok(None);
                };
                let parsed = match self.get_named(&o.key, &id.0).await {
                    Ok(bytes) => check_named(&bytes, &id.0, &format!("index {}", id.short()))
                        .and_then(|_| index::parse(&bytes, &self.keys.objects))
                        .map_err(|e| Error::Integrity(format!("index {}: {e}", id.short()))),
                    Err(Error::NotFound(_)) => return Ok(None), // deleted since listing (a prune)
                    Err(e) => return Err(e),
                };
                Ok(Some((id, parsed)))
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
    }

    /// Every index object that parses and authenticates. The others are skipped with a
    /// warning: they lose only the blobs they alone locate (`check` names them and the
    /// snapshots needing them; a backup adopts their packs again), so one planted object
    /// stops nothing.
    pub async fn readable_index_files(&self) -> Result<Vec<(IndexId, index::IndexFile)>> {
        let mut out = Vec::new();
        for (id, file) in self.load_index_files().await? {
            match file {
                Ok(file) => out.push((id, file)),
                Err(e) => {
                    tracing::warn!(index = %id.short(), error = %e, "skipping an index object that is damaged or not authentic")
                }
            }
        }
        Ok(out)
    }

    /// The merged index of [`readable_index_files`](Self::readable_index_files).
    pub async fn load_index(&self) -> Result<MasterIndex> {
        let mut master = MasterIndex::default();
        for (_, file) in self.readable_index_files().await? {
            for (pack, entries) in file {
                master.add_pack(pack, &entries);
            }
        }
        Ok(master)
    }

    /// Every pack object with its size.
    pub async fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        for o in self.store.list("packs/").await? {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            match PackId::from_hex(name) {
                Ok(id) => out.push((id, o.size)),
                Err(_) => {
                    tracing::warn!(key = %crate::term::esc(&o.key), "ignoring an unexpected object under packs/")
                }
            }
        }
        Ok(out)
    }

    /// Read the header at the end of a pack of `size` bytes.
    pub async fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let key = pack::key(id);
        if size < pack::TRAILER_LEN as u64 {
            return Err(Error::Integrity(format!(
                "pack {} is truncated",
                id.short()
            )));
        }
        let trailer = self
            .store
            .get_range(
                &key,
                size - pack::TRAILER_LEN as u64,
                pack::TRAILER_LEN as u64,
            )
            .await?;
        let header_len = pack::header_len(&trailer, size)
            .map_err(|e| Error::Integrity(format!("pack {}: {e}", id.short())))?
            as u64;
        let header = self
            .store
            .get_range(&key, size - header_len, header_len)
            .await?;
        pack::parse_header(&header, size, &self.keys.objects)
            .map_err(|e| Error::Integrity(format!("pack {}: {e}", id.short())))
    }

    /// Whether the pack object's bytes hash to its name. A byte-for-byte copy of a real pack
    /// under another name has an authentic header and authentic blobs, so only this tells it
    /// apart; it downloads the whole pack, which only prune's copy checks need.
    pub async fn named_right(&self, id: &PackId) -> Result<bool> {
        Ok(self.whole_pack(id).await?.is_some())
    }

    /// The header of a pack no index names, read from the whole pack, which must hash to
    /// its name (see [`named_right`](Self::named_right)); `None` when it does not or is
    /// gone. One download: what adoption and prune trust an unindexed pack by.
    pub async fn unindexed_pack_header(&self, id: &PackId) -> Result<Option<Vec<PackEntry>>> {
        let Some(bytes) = self.whole_pack(id).await? else {
            return Ok(None);
        };
        self.header_of(&bytes)
            .map(Some)
            .map_err(|e| Error::Integrity(format!("pack {}: {e}", id.short())))
    }

    /// The authenticated header of a whole pack's bytes.
    pub fn header_of(&self, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let len = bytes.len() as u64;
        let tail = bytes.len().saturating_sub(pack::TRAILER_LEN);
        let n = pack::header_len(&bytes[tail..], len)?;
        pack::parse_header(&bytes[bytes.len() - n..], len, &self.keys.objects)
    }

    /// The pack's bytes if they hash to its name.
    async fn whole_pack(&self, id: &PackId) -> Result<Option<Bytes>> {
        match self.get_named(&pack::key(id), &id.0).await {
            Ok(bytes) => Ok((sha256(&bytes) == id.0).then_some(bytes)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Under Object Lock, a pack whose current version was overwritten, read whole from the
    /// newest earlier version that matches its name; `None` when there is none (or the
    /// repository has no Object Lock, where no earlier version is kept).
    pub async fn recovered_pack(&self, pack: &PackId) -> Result<Option<Bytes>> {
        if self.config.object_lock.is_none() {
            return Ok(None);
        }
        match self.get_named(&pack::key(pack), &pack.0).await {
            Ok(b) if sha256(&b) == pack.0 => Ok(Some(b)),
            Ok(_) | Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A content-addressed object: its current bytes, or, when they do not hash to its
    /// name and the store keeps versions (Object Lock), the newest earlier version that
    /// does. A bucket writer's overwrite then hides nothing (FORMAT.md §11.2).
    pub async fn get_named(&self, key: &str, name: &[u8; 32]) -> Result<Bytes> {
        let bytes = self.store.get(key).await?;
        if sha256(&bytes) == *name {
            return Ok(bytes);
        }
        for version in self.store.past_versions(key).await? {
            let old = self.store.get_version(key, &version).await?;
            if sha256(&old) == *name {
                tracing::warn!(key = %crate::term::esc(key), "reading an earlier version: the current one was overwritten and does not match its name");
                return Ok(old);
            }
        }
        Ok(bytes)
    }

    /// Index packs that no index names — left by a backup that was killed before writing
    /// its index — so their blobs are reused. Returns the index object written, if any.
    pub async fn adopt_unindexed_packs(
        &self,
        index: &mut MasterIndex,
        skip: &std::collections::HashSet<PackId>,
    ) -> Result<Option<IndexId>> {
        let orphans: Vec<PackId> = self
            .list_packs()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !index.has_pack(id) && !skip.contains(id))
            .collect();
        if orphans.is_empty() {
            return Ok(None);
        }
        let archived = self.archived_packs().await?;
        let mut adopted = Vec::new();
        for id in orphans {
            if archived.contains(&id) {
                // Adoption reads the whole pack; a backup never thaws. Its blobs are
                // written again instead.
                tracing::info!(pack = %id.short(), "not adopting an archived pack left by an interrupted backup");
                continue;
            }
            match self.unindexed_pack_header(&id).await {
                Ok(None) => tracing::warn!(
                    pack = %id.short(),
                    "not adopting a pack whose content does not match its name (a copy under a false name, or damage); `drydock check --read-data` names it"
                ),
                Ok(Some(entries)) => adopted.push((id, entries)),
                Err(Error::Integrity(why)) => {
                    tracing::warn!(pack = %id.short(), %why, "not adopting a damaged pack")
                }
                Err(e) => return Err(e),
            }
        }
        for (id, entries) in &adopted {
            index.add_pack(*id, entries);
        }
        tracing::info!(
            packs = adopted.len(),
            "indexed packs left by an interrupted backup"
        );
        self.write_index(&adopted).await.map(Some)
    }

    pub async fn write_index(&self, packs: &[(PackId, Vec<PackEntry>)]) -> Result<IndexId> {
        let bytes = index::encode(packs, &self.keys.objects);
        let id = IndexId(sha256(&bytes));
        self.store
            .put(&index::key(&id), Bytes::from(bytes), PutMode::Overwrite)
            .await?;
        Ok(id)
    }

    /// Encrypt and store a snapshot manifest. In a repository with a maintenance key the
    /// snapshot carries a summary too: `references` is every blob the writer stored or
    /// reused for it; without it (the identity writing again what it read), the summary is
    /// walked from the snapshot's trees.
    pub async fn save_snapshot(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        references: Option<&writer::References>,
    ) -> Result<SnapshotId> {
        let summary = match (&self.keys.maintenance_recipient, references) {
            (None, _) => None,
            (Some(r), Some(refs)) => Some(
                maintenance::Summary::new(
                    snapshot.meta(),
                    false,
                    refs.all.iter().copied(),
                    refs.registry.iter().copied(),
                )
                .seal(r),
            ),
            (Some(r), None) => {
                let reader = reader::BlobReader::new(
                    self.clone(),
                    Arc::new(self.load_index().await?),
                    "summarising a snapshot",
                )?;
                Some(maintenance::Summary::walk(&reader, snapshot).await?.seal(r))
            }
        };
        self.put_snapshot(snapshot, summary).await
    }

    /// Store a snapshot object with the summary given (already sealed), if any.
    pub async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        summary: Option<Vec<u8>>,
    ) -> Result<SnapshotId> {
        let plain = serde_json::to_vec(snapshot).expect("snapshots serialise");
        let sealed = snapshot::Envelope {
            manifest: crypto::encrypt(&self.keys.recipient, &plain),
            summary,
            config: Some(self.config.to_bytes()),
        }
        .seal(&self.keys.objects);
        let id = SnapshotId(sha256(&sealed));
        self.store
            .put(&snapshot::key(&id), Bytes::from(sealed), PutMode::Overwrite)
            .await?;
        Ok(id)
    }

    pub async fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .list_snapshot_objects()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Every snapshot object, except those forgotten while Object Lock retains them.
    async fn list_snapshot_objects(&self) -> Result<Vec<(SnapshotId, Option<DateTime<Utc>>)>> {
        let forgotten = prune::forgotten(self).await?;
        let mut ids = Vec::new();
        for o in self.store.list("snapshots/").await? {
            match SnapshotId::from_hex(o.key.trim_start_matches("snapshots/")) {
                Ok(id) if forgotten.contains(&id) => {}
                Ok(id) => ids.push((id, o.modified)),
                Err(_) => {
                    tracing::warn!(key = %crate::term::esc(&o.key), "ignoring an unexpected object under snapshots/")
                }
            }
        }
        Ok(ids)
    }

    /// A snapshot object's sections, checked against its name and authenticated.
    async fn load_envelope(&self, id: &SnapshotId, what: &str) -> Result<snapshot::Envelope> {
        let bytes = self
            .get_named(&snapshot::key(id), &id.0)
            .await
            .map_err(Error::into_integrity)?;
        // A copy of a real snapshot under another name is no snapshot: skipping it loses
        // nothing, and a bucket writer could delete the original anyway.
        check_named(&bytes, &id.0, what).map_err(|e| Error::Unauthentic(e.to_string()))?;
        snapshot::Envelope::open(&bytes, &self.keys.objects, what)
    }

    pub async fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let identity = self.keys.identity("reading a snapshot")?;
        let what = format!("snapshot {}", id.short());
        let envelope = self.load_envelope(id, &what).await?;
        let plain = crypto::decrypt(identity, &envelope.manifest).map_err(|e| match e {
            DecryptFailure::WrongKey => {
                Error::Key(format!("{what} is not encrypted to this identity"))
            }
            DecryptFailure::Corrupt(why) => Error::Integrity(format!("{what} is corrupt: {why}")),
        })?;
        Snapshot::parse(&plain, &what)
    }

    /// A snapshot's maintenance summary, with the maintenance key.
    pub async fn load_summary(&self, id: &SnapshotId) -> Result<maintenance::Summary> {
        let identity = self.keys.maintenance_identity().ok_or_else(|| {
            Error::Key("reading snapshot summaries needs the maintenance key".into())
        })?;
        let what = format!("snapshot {}", id.short());
        let envelope = self.load_envelope(id, &what).await?;
        let sealed = envelope.summary.ok_or_else(|| {
            Error::Key(format!(
                "{what} has no maintenance summary: written before the repository had a maintenance key (then run `drydock key maintenance` with the identity once), or by someone holding only the backup-only key (then `drydock forget` it by id)"
            ))
        })?;
        maintenance::Summary::open(identity, &sealed, &what)
    }

    /// What retention judges a snapshot by, with the identity or the maintenance key.
    pub async fn load_meta(&self, id: &SnapshotId) -> Result<snapshot::Meta> {
        match self.keys.has_identity() {
            true => Ok(self.load_snapshot(id).await?.meta()),
            false => Ok(self.load_summary(id).await?.meta),
        }
    }

    /// Every snapshot, oldest first; each with its load result so one bad object does not
    /// hide the others.
    pub async fn load_snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        self.keys.identity("listing snapshots")?;
        Ok(self
            .load_each_written(
                |id| async move { self.load_snapshot(&id).await },
                |s| s.time,
            )
            .await?
            .0)
    }

    /// [`load_snapshots`](Self::load_snapshots), with when the store wrote each object (the
    /// clock retention and `latest` trust), from the same listing.
    pub async fn load_snapshots_written(
        &self,
    ) -> Result<(Vec<(SnapshotId, Result<Snapshot>)>, WriteTimes)> {
        self.keys.identity("listing snapshots")?;
        self.load_each_written(
            |id| async move { self.load_snapshot(&id).await },
            |s| s.time,
        )
        .await
    }

    /// Every snapshot's [`snapshot::Meta`] and write time, with the identity or the
    /// maintenance key.
    pub async fn load_metas_written(
        &self,
    ) -> Result<(Vec<(SnapshotId, Result<snapshot::Meta>)>, WriteTimes)> {
        self.keys.can_judge("reading snapshots")?;
        self.load_each_written(|id| async move { self.load_meta(&id).await }, |m| m.time)
            .await
    }

    /// Every summary, with the maintenance key.
    pub async fn load_summaries(&self) -> Result<Vec<(SnapshotId, Result<maintenance::Summary>)>> {
        Ok(self.load_summaries_written().await?.0)
    }

    /// [`load_summaries`](Self::load_summaries), with the store's write times.
    pub async fn load_summaries_written(
        &self,
    ) -> Result<(Vec<(SnapshotId, Result<maintenance::Summary>)>, WriteTimes)> {
        self.load_each_written(
            |id| async move { self.load_summary(&id).await },
            |s| s.meta.time,
        )
        .await
    }

    /// Load every listed snapshot with `load`, oldest first by `time`.
    async fn load_each_written<T, F, Fut>(
        &self,
        load: F,
        time: impl Fn(&T) -> DateTime<Utc>,
    ) -> Result<(Vec<(SnapshotId, Result<T>)>, WriteTimes)>
    where
        F: Fn(SnapshotId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let listed = self.list_snapshot_objects().await?;
        let written = WriteTimes(
            listed
                .iter()
                .filter_map(|&(id, t)| Some((id, t?)))
                .collect(),
        );
        let ids = listed.into_iter().map(|(id, _)| id);
        let mut all: Vec<(SnapshotId, Result<T>)> = stream::iter(ids)
            .map(|id| {
                let fut = load(id);
                async move { (id, fut.await) }
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        // A snapshot the store failed to return (network or server, after retries) is not a
        // damaged one: fail, rather than report it corrupt or let `latest` skip to an older one.
        if let Some(i) = all
            .iter()
            .position(|(_, s)| matches!(s, Err(Error::Store(_) | Error::Io { .. })))
        {
            if let (_, Err(e)) = all.swap_remove(i) {
                return Err(e);
            }
        }
        all.sort_by_key(|(id, s)| (s.as_ref().map(&time).ok(), *id));
        Ok((all, written))
    }

    /// Resolve `latest`, a full id or a unique prefix, and load the snapshot.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.keys.identity("reading a snapshot")?;
        let id = self.find_snapshot_id(spec).await?;
        Ok((id, self.load_snapshot(&id).await?))
    }

    /// Resolve `latest`, a full id or a unique prefix (with the identity or the maintenance
    /// key; `latest` skips snapshots whose time the store contradicts).
    pub async fn find_snapshot_id(&self, spec: &str) -> Result<SnapshotId> {
        if spec == "latest" {
            let (all, written) = self.load_metas_written().await?;
            let mut newest: Option<(SnapshotId, DateTime<Utc>)> = None;
            for (id, s) in all {
                let s = match s {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(snapshot = %id.short(), error = %e, "skipping an unreadable snapshot");
                        continue;
                    }
                };
                if let Some(why) = written.distrust(&id, s.time) {
                    tracing::warn!(snapshot = %id.short(), "`latest` skips a snapshot whose time is not trusted: {why}");
                    continue;
                }
                if newest.as_ref().is_none_or(|(_, t)| s.time >= *t) {
                    newest = Some((id, s.time));
                }
            }
            return newest.map(|(id, _)| id).ok_or_else(|| {
                Error::Usage(format!(
                    "the repository at {} has no snapshots yet",
                    self.store.describe()
                ))
            });
        }
        let spec_lc = spec.to_ascii_lowercase();
        if spec_lc.is_empty() || !spec_lc.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "{spec:?} is not a snapshot id; give `latest` or a hex id prefix"
            )));
        }
        let matches: Vec<SnapshotId> = self
            .list_snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_lc))
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::Usage(format!(
                "no snapshot {spec:?} in {}; `drydock snapshots` lists them",
                self.store.describe()
            ))),
            _ => Err(Error::Usage(format!(
                "snapshot prefix {spec:?} is ambiguous ({} match); give more digits",
                matches.len()
            ))),
        }
    }
}
