//! The write pipeline: chunk → id → dedup → compress → encrypt → pack → upload → index.
//!
//! CPU work runs on a rayon pool of `parallel` threads; uploads run on the tokio runtime,
//! at most `parallel` at once. Memory stays bounded: a reader holds one chunker buffer,
//! each worker one chunk, and at most `parallel + 3` packs exist at a time (one being filled
//! with data, one with trees, one waiting, `parallel` uploading).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rayon::prelude::*;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::blob::{self, BlobType};
use super::index::MasterIndex;
use super::pack::{self, FinishedPack, PackBuilder, PackEntry};
use super::Repository;
use crate::chunker;
use crate::error::{Error, Result};
use crate::ids::{BlobId, IndexId, LookupKey, PackId};

/// Write an index object after this many packs, so a killed backup loses little.
pub(super) const PACKS_PER_INDEX: usize = 8;

#[derive(Default)]
pub struct WriteStats {
    pub new_bytes: AtomicU64,
    pub reused_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub new_blobs: AtomicU64,
}

/// Totals once everything is uploaded.
#[derive(Clone, Debug, Default)]
pub struct WriteTotals {
    pub new_bytes: u64,
    pub reused_bytes: u64,
    pub stored_bytes: u64,
    pub new_blobs: u64,
    pub packs: u64,
    pub indexes: Vec<IndexId>,
}

/// Observes bytes as they pass, for progress reporting.
pub trait OnBytes: Sync {
    fn bytes(&self, n: u64);
    /// The total, once known (a restore knows it after planning).
    fn total(&self, _n: u64) {}
}

impl OnBytes for () {
    fn bytes(&self, _: u64) {}
}

/// Which pack a blob goes into: trees and registry entries (the small blobs a restore
/// or check reads first, to plan) apart from data, as restic does, so they sit together in
/// a few packs and a restore fetches them with a few requests instead of one per directory.
pub(super) fn packer_for(blob_type: BlobType) -> usize {
    match blob_type {
        BlobType::Data => 0,
        BlobType::Tree | BlobType::Registry => 1,
    }
}

/// What a backup's snapshot uses, as its writer saw it.
#[derive(Clone, Debug, Default)]
pub struct References {
    pub all: HashSet<BlobId>,
    pub registry: HashSet<BlobId>,
}

pub struct BlobWriter {
    repo: Arc<Repository>,
    chunk_key: crate::crypto::ChunkKey,
    /// Every blob this writer stored or found stored: the snapshot summary's references.
    referenced: Mutex<HashSet<BlobId>>,
    /// The registry blobs among them, which a summary lists apart.
    registry_referenced: Mutex<HashSet<BlobId>>,
    known: RwLock<HashSet<BlobId>>,
    /// Registry blobs by digest lookup key: the repository's and this backup's.
    registry: RwLock<HashMap<LookupKey, BlobId>>,
    packers: [Mutex<PackBuilder>; 2],
    tx: Mutex<Option<mpsc::Sender<FinishedPack>>>,
    uploader: Mutex<Option<tokio::task::JoinHandle<Result<UploadTotals>>>>,
    pool: rayon::ThreadPool,
    pub stats: WriteStats,
}

impl BlobWriter {
    /// Start a writer; must be called within a tokio runtime.
    pub fn new(repo: Arc<Repository>, index: &MasterIndex, parallel: usize) -> Result<Self> {
        repo.config.check_writable()?;
        let chunk_key = repo.keys.chunk_key("writing a backup")?.clone();
        let parallel = parallel.max(1);
        let (tx, rx) = mpsc::channel(1);
        let uploader = tokio::spawn(upload_loop(repo.clone(), rx, parallel));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parallel)
            .thread_name(|i| format!("drydock-cpu-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))?;
        Ok(BlobWriter {
            known: RwLock::new(index.blob_ids().copied().collect()),
            registry: RwLock::new(index.registry_blobs().collect()),
            repo,
            chunk_key,
            referenced: Mutex::default(),
            registry_referenced: Mutex::default(),
            packers: Default::default(),
            tx: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(uploader)),
            pool,
            stats: WriteStats::default(),
        })
    }

    /// True if this call is the first to see `id` (in the repository or this backup).
    fn claim(&self, id: BlobId) -> bool {
        if self.known.read().expect("lock").contains(&id) {
            return false;
        }
        self.known.write().expect("lock").insert(id)
    }

    /// The registry blob already stored for `digest`, found without reading anything.
    pub fn known_registry(&self, digest: &str) -> Option<BlobId> {
        let lookup = blob::lookup_key(&self.chunk_key, digest);
        let id = self.registry.read().expect("lock").get(&lookup).copied()?;
        self.registry_referenced.lock().expect("lock").insert(id);
        Some(id)
    }

    /// Store a registry blob (`digest` is its first line). Blocking.
    pub fn save_registry(&self, digest: &str, data: &[u8]) -> Result<BlobId> {
        let lookup = blob::lookup_key(&self.chunk_key, digest);
        let id = self.save_as(
            BlobType::Registry,
            data,
            Some(lookup),
            self.repo.config.zstd_level,
        )?;
        self.registry.write().expect("lock").insert(lookup, id);
        self.registry_referenced.lock().expect("lock").insert(id);
        Ok(id)
    }

    /// Store a small file's content as one sealed blob ([`blob::seal_small`]). Blocking.
    pub fn save_sealed(&self, data: &[u8], salt: &blob::Salt) -> Result<BlobId> {
        let sealed = blob::seal_small(data, salt);
        self.save_as(BlobType::Data, &sealed, None, blob::STORE_RAW)
    }

    /// Files shorter than this are one chunk, and stored sealed by the configuration part.
    pub fn small_file_limit(&self) -> u64 {
        self.repo.config.chunker.min_size as u64
    }

    /// Whether a blob with this id is in the repository or already written by this backup.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.known.read().expect("lock").contains(id)
    }

    /// Store one blob unless it is known. Blocking; call from a non-async thread.
    pub fn save(&self, blob_type: BlobType, data: &[u8]) -> Result<BlobId> {
        self.save_as(blob_type, data, None, self.repo.config.zstd_level)
    }

    fn save_as(
        &self,
        blob_type: BlobType,
        data: &[u8],
        lookup: Option<LookupKey>,
        level: i32,
    ) -> Result<BlobId> {
        // Readers refuse larger blobs (FORMAT.md §5), so writing one would lose the snapshot.
        if data.len() > blob::max_raw_length(blob_type) as usize {
            return Err(Error::Other(format!(
                "a {blob_type:?} blob of {} bytes exceeds the format's limit of {}: split the directory (fewer entries per directory)",
                data.len(),
                blob::max_raw_length(blob_type)
            )));
        }
        let id = blob::blob_id(&self.chunk_key, blob_type, data);
        self.referenced.lock().expect("lock").insert(id);
        if !self.claim(id) {
            self.stats
                .reused_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return Ok(id);
        }
        let mut encoded =
            blob::encode_with_id(id, &self.recipients(blob_type), blob_type, data, level);
        encoded.lookup = lookup;
        self.stats
            .new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.stats.new_blobs.fetch_add(1, Ordering::Relaxed);
        let full = {
            let mut packer = self.packers[packer_for(blob_type)].lock().expect("lock");
            packer.add(encoded);
            if packer.len() as u64 >= self.repo.config.pack_size {
                Some(std::mem::take(&mut *packer))
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.send(p)?;
        }
        Ok(id)
    }

    fn send(&self, packer: PackBuilder) -> Result<()> {
        let finished = packer.finish(&self.repo.keys.objects);
        self.stats
            .stored_bytes
            .fetch_add(finished.bytes.len() as u64, Ordering::Relaxed);
        let guard = self.tx.lock().expect("lock");
        let tx = guard
            .as_ref()
            .ok_or_else(|| Error::Other("the writer is closed".into()))?;
        tx.blocking_send(finished)
            .map_err(|_| Error::Store("uploads stopped after an error".into()))
    }

    /// [`save_stream`](Self::save_stream), except that a stream shorter than the chunker's
    /// minimum (one chunk: a small table's COPY text) is stored sealed with `salt`, so that
    /// its id is no oracle for its content and its stored size does not give its length.
    /// Readers truncate it to the recorded length. Blocking.
    pub fn save_stream_sealing_small<R: Read + Send>(
        &self,
        mut reader: R,
        progress: &dyn OnBytes,
        salt: &blob::Salt,
    ) -> Result<(Vec<BlobId>, u64)> {
        let limit = self.small_file_limit();
        let mut head = Vec::new();
        (&mut reader)
            .take(limit)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("reading the stream to back up", e))?;
        if (head.len() as u64) < limit {
            progress.bytes(head.len() as u64);
            return Ok((vec![self.save_sealed(&head, salt)?], head.len() as u64));
        }
        self.save_stream(std::io::Cursor::new(head).chain(reader), progress)
    }

    /// Chunk a stream and store its chunks in parallel; returns the chunk ids in order and
    /// the stream's length. Blocking.
    pub fn save_stream<R: Read + Send>(
        &self,
        reader: R,
        progress: &dyn OnBytes,
    ) -> Result<(Vec<BlobId>, u64)> {
        let params = self.repo.config.chunker;
        let seed = self.chunk_key.chunker_seed();
        let mut ids: Vec<(u64, BlobId, u64)> = self.pool.install(|| {
            chunker::chunks(reader, &params, seed)
                .par_bridge()
                .map(|chunk| {
                    let chunk = chunk?;
                    let id = self.save(BlobType::Data, &chunk.data)?;
                    progress.bytes(chunk.data.len() as u64);
                    Ok((chunk.offset, id, chunk.data.len() as u64))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        ids.sort_unstable_by_key(|(offset, _, _)| *offset);
        let len = ids.last().map(|(o, _, l)| o + l).unwrap_or(0);
        Ok((ids.into_iter().map(|(_, id, _)| id).collect(), len))
    }

    /// Who a blob is encrypted to: the recipient, and for registry blobs (digests and chunk
    /// ids, no content) the maintenance recipient too, so that prune with the maintenance
    /// key learns the chunks of a layer a later backup reused by digest.
    fn recipients(&self, blob_type: BlobType) -> Vec<&crate::crypto::Recipient> {
        let keys = &self.repo.keys;
        let mut r = vec![&keys.recipient];
        if blob_type == BlobType::Registry {
            r.extend(keys.maintenance_recipient.as_ref());
        }
        r
    }

    /// Every blob this writer stored or found stored (for the snapshot summary), and the
    /// registry blobs among them.
    pub fn references(&self) -> References {
        References {
            all: self.referenced.lock().expect("lock").clone(),
            registry: self.registry_referenced.lock().expect("lock").clone(),
        }
    }

    /// Upload what is buffered, wait for every upload and write the last index object.
    pub async fn finish(&self) -> Result<WriteTotals> {
        for packer in &self.packers {
            let last = std::mem::take(&mut *packer.lock().expect("lock"));
            if last.is_empty() {
                continue;
            }
            let finished = last.finish(&self.repo.keys.objects);
            self.stats
                .stored_bytes
                .fetch_add(finished.bytes.len() as u64, Ordering::Relaxed);
            let tx = self.tx.lock().expect("lock").clone();
            if let Some(tx) = tx {
                // A send error means the uploader stopped; its own error is reported below.
                let _ = tx.send(finished).await;
            }
        }
        self.tx.lock().expect("lock").take();
        let handle = self.uploader.lock().expect("lock").take();
        let (packs, indexes) = match handle {
            Some(h) => h
                .await
                .map_err(|e| Error::Other(format!("upload task failed: {e}")))??,
            None => return Err(Error::Other("the writer was already finished".into())),
        };
        Ok(WriteTotals {
            new_bytes: self.stats.new_bytes.load(Ordering::Relaxed),
            reused_bytes: self.stats.reused_bytes.load(Ordering::Relaxed),
            stored_bytes: self.stats.stored_bytes.load(Ordering::Relaxed),
            new_blobs: self.stats.new_blobs.load(Ordering::Relaxed),
            packs,
            indexes,
        })
    }

    /// After a failure elsewhere: stop, and prefer the upload error if there was one
    /// (a failed send only says that uploads stopped).
    pub async fn abort(&self, err: Error) -> Error {
        for packer in &self.packers {
            *packer.lock().expect("lock") = PackBuilder::default();
        }
        self.tx.lock().expect("lock").take();
        let handle = self.uploader.lock().expect("lock").take();
        match handle {
            Some(h) => match h.await {
                Ok(Err(upload_err)) => upload_err,
                _ => err,
            },
            None => err,
        }
    }
}

type Uploaded = (PackId, Vec<PackEntry>);
/// Packs uploaded and index objects written by the upload task.
type UploadTotals = (u64, Vec<IndexId>);

async fn upload_one(repo: Arc<Repository>, pack: FinishedPack) -> Result<Uploaded> {
    pack::upload(&repo, &pack.id, pack.bytes, &pack.entries).await?;
    Ok((pack.id, pack.entries))
}

async fn upload_loop(
    repo: Arc<Repository>,
    mut rx: mpsc::Receiver<FinishedPack>,
    parallel: usize,
) -> Result<UploadTotals> {
    let slots = Arc::new(Semaphore::new(parallel));
    let mut running: JoinSet<Result<Uploaded>> = JoinSet::new();
    let mut pending: Vec<Uploaded> = Vec::new();
    let mut indexes = Vec::new();
    let mut packs = 0u64;
    let mut collect = |res: std::result::Result<Result<Uploaded>, tokio::task::JoinError>,
                       pending: &mut Vec<Uploaded>|
     -> Result<()> {
        let uploaded = res.map_err(|e| Error::Other(format!("upload task failed: {e}")))??;
        packs += 1;
        pending.push(uploaded);
        Ok(())
    };
    while let Some(pack) = rx.recv().await {
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let repo2 = repo.clone();
        running.spawn(async move {
            let r = upload_one(repo2, pack).await;
            drop(permit);
            r
        });
        while let Some(res) = running.try_join_next() {
            collect(res, &mut pending)?;
        }
        if pending.len() >= PACKS_PER_INDEX {
            indexes.push(repo.write_index(&pending).await?);
            pending.clear();
        }
    }
    while let Some(res) = running.join_next().await {
        collect(res, &mut pending)?;
    }
    if !pending.is_empty() {
        indexes.push(repo.write_index(&pending).await?);
    }
    Ok((packs, indexes))
}
