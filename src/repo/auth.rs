//! Object authentication (docs/FORMAT.md §3.1): who can vouch for which repository object.
//!
//! age encrypts to a public recipient, so it proves nothing about who wrote an object. Every
//! object drydock decides on therefore carries a tag, keyed BLAKE3 over a label, the
//! repository id and the object's bytes:
//! - config, index, pack header and snapshot objects: the *object key*, derived from the chunk
//!   key, which identity and backup-only key hold and a bucket writer does not;
//! - deletion records: the *deletion key*, derived from the maintenance secret, which a
//!   backup-only key does not hold, so a backup writer cannot shorten prune's safety delay;
//!   The maintenance key holds the object key itself, not the chunk key it comes from;
//! - the config again: the *identity key*, derived from the identity itself, so that a config
//!   rewritten by someone holding only a backup-only key (or nothing) cannot hand the identity
//!   a chunk key of the attacker's choosing.

use age::secrecy::ExposeSecret;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{ChunkKey, Identity, MaintenanceSecret};
use crate::ids::RepoId;

/// What an authentication tag vouches for; each kind has its own label, so a tag for one
/// kind of object is never valid for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Index,
    Pack,
    Snapshot,
    Deletion,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Config => b"drydock config v2",
            Kind::Index => b"drydock index v2",
            Kind::Pack => b"drydock pack v2",
            Kind::Snapshot => b"drydock snapshot v2",
            Kind::Deletion => b"drydock deletion v2",
        }
    }
}

/// A 32-byte authentication tag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub [u8; 32]);

impl Tag {
    pub const LEN: usize = 32;

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Tag> {
        bytes.try_into().ok().map(Tag)
    }

    pub fn from_hex(s: &str) -> Option<Tag> {
        let mut t = [0u8; 32];
        hex::decode_to_slice(s, &mut t).ok().map(|_| Tag(t))
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({})", &self.to_hex()[..8])
    }
}

/// A secret key that tags objects of some kinds; wiped when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    fn derive(context: &str, material: &[u8]) -> AuthKey {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(material);
        AuthKey(*h.finalize().as_bytes())
    }

    /// Tags config, index, pack header and snapshot objects.
    pub fn objects(chunk_key: &ChunkKey) -> AuthKey {
        chunk_key.with_bytes(|k| Self::derive("drydock object auth v2", k))
    }

    /// The object key as a maintenance key file carries it (it holds no chunk key).
    pub fn from_bytes(bytes: &[u8; 32]) -> AuthKey {
        AuthKey(*bytes)
    }

    /// The raw key, for writing it into a maintenance key file.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0)
    }

    /// Tags deletion records.
    pub fn deletions(secret: &MaintenanceSecret) -> AuthKey {
        secret.with_bytes(|k| Self::derive("drydock deletion auth v2", k))
    }

    /// Tags the config for the identity: derived from the identity's own secret text.
    pub fn identity(identity: &Identity) -> AuthKey {
        let secret = identity.to_string();
        Self::derive(
            "drydock identity auth v2",
            secret.expose_secret().as_bytes(),
        )
    }

    /// `BLAKE3-keyed(key, label ‖ 0x00 ‖ repository id ‖ parts…)`.
    pub fn tag(&self, kind: Kind, repo: &RepoId, parts: &[&[u8]]) -> Tag {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(kind.label());
        h.update(&[0]);
        h.update(&repo.0);
        for p in parts {
            h.update(p);
        }
        Tag(*h.finalize().as_bytes())
    }

    /// Whether `tag` is this key's tag over the parts (compared in constant time).
    pub fn verify(&self, kind: Kind, repo: &RepoId, parts: &[&[u8]], tag: &Tag) -> bool {
        blake3::Hash::from(self.tag(kind, repo, parts).0) == blake3::Hash::from(tag.0)
    }
}

/// A key bound to one repository: what tags and checks that repository's objects.
#[derive(Clone)]
pub struct Authenticator {
    key: AuthKey,
    repo: RepoId,
}

impl Authenticator {
    pub fn new(key: AuthKey, repo: RepoId) -> Self {
        Authenticator { key, repo }
    }

    pub fn tag(&self, kind: Kind, parts: &[&[u8]]) -> Tag {
        self.key.tag(kind, &self.repo, parts)
    }

    pub fn verify(&self, kind: Kind, parts: &[&[u8]], tag: &Tag) -> bool {
        self.key.verify(kind, &self.repo, parts, tag)
    }

    /// Split `bytes` into body and trailing tag, and check the tag over the body.
    pub fn open_tagged<'a>(&self, kind: Kind, bytes: &'a [u8]) -> Option<&'a [u8]> {
        let split = bytes.len().checked_sub(Tag::LEN)?;
        let (body, tag) = bytes.split_at(split);
        self.verify(kind, &[body], &Tag::from_slice(tag)?)
            .then_some(body)
    }

    /// `bytes ‖ tag(bytes)`.
    pub fn append_tag(&self, kind: Kind, mut bytes: Vec<u8>) -> Vec<u8> {
        let tag = self.tag(kind, &[&bytes]);
        bytes.extend_from_slice(&tag.0);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of docs/FORMAT.md §3.1 (checked against Python's `blake3` package).
    #[test]
    fn test_vectors() {
        let ck = ChunkKey::from_hex(&hex::encode((0u8..32).collect::<Vec<u8>>())).unwrap();
        let repo = RepoId((32u8..64).collect::<Vec<u8>>().try_into().unwrap());
        let ms = MaintenanceSecret::from_bytes([7u8; 32]);
        let objects = AuthKey::objects(&ck);
        assert_eq!(
            objects.tag(Kind::Index, &repo, &[b"DDINDX02"]).to_hex(),
            "9aa6fa67ff9d335b02e701a0e8b599ebbf911df603ec3654636b8f34f0033a77"
        );
        for (kind, body, tag) in [
            (
                Kind::Snapshot,
                &b"DDSNAP02"[..],
                "6516f5c6578c3ccb8bb032ac949f5edbc9b8118070e80e132a1184f7a641ca53",
            ),
            (
                Kind::Pack,
                &[0u8; 4][..],
                "5c8e35f4ae4cb5a5bf89c4b1b200b43c2ea95d0f4680bc8d0867971cb0aca46c",
            ),
            (
                Kind::Config,
                &b"format=drydock-repository\nversion=2\n"[..],
                "108c7008bd58aab0ada4ffb963afe6b0b9baa783777b2494b9943a54fdb5a402",
            ),
        ] {
            assert_eq!(objects.tag(kind, &repo, &[body]).to_hex(), tag, "{kind:?}");
        }
        let identity: Identity =
            "AGE-SECRET-KEY-1FKULPYDN8HELDHSF4F38YTH37FTJC0C0SN476478R3YNF74W4Y0SUVVK0P"
                .parse()
                .unwrap();
        assert_eq!(
            AuthKey::identity(&identity)
                .tag(
                    Kind::Config,
                    &repo,
                    &[b"format=drydock-repository\nversion=2\n"]
                )
                .to_hex(),
            "642a5916b1ae0a86fb3e6c5f2c63e38feb2ac89dc80e34646c7634ac7e8c3fab"
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            crate::repo::blob::blob_id(
                &ck,
                crate::repo::blob::BlobType::Registry,
                format!("{digest}\n{{\"size\":0,\"content\":[]}}").as_bytes()
            )
            .to_hex(),
            "7b4a9602577e5d2975a05cd6e85fd7c5f105950e5d068a1e5eb2164da5ea300f"
        );
        assert_eq!(
            crate::repo::blob::lookup_key(&ck, &digest).to_hex(),
            "2108c2075cc1b6ef707612bc9711eab9903711518e84839d92ea1160471e1e4d"
        );
        assert_eq!(
            AuthKey::deletions(&ms)
                .tag(Kind::Deletion, &repo, &[b"{}"])
                .to_hex(),
            "51f292a166a09903b4ff6bcbefc99b71960059492373eecf1eee0b0f0829313b"
        );
    }

    #[test]
    fn kinds_and_keys_do_not_mix() {
        let ck = ChunkKey::generate();
        let repo = RepoId([1; 32]);
        let k = AuthKey::objects(&ck);
        let t = k.tag(Kind::Snapshot, &repo, &[b"a", b"b"]);
        assert!(k.verify(Kind::Snapshot, &repo, &[b"ab"], &t));
        assert!(!k.verify(Kind::Index, &repo, &[b"ab"], &t));
        assert!(!k.verify(Kind::Snapshot, &RepoId([2; 32]), &[b"ab"], &t));
        assert!(!AuthKey::objects(&ChunkKey::generate()).verify(
            Kind::Snapshot,
            &repo,
            &[b"ab"],
            &t
        ));
    }
}
