//! Restoring many files at once, pack by pack.
//!
//! Files are planned together: every blob they need is looked up in the index, the blobs of
//! each pack are grouped into a few range requests of neighbours (up to a pack's worth), and
//! each blob, once fetched and authenticated, is written at its offset in every file that
//! holds it. A restore of many small files then costs about one request per pack instead of
//! one or more per file, and memory is a few ranges, whatever the number or size of the
//! files.
//!
//! Each file is written under a fresh random temporary name beside its own
//! (`.drydock-<16 hex>.tmp`, created exclusively, so never an existing entry or a link) and
//! only handed to the caller, to check and move into place, once complete and synced: an
//! interrupted or failed restore never leaves a partial file under the real name, and the
//! temporary files of a failed restore are removed. Every path is resolved beneath the
//! target ([`crate::beneath`]); a file is reopened per write rather than held open, so the
//! number of files is not bounded by the open-file limit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::blob::BlobType;
use super::index::BlobLocation;
use super::reader::{BlobReader, RUN_WASTE};
use super::writer::OnBytes;
use crate::beneath::{Dir, Root};
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use rustix::fs::OFlags;

/// Largest range request: a whole pack (16 MiB, plus the blob that overflowed it and the
/// header), so each pack is fetched once. Memory: the ranges in flight ([`IN_FLIGHT`] more
/// than `parallel`), one waiting, and one per writer with one blob's plaintext.
const RANGE_MAX: u64 = 26 * 1024 * 1024;

/// Ranges fetched at once beyond one per writer: a restore from S3 waits on request latency,
/// not on the CPU, so two more requests in flight keep the writers busy.
const IN_FLIGHT: usize = 2;

/// One file to write.
pub struct FileJob<'a> {
    /// Where the file belongs, relative to the target (its parent directory must exist).
    pub path: PathBuf,
    pub content: &'a [BlobId],
    pub size: u64,
}

/// A blob wanted from a pack and the (file, offset, length) places its plaintext goes: the
/// length is the whole plaintext but for a sealed small file's padding (FORMAT.md §5).
struct Wanted {
    id: BlobId,
    loc: BlobLocation,
    places: Vec<(usize, u64, usize)>,
}

/// Neighbouring wanted blobs of one pack, fetched with one range request.
struct Range {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Wanted>,
}

/// A job's temporary file, removed when dropped unless it was moved into place: on error,
/// and also when the restore is cancelled.
struct TempFile<'r> {
    root: &'r Root,
    parent: PathBuf,
    name: String,
    /// `parent/name`, resolved beneath the target on every open.
    rel: PathBuf,
    placed: AtomicBool,
}

impl<'r> TempFile<'r> {
    /// Create the temporary file of `job`, sized up front: blobs arrive in pack order, not
    /// file order.
    fn create(root: &'r Root, job: &FileJob<'_>) -> Result<Self> {
        let parent = job.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let (name, file) = root.dir(&parent)?.create_temp()?;
        let rel = parent.join(&name);
        let temp = TempFile {
            root,
            parent,
            name,
            rel,
            placed: AtomicBool::new(false),
        };
        file.set_len(job.size)
            .map_err(|e| Error::io(format!("cannot size {}", temp.shown().display()), e))?;
        Ok(temp)
    }

    fn shown(&self) -> PathBuf {
        self.root.shown(&self.rel)
    }

    fn open(&self, flags: OFlags) -> Result<File> {
        self.root.open_file(&self.rel, flags)
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.placed.load(Ordering::Acquire) {
            if let Ok(dir) = self.root.dir(&self.parent) {
                let _ = dir.remove(&self.name);
            }
        }
    }
}

/// A complete file, written and synced under its temporary name, handed to `done`.
pub struct Staged<'a> {
    /// The file, open for reading and writing at offset 0 (set metadata through it).
    pub file: File,
    /// The directory it is in, opened beneath the target.
    pub dir: Dir<'a>,
    /// Its final name in `dir`.
    pub name: &'a str,
    temp: &'a TempFile<'a>,
}

impl Staged<'_> {
    /// Move the file to its final name (replacing a file or symlink there, never
    /// following it).
    pub fn commit(self) -> Result<()> {
        self.dir.rename(&self.temp.name, self.name)?;
        self.temp.placed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Write every job's content below `root`; `done(i, staged)` is called once job `i` is
/// complete (written and synced), exactly once per job, from a blocking context, and must
/// [`Staged::commit`] it (or fail). Blocking file I/O runs on the runtime's blocking threads.
pub async fn restore_files<F>(
    reader: &BlobReader,
    root: &Root,
    jobs: &[FileJob<'_>],
    parallel: usize,
    progress: &dyn OnBytes,
    done: F,
) -> Result<()>
where
    F: Fn(usize, Staged<'_>) -> Result<()> + Sync,
{
    let (ranges, remaining) = plan(reader, root, jobs)?;
    // Downloads run on the runtime while `parallel` scoped threads authenticate and write, so
    // neither waits for the other (a writer may be syncing or hashing a large file).
    tokio::task::block_in_place(|| {
        remove_leftovers(root, jobs)?;
        let temps = jobs
            .iter()
            .map(|job| TempFile::create(root, job))
            .collect::<Result<Vec<_>>>()?;
        let out = Output {
            runtime: tokio::runtime::Handle::current(),
            reader,
            jobs,
            temps: &temps,
            remaining: &remaining,
            done: &done,
        };
        for (i, left) in remaining.iter().enumerate() {
            if left.load(Ordering::Relaxed) == 0 {
                out.finish(i)?;
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Range, Fetched)>(1);
        let rx = Mutex::new(rx);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let fetched = std::thread::scope(|scope| {
            for _ in 0..parallel.max(1) {
                scope.spawn(|| {
                    // Keep receiving after a failure, so the sender never blocks.
                    while let Ok((range, bytes)) = rx.lock().expect("lock").recv() {
                        if failed.lock().expect("lock").is_some() {
                            continue;
                        }
                        if let Err(e) = out.write_range(range, bytes, progress) {
                            failed.lock().expect("lock").get_or_insert(e);
                        }
                    }
                });
            }
            let fetched = tokio::runtime::Handle::current().block_on(
                stream::iter(ranges)
                    .map(|range| fetch(reader, range))
                    .buffer_unordered(parallel.max(1) + IN_FLIGHT)
                    .try_for_each(|item| {
                        let stop = failed.lock().expect("lock").is_some() || tx.send(item).is_err();
                        futures::future::ready(if stop {
                            Err(Error::Other("stopped".into()))
                        } else {
                            Ok(())
                        })
                    }),
            );
            drop(tx);
            fetched
        });
        // A writer's error explains a stopped download better than "stopped".
        match failed.into_inner().expect("lock") {
            Some(e) => Err(e),
            None => fetched,
        }
    })
}

/// Where fetched blobs go.
struct Output<'a, F> {
    /// For reading other copies from the writer threads.
    runtime: tokio::runtime::Handle,
    reader: &'a BlobReader,
    jobs: &'a [FileJob<'a>],
    temps: &'a [TempFile<'a>],
    remaining: &'a [AtomicUsize],
    done: &'a F,
}

impl<F: Fn(usize, Staged<'_>) -> Result<()>> Output<'_, F> {
    /// Authenticate the range's blobs one by one and write each where it goes: only one
    /// blob's plaintext is held at a time.
    fn write_range(&self, range: Range, bytes: Fetched, progress: &dyn OnBytes) -> Result<()> {
        for w in &range.blobs {
            let data = self.blob(&range, &bytes, w)?;
            for &(i, offset, len) in &w.places {
                let tmp = &self.temps[i];
                let data = data.get(..len).ok_or_else(|| {
                    Error::Integrity(format!(
                        "blob {} is shorter than its index entry",
                        w.id.short()
                    ))
                })?;
                tmp.open(OFlags::WRONLY)?
                    .write_all_at(data, offset)
                    .map_err(|e| Error::io(format!("cannot write {}", tmp.shown().display()), e))?;
                progress.bytes(data.len() as u64);
                if self.remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish(i)?;
                }
            }
        }
        Ok(())
    }

    /// One wanted blob's plaintext: from the range, or, where that copy is damaged or
    /// missing, from the first other copy (or earlier pack version) that authenticates.
    fn blob(&self, range: &Range, bytes: &Fetched, w: &Wanted) -> Result<Vec<u8>> {
        let here = match bytes {
            Ok(bytes) => {
                let from = (w.loc.offset as u64 - range.start) as usize;
                let stored = &bytes[from..from + w.loc.length as usize];
                self.reader
                    .decode_one(&w.id, &w.loc, stored, BlobType::Data)
            }
            Err(why) => Err(Error::Integrity(why.clone())),
        };
        match here {
            Err(Error::Integrity(_)) if self.reader.can_fall_back(&w.id) => self
                .runtime
                .block_on(self.reader.load(&w.id, BlobType::Data)),
            other => other,
        }
    }

    fn finish(&self, i: usize) -> Result<()> {
        let tmp = &self.temps[i];
        let file = tmp.open(OFlags::RDWR)?;
        file.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", tmp.shown().display()), e))?;
        let name = self.jobs[i]
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::Integrity(format!("{} names no file", self.jobs[i].path.display()))
            })?;
        let staged = Staged {
            file,
            dir: tmp.root.dir(&tmp.parent)?,
            name,
            temp: tmp,
        };
        (self.done)(i, staged)
    }
}

/// An interrupted restore leaves its temporary files (random names, so a re-run does not
/// reuse them): remove those in every directory this restore writes files into, before it
/// creates its own.
fn remove_leftovers(root: &Root, jobs: &[FileJob<'_>]) -> Result<()> {
    let mut dirs: HashMap<&Path, HashSet<&str>> = HashMap::new();
    for job in jobs {
        let names = dirs
            .entry(job.path.parent().unwrap_or(Path::new("")))
            .or_default();
        names.extend(job.path.file_name().and_then(|n| n.to_str()));
    }
    for (dir, keep) in dirs {
        root.dir(dir)?.remove_leftover_temps(&keep)?;
    }
    Ok(())
}

type Plan = (Vec<Range>, Vec<AtomicUsize>);

/// The ranges to fetch, packs in the order the files first need them, and per job the
/// number of blob writes it waits for.
fn plan(reader: &BlobReader, root: &Root, jobs: &[FileJob<'_>]) -> Result<Plan> {
    let mut packs: Vec<PackId> = Vec::new();
    let mut by_pack: HashMap<PackId, HashMap<BlobId, Wanted>> = HashMap::new();
    let mut remaining = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let mut offset = 0u64;
        for (n, id) in job.content.iter().enumerate() {
            let loc = reader.locate(id, BlobType::Data)?;
            let blobs = by_pack.entry(loc.pack).or_insert_with(|| {
                packs.push(loc.pack);
                HashMap::new()
            });
            // Only the last blob may hold more than the file (a sealed file's padding).
            let len = match n + 1 == job.content.len() {
                true => (loc.raw_length as u64).min(job.size.saturating_sub(offset)),
                false => loc.raw_length as u64,
            };
            blobs
                .entry(*id)
                .or_insert_with(|| Wanted {
                    id: *id,
                    loc,
                    places: Vec::new(),
                })
                .places
                .push((i, offset, len as usize));
            offset += len;
        }
        if offset != job.size {
            return Err(Error::Integrity(format!(
                "the snapshot records {} bytes for {}, its chunks hold {offset}",
                job.size,
                root.shown(&job.path).display()
            )));
        }
        remaining.push(AtomicUsize::new(job.content.len()));
    }
    let mut ranges = Vec::new();
    for pack in packs {
        let mut blobs: Vec<Wanted> = by_pack
            .remove(&pack)
            .unwrap_or_default()
            .into_values()
            .collect();
        blobs.sort_by_key(|w| w.loc.offset);
        for w in blobs {
            let (start, end) = (
                w.loc.offset as u64,
                w.loc.offset as u64 + w.loc.length as u64,
            );
            match ranges.last_mut() {
                Some(Range {
                    pack: p,
                    start: s,
                    end: e,
                    blobs,
                }) if *p == pack && start <= *e + RUN_WASTE && end - *s <= RANGE_MAX => {
                    *e = (*e).max(end);
                    blobs.push(w);
                }
                _ => ranges.push(Range {
                    pack,
                    start,
                    end,
                    blobs: vec![w],
                }),
            }
        }
    }
    Ok((ranges, remaining))
}

/// Fetch one range (its blobs are authenticated by the writer that takes it).
async fn fetch(reader: &BlobReader, range: Range) -> Result<(Range, Fetched)> {
    match reader
        .fetch_range(&range.pack, range.start, range.end)
        .await
    {
        Ok(bytes) => Ok((range, Ok(bytes))),
        // A missing or cut pack is no loss for blobs the indexes name other copies of: the
        // writer reads those from the copies.
        Err(Error::Integrity(why)) if range.blobs.iter().any(|w| reader.can_fall_back(&w.id)) => {
            Ok((range, Err(why)))
        }
        Err(e) => Err(e),
    }
}

/// A range's bytes, or why they could not be had (when some of its blobs have other copies).
type Fetched = std::result::Result<Bytes, String>;
