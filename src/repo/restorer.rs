//! Restoring many files at once, pack by pack.
//!
//! Files are planned together: every blob they need is looked up in the index, the blobs of
//! each pack are grouped into a few range requests of neighbours (up to a pack's worth), and
//! each blob, once fetched and authenticated, is written at its offset in every file that
//! holds it. A restore of many small files then costs about one request per pack instead of
//! one or more per file, and memory is a few ranges, whatever the number or size of the
//! files.
//!
//! Each file is written under a temporary name beside its own (`.NAME.drydock-tmp`) and only
//! handed to the caller, to check and move into place, once complete and synced: an
//! interrupted or failed restore never leaves a partial file under the real name, and the
//! temporary files of a failed restore are removed.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::blob::BlobType;
use super::index::BlobLocation;
use super::reader::{BlobReader, RUN_WASTE};
use super::writer::OnBytes;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};

/// Largest range request: a whole pack (16 MiB, plus the blob that overflowed it and the
/// header), so each pack is fetched once. Memory: the ranges in flight ([`IN_FLIGHT`] more
/// than `parallel`), one waiting, and one per writer with one blob's plaintext.
const RANGE_MAX: u64 = 26 * 1024 * 1024;

/// Ranges fetched at once beyond one per writer: a restore from S3 waits on request latency,
/// not on the CPU, so two more requests in flight keep the writers busy.
const IN_FLIGHT: usize = 2;

/// One file to write.
pub struct FileJob<'a> {
    /// Where the file belongs (its parent directory must exist).
    pub path: PathBuf,
    pub content: &'a [BlobId],
    pub size: u64,
}

/// A blob wanted from a pack and the (file, offset) places its plaintext goes.
struct Wanted {
    id: BlobId,
    loc: BlobLocation,
    places: Vec<(usize, u64)>,
}

/// Neighbouring wanted blobs of one pack, fetched with one range request.
struct Range {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Wanted>,
}

/// The temporary name a file is written under: `.NAME.drydock-tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.drydock-tmp"))
}

/// A temporary file removed when dropped: on error, and also when the restore is cancelled.
/// After the caller moved it into place there is nothing to remove.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write every job's content; `done(i, temp)` is called once job `i` is complete (written
/// to `temp` and synced), exactly once per job, from a blocking context, and must move
/// `temp` into place (or fail). Blocking file I/O runs on the runtime's blocking threads.
pub async fn restore_files<F>(
    reader: &BlobReader,
    jobs: &[FileJob<'_>],
    parallel: usize,
    progress: &dyn OnBytes,
    done: F,
) -> Result<()>
where
    F: Fn(usize, &Path) -> Result<()> + Sync,
{
    let (ranges, remaining) = plan(reader, jobs)?;
    let temps: Vec<TempFile> = jobs.iter().map(|j| TempFile(temp_path(&j.path))).collect();
    let out = Output {
        reader,
        temps: &temps,
        remaining: &remaining,
        done: &done,
    };
    // Downloads run on the runtime while `parallel` scoped threads authenticate and write, so
    // neither waits for the other (a writer may be syncing or hashing a large file).
    tokio::task::block_in_place(|| {
        for (i, job) in jobs.iter().enumerate() {
            create(&temps[i].0, job.size)?;
            if remaining[i].load(Ordering::Relaxed) == 0 {
                out.finish(i)?;
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Range, Bytes)>(1);
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
    reader: &'a BlobReader,
    temps: &'a [TempFile],
    remaining: &'a [AtomicUsize],
    done: &'a F,
}

impl<F: Fn(usize, &Path) -> Result<()>> Output<'_, F> {
    /// Authenticate the range's blobs one by one and write each where it goes: only one
    /// blob's plaintext is held at a time.
    fn write_range(&self, range: Range, bytes: Bytes, progress: &dyn OnBytes) -> Result<()> {
        for w in &range.blobs {
            let from = (w.loc.offset as u64 - range.start) as usize;
            let stored = &bytes[from..from + w.loc.length as usize];
            let data = self
                .reader
                .decode_one(&w.id, &w.loc, stored, BlobType::Data)?;
            for &(i, offset) in &w.places {
                let tmp = &self.temps[i].0;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(tmp)
                    .map_err(|e| Error::io(format!("cannot open {}", tmp.display()), e))?;
                file.write_all_at(&data, offset)
                    .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
                progress.bytes(data.len() as u64);
                if self.remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish(i)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&self, i: usize) -> Result<()> {
        let tmp = &self.temps[i].0;
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
        (self.done)(i, tmp)
    }
}

type Plan = (Vec<Range>, Vec<AtomicUsize>);

/// The ranges to fetch, packs in the order the files first need them, and per job the
/// number of blob writes it waits for.
fn plan(reader: &BlobReader, jobs: &[FileJob<'_>]) -> Result<Plan> {
    let mut packs: Vec<PackId> = Vec::new();
    let mut by_pack: HashMap<PackId, HashMap<BlobId, Wanted>> = HashMap::new();
    let mut remaining = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let mut offset = 0u64;
        for id in job.content {
            let loc = reader.locate(id, BlobType::Data)?;
            let blobs = by_pack.entry(loc.pack).or_insert_with(|| {
                packs.push(loc.pack);
                HashMap::new()
            });
            blobs
                .entry(*id)
                .or_insert_with(|| Wanted {
                    id: *id,
                    loc,
                    places: Vec::new(),
                })
                .places
                .push((i, offset));
            offset += loc.raw_length as u64;
        }
        if offset != job.size {
            return Err(Error::Integrity(format!(
                "the snapshot records {} bytes for {}, its chunks hold {offset}",
                job.size,
                job.path.display()
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
async fn fetch(reader: &BlobReader, range: Range) -> Result<(Range, Bytes)> {
    let bytes = reader
        .fetch_range(&range.pack, range.start, range.end)
        .await?;
    Ok((range, bytes))
}

fn create(tmp: &Path, size: u64) -> Result<()> {
    let file = std::fs::File::create(tmp)
        .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    // Sized up front: blobs arrive in pack order, not file order.
    file.set_len(size)
        .map_err(|e| Error::io(format!("cannot size {}", tmp.display()), e))
}
