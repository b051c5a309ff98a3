//! Packs: many encrypted blobs in one object, with a plaintext header at the end.
//!
//! `blob_0 ‖ … ‖ blob_{n-1} ‖ entry_0 ‖ … ‖ entry_{n-1} ‖ n: u32le ‖ "DDPACK01"`, where an
//! entry is `type: u8 ‖ id: [32] ‖ length: u32le ‖ raw_length: u32le` and blob i starts
//! where blob i-1 ends. The pack is named by the SHA-256 of all its bytes.

use bytes::Bytes;

use super::blob::{BlobType, EncodedBlob};
use crate::error::{Error, Result};
use crate::ids::{sha256, BlobId, PackId};

pub const MAGIC: &[u8; 8] = b"DDPACK01";
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4;
pub const TRAILER_LEN: usize = 4 + MAGIC.len();

/// Where a blob sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
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

pub fn key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

impl PackBuilder {
    pub fn add(&mut self, blob: EncodedBlob) {
        self.entries.push(PackEntry {
            blob_type: blob.blob_type,
            id: blob.id,
            offset: self.buf.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self) -> FinishedPack {
        for e in &self.entries {
            self.buf.push(e.blob_type as u8);
            self.buf.extend_from_slice(&e.id.0);
            self.buf.extend_from_slice(&e.length.to_le_bytes());
            self.buf.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        FinishedPack {
            id: PackId(sha256(&self.buf)),
            bytes: Bytes::from(self.buf),
            entries: self.entries,
        }
    }
}

/// The number of header bytes at the end of a pack, read from its trailer.
pub fn header_len(trailer: &[u8], pack_len: u64) -> Result<usize> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != MAGIC {
        return Err(Error::Integrity(
            "pack trailer is missing or damaged".into(),
        ));
    }
    let count = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    let len = count
        .checked_mul(ENTRY_LEN)
        .and_then(|n| n.checked_add(TRAILER_LEN))
        .filter(|n| *n as u64 <= pack_len)
        .ok_or_else(|| Error::Integrity("pack header is longer than the pack".into()))?;
    Ok(len)
}

/// Parse the header (entries and trailer) of a pack of `pack_len` bytes.
pub fn parse_header(header: &[u8], pack_len: u64) -> Result<Vec<PackEntry>> {
    if header.len() < TRAILER_LEN {
        return Err(Error::Integrity("pack is too short for a header".into()));
    }
    let expected = header_len(&header[header.len() - TRAILER_LEN..], pack_len)?;
    if header.len() != expected {
        return Err(Error::Integrity(
            "pack header length is inconsistent".into(),
        ));
    }
    let data_len = pack_len - expected as u64;
    let mut offset: u64 = 0;
    let mut entries = Vec::new();
    for raw in header[..expected - TRAILER_LEN].chunks_exact(ENTRY_LEN) {
        let blob_type = BlobType::from_byte(raw[0]).ok_or_else(|| {
            Error::Integrity(format!("pack header has unknown blob type {}", raw[0]))
        })?;
        let length = u32::from_le_bytes(raw[33..37].try_into().expect("4 bytes"));
        let raw_length = u32::from_le_bytes(raw[37..41].try_into().expect("4 bytes"));
        // Offsets are u32 in the index: a blob starting past 4 GiB cannot be recorded
        // (drydock writes packs of at most 2 GiB and one blob; found by fuzzing).
        let offset32 = u32::try_from(offset).map_err(|_| {
            Error::Integrity(format!(
                "pack header places a blob at offset {offset}, beyond the format's 4 GiB"
            ))
        })?;
        entries.push(PackEntry {
            blob_type,
            id: BlobId(raw[1..33].try_into().expect("32 bytes")),
            offset: offset32,
            length,
            raw_length,
        });
        offset += length as u64;
    }
    if offset != data_len {
        return Err(Error::Integrity(format!(
            "pack header describes {offset} bytes of blobs but the pack holds {data_len}"
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: usize) -> EncodedBlob {
        EncodedBlob {
            blob_type: BlobType::Data,
            id: BlobId([n; 32]),
            raw_length: 7,
            bytes: vec![n; len],
        }
    }

    #[test]
    fn header_round_trip() {
        let mut b = PackBuilder::default();
        b.add(blob(1, 10));
        b.add(blob(2, 20));
        let p = b.finish();
        assert_eq!(p.id, PackId(sha256(&p.bytes)));
        let total = p.bytes.len() as u64;
        let hl = header_len(&p.bytes[p.bytes.len() - TRAILER_LEN..], total).unwrap();
        let entries = parse_header(&p.bytes[p.bytes.len() - hl..], total).unwrap();
        assert_eq!(entries, p.entries);
        assert_eq!(entries[1].offset, 10);
    }

    #[test]
    fn damaged_headers_are_errors() {
        let mut b = PackBuilder::default();
        b.add(blob(1, 10));
        let p = b.finish();
        let total = p.bytes.len() as u64;
        // Truncated pack: length no longer matches.
        assert!(parse_header(&p.bytes[10..], total - 1).is_err());
        let mut bad = p.bytes.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(header_len(&bad[n - TRAILER_LEN..], total).is_err());
        assert!(parse_header(b"", 0).is_err());
        // Blobs past the 4 GiB an index offset can hold (they used to wrap around).
        let mut far = Vec::new();
        for n in 0..3u8 {
            far.push(BlobType::Data as u8);
            far.extend_from_slice(&[n; 32]);
            far.extend_from_slice(&u32::MAX.to_le_bytes());
            far.extend_from_slice(&7u32.to_le_bytes());
        }
        far.extend_from_slice(&3u32.to_le_bytes());
        far.extend_from_slice(MAGIC);
        let far_len = 3 * u32::MAX as u64 + far.len() as u64;
        assert!(parse_header(&far, far_len).is_err());
        far.truncate(2 * ENTRY_LEN);
        far.extend_from_slice(&2u32.to_le_bytes());
        far.extend_from_slice(MAGIC);
        let two = parse_header(&far, 2 * u32::MAX as u64 + far.len() as u64).unwrap();
        assert_eq!(two[1].offset, u32::MAX);
        // A count claiming more entries than fit.
        let mut huge = p.bytes.to_vec();
        huge[n - TRAILER_LEN..n - 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(header_len(&huge[n - TRAILER_LEN..], total).is_err());
    }
}
