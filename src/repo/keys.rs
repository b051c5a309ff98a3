//! The three key kinds (docs/SECURITY.md §1) and what each lets a command do.
//!
//! - The **identity** decrypts everything and vouches for the config.
//! - The **backup-only key** holds the chunk key: it writes and deduplicates, reads nothing.
//! - The **maintenance key** holds the object and deletion keys and an age identity of its
//!   own, which opens snapshot summaries and registry blobs: it runs forget, prune and check
//!   (structure), and can read no file content, file name, table or repository name.

use super::auth::{AuthKey, Authenticator};
use super::config::RepoConfig;
use crate::crypto::{ChunkKey, Identity, KeyFile, MaintenanceKey, Recipient};
use crate::error::{Error, Result};

/// Which kind of key file was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Identity,
    BackupOnly,
    Maintenance,
}

impl KeyKind {
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Identity => "the identity",
            KeyKind::BackupOnly => "a backup-only key",
            KeyKind::Maintenance => "a maintenance key",
        }
    }
}

/// What the key given can do.
pub struct Keys {
    pub kind: KeyKind,
    pub recipient: Recipient,
    /// Tags and checks config, index, pack header and snapshot objects.
    pub objects: Authenticator,
    /// The config's maintenance recipient: writers encrypt snapshot summaries and registry
    /// blobs to it as well.
    pub maintenance_recipient: Option<Recipient>,
    chunk_key: Option<ChunkKey>,
    /// Tags and checks deletion records: the identity's and the maintenance key's only.
    deletions: Option<Authenticator>,
    identity: Option<Identity>,
    /// The maintenance key's own age identity.
    maintenance: Option<Identity>,
}

impl Keys {
    /// The identity, or a key error naming the operation that needs it.
    pub fn identity(&self, operation: &str) -> Result<&Identity> {
        self.identity.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "{operation} needs the repository identity (AGE-SECRET-KEY-…); {} can {}",
                self.kind.describe(),
                match self.kind {
                    KeyKind::Maintenance => "run forget, prune and check but not read backups",
                    _ => "write backups but not read them",
                }
            ))
        })
    }

    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The chunk key, or a key error: the maintenance key cannot write backups.
    pub fn chunk_key(&self, operation: &str) -> Result<&ChunkKey> {
        self.chunk_key.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "{operation} needs the backup-only key or the identity; a maintenance key can run forget, prune and check only"
            ))
        })
    }

    /// An error unless the key can read snapshot metadata (the identity or a maintenance key).
    pub fn can_judge(&self, operation: &str) -> Result<()> {
        match self.kind {
            KeyKind::BackupOnly => Err(Error::Key(format!(
                "{operation} needs the maintenance key or the identity; a backup-only key can write backups but not read them"
            ))),
            _ => Ok(()),
        }
    }

    /// The deletion records' key, or a key error naming the operation that needs it.
    pub fn deletions(&self, operation: &str) -> Result<&Authenticator> {
        self.deletions.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "{operation} needs the maintenance key or the identity; a backup-only key cannot mark packs for deletion"
            ))
        })
    }

    /// The deletion key if the key given holds one.
    pub fn deletions_if_held(&self) -> Option<&Authenticator> {
        self.deletions.as_ref()
    }

    /// The maintenance key's age identity, when that is the key given.
    pub fn maintenance_identity(&self) -> Option<&Identity> {
        self.maintenance.as_ref()
    }

    /// Check the key given against the config and derive what it can do.
    pub(super) fn open(config: &RepoConfig, key: KeyFile, location: &str) -> Result<Keys> {
        let objects = |k: AuthKey| Authenticator::new(k, config.id);
        let deletions = |k: AuthKey| Some(Authenticator::new(k, config.id));
        let maintenance_recipient = config.maintenance_recipient()?;
        Ok(match key {
            KeyFile::Identity(identity) => {
                let u = config.unseal(&identity)?;
                // Without its own tag the identity cannot tell this config from one a
                // bucket writer made with a chunk key of their own (FORMAT.md §4).
                if !u.vouched {
                    return Err(Error::Unauthentic(
                        "the repository config carries no tag of this identity (a repository made by `init --recipient`, or a config rewritten without it); run `drydock key recover-config` once with the identity".into(),
                    ));
                }
                Keys {
                    kind: KeyKind::Identity,
                    recipient: identity.to_public(),
                    objects: objects(AuthKey::objects(&u.chunk_key)),
                    maintenance_recipient,
                    deletions: deletions(AuthKey::deletions(&u.maintenance)),
                    chunk_key: Some(u.chunk_key),
                    identity: Some(*identity),
                    maintenance: None,
                }
            }
            KeyFile::BackupOnly(k) => {
                config.verify_backup_key(&k.repository, &k.chunk_key, &k.recipient, location)?;
                Keys {
                    kind: KeyKind::BackupOnly,
                    recipient: k.recipient,
                    objects: objects(AuthKey::objects(&k.chunk_key)),
                    maintenance_recipient,
                    deletions: None,
                    chunk_key: Some(k.chunk_key),
                    identity: None,
                    maintenance: None,
                }
            }
            KeyFile::Maintenance(k) => {
                let MaintenanceKey {
                    repository,
                    recipient,
                    identity,
                    object_key,
                    secret,
                } = *k;
                let object_key = AuthKey::from_bytes(&object_key);
                config.verify_maintenance_key(
                    &repository,
                    &recipient,
                    &identity.to_public(),
                    &object_key,
                    location,
                )?;
                Keys {
                    kind: KeyKind::Maintenance,
                    recipient,
                    objects: objects(object_key),
                    maintenance_recipient,
                    deletions: deletions(AuthKey::deletions(&secret)),
                    chunk_key: None,
                    identity: None,
                    maintenance: Some(identity),
                }
            }
        })
    }
}

/// The maintenance key of a repository whose config names `identity`'s public key as its
/// maintenance recipient.
pub fn maintenance_key(
    config: &RepoConfig,
    chunk_key: &ChunkKey,
    identity: Identity,
    secret: crate::crypto::MaintenanceSecret,
) -> Result<MaintenanceKey> {
    Ok(MaintenanceKey {
        repository: config.id,
        recipient: config.recipient()?,
        identity,
        object_key: AuthKey::objects(chunk_key).to_bytes(),
        secret,
    })
}
