//! A blob is one encrypted unit in a pack: a data chunk or a tree.
//!
//! Stored bytes = age(X25519 → repository recipient) of `compression byte ‖ payload`.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::crypto::{self, ChunkKey, DecryptFailure, Identity, Recipient};
use crate::error::{Error, Result};
use crate::ids::{BlobId, LookupKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlobType {
    Data = 0,
    Tree = 1,
    /// A registry blob's chunk list, found by its digest through its [`lookup_key`].
    Registry = 2,
}

impl BlobType {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            2 => Some(BlobType::Registry),
            _ => None,
        }
    }
}

/// The id of a blob: keyed over its type and whole plaintext, so that no two different
/// bodies share an id (a registry blob's too: in format v1 it covered the digest line only,
/// and a forged chunk list could pass for the real one).
pub fn blob_id(chunk_key: &ChunkKey, blob_type: BlobType, data: &[u8]) -> BlobId {
    chunk_key.blob_id(blob_type as u8, data)
}

/// How a registry blob is found by digest (`sha256:<hex>`) without reading it: the keyed
/// hash of its digest line, recorded beside it in pack headers and indexes.
pub fn lookup_key(chunk_key: &ChunkKey, digest: &str) -> LookupKey {
    LookupKey(
        chunk_key
            .blob_id(BlobType::Registry as u8, digest.as_bytes())
            .0,
    )
}

/// A sealed small file (FORMAT.md §5 "Small files"): its content, zeros, and a random salt
/// that is the same for every file of one backup, padded to a power of two of at least
/// [`SEALED_MIN`] bytes. The salt makes the blob id useless as an oracle (a holder of the
/// backup-only key cannot confirm a guess of a Secret against it); the padding hides the
/// content's length in the index, pack headers and stored sizes.
pub fn seal_small(data: &[u8], salt: &Salt) -> Vec<u8> {
    let len = (data.len() + Salt::LEN).max(SEALED_MIN).next_power_of_two();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(data);
    out.resize(len - Salt::LEN, 0);
    out.extend_from_slice(&salt.0);
    out
}

/// The smallest sealed blob.
pub const SEALED_MIN: usize = 512;

/// The per-backup random input of sealed small files.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Salt(pub [u8; 32]);

impl Salt {
    pub const LEN: usize = 32;

    pub fn generate() -> Salt {
        let mut s = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut s);
        Salt(s)
    }
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// Keep zstd output only when it saves at least this share (in 1/100).
const MIN_SAVING_PERCENT: usize = 3;
const SAMPLE: usize = 64 * 1024;

/// A blob ready to go into a pack.
pub struct EncodedBlob {
    pub blob_type: BlobType,
    pub id: BlobId,
    pub raw_length: u32,
    pub bytes: Vec<u8>,
    /// Registry blobs: the [`lookup_key`] of their digest.
    pub lookup: Option<LookupKey>,
}

fn saves_enough(compressed: usize, original: usize) -> bool {
    compressed * 100 <= original * (100 - MIN_SAVING_PERCENT)
}

/// zstd-compress `data` unless it does not compress (gzip layers, keys, random bytes).
///
/// A fast level-1 trial on the first 64 KiB decides most incompressible chunks cheaply.
/// The compression level that means "store raw": sealed small files are never compressed,
/// since how far their zero padding compresses would tell their length.
pub const STORE_RAW: i32 = i32::MIN;

fn compress(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    if level == STORE_RAW {
        out.push(RAW);
        out.extend_from_slice(data);
        return out;
    }
    if data.len() > SAMPLE {
        let sample = &data[..SAMPLE];
        let trial = zstd::bulk::compress(sample, 1).unwrap_or_default();
        if trial.is_empty() || !saves_enough(trial.len(), sample.len()) {
            out.push(RAW);
            out.extend_from_slice(data);
            return out;
        }
    }
    match zstd::bulk::compress(data, level) {
        Ok(z) if saves_enough(z.len(), data.len()) => {
            out.push(ZSTD);
            out.extend_from_slice(&z);
        }
        _ => {
            out.push(RAW);
            out.extend_from_slice(data);
        }
    }
    out
}

/// Largest plaintext of a data blob: the largest chunk any valid config allows (FORMAT.md §4,
/// `max_size` ≤ 16 MiB), so a data blob never needs more.
pub const MAX_DATA_RAW: u32 = fastcdc::v2020::MAXIMUM_MAX;
/// Largest plaintext of a tree or registry blob (FORMAT.md §5): a directory of about a
/// million entries, or one file of about 4 TiB at 1 MiB chunks. Writers refuse larger ones.
pub const MAX_TREE_RAW: u32 = 256 * 1024 * 1024;
/// Room for age's header, the compression byte, 16 bytes per 64 KiB segment and zstd's
/// worst-case expansion (under 1/128) on top of a blob's plaintext.
const STORED_SLACK: u32 = 64 * 1024;

/// The largest `raw_length` a reader accepts for a blob of this type.
pub fn max_raw_length(blob_type: BlobType) -> u32 {
    match blob_type {
        BlobType::Data => MAX_DATA_RAW,
        BlobType::Tree | BlobType::Registry => MAX_TREE_RAW,
    }
}

/// The largest stored `length` a reader accepts for a blob of this type.
pub fn max_stored_length(blob_type: BlobType) -> u32 {
    let raw = max_raw_length(blob_type);
    raw + raw / 128 + STORED_SLACK
}

/// Check the lengths an index entry or pack header claims for a blob, before anything is
/// fetched, allocated or decompressed: they come from unauthenticated bytes.
pub fn check_lengths(blob_type: BlobType, length: u32, raw_length: u32) -> Result<(), String> {
    if raw_length > max_raw_length(blob_type) {
        return Err(format!(
            "it claims {raw_length} bytes of plaintext, more than a {blob_type:?} blob can hold ({})",
            max_raw_length(blob_type)
        ));
    }
    if length > max_stored_length(blob_type) {
        return Err(format!(
            "it claims {length} stored bytes, more than a {blob_type:?} blob can take ({})",
            max_stored_length(blob_type)
        ));
    }
    Ok(())
}

/// Room reserved up front for a decompressed blob: the chunker's largest chunk.
const PREALLOCATE_MAX: usize = MAX_DATA_RAW as usize;

fn decompress(framed: &[u8], raw_length: usize) -> Result<Vec<u8>, String> {
    match framed.split_first() {
        Some((&RAW, rest)) => Ok(rest.to_vec()),
        Some((&ZSTD, rest)) => {
            // The output grows with what the frame really yields, up to one byte past the
            // length the index claims: a damaged index entry claiming 4 GiB must not make
            // the reader allocate 4 GiB up front (found by fuzzing, fuzz/regressions/blob).
            let mut out = Vec::with_capacity(raw_length.min(PREALLOCATE_MAX));
            zstd::stream::read::Decoder::with_buffer(rest)
                .and_then(|d| d.take(raw_length as u64 + 1).read_to_end(&mut out))
                .map_err(|e| e.to_string())?;
            Ok(out)
        }
        Some((b, _)) => Err(format!("unknown compression {b}")),
        None => Err("empty blob".into()),
    }
}

pub fn encode(
    chunk_key: &ChunkKey,
    recipient: &Recipient,
    blob_type: BlobType,
    data: &[u8],
    level: i32,
) -> EncodedBlob {
    let id = blob_id(chunk_key, blob_type, data);
    encode_with_id(id, &[recipient], blob_type, data, level)
}

/// Encode a blob whose id is known, encrypted to every recipient given (registry blobs go
/// to the maintenance recipient as well).
pub fn encode_with_id(
    id: BlobId,
    recipients: &[&Recipient],
    blob_type: BlobType,
    data: &[u8],
    level: i32,
) -> EncodedBlob {
    let framed = compress(data, level);
    EncodedBlob {
        blob_type,
        id,
        raw_length: data.len() as u32,
        bytes: crypto::encrypt_to(recipients, &framed),
        lookup: None,
    }
}

/// Decrypt, decompress and authenticate a stored blob against its id.
pub fn decode(
    identity: &Identity,
    chunk_key: &ChunkKey,
    blob_type: BlobType,
    id: &BlobId,
    raw_length: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let data = open(identity, blob_type, id, raw_length, stored)?;
    if blob_id(chunk_key, blob_type, &data) != *id {
        return Err(altered(id));
    }
    Ok(data)
}

fn altered(id: &BlobId) -> Error {
    Error::Integrity(format!(
        "blob {} does not match its id (content was altered)",
        id.short()
    ))
}

/// A format version 1 registry blob, whose id covered its digest line only (for migration).
pub fn decode_v1_registry(
    identity: &Identity,
    chunk_key: &ChunkKey,
    id: &BlobId,
    raw_length: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let data = open(identity, BlobType::Registry, id, raw_length, stored)?;
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if chunk_key.blob_id(BlobType::Registry as u8, line) != *id {
        return Err(altered(id));
    }
    Ok(data)
}

/// A registry blob as the maintenance key reads it: decrypted with its own identity (the
/// writer encrypts registry blobs to it as well), lengths checked, but its id unchecked, for
/// the maintenance key holds no chunk key. Callers must not trust one copy alone.
pub fn open_for_maintenance(
    identity: &Identity,
    id: &BlobId,
    raw_length: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    open(identity, BlobType::Registry, id, raw_length, stored)
}

/// Decrypt and decompress a stored blob, checking its lengths but not yet its id.
fn open(
    identity: &Identity,
    blob_type: BlobType,
    id: &BlobId,
    raw_length: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    // Before decryption and decompression: a forged raw_length must not size anything.
    check_lengths(
        blob_type,
        stored.len().try_into().unwrap_or(u32::MAX),
        raw_length,
    )
    .map_err(|why| Error::Integrity(format!("blob {} is corrupt: {why}", id.short())))?;
    // The identity was proven to be the repository's when the repository was opened (it
    // unsealed the chunk key), so a blob it cannot open has a damaged or foreign header.
    let framed = crypto::decrypt(identity, stored).map_err(|e| match e {
        DecryptFailure::WrongKey => Error::Integrity(format!(
            "blob {} is corrupt: its encryption header does not open with the repository identity",
            id.short()
        )),
        DecryptFailure::Corrupt(why) => {
            Error::Integrity(format!("blob {} is corrupt: {why}", id.short()))
        }
    })?;
    let data = decompress(&framed, raw_length as usize)
        .map_err(|why| Error::Integrity(format!("blob {} is corrupt: {why}", id.short())))?;
    if data.len() != raw_length as usize {
        return Err(altered(id));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of FORMAT.md §5 "Small files".
    #[test]
    fn sealed_small_files() {
        let sealed = seal_small(b"Harbor12345", &Salt([0xaa; 32]));
        assert_eq!(sealed.len(), 512);
        assert_eq!(&sealed[..11], b"Harbor12345");
        assert!(sealed[11..480].iter().all(|&b| b == 0));
        assert!(sealed[480..].iter().all(|&b| b == 0xaa));
        assert_eq!(seal_small(&[1; 480], &Salt([0; 32])).len(), 512);
        assert_eq!(seal_small(&[1; 481], &Salt([0; 32])).len(), 1024);
    }

    #[test]
    fn round_trip_compressible_and_not() {
        let key = ChunkKey::generate();
        let ident = Identity::generate();
        let text = b"harbor ".repeat(50_000);
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for data in [&text[..], &noise[..], b""] {
            let e = encode(&key, &ident.to_public(), BlobType::Data, data, 3);
            let back = decode(&ident, &key, BlobType::Data, &e.id, e.raw_length, &e.bytes).unwrap();
            assert_eq!(back, data);
        }
        let e = encode(&key, &ident.to_public(), BlobType::Data, &text, 3);
        assert!(e.bytes.len() < text.len() / 10, "text must compress");
    }

    #[test]
    fn lengths_beyond_the_format_bounds_are_refused_before_decoding() {
        let key = ChunkKey::generate();
        let ident = Identity::generate();
        let e = encode(&key, &ident.to_public(), BlobType::Data, b"x", 3);
        // A forged 4 GiB raw_length: refused as damage without touching zstd.
        let err = decode(&ident, &key, BlobType::Data, &e.id, u32::MAX, &e.bytes).unwrap_err();
        assert!(matches!(&err, Error::Integrity(m) if m.contains("more than a Data blob")));
        assert!(check_lengths(BlobType::Data, 100, MAX_DATA_RAW).is_ok());
        assert!(check_lengths(BlobType::Data, 100, MAX_DATA_RAW + 1).is_err());
        assert!(check_lengths(BlobType::Tree, 100, MAX_DATA_RAW + 1).is_ok());
        assert!(check_lengths(BlobType::Registry, 100, MAX_TREE_RAW + 1).is_err());
        assert!(check_lengths(BlobType::Data, u32::MAX, 1).is_err());
        // The largest chunk, incompressible, still fits its stored bound.
        let big: Vec<u8> = (0..MAX_DATA_RAW)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let e = encode(&key, &ident.to_public(), BlobType::Data, &big, 3);
        assert!(check_lengths(BlobType::Data, e.bytes.len() as u32, e.raw_length).is_ok());
    }

    #[test]
    fn tampering_is_detected() {
        let key = ChunkKey::generate();
        let ident = Identity::generate();
        let e = encode(&key, &ident.to_public(), BlobType::Tree, b"{}", 3);
        let mut bad = e.bytes.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x10;
        assert!(matches!(
            decode(&ident, &key, BlobType::Tree, &e.id, 2, &bad),
            Err(Error::Integrity(_))
        ));
        // A header that does not open with the repository identity (another recipient, or
        // an altered X25519 stanza) is damage, not a wrong --key: the key was checked on open.
        let foreign = encode(
            &key,
            &Identity::generate().to_public(),
            BlobType::Tree,
            b"{}",
            3,
        );
        assert!(matches!(
            decode(&ident, &key, BlobType::Tree, &foreign.id, 2, &foreign.bytes),
            Err(Error::Integrity(_))
        ));
        // Right bytes, claimed under another type: the id check fails.
        assert!(matches!(
            decode(&ident, &key, BlobType::Data, &e.id, 2, &e.bytes),
            Err(Error::Integrity(_))
        ));
    }
}
