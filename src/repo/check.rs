//! Repository integrity: structure always, every byte with `--read-data`.
//!
//! Problems are attributed to the snapshots they damage by walking every snapshot's trees.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use serde::Serialize;

use super::blob::{self, BlobType};
use super::index::MasterIndex;
use super::pack::{self, PackEntry};
use super::prune;
use super::reader::BlobReader;
use super::snapshot::Snapshot;
use super::thaw::{ThawReport, Thawer};
use super::tree::RegistryEntry;
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{sha256, BlobId, IndexId, PackId, SnapshotId};

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Share of packs to download and authenticate (0 = structure only, 1 = all).
    pub read_data: f64,
    pub parallel: usize,
    /// Thaws the archived packs to read; with its dry run, they are listed and nothing is
    /// read.
    pub thaw: Option<Arc<Thawer>>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// The damaged object (`packs/…`, `index/…`, `snapshots/…`) or blob.
    pub object: String,
    pub message: String,
    /// Snapshots that cannot be fully restored because of it.
    pub snapshots: Vec<String>,
    #[serde(skip)]
    blobs: HashSet<BlobId>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub indexes: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub affected_snapshots: Vec<String>,
    /// The archived packs --read-data needed, and what was thawed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thaw: Option<ThawReport>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(
        &mut self,
        object: String,
        message: String,
        blobs: impl IntoIterator<Item = BlobId>,
    ) {
        self.problems.push(Problem {
            object,
            message,
            snapshots: Vec::new(),
            blobs: blobs.into_iter().collect(),
        });
    }
}

pub async fn check(repo: Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport> {
    if opts.read_data > 0.0 {
        repo.keys.identity("check --read-data")?;
    }
    let mut report = CheckReport::default();
    let (index, listings) = check_indexes(&repo, &mut report).await?;
    // What the first index to name a pack says; check_listings corrects it from the header.
    let mut pack_entries: PackMap = listings
        .iter()
        .map(|(pack, lists)| (*pack, lists[0].1.clone()))
        .collect();
    let sizes: HashMap<PackId, u64> = repo.list_packs().await?.into_iter().collect();
    report.packs = sizes.len();
    report.blobs = index.len();
    check_listings(
        &repo,
        &listings,
        &sizes,
        &index,
        &mut pack_entries,
        &mut report,
    )
    .await?;
    check_pack_sizes(&pack_entries, &sizes, &mut report);
    check_blob_bounds(&pack_entries, &mut report);
    check_deletion_records(&repo, &sizes, &mut report).await?;
    let index = Arc::new(index);
    if opts.read_data > 0.0 {
        let registry = read_packs(&repo, &pack_entries, &sizes, opts, &mut report).await?;
        if !opts.thaw.as_ref().is_some_and(|t| t.options().dry_run) {
            check_unindexed_names(&repo, &pack_entries, &sizes, &mut report).await?;
            check_registry_digests(&repo, &index, registry, opts, &mut report).await?;
        }
    }
    if repo.keys.has_identity() {
        check_snapshots(&repo, &index, &mut report).await?;
    } else if repo.keys.maintenance_identity().is_some() {
        check_summaries(&repo, &index, &mut report).await?;
    } else {
        report.snapshots = repo.list_snapshot_ids().await?.len();
        report.warnings.push(
            "snapshot contents were not checked: that needs the identity, and a backup-only key was given".into(),
        );
    }
    Ok(report)
}

type PackMap = HashMap<PackId, Vec<PackEntry>>;

/// What each index object says a pack holds.
type Listings = HashMap<PackId, Vec<(IndexId, Vec<PackEntry>)>>;

async fn check_indexes(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<(MasterIndex, Listings)> {
    let mut index = MasterIndex::default();
    let mut listings: Listings = HashMap::new();
    let files = repo.load_index_files().await?;
    report.indexes = files.len();
    for (id, file) in files {
        match file {
            Ok(file) => {
                for (pack, entries) in file {
                    index.add_pack(pack, &entries);
                    listings.entry(pack).or_default().push((id, entries));
                }
            }
            Err(e) => report.problem(format!("index/{id}"), e.to_string(), []),
        }
    }
    Ok((index, listings))
}

/// Index objects the packs contradict. Indexes are not authenticated in format v1, so a
/// bucket writer can add one that places blobs in a pack that does not exist, or in a real
/// pack that does not hold them. Such an entry is named here (object `index/…`), and the
/// pack's own header, not the false entry, is what the rest of check compares against.
async fn check_listings(
    repo: &Repository,
    listings: &Listings,
    sizes: &HashMap<PackId, u64>,
    index: &MasterIndex,
    packs: &mut PackMap,
    report: &mut CheckReport,
) -> Result<()> {
    for (pack, lists) in listings {
        let false_lists: Vec<IndexId> = match sizes.get(pack) {
            None => {
                // Only when the blobs are in other packs that exist: otherwise the pack was
                // lost, which the size check reports.
                let elsewhere = |e: &PackEntry| {
                    index
                        .locations(&e.id)
                        .iter()
                        .any(|l| l.pack != *pack && sizes.contains_key(&l.pack))
                };
                let lists: Vec<IndexId> = lists
                    .iter()
                    .filter(|(_, entries)| entries.iter().all(elsewhere))
                    .map(|(iid, _)| *iid)
                    .collect();
                if lists.len() == listings[pack].len() {
                    packs.remove(pack);
                }
                lists
            }
            Some(_) if lists.iter().all(|(_, e)| *e == lists[0].1) => continue,
            Some(&size) => match repo.read_pack_header(pack, size).await {
                Ok(header) => {
                    let lying = lists
                        .iter()
                        .filter(|(_, e)| *e != header)
                        .map(|(iid, _)| *iid)
                        .collect();
                    packs.insert(*pack, header);
                    lying
                }
                Err(Error::Integrity(_)) => continue,
                Err(e) => return Err(e),
            },
        };
        for iid in false_lists {
            report.problem(
                format!("index/{iid}"),
                format!(
                    "says pack {} holds blobs it does not hold: a forged or stale index object; delete it",
                    pack.short()
                ),
                [],
            );
        }
    }
    Ok(())
}

fn expected_pack_size(entries: &[PackEntry]) -> u64 {
    let data: u64 = entries
        .iter()
        .map(|e| e.offset as u64 + e.length as u64)
        .max()
        .unwrap_or(0);
    data + pack::header_size(entries)
}

fn check_pack_sizes(packs: &PackMap, sizes: &HashMap<PackId, u64>, report: &mut CheckReport) {
    for (id, entries) in packs {
        let blobs = entries.iter().map(|e| e.id);
        match sizes.get(id) {
            None => report.problem(pack::key(id), "pack is missing".into(), blobs),
            Some(&size) if size != expected_pack_size(entries) => report.problem(
                pack::key(id),
                format!(
                    "pack has {size} bytes, the index expects {}: truncated or altered",
                    expected_pack_size(entries)
                ),
                blobs,
            ),
            Some(_) => {}
        }
    }
    let unindexed = sizes.keys().filter(|id| !packs.contains_key(id)).count();
    if unindexed > 0 {
        report.warnings.push(format!(
            "{unindexed} pack(s) are in no index: left by an interrupted backup; the next backup reuses them"
        ));
    }
}

/// Index entries whose lengths exceed the format's bounds (FORMAT.md §5): no reader would
/// decode them, and a reader that trusted them would allocate what they claim.
fn check_blob_bounds(packs: &PackMap, report: &mut CheckReport) {
    for (id, entries) in packs {
        for e in entries {
            if let Err(why) = blob::check_lengths(e.blob_type, e.length, e.raw_length) {
                report.problem(
                    pack::key(id),
                    format!("blob {} is corrupt: {why}", e.id.short()),
                    [e.id],
                );
            }
        }
    }
}

/// `deletions/` records (FORMAT.md §11): one that does not parse stops every backup and
/// prune, so it is a problem even though no snapshot depends on it.
async fn check_deletion_records(
    repo: &Repository,
    sizes: &HashMap<PackId, u64>,
    report: &mut CheckReport,
) -> Result<()> {
    for (key, record) in prune::records(repo).await? {
        match record {
            Ok(record) => {
                let gone = record
                    .packs
                    .iter()
                    .filter(|p| !sizes.contains_key(p))
                    .count();
                if gone > 0 {
                    report.warnings.push(format!(
                        "{key} names {gone} pack(s) that are not in the repository: left by an interrupted prune"
                    ));
                }
            }
            Err(why) => report.problem(
                key,
                format!("not a deletion record drydock wrote ({why}); prune ignores it, delete it"),
                [],
            ),
        }
    }
    Ok(())
}

/// With `--read-data`: every pack no index names must hash to its name. One that does not is
/// damage, or a copy of a real pack under a false name (its header and blobs authenticate),
/// which adoption and prune refuse to count; the operator should delete it.
async fn check_unindexed_names(
    repo: &Repository,
    packs: &PackMap,
    sizes: &HashMap<PackId, u64>,
    report: &mut CheckReport,
) -> Result<()> {
    for id in sizes.keys().filter(|id| !packs.contains_key(id)) {
        if !repo.named_right(id).await? {
            report.problem(
                pack::key(id),
                "pack content does not match its name: damage, or a copy of another pack under a false name; backups and prune ignore it, delete it".into(),
                [],
            );
        }
    }
    Ok(())
}

/// Each problem found in a pack, with the blobs it damages.
type Problems = Vec<(String, Vec<BlobId>)>;
/// The registry blobs read that authenticate.
type RegistryRead = Vec<(BlobId, RegistryEntry)>;
/// A downloaded pack, its size, its problems and its registry blobs.
type PackFindings = (PackId, u64, Problems, RegistryRead);

/// Download packs, check their hash and header, and authenticate every blob.
async fn read_packs(
    repo: &Arc<Repository>,
    packs: &PackMap,
    sizes: &HashMap<PackId, u64>,
    opts: &CheckOptions,
    report: &mut CheckReport,
) -> Result<RegistryRead> {
    let mut ids: Vec<PackId> = packs
        .keys()
        .filter(|id| sizes.contains_key(id))
        .copied()
        .collect();
    ids.sort();
    if opts.read_data < 1.0 {
        ids.shuffle(&mut rand::thread_rng());
        let n = ((ids.len() as f64) * opts.read_data).ceil() as usize;
        ids.truncate(n.max(1).min(ids.len()));
    }
    if let Some(thawer) = &opts.thaw {
        let thawed = thawer.prepare(&ids.iter().copied().collect()).await?;
        report.thaw = Some(thawed);
        if thawer.options().dry_run {
            return Ok(Vec::new());
        }
    }
    let results: Vec<Result<PackFindings>> = stream::iter(ids)
        .map(|id| {
            let repo = repo.clone();
            let entries = packs[&id].clone();
            let thaw = opts.thaw.clone();
            async move {
                let bytes = match &thaw {
                    Some(t) => t.get_pack(&id).await,
                    None => repo.store.get(&pack::key(&id)).await,
                }
                .map_err(Error::into_integrity)?;
                let len = bytes.len() as u64;
                let (found, registry) =
                    tokio::task::spawn_blocking(move || verify_pack(&repo, &id, &bytes, &entries))
                        .await
                        .map_err(|e| Error::Other(format!("check task failed: {e}")))?;
                Ok((id, len, found, registry))
            }
        })
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    let mut registry = Vec::new();
    for r in results {
        let (id, len, found, entries) = r?;
        report.packs_read += 1;
        report.bytes_read += len;
        for (message, blobs) in found {
            report.problem(pack::key(&id), message, blobs);
        }
        registry.extend(entries);
    }
    Ok(registry)
}

/// Every registry blob read: its chunks, streamed, must hash to its digest and add up to
/// its size. A holder of the backup-only key can store other content under a real digest
/// (its id is then its own, but a later backup reusing the digest would restore it).
async fn check_registry_digests(
    repo: &Arc<Repository>,
    index: &Arc<MasterIndex>,
    registry: RegistryRead,
    opts: &CheckOptions,
    report: &mut CheckReport,
) -> Result<()> {
    use sha2::Digest as _;
    let mut reader = BlobReader::new(repo.clone(), index.clone(), "check --read-data")?;
    if let Some(t) = &opts.thaw {
        reader = reader.with_thaw(t.clone());
    }
    for (id, entry) in registry {
        let Some(want) = entry.digest.strip_prefix("sha256:") else {
            continue;
        };
        let mut hash = sha2::Sha256::new();
        let mut size = 0u64;
        let mut chunks =
            std::pin::pin!(reader.load_stream(&entry.content, BlobType::Data, opts.parallel));
        let mut readable = true;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(c) => {
                    size += c.len() as u64;
                    hash.update(&c);
                }
                // Missing or damaged chunks are reported by the pack and snapshot checks.
                Err(Error::Integrity(_)) => {
                    readable = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if readable && (hex::encode(hash.finalize()) != want || size != entry.size) {
            report.problem(
                format!("registry blob {}", id.short()),
                format!(
                    "its chunks do not hash to its digest {} ({size} bytes; {} recorded): other content stored under a real digest",
                    crate::term::esc(&entry.digest),
                    entry.size
                ),
                [id],
            );
        }
    }
    Ok(())
}

/// Every problem found in one downloaded pack, with the blobs it damages.
fn verify_pack(
    repo: &Repository,
    id: &PackId,
    bytes: &[u8],
    entries: &[PackEntry],
) -> (Problems, RegistryRead) {
    let mut found = Vec::new();
    let all: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
    if sha256(bytes) != id.0 {
        found.push((
            "pack content does not match its name (bits altered)".to_string(),
            Vec::new(),
        ));
    }
    let header_ok = bytes.len() >= pack::TRAILER_LEN
        && pack::header_len(
            &bytes[bytes.len() - pack::TRAILER_LEN..],
            bytes.len() as u64,
        )
        .and_then(|hl| {
            pack::parse_header(
                &bytes[bytes.len() - hl..],
                bytes.len() as u64,
                &repo.keys.objects,
            )
        })
        .map(|h| h == entries)
        .unwrap_or(false);
    if !header_ok {
        found.push((
            "pack header is damaged or disagrees with the index".to_string(),
            all.clone(),
        ));
    }
    let keys = &repo.keys;
    let (Ok(identity), Ok(chunk_key)) = (keys.identity(""), keys.chunk_key("")) else {
        return (found, Vec::new());
    };
    let mut bad = Vec::new();
    let mut registry = Vec::new();
    for e in entries {
        let range = e.offset as usize..e.offset as usize + e.length as usize;
        let decoded = bytes.get(range).and_then(|stored| {
            blob::decode(
                identity,
                chunk_key,
                e.blob_type,
                &e.id,
                e.raw_length,
                stored,
            )
            .ok()
        });
        match decoded {
            None => bad.push(e.id),
            Some(plain) if e.blob_type == BlobType::Registry => {
                if let Ok(entry) = RegistryEntry::parse(&plain) {
                    registry.push((e.id, entry));
                }
            }
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        found.push((
            format!(
                "{} of {} blobs fail to decrypt or authenticate",
                bad.len(),
                entries.len()
            ),
            bad,
        ));
    }
    (found, registry)
}

/// What one tree contributes: its damaged blobs and its child trees.
struct TreeFacts {
    bad: Vec<BlobId>,
    children: Vec<(BlobId, BlobType)>,
}

async fn check_snapshots(
    repo: &Arc<Repository>,
    index: &Arc<MasterIndex>,
    report: &mut CheckReport,
) -> Result<()> {
    let (snapshots, written) = repo.load_snapshots_written().await?;
    report.snapshots = snapshots.len();
    let reader = BlobReader::new(repo.clone(), index.clone(), "check")?;
    let mut bad: HashSet<BlobId> = report
        .problems
        .iter()
        .flat_map(|p| p.blobs.iter().copied())
        .collect();
    let mut facts: HashMap<BlobId, TreeFacts> = HashMap::new();
    let mut missing: HashSet<BlobId> = HashSet::new();
    let mut tree_errors: Vec<(BlobId, String)> = Vec::new();
    let mut damaged_by: HashMap<SnapshotId, BTreeSet<BlobId>> = HashMap::new();
    let mut unreadable: Vec<(SnapshotId, String)> = Vec::new();

    for (sid, snap) in &snapshots {
        let snap: &Snapshot = match snap {
            Ok(s) => s,
            Err(e) => {
                unreadable.push((*sid, e.to_string()));
                continue;
            }
        };
        let mut reached: BTreeSet<BlobId> = BTreeSet::new();
        for id in snap.parts.root_data() {
            if !index.contains(&id) {
                missing.insert(id);
            }
            if bad.contains(&id) || missing.contains(&id) {
                reached.insert(id);
            }
        }
        let mut stack: Vec<(BlobId, BlobType)> = snap
            .parts
            .root_trees()
            .into_iter()
            .map(|t| (t, BlobType::Tree))
            .collect();
        let mut seen = HashSet::new();
        while let Some((tree_id, blob_type)) = stack.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            let f = match facts.entry(tree_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    tree_facts(
                        &reader,
                        index,
                        (tree_id, blob_type),
                        &bad,
                        &mut missing,
                        &mut tree_errors,
                    )
                    .await?,
                ),
            };
            reached.extend(f.bad.iter().copied());
            stack.extend(f.children.iter().copied());
        }
        if !reached.is_empty() {
            damaged_by.insert(*sid, reached);
        }
    }
    bad.extend(missing.iter().copied());
    for (id, message) in tree_errors {
        if !report.problems.iter().any(|p| p.blobs.contains(&id)) {
            report.problem(format!("tree {}", id.short()), message, [id]);
        }
    }
    report_missing(report, &missing);
    for (sid, snap) in &snapshots {
        if let Some(why) = snap
            .as_ref()
            .ok()
            .and_then(|s| written.distrust(sid, s.time))
        {
            unreadable.push((*sid, untrusted(sid, &why)));
        }
    }
    report_snapshots(report, unreadable, &damaged_by);
    Ok(())
}

/// With the maintenance key: every blob each snapshot's summary names (and the chunks of
/// its registry blobs) is in an index and undamaged.
async fn check_summaries(
    repo: &Arc<Repository>,
    index: &Arc<MasterIndex>,
    report: &mut CheckReport,
) -> Result<()> {
    let (summaries, written) = repo.load_summaries_written().await?;
    report.snapshots = summaries.len();
    let bad: HashSet<BlobId> = report
        .problems
        .iter()
        .flat_map(|p| p.blobs.iter().copied())
        .collect();
    let mut missing: HashSet<BlobId> = HashSet::new();
    let mut damaged_by: HashMap<SnapshotId, BTreeSet<BlobId>> = HashMap::new();
    let mut unreadable: Vec<(SnapshotId, String)> = Vec::new();
    for (sid, summary) in &summaries {
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                unreadable.push((*sid, e.to_string()));
                continue;
            }
        };
        if let Some(why) = written.distrust(sid, summary.meta.time) {
            unreadable.push((*sid, untrusted(sid, &why)));
        }
        let used = match super::maintenance::referenced(repo, index, std::slice::from_ref(summary))
            .await
        {
            Ok(u) => u,
            Err(e @ (Error::Store(_) | Error::Io { .. })) => return Err(e),
            Err(e) => {
                unreadable.push((*sid, e.to_string()));
                continue;
            }
        };
        let reached: BTreeSet<BlobId> = used
            .into_iter()
            .filter(|id| {
                let gone = !index.contains(id);
                if gone {
                    missing.insert(*id);
                }
                gone || bad.contains(id)
            })
            .collect();
        if !reached.is_empty() {
            damaged_by.insert(*sid, reached);
        }
    }
    report_missing(report, &missing);
    report_snapshots(report, unreadable, &damaged_by);
    Ok(())
}

/// Why a snapshot whose time the store contradicts is a problem.
fn untrusted(sid: &SnapshotId, why: &str) -> String {
    format!(
        "{why}: retention and `latest` ignore it; if it is not yours, `drydock forget {}` it",
        sid.short()
    )
}

/// Blobs snapshots use that no index locates.
fn report_missing(report: &mut CheckReport, missing: &HashSet<BlobId>) {
    if !missing.is_empty() {
        report.problem(
            "index".into(),
            format!(
                "{} blob(s) used by snapshots are in no index: an index object or pack is missing",
                missing.len()
            ),
            missing.iter().copied(),
        );
    }
}

/// The snapshots that could not be read or trusted, then which snapshots each problem hits.
fn report_snapshots(
    report: &mut CheckReport,
    unreadable: Vec<(SnapshotId, String)>,
    damaged_by: &HashMap<SnapshotId, BTreeSet<BlobId>>,
) {
    for (sid, message) in unreadable {
        report.problems.push(Problem {
            object: format!("snapshots/{sid}"),
            message,
            snapshots: vec![sid.short()],
            blobs: HashSet::new(),
        });
    }
    attribute(report, damaged_by);
}

async fn tree_facts(
    reader: &BlobReader,
    index: &MasterIndex,
    (id, blob_type): (BlobId, BlobType),
    bad: &HashSet<BlobId>,
    missing: &mut HashSet<BlobId>,
    errors: &mut Vec<(BlobId, String)>,
) -> Result<TreeFacts> {
    let broken = || TreeFacts {
        bad: vec![id],
        children: Vec::new(),
    };
    if !index.contains(&id) {
        missing.insert(id);
        return Ok(broken());
    }
    if bad.contains(&id) {
        return Ok(broken());
    }
    let refs = match reader.children(&id, blob_type).await {
        Ok(r) => r,
        // The store failing (after retries) is not damage: stop, exit 1, not 4.
        Err(e @ (Error::Store(_) | Error::Io { .. })) => return Err(e),
        Err(e) => {
            errors.push((id, e.to_string()));
            return Ok(broken());
        }
    };
    let mut facts = TreeFacts {
        bad: Vec::new(),
        children: Vec::new(),
    };
    for (blob, t) in refs {
        if t != BlobType::Data {
            facts.children.push((blob, t));
        } else if !index.contains(&blob) {
            missing.insert(blob);
            facts.bad.push(blob);
        } else if bad.contains(&blob) {
            facts.bad.push(blob);
        }
    }
    Ok(facts)
}

fn attribute(report: &mut CheckReport, damaged_by: &HashMap<SnapshotId, BTreeSet<BlobId>>) {
    let mut affected: BTreeSet<String> = BTreeSet::new();
    for p in &mut report.problems {
        let mut hit: Vec<String> = damaged_by
            .iter()
            .filter(|(_, blobs)| blobs.iter().any(|b| p.blobs.contains(b)))
            .map(|(sid, _)| sid.short())
            .collect();
        hit.sort();
        p.snapshots.extend(hit);
        p.snapshots.dedup();
        affected.extend(p.snapshots.iter().cloned());
    }
    report.affected_snapshots = affected.into_iter().collect();
}
