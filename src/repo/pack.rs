//! Packs: many encrypted blobs in one object, with an authenticated header at the end.
//!
//! `blob_0 ‖ … ‖ blob_{n-1} ‖ header ‖ header_len: u32le ‖ tag: [32] ‖ "DDPACK02"`, where
//! `header = n: u32le ‖ entry_0 ‖ … ‖ entry_{n-1}`, an entry is `type: u8 ‖ id: [32] ‖
//! length: u32le ‖ raw_length: u32le` (registry blobs add their `lookup: [32]`), blob i starts
//! where blob i-1 ends, and the tag is the object key's over the header (FORMAT.md §6). The
//! pack is named by the SHA-256 of all its bytes.

use bytes::Bytes;

use super::auth::{Authenticator, Kind, Tag};
use super::blob::{BlobType, EncodedBlob};
use crate::error::{Error, Result};
use crate::ids::{sha256, BlobId, LookupKey, PackId};
use crate::store::PutMode;

pub const MAGIC: &[u8; 8] = b"DDPACK02";
/// `header_len ‖ tag ‖ magic`.
pub const TRAILER_LEN: usize = 4 + Tag::LEN + MAGIC.len();
/// The smallest entry (data and tree blobs); a registry blob's adds its lookup key.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4;

/// Where a blob sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    /// Registry blobs only: the key that finds it by digest.
    pub lookup: Option<LookupKey>,
}

#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Bytes,
    pub entries: Vec<PackEntry>,
}

/// Write a pack: a data pack (only data blobs) in the repository's data storage class,
/// any other (trees, registry entries) in the default one, because every command reads
/// those to plan and they must never need a thaw (FORMAT.md §6.1).
pub async fn upload(
    repo: &super::Repository,
    id: &PackId,
    bytes: Bytes,
    entries: &[PackEntry],
) -> Result<()> {
    let data_only = entries.iter().all(|e| e.blob_type == BlobType::Data);
    let key = key(id);
    match repo.data_class()? {
        Some(class) if data_only => {
            repo.store
                .put_in_class(&key, bytes, PutMode::Overwrite, &class)
                .await?
        }
        _ => repo.store.put(&key, bytes, PutMode::Overwrite).await?,
    };
    Ok(())
}

/// The key prefix of every pack.
pub const PREFIX: &str = "packs/";

/// The pack a key under [`PREFIX`] names, if it names one.
pub fn id_of_key(key: &str) -> Option<PackId> {
    let name = key.strip_prefix(PREFIX)?.rsplit('/').next()?;
    PackId::from_hex(name).ok()
}

pub fn key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

/// Append the fields a pack entry and an index entry share after the id.
pub(super) fn put_lengths(out: &mut Vec<u8>, e: &PackEntry) {
    out.extend_from_slice(&e.length.to_le_bytes());
    out.extend_from_slice(&e.raw_length.to_le_bytes());
}

pub(super) fn put_lookup(out: &mut Vec<u8>, e: &PackEntry) {
    if let Some(l) = &e.lookup {
        out.extend_from_slice(&l.0);
    }
}

impl PackBuilder {
    pub fn add(&mut self, blob: EncodedBlob) {
        self.entries.push(PackEntry {
            blob_type: blob.blob_type,
            id: blob.id,
            offset: self.buf.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
            lookup: blob.lookup,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self, auth: &Authenticator) -> FinishedPack {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            self.buf.push(e.blob_type as u8);
            self.buf.extend_from_slice(&e.id.0);
            put_lengths(&mut self.buf, e);
            put_lookup(&mut self.buf, e);
        }
        let tag = auth.tag(Kind::Pack, &[&self.buf[start..]]);
        let header_len = (self.buf.len() - start) as u32;
        self.buf.extend_from_slice(&header_len.to_le_bytes());
        self.buf.extend_from_slice(&tag.0);
        self.buf.extend_from_slice(MAGIC);
        FinishedPack {
            id: PackId(sha256(&self.buf)),
            bytes: Bytes::from(self.buf),
            entries: self.entries,
        }
    }
}

/// The bytes a pack's header and trailer take for these entries.
pub fn header_size(entries: &[PackEntry]) -> u64 {
    let lookups = entries.iter().filter(|e| e.lookup.is_some()).count();
    (4 + entries.len() * ENTRY_LEN + lookups * 32 + TRAILER_LEN) as u64
}

/// How many bytes at the end of a pack hold its header and trailer, read from the trailer.
pub fn header_len(trailer: &[u8], pack_len: u64) -> Result<usize> {
    if trailer.len() != TRAILER_LEN || &trailer[TRAILER_LEN - MAGIC.len()..] != MAGIC {
        return Err(Error::Integrity(
            "pack trailer is missing or damaged (not a version 2 pack)".into(),
        ));
    }
    let header = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    let len = header
        .checked_add(TRAILER_LEN)
        .filter(|n| *n as u64 <= pack_len && header >= 4)
        .ok_or_else(|| Error::Integrity("pack header is longer than the pack".into()))?;
    Ok(len)
}

/// Parse and authenticate the header and trailer at the end of a pack of `pack_len` bytes.
pub fn parse_header(tail: &[u8], pack_len: u64, auth: &Authenticator) -> Result<Vec<PackEntry>> {
    if tail.len() < TRAILER_LEN {
        return Err(Error::Integrity("pack is too short for a header".into()));
    }
    let expected = header_len(&tail[tail.len() - TRAILER_LEN..], pack_len)?;
    if tail.len() != expected {
        return Err(Error::Integrity(
            "pack header length is inconsistent".into(),
        ));
    }
    let header = &tail[..expected - TRAILER_LEN];
    let tag = Tag::from_slice(&tail[expected - TRAILER_LEN + 4..expected - MAGIC.len()])
        .expect("32 bytes");
    if !auth.verify(Kind::Pack, &[header], &tag) {
        return Err(Error::Integrity(
            "pack header is not authentic: no key holder wrote it".into(),
        ));
    }
    let entries = parse_entries(header, pack_len - expected as u64)?;
    Ok(entries)
}

/// `n ‖ entries`, checked to describe exactly `data_len` bytes of blobs.
fn parse_entries(header: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
    let mut c = super::index::Cursor(header);
    let n = c.u32()? as usize;
    if n.saturating_mul(ENTRY_LEN) > c.0.len() {
        return Err(Error::Integrity("pack header is truncated".into()));
    }
    let mut offset: u64 = 0;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let blob_type = c.blob_type("pack header")?;
        let id = BlobId(c.id()?);
        // Offsets are u32 in the index: a blob starting past 4 GiB cannot be recorded
        // (drydock writes packs of at most 2 GiB and one blob; found by fuzzing).
        let offset32 = u32::try_from(offset).map_err(|_| {
            Error::Integrity(format!(
                "pack header places a blob at offset {offset}, beyond the format's 4 GiB"
            ))
        })?;
        let length = c.u32()?;
        let raw_length = c.u32()?;
        let lookup = c.lookup(blob_type)?;
        entries.push(PackEntry {
            blob_type,
            id,
            offset: offset32,
            length,
            raw_length,
            lookup,
        });
        offset += length as u64;
    }
    if !c.0.is_empty() {
        return Err(Error::Integrity("pack header has trailing bytes".into()));
    }
    if offset != data_len {
        return Err(Error::Integrity(format!(
            "pack header describes {offset} bytes of blobs but the pack holds {data_len}"
        )));
    }
    Ok(entries)
}

/// Format version 1 packs (`entries ‖ n ‖ "DDPACK01"`, no tag), read only by `drydock migrate`.
pub mod v1 {
    use super::*;

    pub const MAGIC: &[u8; 8] = b"DDPACK01";
    pub const TRAILER_LEN: usize = 4 + MAGIC.len();

    pub fn header_len(trailer: &[u8], pack_len: u64) -> Result<usize> {
        if trailer.len() != TRAILER_LEN || &trailer[4..] != MAGIC {
            return Err(Error::Integrity("not a version 1 pack trailer".into()));
        }
        let count = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
        count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(TRAILER_LEN))
            .filter(|n| *n as u64 <= pack_len)
            .ok_or_else(|| Error::Integrity("pack header is longer than the pack".into()))
    }

    /// Entries of a v1 header, whose registry blobs carry no lookup key: the migration
    /// computes one from each registry blob's digest line.
    pub fn parse_header(tail: &[u8], pack_len: u64) -> Result<Vec<PackEntry>> {
        let expected = header_len(&tail[tail.len().saturating_sub(TRAILER_LEN)..], pack_len)?;
        if tail.len() != expected {
            return Err(Error::Integrity(
                "pack header length is inconsistent".into(),
            ));
        }
        let n = (expected - TRAILER_LEN) / ENTRY_LEN;
        let mut header = (n as u32).to_le_bytes().to_vec();
        for raw in tail[..expected - TRAILER_LEN].chunks_exact(ENTRY_LEN) {
            if raw[0] == BlobType::Registry as u8 {
                // Same bytes as v2 but without a lookup: give it a placeholder, dropped below.
                header.extend_from_slice(raw);
                header.extend_from_slice(&[0; 32]);
            } else {
                header.extend_from_slice(raw);
            }
        }
        let mut entries = parse_entries(&header, pack_len - expected as u64)?;
        for e in &mut entries {
            e.lookup = None;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ChunkKey;
    use crate::ids::RepoId;
    use crate::repo::auth::AuthKey;

    fn auth() -> Authenticator {
        Authenticator::new(AuthKey::objects(&ChunkKey::generate()), RepoId([3; 32]))
    }

    fn blob(n: u8, len: usize, blob_type: BlobType) -> EncodedBlob {
        EncodedBlob {
            blob_type,
            id: BlobId([n; 32]),
            raw_length: 7,
            bytes: vec![n; len],
            lookup: (blob_type == BlobType::Registry).then_some(LookupKey([n + 100; 32])),
        }
    }

    fn tail(p: &FinishedPack) -> &[u8] {
        let total = p.bytes.len() as u64;
        let hl = header_len(&p.bytes[p.bytes.len() - TRAILER_LEN..], total).unwrap();
        &p.bytes[p.bytes.len() - hl..]
    }

    #[test]
    fn header_round_trip() {
        let a = auth();
        let mut b = PackBuilder::default();
        b.add(blob(1, 10, BlobType::Data));
        b.add(blob(2, 20, BlobType::Registry));
        b.add(blob(3, 5, BlobType::Tree));
        let p = b.finish(&a);
        assert_eq!(p.id, PackId(sha256(&p.bytes)));
        let entries = parse_header(tail(&p), p.bytes.len() as u64, &a).unwrap();
        assert_eq!(entries, p.entries);
        assert_eq!(entries[1].offset, 10);
        assert_eq!(entries[1].lookup, Some(LookupKey([102; 32])));
        // Another repository's (or no) key does not vouch for it.
        assert!(matches!(
            parse_header(tail(&p), p.bytes.len() as u64, &auth()),
            Err(Error::Integrity(m)) if m.contains("not authentic")
        ));
    }

    #[test]
    fn damaged_headers_are_errors() {
        let a = auth();
        let mut b = PackBuilder::default();
        b.add(blob(1, 10, BlobType::Data));
        let p = b.finish(&a);
        let total = p.bytes.len() as u64;
        // Truncated pack: length no longer matches.
        assert!(parse_header(&p.bytes[10..], total - 1, &a).is_err());
        let mut bad = p.bytes.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(header_len(&bad[n - TRAILER_LEN..], total).is_err());
        assert!(parse_header(b"", 0, &a).is_err());
        // A header length claiming more than the pack.
        let mut huge = p.bytes.to_vec();
        huge[n - TRAILER_LEN..n - TRAILER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(header_len(&huge[n - TRAILER_LEN..], total).is_err());
    }

    #[test]
    fn blobs_past_4_gib_are_refused() {
        // They used to wrap around into the u32 offsets of the index.
        let mut far = 3u32.to_le_bytes().to_vec();
        for n in 0..3u8 {
            far.push(BlobType::Data as u8);
            far.extend_from_slice(&[n; 32]);
            far.extend_from_slice(&u32::MAX.to_le_bytes());
            far.extend_from_slice(&7u32.to_le_bytes());
        }
        assert!(parse_entries(&far, 3 * u32::MAX as u64).is_err());
        far[..4].copy_from_slice(&2u32.to_le_bytes());
        far.truncate(4 + 2 * ENTRY_LEN);
        let two = parse_entries(&far, 2 * u32::MAX as u64).unwrap();
        assert_eq!(two[1].offset, u32::MAX);
    }
}
