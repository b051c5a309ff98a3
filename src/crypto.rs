//! Keys and encryption: age X25519 for confidentiality and authenticity, keyed BLAKE3 for ids.
//!
//! Two kinds of key file exist (docs/SECURITY.md):
//! - an **identity**: a standard age identity file (`AGE-SECRET-KEY-1…`); it decrypts everything;
//! - a **backup-only key**: the repository's recipient and chunk-id key; it can write and
//!   deduplicate but cannot decrypt anything.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{BlobId, RepoId};

pub use age::x25519::{Identity, Recipient};

/// The secret key behind blob ids and the chunker's seed.
#[derive(Clone)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key);
        ChunkKey(key)
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut key)
            .map_err(|_| Error::Key("chunk key is not 64 hex digits".into()))?;
        Ok(ChunkKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `BLAKE3-keyed(chunk_key, type_byte ‖ data)`.
    pub fn blob_id(&self, type_byte: u8, data: &[u8]) -> BlobId {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&[type_byte]);
        h.update(data);
        BlobId(*h.finalize().as_bytes())
    }

    /// The gear-table seed of the chunker, secret so boundaries do not fingerprint content.
    pub fn chunker_seed(&self) -> u64 {
        let d = self.derive("drydock chunker seed v1");
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// A public value proving a key belongs to a repository without revealing the key.
    pub fn check_value(&self, repo: &RepoId) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.derive("drydock key check v1"));
        h.update(&repo.0);
        h.finalize().to_hex().to_string()
    }

    fn derive(&self, context: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(&self.0);
        *h.finalize().as_bytes()
    }
}

/// What a backup-only key file holds.
#[derive(Serialize, Deserialize)]
struct BackupKeyFile {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    repository: RepoId,
    recipient: String,
    chunk_key: String,
}

const BACKUP_KEY_TYPE: &str = "drydock-backup-only-key";

/// A backup-only key: enough to write and deduplicate, not to read.
#[derive(Clone)]
pub struct BackupKey {
    pub repository: RepoId,
    pub recipient: Recipient,
    pub chunk_key: ChunkKey,
}

/// A key file as given with `--key`.
pub enum KeyFile {
    Identity(Box<Identity>),
    BackupOnly(BackupKey),
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| {
            Error::Key(format!(
                "cannot read key file {}: {e} (give --key or DRYDOCK_KEY_FILE)",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let body: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        match body.as_slice() {
            [line] if line.starts_with("AGE-SECRET-KEY-1") => Identity::from_str(line)
                .map(|id| KeyFile::Identity(Box::new(id)))
                .map_err(|e| Error::Key(format!("invalid age identity: {e}"))),
            [line] if line.starts_with('{') => {
                let f: BackupKeyFile = serde_json::from_str(line)
                    .map_err(|e| Error::Key(format!("invalid backup-only key: {e}")))?;
                if f.kind != BACKUP_KEY_TYPE || f.version != 1 {
                    return Err(Error::Key(format!(
                        "unsupported key type {:?} version {}",
                        f.kind, f.version
                    )));
                }
                Ok(KeyFile::BackupOnly(BackupKey {
                    repository: f.repository,
                    recipient: parse_recipient(&f.recipient)?,
                    chunk_key: ChunkKey::from_hex(&f.chunk_key)?,
                }))
            }
            _ => Err(Error::Key(
                "not a drydock key file: expected one age identity (AGE-SECRET-KEY-1…) or one backup-only key line"
                    .into(),
            )),
        }
    }
}

pub fn parse_recipient(s: &str) -> Result<Recipient> {
    Recipient::from_str(s.trim())
        .map_err(|e| Error::Usage(format!("invalid age recipient {s:?}: {e}")))
}

impl BackupKey {
    pub fn to_file_text(&self) -> String {
        let f = BackupKeyFile {
            kind: BACKUP_KEY_TYPE.into(),
            version: 1,
            repository: self.repository,
            recipient: self.recipient.to_string(),
            chunk_key: self.chunk_key.to_hex(),
        };
        format!(
            "# drydock backup-only key for repository {}\n\
             # It can write and deduplicate backups but cannot decrypt them. Keep it secret.\n{}\n",
            self.repository.short(),
            serde_json::to_string(&f).expect("serialisable")
        )
    }
}

pub fn identity_file_text(identity: &Identity) -> String {
    format!(
        "# drydock repository identity: decrypts every backup. Keep it offline.\n\
         # created: {}\n# public key: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

/// Write a secret file with mode 0600, refusing to replace an existing one.
pub fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} already exists; refusing to overwrite a key file",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot create {}", path.display()), e)
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Encrypt to one recipient in age's binary format.
pub fn encrypt(recipient: &Recipient, plaintext: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .expect("one X25519 recipient is always valid");
    let mut out = Vec::with_capacity(plaintext.len() + 256 + plaintext.len() / 4096);
    let mut w = encryptor.wrap_output(&mut out).expect("writing to a Vec");
    w.write_all(plaintext).expect("writing to a Vec");
    w.finish().expect("writing to a Vec");
    out
}

/// Why decryption failed: a key that does not fit, or damaged bytes.
#[derive(Debug)]
pub enum DecryptFailure {
    WrongKey,
    Corrupt(String),
}

pub fn decrypt(identity: &Identity, ciphertext: &[u8]) -> Result<Vec<u8>, DecryptFailure> {
    let decryptor = age::Decryptor::new_buffered(ciphertext)
        .map_err(|e| DecryptFailure::Corrupt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => DecryptFailure::WrongKey,
            other => DecryptFailure::Corrupt(other.to_string()),
        })?;
    let mut out = Vec::with_capacity(ciphertext.len());
    reader
        .read_to_end(&mut out)
        .map_err(|e| DecryptFailure::Corrupt(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_round_trip_and_tamper() {
        let id = Identity::generate();
        let ct = encrypt(&id.to_public(), b"harbor secret");
        assert_eq!(decrypt(&id, &ct).unwrap(), b"harbor secret");
        let other = Identity::generate();
        assert!(matches!(
            decrypt(&other, &ct),
            Err(DecryptFailure::WrongKey)
        ));
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decrypt(&id, &bad),
            Err(DecryptFailure::Corrupt(_))
        ));
    }

    #[test]
    fn key_files_parse() {
        let id = Identity::generate();
        assert!(matches!(
            KeyFile::parse(&identity_file_text(&id)).unwrap(),
            KeyFile::Identity(_)
        ));
        let bk = BackupKey {
            repository: RepoId([1; 32]),
            recipient: id.to_public(),
            chunk_key: ChunkKey::generate(),
        };
        match KeyFile::parse(&bk.to_file_text()).unwrap() {
            KeyFile::BackupOnly(k) => assert_eq!(k.chunk_key.to_hex(), bk.chunk_key.to_hex()),
            _ => panic!("expected a backup-only key"),
        }
        assert!(KeyFile::parse("garbage").is_err());
        assert!(KeyFile::parse("").is_err());
    }

    #[test]
    fn blob_ids_are_keyed_and_typed() {
        let k1 = ChunkKey::generate();
        let k2 = ChunkKey::generate();
        assert_ne!(k1.blob_id(0, b"x"), k2.blob_id(0, b"x"));
        assert_ne!(k1.blob_id(0, b"x"), k1.blob_id(1, b"x"));
        assert_eq!(k1.blob_id(0, b"x"), k1.blob_id(0, b"x"));
    }
}
