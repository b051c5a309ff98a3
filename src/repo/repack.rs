//! Repacking (FORMAT.md §11, prune step 4a): the blobs snapshots still use in a pack that is
//! mostly unused are copied, byte for byte, into new packs, and the old pack is marked like
//! an unused one.
//!
//! Copies are the stored bytes themselves (no decryption, so the maintenance key can repack
//! too). The old pack then goes through the same two phases and the same copy rule as any
//! other: at the next prune the new packs hold the blobs, the old one is unused, and it is
//! deleted only once every used blob in it has a verified copy elsewhere, which the new
//! packs are (byte-identical, so verified with either key).

use std::collections::HashMap;

use bytes::Bytes;

use super::blob::EncodedBlob;
use super::pack::{self, PackBuilder, PackEntry};
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{sha256, BlobId, PackId};

/// A pack worth rewriting, and the used blobs it holds (by the indexes' word: what is
/// copied comes from the pack's own authenticated header).
pub struct Candidate {
    pub pack: PackId,
    pub keep: Vec<PackEntry>,
}

/// Packs of which at least `threshold` (0–1) of the blob bytes are unused, with the
/// entries each still holds for snapshots (`holder` gives the pack each used blob is read
/// from).
pub fn candidates(
    packs: &HashMap<PackId, Vec<PackEntry>>,
    holder: &HashMap<BlobId, PackId>,
    threshold: f64,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = packs
        .iter()
        .filter_map(|(id, entries)| {
            let total: u64 = entries.iter().map(|e| e.length as u64).sum();
            let keep: Vec<PackEntry> = entries
                .iter()
                .filter(|e| holder.get(&e.id) == Some(id))
                .copied()
                .collect();
            let kept: u64 = keep.iter().map(|e| e.length as u64).sum();
            let unused = total.saturating_sub(kept) as f64;
            let worth = !keep.is_empty() && total > 0 && unused >= threshold * total as f64;
            worth.then_some(Candidate { pack: *id, keep })
        })
        .collect();
    out.sort_by_key(|c| c.pack);
    out
}

/// What a repack wrote.
#[derive(Default)]
pub struct Repacked {
    /// The old packs whose used blobs now have copies in new packs (to be marked).
    pub old: Vec<PackId>,
    pub new_packs: usize,
    pub bytes_copied: u64,
}

/// Copy the used blobs of each candidate into new packs and index them. A candidate whose
/// content does not hash to its name, or that is gone, is skipped: nothing is copied from a
/// pack prune could not trust.
pub async fn repack(repo: &Repository, candidates: &[Candidate]) -> Result<Repacked> {
    let mut done = Repacked::default();
    let mut builder = PackBuilder::default();
    for c in candidates {
        let bytes = match repo.store.get(&pack::key(&c.pack)).await {
            Ok(b) if sha256(&b) == c.pack.0 => b,
            Ok(_) | Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        // Offsets from the pack's own header, never an index's: a forged index could
        // otherwise have garbage copied under a used blob's id.
        let Ok(header) = repo.header_of(&bytes) else {
            continue;
        };
        let wanted: std::collections::HashSet<BlobId> = c.keep.iter().map(|e| e.id).collect();
        for e in header.iter().filter(|e| wanted.contains(&e.id)) {
            let range = e.offset as usize..e.offset as usize + e.length as usize;
            let Some(stored) = bytes.get(range) else {
                continue;
            };
            builder.add(EncodedBlob {
                blob_type: e.blob_type,
                id: e.id,
                raw_length: e.raw_length,
                bytes: stored.to_vec(),
                lookup: e.lookup,
            });
            done.bytes_copied += e.length as u64;
        }
        if builder.len() as u64 >= repo.config.pack_size {
            upload(repo, std::mem::take(&mut builder)).await?;
            done.new_packs += 1;
        }
        done.old.push(c.pack);
    }
    if !builder.is_empty() {
        upload(repo, builder).await?;
        done.new_packs += 1;
    }
    Ok(done)
}

/// Store one new pack, then its index object (a pack is never named before it exists).
async fn upload(repo: &Repository, builder: PackBuilder) -> Result<()> {
    let p = builder.finish(&repo.keys.objects);
    pack::upload(repo, &p.id, Bytes::clone(&p.bytes), &p.entries).await?;
    repo.write_index(&[(p.id, p.entries)]).await?;
    Ok(())
}
