//! Restoring many files at once, pack by pack.
//!
//! Files are planned together: every blob they need is looked up in the index, the blobs of
//! each pack are grouped into a few range requests of neighbours (up to a pack's worth), and
//! each blob, once fetched and authenticated, is written at its offset in every file that
//! holds it. A restore of many small files then costs about one request per pack instead of
//! one or more per file, and memory is `parallel` ranges, whatever the number or size of the
//! files.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::blob::BlobType;
use super::index::BlobLocation;
use super::reader::{BlobReader, RUN_WASTE};
use super::writer::OnBytes;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};

/// Largest range request: a whole pack (16 MiB, plus the blob that overflowed it and the
/// header), so each pack is fetched once. Memory: `parallel` ranges and their plaintext.
const RANGE_MAX: u64 = 26 * 1024 * 1024;

/// One file to write.
pub struct FileJob {
    /// Where the content goes (a temporary name: the caller moves it into place in `done`).
    pub path: PathBuf,
    pub content: Vec<BlobId>,
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

/// Write every job's content; `done(i)` is called once job `i` is complete (its file
/// synced), exactly once per job, from a blocking context. Blocking file I/O runs on the
/// runtime's blocking threads.
pub async fn restore_files<F>(
    reader: &BlobReader,
    jobs: &[FileJob],
    parallel: usize,
    progress: &dyn OnBytes,
    done: F,
) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let (ranges, remaining) = plan(reader, jobs)?;
    tokio::task::block_in_place(|| -> Result<()> {
        for (i, job) in jobs.iter().enumerate() {
            create(job)?;
            if remaining[i].load(Ordering::Relaxed) == 0 {
                finish(job, i, &done)?;
            }
        }
        Ok(())
    })?;
    stream::iter(ranges)
        .map(|range| fetch(reader, range))
        .buffer_unordered(parallel.max(1))
        .try_for_each(|(range, plain)| {
            let r = tokio::task::block_in_place(|| {
                write_range(jobs, &remaining, range, plain, progress, &done)
            });
            futures::future::ready(r)
        })
        .await
}

type Plan = (Vec<Range>, Vec<AtomicUsize>);

/// The ranges to fetch, packs in the order the files first need them, and per job the
/// number of blob writes it waits for.
fn plan(reader: &BlobReader, jobs: &[FileJob]) -> Result<Plan> {
    let mut packs: Vec<PackId> = Vec::new();
    let mut by_pack: HashMap<PackId, HashMap<BlobId, Wanted>> = HashMap::new();
    let mut remaining = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let mut offset = 0u64;
        for id in &job.content {
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

/// Fetch one range and authenticate its blobs.
async fn fetch(reader: &BlobReader, range: Range) -> Result<(Range, Vec<Vec<u8>>)> {
    let bytes: Bytes = reader
        .get_range(&range.pack, range.start, range.end - range.start)
        .await?;
    if (bytes.len() as u64) < range.end - range.start {
        return Err(Error::Integrity(format!(
            "pack {} is truncated",
            range.pack.short()
        )));
    }
    let items = range
        .blobs
        .iter()
        .map(|w| {
            let from = (w.loc.offset as u64 - range.start) as usize;
            (w.id, w.loc, bytes.slice(from..from + w.loc.length as usize))
        })
        .collect();
    let plain = reader.decode(items, BlobType::Data).await?;
    Ok((range, plain))
}

fn write_range<F: Fn(usize) -> Result<()>>(
    jobs: &[FileJob],
    remaining: &[AtomicUsize],
    range: Range,
    plain: Vec<Vec<u8>>,
    progress: &dyn OnBytes,
    done: &F,
) -> Result<()> {
    for (w, data) in range.blobs.iter().zip(plain) {
        for &(i, offset) in &w.places {
            let job = &jobs[i];
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&job.path)
                .map_err(|e| Error::io(format!("cannot open {}", job.path.display()), e))?;
            file.write_all_at(&data, offset)
                .map_err(|e| Error::io(format!("cannot write {}", job.path.display()), e))?;
            progress.bytes(data.len() as u64);
            if remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
                finish(job, i, done)?;
            }
        }
    }
    Ok(())
}

fn create(job: &FileJob) -> Result<()> {
    let file = std::fs::File::create(&job.path)
        .map_err(|e| Error::io(format!("cannot create {}", job.path.display()), e))?;
    // Sized up front: blobs arrive in pack order, not file order.
    file.set_len(job.size)
        .map_err(|e| Error::io(format!("cannot size {}", job.path.display()), e))
}

fn finish<F: Fn(usize) -> Result<()>>(job: &FileJob, i: usize, done: &F) -> Result<()> {
    std::fs::File::open(&job.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", job.path.display()), e))?;
    done(i)
}
