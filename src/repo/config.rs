//! The `config` object: the repository's version, id, recipient and parameters.
//!
//! Plaintext JSON (it must be readable to learn how to read the rest); the chunk key inside
//! it is sealed to the recipient, so only an identity can recover it.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::{AuthKey, Kind, Tag};
use crate::chunker::ChunkerParams;
use crate::crypto::{self, ChunkKey, DecryptFailure, Identity, MaintenanceSecret, Recipient};
use crate::error::{Error, Result};
use crate::ids::RepoId;

pub const KEY: &str = "config";
pub const FORMAT: &str = "drydock-repository";
pub const VERSION: u32 = 2;

pub const DEFAULT_PACK_SIZE: u64 = 16 * 1024 * 1024;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: RepoId,
    /// RFC 3339 time of `init`, kept as written: it is part of the authenticated text.
    pub created: String,
    /// The age X25519 recipient every blob and snapshot is encrypted to.
    pub recipient: String,
    pub chunker: ChunkerParams,
    /// Target size of a pack object in bytes.
    pub pack_size: u64,
    pub zstd_level: i32,
    /// Hex of age(recipient, chunk key as 64 hex digits).
    pub sealed_chunk_key: String,
    /// Hex of age(recipient, maintenance secret as 64 hex digits).
    pub sealed_maintenance_secret: String,
    /// Keyed hash proving a chunk key belongs to this repository.
    pub key_check: String,
    /// S3 Object Lock retention every object is written with, `GOVERNANCE:30` or
    /// `COMPLIANCE:365` (FORMAT.md §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<String>,
    /// The age recipient of the maintenance key: snapshot summaries (section 2) and registry
    /// blobs are encrypted to it as well (FORMAT.md §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_recipient: Option<String>,
    /// The S3 storage class data packs are written in unless a backup says otherwise;
    /// absent: STANDARD (FORMAT.md §4, §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Tag of the object key (from the chunk key) over [`auth_text`](Self::auth_text).
    pub auth: String,
    /// Tag of the identity key over the same text; absent until an identity vouched for the
    /// config (`init --recipient` has only the public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_auth: Option<String>,
}

/// The secrets an identity recovers from the config.
pub struct Unsealed {
    pub chunk_key: ChunkKey,
    pub maintenance: MaintenanceSecret,
    /// Whether the identity's own tag vouches for the config.
    pub vouched: bool,
}

fn damaged(why: impl std::fmt::Display) -> Error {
    Error::Integrity(format!("the repository config object is damaged: {why}"))
}

/// A config that parses but that no key holder wrote (exit 4, with the way out).
fn not_authentic(who: &str) -> Error {
    Error::Integrity(format!(
        "the repository config is not authentic: its tag does not match {who}, so it was altered or replaced; `drydock key recover-config` with the identity rebuilds it from a snapshot"
    ))
}

impl RepoConfig {
    /// A new repository's config; `identity` vouches for it when drydock holds it.
    pub fn new(
        recipient: &Recipient,
        chunk_key: &ChunkKey,
        maintenance: &MaintenanceSecret,
        maintenance_recipient: Option<&Recipient>,
        identity: Option<&Identity>,
    ) -> Self {
        let mut id = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut id);
        let id = RepoId(id);
        let mut config = RepoConfig {
            format: FORMAT.into(),
            version: VERSION,
            id,
            created: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            recipient: recipient.to_string(),
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            sealed_chunk_key: hex::encode(crypto::encrypt(
                recipient,
                chunk_key.to_hex().as_bytes(),
            )),
            sealed_maintenance_secret: hex::encode(crypto::encrypt(
                recipient,
                maintenance.to_hex().as_bytes(),
            )),
            key_check: chunk_key.check_value(&id),
            object_lock: None,
            storage_class: None,
            maintenance_recipient: maintenance_recipient.map(|r| r.to_string()),
            auth: String::new(),
            identity_auth: None,
        };
        config.seal(chunk_key, identity);
        config
    }

    /// (Re)compute the tags: the object key's, and the identity's when given.
    /// Seal a new maintenance secret into the config (the tags must be recomputed after).
    pub fn reseal_maintenance(&mut self, secret: &MaintenanceSecret) -> Result<()> {
        let recipient = self.recipient()?;
        self.sealed_maintenance_secret =
            hex::encode(crypto::encrypt(&recipient, secret.to_hex().as_bytes()));
        Ok(())
    }

    pub fn seal(&mut self, chunk_key: &ChunkKey, identity: Option<&Identity>) {
        let text = self.auth_text();
        self.auth = AuthKey::objects(chunk_key)
            .tag(Kind::Config, &self.id, &[&text])
            .to_hex();
        self.identity_auth = identity.map(|i| {
            AuthKey::identity(i)
                .tag(Kind::Config, &self.id, &[&text])
                .to_hex()
        });
    }

    /// The text the tags cover: `name=value` lines in a fixed order (FORMAT.md §4).
    pub fn auth_text(&self) -> Vec<u8> {
        let c = &self.chunker;
        let algorithm = serde_json::to_value(c.algorithm).expect("serialises");
        let mut text = format!(
            "format={}\nversion={}\nid={}\ncreated={}\nrecipient={}\nchunker.algorithm={}\nchunker.min_size={}\nchunker.avg_size={}\nchunker.max_size={}\npack_size={}\nzstd_level={}\nsealed_chunk_key={}\nsealed_maintenance_secret={}\nkey_check={}\nobject_lock={}\nmaintenance_recipient={}\n",
            self.format,
            self.version,
            self.id,
            self.created,
            self.recipient,
            algorithm.as_str().unwrap_or_default(),
            c.min_size,
            c.avg_size,
            c.max_size,
            self.pack_size,
            self.zstd_level,
            self.sealed_chunk_key,
            self.sealed_maintenance_secret,
            self.key_check,
            self.object_lock.as_deref().unwrap_or_default(),
            self.maintenance_recipient.as_deref().unwrap_or_default(),
        );
        // Only when set, so the configs written before the field keep their tags; a reader
        // that predates it fails this tag and refuses the config rather than ignore it.
        if let Some(class) = &self.storage_class {
            text.push_str(&format!("storage_class={class}\n"));
        }
        text.into_bytes()
    }

    /// The storage class for data packs, if the config sets one.
    pub fn data_class(&self) -> Result<Option<crate::store::StorageClass>> {
        self.storage_class
            .as_deref()
            .map(|c| {
                c.parse().map_err(|_| {
                    damaged(format!(
                        "its storage_class {c:?} is not a storage class name"
                    ))
                })
            })
            .transpose()
    }

    /// The format and version of a config, before anything else is trusted.
    pub fn probe(bytes: &[u8]) -> Result<u32> {
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(damaged)?;
        if probe.format != FORMAT {
            return Err(Error::Usage(format!(
                "not a drydock repository (format {:?})",
                probe.format
            )));
        }
        Ok(probe.version)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        match Self::probe(bytes)? {
            VERSION => {}
            1 => {
                return Err(Error::Usage(
                    "this repository has format version 1; run `drydock migrate` once with the identity to bring it to version 2".into(),
                ))
            }
            v => {
                return Err(Error::Usage(format!(
                    "repository format version {v} is not supported by this drydock (it reads version {VERSION}); upgrade drydock"
                )))
            }
        }
        let config: RepoConfig = serde_json::from_slice(bytes).map_err(damaged)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.chunker.validate().map_err(damaged)?;
        if self.pack_size < 1024 * 1024 || self.pack_size > 1 << 31 {
            return Err(damaged(format!("unsupported pack size {}", self.pack_size)));
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(damaged(format!(
                "unsupported zstd level {}",
                self.zstd_level
            )));
        }
        // An empty optional field reads like an absent one in the authenticated text, so it
        // must not mean anything else.
        if [
            &self.object_lock,
            &self.maintenance_recipient,
            &self.storage_class,
        ]
        .iter()
        .any(|f| f.as_deref() == Some(""))
        {
            return Err(damaged("an optional field is present but empty"));
        }
        // A newline in a value would let two configs share one authenticated text.
        let fields = [
            self.created.as_str(),
            &self.recipient,
            &self.sealed_chunk_key,
            &self.sealed_maintenance_secret,
            &self.key_check,
            self.object_lock.as_deref().unwrap_or_default(),
            self.maintenance_recipient.as_deref().unwrap_or_default(),
        ];
        if fields.iter().any(|f| f.contains('\n')) {
            return Err(damaged("a field holds a line break"));
        }
        self.data_class()?;
        Ok(())
    }

    /// Refuse to write into a repository that asks for what this drydock does not do: an
    /// `object_lock` it cannot parse (a newer drydock's mode) must not be written without.
    pub fn check_writable(&self) -> Result<()> {
        if let Some(lock) = &self.object_lock {
            lock.parse::<crate::store::WriteRetention>().map_err(|_| {
                Error::Usage(format!(
                    "this repository's Object Lock setting {lock:?} is not one this drydock can write; upgrade drydock (it can still read and restore)"
                ))
            })?;
        }
        Ok(())
    }

    /// The maintenance key's recipient, if the repository has one.
    pub fn maintenance_recipient(&self) -> Result<Option<Recipient>> {
        self.maintenance_recipient
            .as_deref()
            .map(|r| {
                crypto::parse_recipient(r)
                    .map_err(|_| damaged("its maintenance_recipient is not an age recipient"))
            })
            .transpose()
    }

    /// Check a maintenance key against this config: same repository, its identity the
    /// config's maintenance recipient, and its object key vouching for the config.
    pub fn verify_maintenance_key(
        &self,
        repository: &RepoId,
        recipient: &Recipient,
        maintenance: &Recipient,
        object_key: &AuthKey,
        location: &str,
    ) -> Result<()> {
        self.recipient()?;
        if *repository != self.id || recipient.to_string() != self.recipient {
            return Err(Error::Key(format!(
                "the maintenance key is for repository {}, but {location} holds repository {}",
                repository.short(),
                self.id.short()
            )));
        }
        if self.maintenance_recipient()?.map(|r| r.to_string()) != Some(maintenance.to_string()) {
            return Err(Error::Key(format!(
                "this maintenance key is not repository {}'s current one (its config names another maintenance recipient, or none); write a new one with `drydock key maintenance` and the identity",
                self.id.short()
            )));
        }
        let authentic = Tag::from_hex(&self.auth)
            .is_some_and(|t| object_key.verify(Kind::Config, &self.id, &[&self.auth_text()], &t));
        if !authentic {
            return Err(not_authentic("the maintenance key's object key"));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serialises")
    }

    pub fn recipient(&self) -> Result<Recipient> {
        crypto::parse_recipient(&self.recipient).map_err(|_| {
            Error::Integrity("the repository config holds an invalid recipient".into())
        })
    }

    /// Whether the object key of `chunk_key` vouches for this config.
    pub fn authentic_for(&self, chunk_key: &ChunkKey) -> bool {
        Tag::from_hex(&self.auth).is_some_and(|t| {
            AuthKey::objects(chunk_key).verify(Kind::Config, &self.id, &[&self.auth_text()], &t)
        })
    }

    /// Whether the identity's own tag vouches for this config (`None`: it carries none).
    pub fn vouched_by(&self, identity: &Identity) -> Option<bool> {
        let t = self.identity_auth.as_deref()?;
        Some(Tag::from_hex(t).is_some_and(|t| {
            AuthKey::identity(identity).verify(Kind::Config, &self.id, &[&self.auth_text()], &t)
        }))
    }

    /// Recover the chunk key and maintenance secret with the identity, proving the
    /// identity fits and that the config is the one its holders wrote.
    pub fn unseal(&self, identity: &Identity) -> Result<Unsealed> {
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
        let vouched = match self.vouched_by(identity) {
            Some(false) => return Err(not_authentic("the identity")),
            Some(true) => true,
            None => false,
        };
        // From here on the identity is the recipient's, so every failure is a damaged config.
        let chunk_key =
            ChunkKey::from_hex(&unseal_hex(identity, &self.sealed_chunk_key, "chunk key")?)
                .map_err(|_| damaged("its sealed chunk key is not a chunk key"))?;
        self.verify_chunk_key(&chunk_key).map_err(|_| {
            Error::Integrity(format!(
                "the repository config is damaged: its key check does not match its sealed key (repository {})",
                self.id.short()
            ))
        })?;
        if !self.authentic_for(&chunk_key) {
            return Err(not_authentic("its own chunk key"));
        }
        let maintenance = MaintenanceSecret::from_hex(&unseal_hex(
            identity,
            &self.sealed_maintenance_secret,
            "maintenance secret",
        )?)
        .map_err(|_| damaged("its sealed maintenance secret is not one"))?;
        Ok(Unsealed {
            chunk_key,
            maintenance,
            vouched,
        })
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
        if !self.authentic_for(chunk_key) {
            return Err(not_authentic("the backup-only key"));
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

/// Decrypt one sealed hex value of the config with the identity of its recipient.
fn unseal_hex(identity: &Identity, sealed: &str, what: &str) -> Result<Zeroizing<String>> {
    let sealed =
        hex::decode(sealed).map_err(|_| damaged(format!("its sealed {what} is not hex")))?;
    let plain = crypto::decrypt(identity, &sealed).map_err(|e| match e {
        DecryptFailure::WrongKey => damaged(format!(
            "its sealed {what} does not open with the identity of its recipient"
        )),
        DecryptFailure::Corrupt(why) => damaged(format!("its sealed {what}: {why}")),
    })?;
    let plain = Zeroizing::new(plain);
    Ok(Zeroizing::new(
        std::str::from_utf8(&plain).unwrap_or_default().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(identity: Option<&Identity>) -> (Identity, ChunkKey, RepoConfig) {
        let id = Identity::generate();
        let ck = ChunkKey::generate();
        let c = RepoConfig::new(
            &id.to_public(),
            &ck,
            &MaintenanceSecret::generate(),
            None,
            identity.or(Some(&id)),
        );
        (id, ck, c)
    }

    #[test]
    fn unseal_and_reject_other_identities() {
        let (id, ck, c) = fresh(None);
        let back = RepoConfig::parse(&c.to_bytes()).unwrap();
        let u = back.unseal(&id).unwrap();
        assert_eq!(u.chunk_key.to_hex(), ck.to_hex());
        assert!(u.vouched);
        assert!(matches!(
            back.unseal(&Identity::generate()),
            Err(Error::Key(_))
        ));
        assert!(matches!(
            back.verify_chunk_key(&ChunkKey::generate()),
            Err(Error::Key(_))
        ));
    }

    /// A bucket writer's config: its own chunk key sealed to the real recipient, every tag
    /// it can compute recomputed. The identity refuses it; so does the real backup-only key.
    #[test]
    fn a_replaced_config_is_not_authentic() {
        let (id, ck, real) = fresh(None);
        let mut forged = RepoConfig::new(
            &id.to_public(),
            &ChunkKey::generate(),
            &MaintenanceSecret::generate(),
            None,
            None,
        );
        forged.id = real.id;
        forged.identity_auth = real.identity_auth.clone();
        let attacker_ck = ChunkKey::generate();
        forged.key_check = attacker_ck.check_value(&forged.id);
        forged.seal(&attacker_ck, None);
        forged.identity_auth = real.identity_auth.clone();
        assert!(
            matches!(forged.unseal(&id), Err(Error::Integrity(m)) if m.contains("not authentic"))
        );
        // Changing a parameter breaks both tags.
        let mut altered = real.clone();
        altered.chunker.min_size = 64;
        assert!(!altered.authentic_for(&ck));
        assert_eq!(altered.vouched_by(&id), Some(false));
        assert!(matches!(
            altered.verify_backup_key(&real.id, &ck, &id.to_public(), "here"),
            Err(Error::Integrity(_))
        ));
    }

    /// The optional fields are authenticated like the rest, and a writer refuses an Object
    /// Lock setting it cannot parse (a newer drydock's).
    #[test]
    fn optional_fields_are_authenticated_and_unknown_locks_refused_by_writers() {
        let (id, ck, mut c) = fresh(None);
        c.check_writable().unwrap();
        c.object_lock = Some("COMPLIANCE:30".into());
        assert!(!c.authentic_for(&ck));
        c.seal(&ck, Some(&id));
        let back = RepoConfig::parse(&c.to_bytes()).unwrap();
        assert!(back.unseal(&id).is_ok());
        back.check_writable().unwrap();
        c.object_lock = Some("LEGAL-HOLD:30".into());
        assert!(matches!(c.check_writable(), Err(Error::Usage(_))));
    }

    /// The storage class is authenticated, and only present in the text when set, so the
    /// tag of a config without it is what it always was.
    #[test]
    fn the_storage_class_is_authenticated_when_set() {
        let (id, ck, mut c) = fresh(None);
        let before = c.auth_text();
        assert!(!String::from_utf8_lossy(&before).contains("storage_class"));
        c.storage_class = Some("GLACIER".into());
        assert!(!c.authentic_for(&ck));
        assert!(String::from_utf8(c.auth_text())
            .unwrap()
            .ends_with("storage_class=GLACIER\n"));
        c.seal(&ck, Some(&id));
        let back = RepoConfig::parse(&c.to_bytes()).unwrap();
        assert!(back.unseal(&id).is_ok());
        assert_eq!(back.data_class().unwrap().unwrap().as_str(), "GLACIER");
        for bad in ["", "glacier\nx", "NOT A CLASS"] {
            c.storage_class = Some(bad.into());
            assert!(RepoConfig::parse(&c.to_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_other_formats_and_versions() {
        let (_, _, c) = fresh(None);
        let mut v: serde_json::Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        v["version"] = 99.into();
        assert!(matches!(
            RepoConfig::parse(v.to_string().as_bytes()),
            Err(Error::Usage(_))
        ));
        v["version"] = 1.into();
        assert!(matches!(
            RepoConfig::parse(v.to_string().as_bytes()),
            Err(Error::Usage(m)) if m.contains("drydock migrate")
        ));
        assert!(matches!(
            RepoConfig::parse(b"{\"format\":\"x\",\"version\":2}"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            RepoConfig::parse(b"not json"),
            Err(Error::Integrity(_))
        ));
    }
}
