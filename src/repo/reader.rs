//! Reading blobs back: locate in the index, fetch the bytes, decrypt, authenticate.
//!
//! Requests are what a restore from S3 pays for, so the reader makes few of them:
//! - consecutive blobs of a file that sit close together in one pack (a file's chunks,
//!   written by parallel workers, so nearly but not exactly in order) are fetched with one
//!   range request ([`BlobReader::load_stream`]), up to a whole pack;
//! - a small blob (a tree, a config file, a manifest) pulls in a 4 MiB window of its pack,
//!   kept in a small cache, so its neighbours — written by the same backup — come free.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};

use super::blob::{self, BlobType};
use super::index::{BlobLocation, MasterIndex};
use super::pack;
use super::tree::{RegistryEntry, Tree};
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};

/// Blobs smaller than this are read through the window cache.
const SMALL: u32 = 256 * 1024;
/// How much of a pack a small read brings in.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Windows kept (memory: WINDOWS × WINDOW at most).
const WINDOWS: usize = 8;
/// Largest single range request for a run of neighbouring blobs: a pack's worth.
pub(super) const RUN_MAX: u64 = 16 * 1024 * 1024;
/// Bytes of other blobs a run may fetch and throw away to stay one request.
pub(super) const RUN_WASTE: u64 = 2 * 1024 * 1024;
/// Largest plaintext a run decodes at once. COPY text compresses tenfold, so a run bounded
/// by stored bytes alone held 160 MiB of table rows, times the runs and tables in flight.
const RUN_PLAIN_MAX: u64 = 16 * 1024 * 1024;

struct Window {
    pack: PackId,
    start: u64,
    bytes: Bytes,
}

#[derive(Clone)]
pub struct BlobReader {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    windows: Arc<Mutex<VecDeque<Window>>>,
    /// Held while a window is fetched: concurrent readers of neighbouring small blobs (a
    /// restore plans directories 16 at a time) wait for it instead of fetching it again.
    window_fetch: Arc<tokio::sync::Mutex<()>>,
    /// Under Object Lock: the last pack read whole from an earlier version, because a bucket
    /// writer overwrote its current one (FORMAT.md §11.2).
    recovered: Arc<tokio::sync::Mutex<Option<(PackId, Bytes)>>>,
    /// Thaws a pack a read finds archived (InvalidObjectState); without it that read fails.
    thaw: Option<Arc<super::thaw::Thawer>>,
}

/// Blobs close together in one pack, fetched with one request and returned in the order
/// asked for (which need not be their order in the pack).
struct Run {
    pack: PackId,
    start: u64,
    end: u64,
    /// Bytes of the blobs asked for (`end - start - wanted` is fetched and thrown away).
    wanted: u64,
    /// Plaintext bytes of the blobs asked for, as the index gives them.
    plain: u64,
    blobs: Vec<(BlobId, BlobLocation)>,
}

impl Run {
    /// Take `loc` into this run if the covering range stays small and mostly wanted.
    fn absorb(&mut self, id: BlobId, loc: BlobLocation) -> bool {
        let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        let (from, to) = (self.start.min(start), self.end.max(end));
        // A chunk repeated within a file counts twice: that only makes merging easier.
        let wanted = self.wanted + loc.length as u64;
        let plain = self.plain + loc.raw_length as u64;
        if loc.pack != self.pack
            || to - from > RUN_MAX
            || to - from > wanted + RUN_WASTE
            || plain > RUN_PLAIN_MAX
        {
            return false;
        }
        (self.start, self.end, self.wanted, self.plain) = (from, to, wanted, plain);
        self.blobs.push((id, loc));
        true
    }
}

impl BlobReader {
    /// Needs the identity; fails with a key error otherwise.
    pub fn new(repo: Arc<Repository>, index: Arc<MasterIndex>, operation: &str) -> Result<Self> {
        repo.keys.identity(operation)?;
        Ok(BlobReader {
            repo,
            index,
            windows: Arc::new(Mutex::new(VecDeque::new())),
            window_fetch: Arc::new(tokio::sync::Mutex::new(())),
            recovered: Arc::default(),
            thaw: None,
        })
    }

    /// Thaw with `thawer` whatever a read finds archived, then read it.
    pub fn with_thaw(mut self, thawer: Arc<super::thaw::Thawer>) -> Self {
        self.thaw = Some(thawer);
        self
    }

    /// Where to read blob `id`: the first location the indexes give that passes
    /// [`check_location`](Self::check_location). A false entry from a forged index (wrong
    /// type, impossible lengths) thus never hides a good copy.
    pub(super) fn locate(&self, id: &BlobId, expected: BlobType) -> Result<BlobLocation> {
        let primary = self.index.get(id).ok_or_else(|| {
            Error::Integrity(format!(
                "blob {} is not in the index (its pack or index object is missing)",
                id.short()
            ))
        })?;
        let checked = self.check_location(id, primary, expected);
        if checked.is_ok() || !self.index.has_copies(id) {
            return checked;
        }
        self.other_locations(id, primary, expected)
            .next()
            .map_or(checked, Ok)
    }

    /// The locations of `id` besides `first` that pass the checks, in index order.
    fn other_locations<'a>(
        &'a self,
        id: &'a BlobId,
        first: BlobLocation,
        expected: BlobType,
    ) -> impl Iterator<Item = BlobLocation> + 'a {
        self.index
            .locations(id)
            .into_iter()
            .filter(move |l| *l != first)
            .filter_map(move |l| self.check_location(id, l, expected).ok())
    }

    /// An index location is believed only with the expected type and lengths within the
    /// format's bounds, before the planner or a fetch trusts it: the index is not
    /// authenticated.
    fn check_location(
        &self,
        id: &BlobId,
        loc: BlobLocation,
        expected: BlobType,
    ) -> Result<BlobLocation> {
        if loc.blob_type != expected {
            return Err(Error::Integrity(format!(
                "blob {} has type {:?}, expected {expected:?}",
                id.short(),
                loc.blob_type
            )));
        }
        blob::check_lengths(expected, loc.length, loc.raw_length).map_err(|why| {
            Error::Integrity(format!(
                "blob {} is corrupt: {why} (pack {})",
                id.short(),
                loc.pack.short()
            ))
        })?;
        Ok(loc)
    }

    pub(super) async fn get_range(&self, pack: &PackId, start: u64, len: u64) -> Result<Bytes> {
        let key = pack::key(pack);
        let mut read = self.repo.store.get_range(&key, start, len).await;
        if let (Err(Error::Cold(why)), Some(thaw)) = (&read, &self.thaw) {
            thaw.thaw_one(pack, Error::Cold(why.clone())).await?;
            read = self.repo.store.get_range(&key, start, len).await;
        }
        read.map_err(|e| match e {
            Error::NotFound(_) => Error::Integrity(format!("pack {} is missing", pack.short())),
            other => other,
        })
    }

    fn cached(&self, loc: &BlobLocation) -> Option<Bytes> {
        let (off, len) = (loc.offset as u64, loc.length as u64);
        let windows = self.windows.lock().expect("lock");
        windows.iter().find_map(|w| {
            (w.pack == loc.pack && w.start <= off && off + len <= w.start + w.bytes.len() as u64)
                .then(|| {
                    w.bytes
                        .slice((off - w.start) as usize..(off - w.start + len) as usize)
                })
        })
    }

    /// The stored bytes of one blob.
    async fn fetch(&self, id: &BlobId, loc: &BlobLocation) -> Result<Bytes> {
        let bytes = if loc.length < SMALL {
            self.fetch_small(loc).await?
        } else {
            self.get_range(&loc.pack, loc.offset as u64, loc.length as u64)
                .await?
        };
        if bytes.len() != loc.length as usize {
            return Err(Error::Integrity(format!(
                "pack {} is truncated (blob {} cut short)",
                loc.pack.short(),
                id.short()
            )));
        }
        Ok(bytes)
    }

    /// A small blob, through the window cache (possibly cut short if the pack is).
    async fn fetch_small(&self, loc: &BlobLocation) -> Result<Bytes> {
        if let Some(b) = self.cached(loc) {
            return Ok(b);
        }
        let _fetching = self.window_fetch.lock().await;
        if let Some(b) = self.cached(loc) {
            return Ok(b); // another reader fetched it meanwhile
        }
        let window = self.get_range(&loc.pack, loc.offset as u64, WINDOW).await?;
        let n = window.len().min(loc.length as usize);
        let blob = window.slice(..n);
        let mut windows = self.windows.lock().expect("lock");
        if windows.len() == WINDOWS {
            windows.pop_back();
        }
        windows.push_front(Window {
            pack: loc.pack,
            start: loc.offset as u64,
            bytes: window,
        });
        Ok(blob)
    }

    /// Decrypt, decompress and authenticate, off the async threads.
    pub(super) async fn decode(
        &self,
        items: Vec<(BlobId, BlobLocation, Bytes)>,
        expected: BlobType,
    ) -> Result<Vec<Vec<u8>>> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            items
                .iter()
                .map(|(id, loc, bytes)| reader.decode_one(id, loc, bytes, expected))
                .collect()
        })
        .await
        .map_err(|e| Error::Other(format!("decode task failed: {e}")))?
    }

    /// Decrypt, decompress and authenticate one blob's stored bytes. Blocking.
    pub(super) fn decode_one(
        &self,
        id: &BlobId,
        loc: &BlobLocation,
        bytes: &[u8],
        expected: BlobType,
    ) -> Result<Vec<u8>> {
        let keys = &self.repo.keys;
        blob::decode(
            keys.identity("reading data")?,
            keys.chunk_key("reading")?,
            expected,
            id,
            loc.raw_length,
            bytes,
        )
        .map_err(|e| match e {
            Error::Integrity(m) => Error::Integrity(format!("{m} (pack {})", loc.pack.short())),
            other => other,
        })
    }

    /// Whether the indexes name more than one location for `id`.
    pub fn has_copies(&self, id: &BlobId) -> bool {
        self.index.has_copies(id)
    }

    /// Whether [`load`](Self::load) has somewhere else to read blob `id` from when one copy
    /// fails: another copy, or under Object Lock an earlier version of its pack.
    pub fn can_fall_back(&self, id: &BlobId) -> bool {
        self.has_copies(id) || self.repo.config.object_lock.is_some()
    }

    /// Whether the copy of blob `id` at `loc` is really there: fetched and authenticated
    /// against its keyed id. Damage answers `false`; a store failure is an error.
    pub async fn authenticates_at(&self, id: &BlobId, loc: BlobLocation) -> Result<bool> {
        let checked = async {
            let bytes = self.fetch(id, &loc).await?;
            self.decode(vec![(*id, loc, bytes)], loc.blob_type).await
        };
        match checked.await {
            Ok(_) => Ok(true),
            Err(Error::Integrity(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One blob, from the first of its locations that authenticates: a damaged copy, or a
    /// false index entry, falls back to the next.
    pub async fn load(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let first = self.locate(id, expected)?;
        let others: Vec<BlobLocation> = match self.index.has_copies(id) {
            true => self.other_locations(id, first, expected).collect(),
            false => Vec::new(),
        };
        let mut failed = None;
        let locations: Vec<BlobLocation> = std::iter::once(first).chain(others).collect();
        for loc in &locations {
            match self.load_at(id, *loc, expected).await {
                Ok(data) => return Ok(data),
                Err(e @ Error::Integrity(_)) => {
                    failed.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        for loc in &locations {
            if let Some(data) = self.load_from_earlier_version(id, *loc, expected).await? {
                return Ok(data);
            }
        }
        Err(failed.expect("at least the first location was tried"))
    }

    /// Under Object Lock, the blob from the newest earlier version of its pack that matches
    /// the pack's name, when the current one was overwritten; `None` otherwise.
    async fn load_from_earlier_version(
        &self,
        id: &BlobId,
        loc: BlobLocation,
        expected: BlobType,
    ) -> Result<Option<Vec<u8>>> {
        let mut recovered = self.recovered.lock().await;
        if recovered.as_ref().is_none_or(|(p, _)| *p != loc.pack) {
            let Some(bytes) = self.repo.recovered_pack(&loc.pack).await? else {
                return Ok(None);
            };
            *recovered = Some((loc.pack, bytes));
        }
        let (_, bytes) = recovered.as_ref().expect("just set");
        let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
        let Some(stored) = bytes.get(range).map(|b| bytes.slice_ref(b)) else {
            return Ok(None);
        };
        drop(recovered);
        match self.decode(vec![(*id, loc, stored)], expected).await {
            Ok(mut out) => Ok(out.pop()),
            Err(Error::Integrity(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn load_at(&self, id: &BlobId, loc: BlobLocation, expected: BlobType) -> Result<Vec<u8>> {
        let bytes = self.fetch(id, &loc).await?;
        let mut out = self.decode(vec![(*id, loc, bytes)], expected).await?;
        Ok(out.pop().expect("one blob"))
    }

    /// Group `ids` into runs of neighbours in one pack.
    fn runs(&self, ids: &[BlobId], expected: BlobType) -> Vec<Result<Run>> {
        let mut runs: Vec<Result<Run>> = Vec::new();
        for id in ids {
            let loc = match self.locate(id, expected) {
                Ok(l) => l,
                Err(e) => {
                    runs.push(Err(e));
                    continue;
                }
            };
            if let Some(Ok(run)) = runs.last_mut() {
                if run.absorb(*id, loc) {
                    continue;
                }
            }
            runs.push(Ok(Run {
                pack: loc.pack,
                start: loc.offset as u64,
                end: loc.offset as u64 + loc.length as u64,
                wanted: loc.length as u64,
                plain: loc.raw_length as u64,
                blobs: vec![(*id, loc)],
            }));
        }
        runs
    }

    async fn load_run(&self, run: Result<Run>, expected: BlobType) -> Result<Vec<Vec<u8>>> {
        let run = run?;
        let once = if let [(id, loc)] = run.blobs.as_slice() {
            self.load_at(id, *loc, expected).await.map(|b| vec![b])
        } else {
            self.load_range(&run.pack, run.start, run.end, &run.blobs, expected)
                .await
        };
        match once {
            // Blobs with other copies (or earlier pack versions) are tried one by one.
            Err(Error::Integrity(_)) if run.blobs.iter().any(|(id, _)| self.can_fall_back(id)) => {
                let mut out = Vec::with_capacity(run.blobs.len());
                for (id, _) in &run.blobs {
                    out.push(self.load(id, expected).await?);
                }
                Ok(out)
            }
            other => other,
        }
    }

    /// `start..end` of a pack, whole (a short read is damage).
    pub(super) async fn fetch_range(&self, pack: &PackId, start: u64, end: u64) -> Result<Bytes> {
        let bytes = self.get_range(pack, start, end - start).await?;
        if (bytes.len() as u64) < end - start {
            return Err(Error::Integrity(format!(
                "pack {} is truncated",
                pack.short()
            )));
        }
        Ok(bytes)
    }

    /// Fetch `start..end` of a pack with one request and decode the blobs in it, in the
    /// order given (any order within the range).
    pub(super) async fn load_range(
        &self,
        pack: &PackId,
        start: u64,
        end: u64,
        blobs: &[(BlobId, BlobLocation)],
        expected: BlobType,
    ) -> Result<Vec<Vec<u8>>> {
        let bytes = self.fetch_range(pack, start, end).await?;
        let items = blobs
            .iter()
            .map(|&(id, loc)| {
                let from = (loc.offset as u64 - start) as usize;
                (id, loc, bytes.slice(from..from + loc.length as usize))
            })
            .collect();
        self.decode(items, expected).await
    }

    /// Every blob of `ids`, in order, with up to `parallel` range requests in flight.
    pub fn load_stream<'a>(
        &'a self,
        ids: &'a [BlobId],
        expected: BlobType,
        parallel: usize,
    ) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'a {
        stream::iter(self.runs(ids, expected))
            .map(move |run| self.load_run(run, expected))
            .buffered(parallel.max(1))
            .flat_map(|r| {
                let items: Vec<Result<Vec<u8>>> = match r {
                    Ok(blobs) => blobs.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(items)
            })
    }

    pub async fn load_registry(&self, id: &BlobId) -> Result<RegistryEntry> {
        let bytes = self.load(id, BlobType::Registry).await?;
        RegistryEntry::parse(&bytes).map_err(|e| {
            Error::Integrity(format!("registry blob {} is malformed: {e}", id.short()))
        })
    }

    /// The blobs a tree or registry blob names, with their types.
    pub async fn children(
        &self,
        id: &BlobId,
        blob_type: BlobType,
    ) -> Result<Vec<(BlobId, BlobType)>> {
        Ok(match blob_type {
            BlobType::Tree => self
                .load_tree(id)
                .await?
                .referenced_blobs()
                .map(|(b, t)| (*b, t))
                .collect(),
            BlobType::Registry => self
                .load_registry(id)
                .await?
                .content
                .into_iter()
                .map(|b| (b, BlobType::Data))
                .collect(),
            BlobType::Data => Vec::new(),
        })
    }

    pub async fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.load(id, BlobType::Tree).await?;
        Tree::parse(&bytes)
            .map_err(|e| Error::Integrity(format!("tree {} is malformed: {e}", id.short())))
    }
}
