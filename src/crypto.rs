//! Keys and encryption: age X25519 for confidentiality and authenticity, keyed BLAKE3 for ids.
//!
//! Three kinds of key file exist (docs/SECURITY.md):
//! - an **identity**: a standard age identity file (`AGE-SECRET-KEY-1…`); it decrypts everything;
//! - a **backup-only key**: the repository's recipient and chunk-id key; it can write and
//!   deduplicate but cannot decrypt anything;
//! - a **maintenance key**: the object and deletion keys and an age identity of its own, which
//!   opens snapshot summaries and registry blobs (ids and digests) but no content; it runs
//!   forget, prune and check without the identity.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::ids::{BlobId, RepoId};

pub use age::x25519::{Identity, Recipient};

/// The secret key behind blob ids and the chunker's seed; wiped from memory when dropped
/// (age's `Identity` wipes itself the same way, through x25519-dalek).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key);
        ChunkKey(key)
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let mut key = ChunkKey([0u8; 32]);
        hex::decode_to_slice(s.trim(), &mut key.0)
            .map_err(|_| Error::Key("chunk key is not 64 hex digits".into()))?;
        Ok(key)
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
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

    fn derive(&self, context: &str) -> Zeroizing<[u8; 32]> {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(&self.0);
        Zeroizing::new(*h.finalize().as_bytes())
    }

    /// Lend the raw key to a key derivation (repo::auth) without copying it out.
    pub fn with_bytes<T>(&self, f: impl FnOnce(&[u8; 32]) -> T) -> T {
        f(&self.0)
    }
}

/// The random secret behind the deletion key (repo::auth): sealed in `config` to the
/// identity, absent from backup-only keys, so a backup writer cannot forge deletion records.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MaintenanceSecret([u8; 32]);

impl MaintenanceSecret {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key);
        MaintenanceSecret(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MaintenanceSecret(bytes)
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let mut key = MaintenanceSecret([0u8; 32]);
        hex::decode_to_slice(s.trim(), &mut key.0)
            .map_err(|_| Error::Key("maintenance secret is not 64 hex digits".into()))?;
        Ok(key)
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    pub fn with_bytes<T>(&self, f: impl FnOnce(&[u8; 32]) -> T) -> T {
        f(&self.0)
    }
}

/// What drydock writes into a backup-only key file (read back by [`parse_key_line`]).
#[derive(Serialize)]
struct BackupKeyFile<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    version: u32,
    repository: RepoId,
    recipient: String,
    chunk_key: &'a str,
}

const BACKUP_KEY_TYPE: &str = "drydock-backup-only-key";
const MAINTENANCE_KEY_TYPE: &str = "drydock-maintenance-key";

/// What drydock writes into a maintenance key file.
#[derive(Serialize)]
struct MaintenanceKeyFile<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    version: u32,
    repository: RepoId,
    recipient: String,
    maintenance_identity: &'a str,
    object_key: &'a str,
    maintenance_secret: &'a str,
}

/// A maintenance key: enough to judge and delete, not to read content or write backups.
pub struct MaintenanceKey {
    pub repository: RepoId,
    /// The repository's recipient (to recognise the repository, never to encrypt).
    pub recipient: Recipient,
    /// Opens snapshot summaries (section 2) and registry blobs; its public key is the
    /// config's `maintenance_recipient`.
    pub identity: Identity,
    /// The object key (derived from the chunk key, which the maintenance key does not hold).
    pub object_key: Zeroizing<[u8; 32]>,
    pub secret: MaintenanceSecret,
}

impl MaintenanceKey {
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let identity = self.identity.to_string();
        let object_key = Zeroizing::new(hex::encode(*self.object_key));
        let secret = self.secret.to_hex();
        let json = Zeroizing::new(
            serde_json::to_string(&MaintenanceKeyFile {
                kind: MAINTENANCE_KEY_TYPE,
                version: 1,
                repository: self.repository,
                recipient: self.recipient.to_string(),
                maintenance_identity: identity.expose_secret(),
                object_key: &object_key,
                maintenance_secret: &secret,
            })
            .expect("serialisable"),
        );
        Zeroizing::new(format!(
            "# drydock maintenance key for repository {}\n\
             # It runs forget, prune and check and can delete backups, but cannot read them. Keep it secret.\n{}\n",
            self.repository.short(),
            *json
        ))
    }
}

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
    Maintenance(Box<MaintenanceKey>),
}

/// Key files are a few hundred bytes; anything far larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl KeyFile {
    /// Read, parse and check the permissions of a key file (a symlink, as in a Kubernetes
    /// Secret volume, is followed: the file it names is checked).
    pub fn load(path: &Path) -> Result<Self> {
        let cannot = |e: std::io::Error| {
            Error::Key(format!(
                "cannot read key file {}: {e} (give --key or DRYDOCK_KEY_FILE)",
                path.display()
            ))
        };
        let file = fs::File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        // Sized up front so that the secret is never copied by a growing buffer.
        let mut text = Zeroizing::new(String::with_capacity(
            meta.len().min(MAX_KEY_FILE) as usize + 1,
        ));
        file.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(cannot)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(Error::Key(format!(
                "{} is not a drydock key file: larger than {MAX_KEY_FILE} bytes",
                path.display()
            )));
        }
        let key = Self::parse(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
        check_permissions(path, &meta, &key)?;
        Ok(key)
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
            [line] if line.starts_with('{') => parse_key_line(line),
            _ => Err(Error::Key(
                "not a drydock key file: expected one age identity (AGE-SECRET-KEY-1…), or one backup-only or maintenance key line"
                    .into(),
            )),
        }
    }
}

/// A JSON value whose strings are wiped when it is dropped (it holds the chunk key).
struct Wiped(Value);

impl Drop for Wiped {
    fn drop(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => a.iter_mut().for_each(wipe),
                Value::Object(m) => m.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// Parse the JSON line of a backup-only or maintenance key. Errors name the field, never
/// its value: a message quoting a broken file would print the key into logs (serde's
/// messages quote values, so they are not used).
fn parse_key_line(line: &str) -> Result<KeyFile> {
    let bad = |what: String| Error::Key(format!("invalid key file: {what}"));
    let json = Wiped(serde_json::from_str(line).map_err(|e| {
        bad(format!(
            "not valid JSON (at column {}); write it again with `drydock key backup-only` or `drydock key maintenance`",
            e.column()
        ))
    })?);
    let obj = json
        .0
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let field = |name: &str| {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("field \"{name}\" is missing or not a string")))
    };
    let hex_field = |name: &str| bad(format!("field \"{name}\" is not 64 hex digits"));
    let version = obj.get("version").and_then(Value::as_u64);
    let kind = field("type")?;
    if ![BACKUP_KEY_TYPE, MAINTENANCE_KEY_TYPE].contains(&kind) || version != Some(1) {
        return Err(bad(format!(
            "unsupported key file: this drydock reads types \"{BACKUP_KEY_TYPE}\" and \"{MAINTENANCE_KEY_TYPE}\", version 1"
        )));
    }
    let repository = RepoId::from_hex(field("repository")?).map_err(|_| hex_field("repository"))?;
    let recipient = Recipient::from_str(field("recipient")?.trim())
        .map_err(|_| bad("field \"recipient\" is not an age recipient (age1…)".into()))?;
    if kind == BACKUP_KEY_TYPE {
        return Ok(KeyFile::BackupOnly(BackupKey {
            repository,
            recipient,
            chunk_key: ChunkKey::from_hex(field("chunk_key")?)
                .map_err(|_| hex_field("chunk_key"))?,
        }));
    }
    let mut object_key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(field("object_key")?, &mut *object_key)
        .map_err(|_| hex_field("object_key"))?;
    Ok(KeyFile::Maintenance(Box::new(MaintenanceKey {
        repository,
        recipient,
        identity: Identity::from_str(field("maintenance_identity")?.trim())
            .map_err(|_| bad("field \"maintenance_identity\" is not an age identity".into()))?,
        object_key,
        secret: MaintenanceSecret::from_hex(field("maintenance_secret")?)
            .map_err(|_| hex_field("maintenance_secret"))?,
    })))
}

/// Whether a key file's mode lets anyone but its owner in. As PostgreSQL judges
/// `ssl_key_file`: group read is fine only for a file root owns, which is what a Kubernetes
/// Secret volume with `fsGroup` and `defaultMode: 0440` gives a non-root pod.
fn unprotected(meta: &fs::Metadata) -> bool {
    let allowed = if meta.uid() == 0 { 0o740 } else { 0o700 };
    meta.mode() & 0o777 & !allowed != 0
}

/// Refuse an identity others can read; warn about such a backup-only key (it cannot
/// decrypt, and a Kubernetes Secret volume without fsGroup must be 0444 for a non-root pod,
/// so only files a user owns are warned about).
fn check_permissions(path: &Path, meta: &fs::Metadata, key: &KeyFile) -> Result<()> {
    if !unprotected(meta) {
        return Ok(());
    }
    let mode = meta.mode() & 0o777;
    match key {
        // A maintenance key can delete every backup: guarded like the identity.
        KeyFile::Identity(_) | KeyFile::Maintenance(_) => Err(Error::Key(format!(
            "key file {} is accessible by group or others (mode {mode:04o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ))),
        KeyFile::BackupOnly(_) => {
            if meta.uid() != 0 {
                tracing::warn!(
                    "backup-only key file {} is accessible by group or others (mode {mode:04o}): run `chmod 600 {}`; it cannot decrypt backups but can add snapshots",
                    path.display(),
                    path.display()
                );
            }
            Ok(())
        }
    }
}

pub fn parse_recipient(s: &str) -> Result<Recipient> {
    Recipient::from_str(s.trim())
        .map_err(|e| Error::Usage(format!("invalid age recipient {s:?}: {e}")))
}

impl BackupKey {
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let chunk_key = self.chunk_key.to_hex();
        let json = Zeroizing::new(
            serde_json::to_string(&BackupKeyFile {
                kind: BACKUP_KEY_TYPE,
                version: 1,
                repository: self.repository,
                recipient: self.recipient.to_string(),
                chunk_key: &chunk_key,
            })
            .expect("serialisable"),
        );
        Zeroizing::new(format!(
            "# drydock backup-only key for repository {}\n\
             # It can write and deduplicate backups but cannot decrypt them. Keep it secret.\n{}\n",
            self.repository.short(),
            *json
        ))
    }
}

pub fn identity_file_text(identity: &Identity) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "# drydock repository identity: decrypts every backup. Keep it offline.\n\
         # created: {}\n# public key: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_public(),
        identity.to_string().expose_secret()
    ))
}

/// No core dumps for this process or its children, and no ptrace attach or /proc/PID/mem
/// reads by other processes of the same user: either would expose the identity and the
/// chunk key held in memory. Call first thing in `main`.
pub fn disable_core_dumps() -> std::io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process with valid arguments.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    // SAFETY: as above; PR_SET_DUMPABLE takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    encrypt_to(&[recipient], plaintext)
}

/// Encrypt to every recipient given (at least one) in age's binary format.
pub fn encrypt_to(recipients: &[&Recipient], plaintext: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| *r as &dyn age::Recipient))
            .expect("X25519 recipients are always valid");
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

    fn backup_key_line(chunk_key: &str, recipient: &str, version: &str) -> String {
        format!(
            r#"{{"type":"drydock-backup-only-key","version":{version},"repository":"{}","recipient":"{recipient}","chunk_key":"{chunk_key}"}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn key_file_errors_never_quote_values() {
        let secret = "5e".repeat(32);
        let recipient = Identity::generate().to_public().to_string();
        let cases = [
            // The chunk key is fine, another field is broken.
            backup_key_line(&secret, "age1broken", "1"),
            backup_key_line(&secret, &recipient, "\"1\""),
            backup_key_line(&secret, &recipient, "2"),
            backup_key_line(&secret, &recipient, "1").replace("\"ab", "\"zz"),
            backup_key_line(&secret, &recipient, "1").replace("}", ""),
            // The chunk key itself is malformed: too short, not hex, not a string.
            backup_key_line(&secret[..62], &recipient, "1"),
            backup_key_line(&format!("{}xy", &secret[..62]), &recipient, "1"),
            backup_key_line(&secret, &recipient, "1")
                .replace(&format!("\"{secret}\""), &format!("[\"{secret}\"]")),
        ];
        for line in &cases {
            let err = match KeyFile::parse(line) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted {line}"),
            };
            assert!(err.starts_with("invalid key file: "), "{err}");
            for leaked in [&secret[..16], "age1broken", "zz", "5e5e"] {
                assert!(!err.contains(leaked), "{err:?} quotes {leaked}");
            }
        }
        let ok = backup_key_line(&secret, &recipient, "1");
        assert!(matches!(KeyFile::parse(&ok), Ok(KeyFile::BackupOnly(_))));
    }

    #[test]
    fn identity_files_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        write_secret_file(&path, &identity_file_text(&Identity::generate())).unwrap();
        let set = |mode: u32| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        assert!(matches!(KeyFile::load(&path), Ok(KeyFile::Identity(_))));
        for mode in [0o644, 0o604, 0o660, 0o606] {
            set(mode);
            let err = KeyFile::load(&path).err().expect("refused").to_string();
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
        }
        // Group read is fine only for a root-owned file (a Secret volume with fsGroup).
        set(0o440);
        let root_owned = fs::metadata(&path).unwrap().uid() == 0;
        assert_eq!(KeyFile::load(&path).is_ok(), root_owned);
        // Through a symlink, as a Kubernetes Secret volume mounts it: the target is checked.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        set(0o644);
        assert!(KeyFile::load(&link).is_err());
        set(0o400);
        assert!(KeyFile::load(&link).is_ok());
    }

    #[test]
    fn core_dumps_are_off_after_disable() {
        disable_core_dumps().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: reading this process's own limits and flag.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_CORE, &mut lim), 0);
            assert_eq!(libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
        }
        assert_eq!((lim.rlim_cur, lim.rlim_max), (0, 0));
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
