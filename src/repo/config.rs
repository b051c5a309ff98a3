//! The `config` object: the repository's version, id, recipient and parameters.
//!
//! Plaintext JSON (it must be readable to learn how to read the rest); the chunk key inside
//! it is sealed to the recipient, so only an identity can recover it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{self, ChunkKey, DecryptFailure, Identity, Recipient};
use crate::error::{Error, Result};
use crate::ids::RepoId;

pub const KEY: &str = "config";
pub const FORMAT: &str = "drydock-repository";
pub const VERSION: u32 = 1;

pub const DEFAULT_PACK_SIZE: u64 = 16 * 1024 * 1024;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: RepoId,
    pub created: DateTime<Utc>,
    /// The age X25519 recipient every blob and snapshot is encrypted to.
    pub recipient: String,
    pub chunker: ChunkerParams,
    /// Target size of a pack object in bytes.
    pub pack_size: u64,
    pub zstd_level: i32,
    /// Hex of age(recipient, chunk key as 64 hex digits).
    pub sealed_chunk_key: String,
    /// Keyed hash proving a chunk key belongs to this repository.
    pub key_check: String,
}

impl RepoConfig {
    pub fn new(recipient: &Recipient, chunk_key: &ChunkKey) -> Self {
        let mut id = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut id);
        let id = RepoId(id);
        RepoConfig {
            format: FORMAT.into(),
            version: VERSION,
            id,
            created: Utc::now(),
            recipient: recipient.to_string(),
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            sealed_chunk_key: hex::encode(crypto::encrypt(
                recipient,
                chunk_key.to_hex().as_bytes(),
            )),
            key_check: chunk_key.check_value(&id),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
            Error::Integrity(format!("the repository config object is damaged: {e}"))
        })?;
        if probe.format != FORMAT {
            return Err(Error::Usage(format!(
                "not a drydock repository (format {:?})",
                probe.format
            )));
        }
        if probe.version != VERSION {
            return Err(Error::Usage(format!(
                "repository format version {} is not supported by this drydock (it reads version {VERSION}); upgrade drydock",
                probe.version
            )));
        }
        let config: RepoConfig = serde_json::from_slice(bytes).map_err(|e| {
            Error::Integrity(format!("the repository config object is damaged: {e}"))
        })?;
        config.chunker.validate().map_err(|e| {
            Error::Integrity(format!("the repository config object is damaged: {e}"))
        })?;
        if config.pack_size < 1024 * 1024 || config.pack_size > 1 << 31 {
            return Err(Error::Integrity(format!(
                "the repository config object is damaged: unsupported pack size {}",
                config.pack_size
            )));
        }
        Ok(config)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serialises")
    }

    pub fn recipient(&self) -> Result<Recipient> {
        crypto::parse_recipient(&self.recipient).map_err(|_| {
            Error::Integrity("the repository config holds an invalid recipient".into())
        })
    }

    /// Recover the chunk key with the identity, proving the identity fits.
    pub fn unseal_chunk_key(&self, identity: &Identity) -> Result<ChunkKey> {
        // A recipient that does not parse is damage, not someone else's identity.
        self.recipient()?;
        if identity.to_public().to_string() != self.recipient {
            return Err(Error::Key(format!(
                "this identity (public key {}) does not belong to repository {}, whose recipient is {}",
                identity.to_public(),
                self.id.short(),
                self.recipient
            )));
        }
        let sealed = hex::decode(&self.sealed_chunk_key).map_err(|_| {
            Error::Integrity("the repository config's sealed key is not hex".into())
        })?;
        // From here on the identity is the recipient's, so every failure is a damaged config.
        let plain = crypto::decrypt(identity, &sealed).map_err(|e| match e {
            DecryptFailure::WrongKey => Error::Integrity(
                "the repository config's sealed key is damaged: it does not open with the identity of its recipient".into(),
            ),
            DecryptFailure::Corrupt(why) => Error::Integrity(format!(
                "the repository config's sealed key is damaged: {why}"
            )),
        })?;
        let plain = zeroize::Zeroizing::new(plain);
        let hex = std::str::from_utf8(&plain).unwrap_or_default();
        let key = ChunkKey::from_hex(hex).map_err(|_| {
            Error::Integrity(
                "the repository config's sealed key is damaged: not a chunk key".into(),
            )
        })?;
        self.verify_chunk_key(&key).map_err(|_| {
            Error::Integrity(format!(
                "the repository config is damaged: its key check does not match its sealed key (repository {})",
                self.id.short()
            ))
        })?;
        Ok(key)
    }

    /// Check a backup-only key against this config. It cannot open the sealed key, but its
    /// own key check tells a damaged config (exit 4) from a key of another repository.
    pub fn verify_backup_key(
        &self,
        repository: &RepoId,
        chunk_key: &ChunkKey,
        recipient: &Recipient,
        location: &str,
    ) -> Result<()> {
        self.recipient()?;
        let passes = chunk_key.check_value(repository) == self.key_check;
        if *repository != self.id {
            if passes {
                return Err(Error::Integrity(format!(
                    "the repository config is damaged: its id {} does not match its key check, which the backup-only key of repository {} passes",
                    self.id.short(),
                    repository.short()
                )));
            }
            return Err(Error::Key(format!(
                "the backup-only key is for repository {}, but {location} holds repository {}",
                repository.short(),
                self.id.short()
            )));
        }
        if !passes {
            return Err(Error::Key(format!(
                "the backup-only key fails repository {}'s key check: the key file or the repository config (its key_check) is damaged; `drydock check` with the identity tells which",
                self.id.short()
            )));
        }
        if recipient.to_string() != self.recipient {
            return Err(Error::Key(
                "the backup-only key's recipient does not match the repository".into(),
            ));
        }
        Ok(())
    }

    pub fn verify_chunk_key(&self, key: &ChunkKey) -> Result<()> {
        if key.check_value(&self.id) != self.key_check {
            return Err(Error::Key(format!(
                "the key does not belong to repository {}; use the key created by its `drydock init`",
                self.id.short()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseal_and_reject_other_identities() {
        let id = Identity::generate();
        let ck = ChunkKey::generate();
        let c = RepoConfig::new(&id.to_public(), &ck);
        let back = RepoConfig::parse(&c.to_bytes()).unwrap();
        assert_eq!(back.unseal_chunk_key(&id).unwrap().to_hex(), ck.to_hex());
        assert!(matches!(
            back.unseal_chunk_key(&Identity::generate()),
            Err(Error::Key(_))
        ));
        assert!(matches!(
            back.verify_chunk_key(&ChunkKey::generate()),
            Err(Error::Key(_))
        ));
    }

    #[test]
    fn rejects_other_formats_and_versions() {
        let c = RepoConfig::new(&Identity::generate().to_public(), &ChunkKey::generate());
        let mut v: serde_json::Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        v["version"] = 99.into();
        assert!(matches!(
            RepoConfig::parse(v.to_string().as_bytes()),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            RepoConfig::parse(b"{\"format\":\"x\",\"version\":1}"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            RepoConfig::parse(b"not json"),
            Err(Error::Integrity(_))
        ));
    }
}
