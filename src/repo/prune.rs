//! Space reclamation in two phases, safe while backups run, without a lock.
//!
//! Phase 1 *marks*: packs no snapshot uses are listed in a `deletions/<name>` object.
//! Phase 2, in a later prune at least `safety_delay` after the mark, *deletes*: each marked
//! pack that is still unused is dropped from the index and removed. In between:
//! - a backup that started before the mark and reuses a blob of a marked pack finishes
//!   within the delay (choose it longer than the longest backup), its snapshot appears, and
//!   phase 2 sees the pack in use and keeps it;
//! - a backup that starts after the mark does not reuse blobs of marked packs at all (it
//!   stores them again), so it can never come to depend on a pack about to go.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{Authenticator, Kind, Tag};
use super::blob::BlobType;
use super::index::{BlobLocation, MasterIndex};
use super::maintenance::Summary;
use super::pack::{self, PackEntry};
use super::reader::BlobReader;
use super::snapshot::Snapshot;
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{BlobId, IndexId, PackId};
use crate::store::PutMode;

pub const DELETIONS: &str = "deletions/";

/// A `deletions/<name>` object: packs found unused at `created`. Stored as compact JSON
/// followed by the deletion key's 32-byte tag over it (FORMAT.md §11).
#[derive(Debug, Serialize, Deserialize)]
pub struct DeletionRecord {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub packs: Vec<PackId>,
    /// Snapshots forgotten while Object Lock still retained their objects: no command
    /// counts them any more, and prune deletes them after their date.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<crate::ids::SnapshotId>,
}

pub const RECORD_VERSION: u32 = 2;

impl DeletionRecord {
    /// Parse a `deletions/` object; with the deletion key, authenticate it too.
    pub fn parse(bytes: &[u8], key: Option<&Authenticator>) -> std::result::Result<Self, String> {
        let json = match key {
            Some(k) => k
                .open_tagged(Kind::Deletion, bytes)
                .ok_or("not authentic: its tag does not match the deletion key")?,
            None => &bytes[..bytes.len().saturating_sub(Tag::LEN)],
        };
        let rec: DeletionRecord = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if rec.version != RECORD_VERSION {
            return Err(format!(
                "deletion record version {} is not {RECORD_VERSION}",
                rec.version
            ));
        }
        Ok(rec)
    }

    pub fn to_bytes(&self, key: &Authenticator) -> Vec<u8> {
        key.append_tag(
            Kind::Deletion,
            serde_json::to_vec(self).expect("serialises"),
        )
    }
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub safety_delay: chrono::Duration,
    pub dry_run: bool,
    /// Repack packs of which at least this share (0–1) of the bytes is unused.
    pub repack_threshold: Option<f64>,
    /// Repack packs outside STANDARD too (`--repack-cold`): reading them costs retrieval
    /// fees, an archived one a thaw, and deleting them early a minimum-duration charge.
    pub repack_cold: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub packs: usize,
    pub packs_unused: usize,
    pub packs_partly_used: usize,
    /// Bytes of unused blobs inside packs still in use (reclaimed by repacking).
    pub bytes_unused_in_used_packs: u64,
    /// Packs whose used blobs were copied into new packs; they are marked like unused ones.
    pub packs_repacked: usize,
    pub bytes_repacked: u64,
    /// New packs the repacking wrote.
    pub packs_written: usize,
    pub marked: usize,
    pub waiting: usize,
    /// Packs that looked unused but hold blobs a snapshot uses with no other copy that
    /// authenticates: kept (an index is not authenticated, so it may lie).
    pub packs_kept_unverified: usize,
    pub deleted_packs: usize,
    pub deleted_bytes: u64,
    pub indexes_rewritten: usize,
    /// Packs no index named that snapshots need, indexed again.
    pub packs_reindexed: usize,
    /// Unused packs Object Lock still retains: deleted by a prune after their date.
    pub packs_retained: usize,
    /// Objects whose Object Lock retention this prune extended.
    pub retention_extended: usize,
    pub dry_run: bool,
}

/// Every `deletions/` record, parsed, and authenticated with the deletion key when the key
/// given holds it. Records that fail are skipped with a warning (`check` reports them): a
/// backup only stores some blobs again for a mark it cannot read, and prune acts on no
/// record it cannot authenticate, so neither can be steered by one.
pub async fn records(repo: &Repository) -> Result<Vec<(String, Result<DeletionRecord, String>)>> {
    let key = repo.keys.deletions_if_held();
    let mut out = Vec::new();
    for o in repo.store.list(DELETIONS).await? {
        let bytes = match repo.store.get(&o.key).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        out.push((o.key, DeletionRecord::parse(&bytes, key)));
    }
    Ok(out)
}

/// The records [`records`] could read.
pub async fn pending(repo: &Repository) -> Result<Vec<(String, DeletionRecord)>> {
    let mut out = Vec::new();
    for (key, rec) in records(repo).await? {
        match rec {
            Ok(r) => out.push((key, r)),
            Err(why) => tracing::warn!(
                record = %crate::term::esc(&key),
                "ignoring a deletion record: {why}; `drydock check` reports it"
            ),
        }
    }
    Ok(out)
}

/// Packs marked for deletion: backups must not reuse their blobs.
pub async fn marked_packs(repo: &Repository) -> Result<HashSet<PackId>> {
    Ok(pending(repo)
        .await?
        .into_iter()
        .flat_map(|(_, r)| r.packs)
        .collect())
}

/// Every blob any snapshot reaches. Fails rather than guess if a tree cannot be read.
pub async fn referenced(reader: &BlobReader, snapshots: &[Snapshot]) -> Result<HashSet<BlobId>> {
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut stack: Vec<(BlobId, BlobType)> = Vec::new();
    for s in snapshots {
        stack.extend(
            s.parts
                .root_trees()
                .into_iter()
                .map(|t| (t, BlobType::Tree)),
        );
        seen.extend(s.parts.root_data());
    }
    while let Some((id, t)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for (child, ct) in reader.children(&id, t).await? {
            if ct == BlobType::Data {
                seen.insert(child);
            } else if !seen.contains(&child) {
                stack.push((child, ct));
            }
        }
    }
    Ok(seen)
}

/// The snapshots prune keeps data for, as the key given can read them: manifests with the
/// identity (their trees are walked), summaries with the maintenance key.
enum Kept {
    Manifests(Vec<Snapshot>),
    Summaries(Vec<Summary>),
}

/// Every snapshot a key holder wrote. One that is not authentic is no snapshot (nobody with
/// a key wrote it), so it keeps nothing; one that is authentic but cannot be read stops the
/// prune, since its data must not go before someone looks at it.
async fn authentic_snapshots(repo: &Repository) -> Result<Kept> {
    if repo.keys.has_identity() {
        Ok(Kept::Manifests(authentic(repo.load_snapshots().await?)?))
    } else {
        Ok(Kept::Summaries(authentic(repo.load_summaries().await?)?))
    }
}

fn authentic<T>(all: Vec<(crate::ids::SnapshotId, Result<T>)>) -> Result<Vec<T>> {
    let mut kept = Vec::new();
    for (id, s) in all {
        match s {
            Ok(s) => kept.push(s),
            Err(Error::Unauthentic(why)) => {
                tracing::warn!("prune ignores snapshots/{id}: {why}")
            }
            Err(e) => {
                return Err(Error::Integrity(format!(
                    "cannot prune while snapshot {} is unreadable ({e}); run `drydock check`",
                    id.short()
                )))
            }
        }
    }
    Ok(kept)
}

/// Every blob the kept snapshots use, and (with the identity) the reader that checks copies.
async fn used_blobs(
    repo: &Arc<Repository>,
    index: &Arc<MasterIndex>,
    kept: &Kept,
) -> Result<(HashSet<BlobId>, Option<BlobReader>)> {
    match kept {
        Kept::Manifests(snapshots) => {
            let reader = BlobReader::new(repo.clone(), index.clone(), "prune")?;
            Ok((referenced(&reader, snapshots).await?, Some(reader)))
        }
        Kept::Summaries(summaries) => Ok((
            super::maintenance::referenced(repo, index, summaries).await?,
            None,
        )),
    }
}

pub async fn prune(repo: Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    repo.keys.deletions("pruning")?;
    repo.config.check_writable()?;
    // Snapshots first: a snapshot written after this point was written by a backup that
    // either saw the current marks (and avoided them) or finishes within the delay.
    let snapshots = authentic_snapshots(&repo).await?;
    // An index object that is damaged or not authentic is skipped: its packs are read
    // through their own headers below, like packs no index names.
    let files = repo.readable_index_files().await?;
    let mut index = MasterIndex::default();
    let mut packs: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    let mut index_of: HashMap<PackId, Vec<IndexId>> = HashMap::new();
    // What each index object itself says: a rewrite carries an index's own entries over,
    // never another (possibly forged) index's.
    let mut index_packs: HashMap<IndexId, Vec<(PackId, Vec<PackEntry>)>> = HashMap::new();
    for (iid, file) in files {
        for (pack, entries) in file {
            index.add_pack(pack, &entries);
            index_of.entry(pack).or_default().push(iid);
            index_packs
                .entry(iid)
                .or_default()
                .push((pack, entries.clone()));
            packs.entry(pack).or_insert(entries);
        }
    }
    let sizes: HashMap<PackId, u64> = repo.list_packs().await?.into_iter().collect();
    report.packs = sizes.len();
    // Packs no index names (a backup killed before its index, or an index deleted): their
    // own headers say what they hold, so a used blob in one counts as a copy.
    // Only a pack whose content matches its name counts: a copy of a real pack under a false
    // name has an authentic header too, and must not stand in for the real one.
    let mut unindexed = Vec::new();
    for pack in sizes.keys() {
        if packs.contains_key(pack) {
            continue;
        }
        match repo.unindexed_pack_header(pack).await {
            Ok(Some(entries)) => {
                index.add_pack(*pack, &entries);
                unindexed.push((*pack, entries.clone()));
                packs.insert(*pack, entries);
            }
            Ok(None) => tracing::warn!(
                pack = %pack.short(),
                "prune ignores a pack whose content does not match its name; `drydock check --read-data` names it"
            ),
            Err(Error::Integrity(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // Every location any index (or unindexed header) gives: the copies prune may rely on.
    let index = Arc::new(index);
    let (used, reader) = used_blobs(&repo, &index, &snapshots).await?;

    // A blob stored twice (a backup re-stored blobs of a marked pack) needs only one of its
    // packs: prefer packs no deletion record names, so marked packs can go.
    let now = Utc::now();
    let records = pending(&repo).await?;
    let marked: HashSet<PackId> = records
        .iter()
        .flat_map(|(_, r)| r.packs.iter().copied())
        .collect();
    let mut holder: HashMap<BlobId, PackId> = HashMap::new();
    // Only packs that exist can hold anything: an index may name packs that are gone.
    let mut ordered: Vec<&PackId> = packs.keys().filter(|p| sizes.contains_key(p)).collect();
    ordered.sort_by_key(|p| (marked.contains(*p), **p));
    for p in ordered {
        for e in &packs[p] {
            if used.contains(&e.id) {
                holder.entry(e.id).or_insert(*p);
            }
        }
    }
    let needed: HashSet<PackId> = holder.values().copied().collect();
    // Unindexed packs that snapshots need (their index was lost or deleted) are indexed
    // again, so that restores find them.
    let reindex: Vec<(PackId, Vec<PackEntry>)> = unindexed
        .into_iter()
        .filter(|(p, _)| needed.contains(p))
        .collect();
    report.packs_reindexed = reindex.len();
    if !reindex.is_empty() && !opts.dry_run {
        repo.write_index(&reindex).await?;
    }
    let mut unused: HashSet<PackId> = HashSet::new();
    for id in sizes.keys() {
        match packs.get(id) {
            // Unindexed: left by an interrupted backup (or one still running: the delay covers it).
            None => {
                unused.insert(*id);
            }
            Some(_) if !needed.contains(id) => {
                unused.insert(*id);
            }
            Some(entries) => {
                let waste: u64 = entries
                    .iter()
                    .filter(|e| holder.get(&e.id) != Some(id))
                    .map(|e| e.length as u64)
                    .sum();
                if waste > 0 {
                    report.packs_partly_used += 1;
                    report.bytes_unused_in_used_packs += waste;
                }
            }
        }
    }
    let mut listed_in: HashMap<PackId, Vec<BlobId>> = HashMap::new();
    for id in &used {
        for l in index.locations(id) {
            listed_in.entry(l.pack).or_default().push(*id);
        }
    }
    let guard = Guard {
        repo: &repo,
        reader: reader.as_ref(),
        used: &used,
        index: &index,
        listed_in,
        sizes: &sizes,
        kept: &needed,
        named: Default::default(),
    };
    let unverified = guard.unconfirmed(&unused).await?;
    for p in &unverified {
        unused.remove(p);
    }
    report.packs_kept_unverified = unverified.len();
    report.packs_unused = unused.len();

    let (due, waiting): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, r)| r.created + opts.safety_delay <= now);
    let mut to_delete: HashSet<PackId> = due
        .iter()
        .flat_map(|(_, r)| r.packs.iter().copied())
        .filter(|p| unused.contains(p))
        .collect();
    // Under Object Lock a pack waits, in its record, until neither it nor an index object
    // naming it is retained any more.
    let lock = super::lock::configured(&repo.config)?;
    let mut held: HashSet<PackId> = HashSet::new();
    if lock.is_some() {
        for p in to_delete.clone() {
            let mut keys = vec![pack::key(&p)];
            keys.extend(
                index_of
                    .get(&p)
                    .into_iter()
                    .flatten()
                    .map(super::index::key),
            );
            if super::lock::any_retained(repo.store.as_ref(), &keys, now).await? {
                to_delete.remove(&p);
                held.insert(p);
            }
        }
    }
    report.packs_retained = held.len();
    let still_waiting: HashSet<PackId> = waiting
        .iter()
        .flat_map(|(_, r)| r.packs.iter().copied())
        .collect();
    report.waiting = still_waiting.len();
    let to_mark: Vec<PackId> = unused
        .iter()
        .filter(|p| !to_delete.contains(p) && !still_waiting.contains(p) && !held.contains(p))
        .copied()
        .collect();
    report.deleted_packs = to_delete.len();
    report.deleted_bytes = to_delete.iter().filter_map(|p| sizes.get(p)).sum();
    // Mostly unused packs that stay, and that no record names yet, are repacked.
    let recorded: HashSet<PackId> = due
        .iter()
        .chain(&waiting)
        .flat_map(|(_, r)| r.packs.iter().copied())
        .collect();
    let cold = cold_packs(&repo, opts).await?;
    let repackable: HashMap<PackId, Vec<PackEntry>> = packs
        .iter()
        .filter(|(p, _)| needed.contains(p) && !recorded.contains(p) && !unverified.contains(p))
        .filter(|(p, _)| !cold.contains(p))
        .map(|(p, e)| (*p, e.clone()))
        .collect();
    let candidates = opts
        .repack_threshold
        .map(|t| super::repack::candidates(&repackable, &holder, t))
        .unwrap_or_default();
    report.packs_repacked = candidates.len();
    report.bytes_repacked = candidates
        .iter()
        .flat_map(|c| c.keep.iter().map(|e| e.length as u64))
        .sum();
    report.marked = to_mark.len() + candidates.len();
    if opts.dry_run {
        return Ok(report);
    }
    let mut to_mark = to_mark;
    if !candidates.is_empty() {
        let done = super::repack::repack(&repo, &candidates).await?;
        report.packs_repacked = done.old.len();
        report.bytes_repacked = done.bytes_copied;
        report.packs_written = done.new_packs;
        to_mark.extend(done.old);
    }
    report.marked = to_mark.len();

    // Index first (the packs must never be named by an index once gone), then packs.
    let affected: HashSet<IndexId> = to_delete
        .iter()
        .flat_map(|p| index_of.get(p).into_iter().flatten().copied())
        .collect();
    if !affected.is_empty() {
        let mut keep: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
        for iid in &affected {
            for listing in &index_packs[iid] {
                if !to_delete.contains(&listing.0)
                    && !keep.contains(listing)
                    && agrees_with_header(&repo, listing, &sizes).await?
                {
                    keep.push(listing.clone());
                }
            }
        }
        if !keep.is_empty() {
            repo.write_index(&keep).await?;
        }
        for iid in &affected {
            let key = super::index::key(iid);
            if !super::lock::delete_unless_retained(repo.store.as_ref(), &key).await? {
                // Still named by an index that stays: its packs stay too.
                for (p, _) in &index_packs[iid] {
                    if to_delete.remove(p) {
                        held.insert(*p);
                    }
                }
            }
        }
        report.indexes_rewritten = affected.len();
    }
    for p in &to_delete {
        if !super::lock::delete_unless_retained(repo.store.as_ref(), &pack::key(p)).await? {
            held.insert(*p);
        }
    }
    let deleted: Vec<&PackId> = to_delete.iter().filter(|p| !held.contains(p)).collect();
    report.deleted_packs = deleted.len();
    report.deleted_bytes = deleted.iter().filter_map(|p| sizes.get(*p)).sum();
    for (key, record) in &due {
        if finish_record(&repo, record, &held).await? {
            super::lock::delete_unless_retained(repo.store.as_ref(), key).await?;
        }
    }
    if !to_mark.is_empty() {
        let mut sorted = to_mark;
        sorted.sort();
        write_record(&repo, sorted, Vec::new(), now).await?;
    }
    if let Some(retention) = lock {
        report.retention_extended = extend_kept(&repo, &needed, &retention).await?;
    }
    Ok(report)
}

/// Delete the snapshots a due record forgot; whether the record is done (none of its packs
/// or snapshots still held by Object Lock).
async fn finish_record(
    repo: &Repository,
    record: &DeletionRecord,
    held: &HashSet<PackId>,
) -> Result<bool> {
    let mut done = !record.packs.iter().any(|p| held.contains(p));
    for id in &record.snapshots {
        let key = super::snapshot::key(id);
        done &= super::lock::delete_unless_retained(repo.store.as_ref(), &key).await?;
    }
    Ok(done)
}

/// Under Object Lock: keep locked what stays — the packs snapshots use, every index object
/// and every snapshot object not forgotten — so a kept snapshot's data never becomes
/// deletable before the snapshot does.
async fn extend_kept(
    repo: &Repository,
    needed: &HashSet<PackId>,
    retention: &crate::store::WriteRetention,
) -> Result<usize> {
    let forgotten = forgotten(repo).await?;
    let mut objects = Vec::new();
    for o in repo.store.list("packs/").await? {
        let name = o.key.rsplit('/').next().unwrap_or_default();
        if PackId::from_hex(name).is_ok_and(|p| needed.contains(&p)) {
            objects.push(o);
        }
    }
    objects.extend(repo.store.list("index/").await?);
    for o in repo.store.list("snapshots/").await? {
        let id = crate::ids::SnapshotId::from_hex(o.key.trim_start_matches("snapshots/"));
        if id.is_ok_and(|id| !forgotten.contains(&id)) {
            objects.push(o);
        }
    }
    super::lock::extend(repo.store.as_ref(), &objects, retention).await
}

/// Write a deletion record (`deletions/<time>-<random>`).
pub async fn write_record(
    repo: &Repository,
    packs: Vec<PackId>,
    snapshots: Vec<crate::ids::SnapshotId>,
    created: DateTime<Utc>,
) -> Result<()> {
    let rec = DeletionRecord {
        version: RECORD_VERSION,
        created,
        packs,
        snapshots,
    };
    let name = format!(
        "{DELETIONS}{}-{}",
        created.format("%Y%m%dT%H%M%S%.fZ"),
        hex::encode(rand::random::<[u8; 4]>())
    );
    repo.store
        .put(
            &name,
            Bytes::from(rec.to_bytes(repo.keys.deletions("pruning")?)),
            PutMode::CreateNew,
        )
        .await?;
    Ok(())
}

/// Snapshots forgotten under Object Lock whose objects are still there (authentic records
/// only: a backup-only key, which cannot check them, sees every snapshot object).
pub async fn forgotten(repo: &Repository) -> Result<HashSet<crate::ids::SnapshotId>> {
    if repo.config.object_lock.is_none() || repo.keys.deletions_if_held().is_none() {
        return Ok(HashSet::new());
    }
    Ok(pending(repo)
        .await?
        .into_iter()
        .flat_map(|(_, r)| r.snapshots)
        .collect())
}

/// The packs stored outside STANDARD, which repacking leaves alone unless `--repack-cold`
/// (none is listed then, and none without a repack threshold).
async fn cold_packs(repo: &Repository, opts: &PruneOptions) -> Result<HashSet<PackId>> {
    if opts.repack_cold || opts.repack_threshold.is_none() {
        return Ok(HashSet::new());
    }
    Ok(repo
        .store
        .list_classes(pack::PREFIX)
        .await?
        .into_iter()
        .filter(|o| !o.class.is_standard())
        .filter_map(|o| pack::id_of_key(&o.key))
        .collect())
}

/// Whether an index's listing of a pack may be carried into a rewritten index: it matches
/// the pack's own header (or the header cannot be read, and the listing is all there is).
/// A forged index's entries are thus never copied into the index that replaces it.
async fn agrees_with_header(
    repo: &Repository,
    (pack, entries): &(PackId, Vec<PackEntry>),
    sizes: &HashMap<PackId, u64>,
) -> Result<bool> {
    let Some(&size) = sizes.get(pack) else {
        return Ok(false);
    };
    match repo.read_pack_header(pack, size).await {
        Ok(header) => Ok(header == *entries),
        Err(Error::Integrity(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// What prune checks before it marks or deletes a pack. Indexes are not authenticated in
/// format v1, so a bucket writer could add one claiming that every used blob lives in some
/// other (or no) pack, and prune would then find the real packs unused. A pack is therefore
/// only let go when every blob a snapshot uses that the pack's *own header* lists (and every
/// one an index places in it) has a copy in a pack that stays, and that copy has been
/// fetched and authenticated against its keyed id, which no one without the chunk key can
/// forge.
struct Guard<'a> {
    repo: &'a Repository,
    /// With the identity: copies are decrypted and checked against their ids. Without it
    /// (the maintenance key) only a byte-identical copy counts.
    reader: Option<&'a BlobReader>,
    used: &'a HashSet<BlobId>,
    index: &'a MasterIndex,
    /// The used blobs each pack holds, by the indexes.
    listed_in: HashMap<PackId, Vec<BlobId>>,
    sizes: &'a HashMap<PackId, u64>,
    /// Packs that stay.
    kept: &'a HashSet<PackId>,
    /// Packs checked against their names, and the answer.
    named: std::sync::Mutex<HashMap<PackId, bool>>,
}

impl Guard<'_> {
    /// The packs of `candidates` that must stay after all, each logged.
    async fn unconfirmed(&self, candidates: &HashSet<PackId>) -> Result<HashSet<PackId>> {
        let mut verified: HashSet<BlobId> = HashSet::new();
        let mut keep = HashSet::new();
        for pack in candidates {
            if let Some(blob) = self.sole_copy(pack, &mut verified).await? {
                tracing::warn!(
                    pack = %pack.short(),
                    blob = %blob.short(),
                    "keeping a pack that an index calls unused: it holds a blob snapshots use, and no other copy authenticates (run `drydock check --read-data`)"
                );
                keep.insert(*pack);
            }
        }
        Ok(keep)
    }

    /// A used blob in `pack` with no authenticated copy in a pack that stays, if any.
    async fn sole_copy(
        &self,
        pack: &PackId,
        verified: &mut HashSet<BlobId>,
    ) -> Result<Option<BlobId>> {
        for blob in self.used_blobs_in(pack).await? {
            if !verified.contains(&blob) && !self.copy_elsewhere(&blob, pack).await? {
                return Ok(Some(blob));
            }
            verified.insert(blob);
        }
        Ok(None)
    }

    /// Used blobs the pack's own header lists, and those an index places in it.
    async fn used_blobs_in(&self, pack: &PackId) -> Result<Vec<BlobId>> {
        let mut blobs: HashSet<BlobId> = self
            .listed_in
            .get(pack)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let size = self.sizes.get(pack).copied().unwrap_or(0);
        match self.repo.read_pack_header(pack, size).await {
            Ok(entries) => blobs.extend(
                entries
                    .into_iter()
                    .map(|e| e.id)
                    .filter(|id| self.used.contains(id)),
            ),
            // A damaged header tells nothing; what the indexes say still counts. An
            // archived pack's header is not read either (prune never thaws): the
            // authenticated indexes, whose listings add up, say what it holds.
            Err(Error::Integrity(_)) | Err(Error::NotFound(_)) | Err(Error::Cold(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(blobs.into_iter().collect())
    }

    async fn copy_elsewhere(&self, blob: &BlobId, pack: &PackId) -> Result<bool> {
        let copies = self.index.locations(blob);
        for loc in copies
            .into_iter()
            .filter(|l| l.pack != *pack && self.kept.contains(&l.pack))
        {
            if self.named_right(&loc.pack).await? && self.copy_holds(blob, pack, loc).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the copy at `loc` is `blob`: decrypted and checked against its id with the
    /// identity; with the maintenance key, which can check no id, only when its stored bytes
    /// equal those of the copy in `pack` (a holder of the backup-only key could otherwise
    /// store garbage under a used blob's id and have the real copy deleted).
    async fn copy_holds(&self, blob: &BlobId, pack: &PackId, loc: BlobLocation) -> Result<bool> {
        if let Some(reader) = self.reader {
            return reader.authenticates_at(blob, loc).await;
        }
        let Some(mine) = self
            .index
            .locations(blob)
            .into_iter()
            .find(|l| l.pack == *pack)
        else {
            return Ok(false);
        };
        let (a, b) = futures::try_join!(self.stored(&mine), self.stored(&loc))?;
        Ok(a.is_some() && a == b)
    }

    async fn stored(&self, loc: &BlobLocation) -> Result<Option<Bytes>> {
        let key = pack::key(&loc.pack);
        match self
            .repo
            .store
            .get_range(&key, loc.offset as u64, loc.length as u64)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Repository::named_right`], once per pack.
    async fn named_right(&self, pack: &PackId) -> Result<bool> {
        if let Some(&known) = self.named.lock().expect("lock").get(pack) {
            return Ok(known);
        }
        let right = self.repo.named_right(pack).await?;
        self.named.lock().expect("lock").insert(*pack, right);
        Ok(right)
    }
}
