//! Index objects map blob ids to their place in packs.
//!
//! `"DDINDX02" ‖ packs: u32le ‖ per pack: pack_id [32] ‖ n: u32le ‖ n × (type u8 ‖ id [32] ‖
//! offset u32le ‖ length u32le ‖ raw_length u32le ‖ registry blobs: lookup [32]) ‖ tag [32]`,
//! the tag being the object key's over everything before it (FORMAT.md §7). Named by the
//! SHA-256 of the bytes. Indexes hold no names or contents, so a backup-only key can read them
//! to deduplicate; the tag means a bucket writer without keys cannot add one.

use std::collections::HashMap;

use super::auth::{Authenticator, Kind};
use super::blob::BlobType;
use super::pack::{put_lengths, put_lookup, PackEntry, ENTRY_LEN as PACK_ENTRY_LEN};
use crate::error::{Error, Result};
use crate::ids::{BlobId, IndexId, LookupKey, PackId};

pub const MAGIC: &[u8; 8] = b"DDINDX02";
/// The smallest index entry: a pack entry and its offset.
const ENTRY_LEN: usize = PACK_ENTRY_LEN + 4;

pub fn key(id: &IndexId) -> String {
    format!("index/{}", id.to_hex())
}

/// The packs one index object describes.
pub type IndexFile = Vec<(PackId, Vec<PackEntry>)>;

pub fn encode(packs: &[(PackId, Vec<PackEntry>)], auth: &Authenticator) -> Vec<u8> {
    let n: usize = packs
        .iter()
        .map(|(_, e)| 36 + e.len() * (ENTRY_LEN + 32))
        .sum();
    let mut out = Vec::with_capacity(12 + n + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (pack, entries) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.push(e.blob_type as u8);
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            put_lengths(&mut out, e);
            put_lookup(&mut out, e);
        }
    }
    auth.append_tag(Kind::Index, out)
}

/// A reader of little-endian fields that fails on truncation instead of panicking.
pub(super) struct Cursor<'a>(pub(super) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Integrity("object is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn id(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    pub(super) fn blob_type(&mut self, what: &str) -> Result<BlobType> {
        let t = self.take(1)?[0];
        BlobType::from_byte(t)
            .ok_or_else(|| Error::Integrity(format!("{what} has unknown blob type {t}")))
    }
    /// A registry blob's lookup key; other types have none.
    pub(super) fn lookup(&mut self, blob_type: BlobType) -> Result<Option<LookupKey>> {
        Ok(match blob_type {
            BlobType::Registry => Some(LookupKey(self.id()?)),
            _ => None,
        })
    }
}

/// Authenticate and parse an index object.
pub fn parse(bytes: &[u8], auth: &Authenticator) -> Result<IndexFile> {
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(Error::Integrity(
            "not a version 2 index object (bad magic)".into(),
        ));
    }
    let body = auth.open_tagged(Kind::Index, bytes).ok_or_else(|| {
        Error::Integrity("not authentic: no key holder wrote this index object".into())
    })?;
    let mut c = Cursor(&body[8..]);
    let packs = c.u32()?;
    let mut out = Vec::new();
    for _ in 0..packs {
        let pack = PackId(c.id()?);
        let n = c.u32()? as usize;
        if n.saturating_mul(ENTRY_LEN) > c.0.len() {
            return Err(Error::Integrity("index object is truncated".into()));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let blob_type = c.blob_type("index")?;
            let id = BlobId(c.id()?);
            let (offset, length, raw_length) = (c.u32()?, c.u32()?, c.u32()?);
            entries.push(PackEntry {
                blob_type,
                id,
                offset,
                length,
                raw_length,
                lookup: c.lookup(blob_type)?,
            });
        }
        out.push((pack, entries));
    }
    if !c.0.is_empty() {
        return Err(Error::Integrity("index object has trailing bytes".into()));
    }
    Ok(out)
}

/// Where to find a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub blob_type: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// A location with its pack as a number into `MasterIndex::packs`.
type Slot = (u32, BlobType, u32, u32, u32);

/// Every index object merged: blob id → location.
#[derive(Default)]
pub struct MasterIndex {
    blobs: HashMap<BlobId, Slot>,
    /// Further locations of blobs that several index entries name: a blob stored twice, or
    /// a false entry from a forged index (indexes are not authenticated in format v1).
    /// Readers try them in turn, so one bad index cannot make a blob unreadable.
    others: HashMap<BlobId, Vec<Slot>>,
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// Registry blobs by the lookup key of their digest; `None` when entries disagree (a
    /// holder of the backup-only key stored another chunk list for a digest): a backup then
    /// reads that blob again rather than guess which list is true.
    lookups: HashMap<LookupKey, Option<BlobId>>,
}

impl MasterIndex {
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let next = self.packs.len() as u32;
        let n = *self.pack_numbers.entry(pack).or_insert(next);
        if n == next {
            self.packs.push(pack);
        }
        for e in entries {
            if let Some(l) = e.lookup {
                let known = self.lookups.entry(l).or_insert(Some(e.id));
                if *known != Some(e.id) {
                    *known = None;
                }
            }
            let slot = (n, e.blob_type, e.offset, e.length, e.raw_length);
            let first = *self.blobs.entry(e.id).or_insert(slot);
            if first != slot {
                let others = self.others.entry(e.id).or_default();
                if !others.contains(&slot) {
                    others.push(slot);
                }
            }
        }
    }

    fn location(&self, &(p, blob_type, offset, length, raw_length): &Slot) -> BlobLocation {
        BlobLocation {
            pack: self.packs[p as usize],
            blob_type,
            offset,
            length,
            raw_length,
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.blobs.get(id).map(|s| self.location(s))
    }

    /// Every location the indexes give for `id`, the one [`get`](Self::get) returns first.
    pub fn locations(&self, id: &BlobId) -> Vec<BlobLocation> {
        let others = self.others.get(id).into_iter().flatten();
        self.blobs
            .get(id)
            .into_iter()
            .chain(others)
            .map(|s| self.location(s))
            .collect()
    }

    /// Whether the indexes name more than one location for `id`.
    pub fn has_copies(&self, id: &BlobId) -> bool {
        self.others.contains_key(id)
    }

    /// Forget every blob located in `packs` (packs marked for deletion by prune: a backup
    /// must not deduplicate against them).
    pub fn remove_packs(&mut self, packs: &std::collections::HashSet<PackId>) {
        let doomed: std::collections::HashSet<u32> = packs
            .iter()
            .filter_map(|p| self.pack_numbers.get(p).copied())
            .collect();
        if doomed.is_empty() {
            return;
        }
        for slots in self.others.values_mut() {
            slots.retain(|s| !doomed.contains(&s.0));
        }
        let others = &mut self.others;
        self.blobs.retain(|id, v| {
            if !doomed.contains(&v.0) {
                return true;
            }
            // Another copy outside the doomed packs takes its place.
            match others.get_mut(id).and_then(|o| o.pop()) {
                Some(slot) => {
                    *v = slot;
                    true
                }
                None => false,
            }
        });
        self.others.retain(|_, slots| !slots.is_empty());
    }

    /// Every (lookup key, registry blob) pair the indexes give, for blobs still indexed.
    pub fn registry_blobs(&self) -> impl Iterator<Item = (LookupKey, BlobId)> + '_ {
        self.lookups
            .iter()
            .filter_map(|(l, id)| Some((*l, (*id)?)))
            .filter(|(_, id)| self.blobs.contains_key(id))
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
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

    #[test]
    fn every_copy_is_kept_and_a_removed_pack_gives_way_to_the_next() {
        let (real, forged) = (PackId([1; 32]), PackId([0; 32]));
        let mut index = MasterIndex::default();
        index.add_pack(forged, &[entry(5)]);
        index.add_pack(real, &[entry(5), entry(6)]);
        // The same entry twice is one copy.
        index.add_pack(real, &[entry(5)]);
        let id = BlobId([5; 32]);
        let packs: Vec<PackId> = index.locations(&id).iter().map(|l| l.pack).collect();
        assert_eq!(packs, vec![forged, real]);
        assert!(index.has_copies(&id) && !index.has_copies(&BlobId([6; 32])));
        index.remove_packs(&[forged].into());
        assert_eq!(index.get(&id).unwrap().pack, real);
        assert_eq!(index.locations(&id).len(), 1);
        assert!(!index.has_copies(&id));
        index.remove_packs(&[real].into());
        assert!(index.is_empty());
    }

    fn entry(n: u8) -> PackEntry {
        PackEntry {
            blob_type: BlobType::Data,
            id: BlobId([n; 32]),
            offset: n as u32,
            length: 3,
            raw_length: 9,
            lookup: None,
        }
    }

    #[test]
    fn round_trip_and_merge() {
        let file = vec![
            (PackId([9; 32]), vec![entry(1), entry(2)]),
            (PackId([8; 32]), vec![]),
        ];
        let a = auth();
        let bytes = encode(&file, &a);
        let parsed = parse(&bytes, &a).unwrap();
        assert_eq!(parsed, file);
        assert!(
            matches!(parse(&bytes, &auth()), Err(Error::Integrity(m)) if m.contains("not authentic"))
        );
        let mut m = MasterIndex::default();
        for (p, e) in &parsed {
            m.add_pack(*p, e);
        }
        assert_eq!(m.get(&BlobId([2; 32])).unwrap().pack, PackId([9; 32]));
        assert!(m.has_pack(&PackId([8; 32])));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn rejects_damage() {
        let a = auth();
        let mut registry = entry(2);
        registry.blob_type = BlobType::Registry;
        registry.lookup = Some(LookupKey([4; 32]));
        let bytes = encode(&[(PackId([9; 32]), vec![entry(1), registry])], &a);
        assert_eq!(
            parse(&bytes, &a).unwrap()[0].1[1].lookup,
            Some(LookupKey([4; 32]))
        );
        for cut in [0, 5, 12, 40, bytes.len() - 1] {
            assert!(parse(&bytes[..cut], &a).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(parse(&extra, &a).is_err());
        // Damage that a re-tag by the key holder would make well-formed is still caught.
        let retag = |mut b: Vec<u8>| {
            b.truncate(b.len() - 32);
            a.append_tag(Kind::Index, b)
        };
        let mut bad_type = bytes.clone();
        bad_type[8 + 4 + 32 + 4] = 7;
        assert!(parse(&retag(bad_type), &a).is_err());
        let mut huge = bytes.clone();
        huge[8 + 4 + 32..8 + 4 + 36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&retag(huge), &a).is_err());
        let mut trailing = bytes.clone();
        trailing.truncate(trailing.len() - 32);
        trailing.push(0);
        assert!(parse(&a.append_tag(Kind::Index, trailing), &a).is_err());
    }
}
