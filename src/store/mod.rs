//! Object stores: a flat key → bytes namespace under a repository root.
//!
//! Keys use `/` as separator and never start with one. Two implementations: [`local`] (a
//! directory, the embedded default) and [`s3`] (any S3-compatible server).

pub mod local;
pub mod s3;
pub mod s3_settings;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::error::{Error, Result};

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store root.
    pub key: String,
    pub size: u64,
    /// When the store wrote it (S3 `LastModified`, a file's mtime): the store's own clock,
    /// which a snapshot's author does not control.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// How a write treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace (content-addressed objects: the same key always means the same bytes).
    Overwrite,
    /// Fail with [`PutOutcome::AlreadyExists`] if the key exists (conditional create).
    CreateNew,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    AlreadyExists,
}

/// An S3 Object Lock retention mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// A user with `s3:BypassGovernanceRetention` can still shorten the retention or
    /// delete the version.
    Governance,
    /// Nobody, the account's root user included, can shorten the retention or delete the
    /// version before its retain-until date.
    Compliance,
}

impl LockMode {
    /// The S3 wire name (`GOVERNANCE`, `COMPLIANCE`).
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LockMode {
    type Err = Error;

    /// `GOVERNANCE` or `COMPLIANCE`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("GOVERNANCE") {
            Ok(LockMode::Governance)
        } else if s.eq_ignore_ascii_case("COMPLIANCE") {
            Ok(LockMode::Compliance)
        } else {
            Err(Error::Usage(format!(
                "unknown Object Lock mode {s:?}: want GOVERNANCE or COMPLIANCE"
            )))
        }
    }
}

/// The retention every write carries once [`Store::set_write_retention`] set it: each new
/// object version is locked in `mode` until `days` days after it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRetention {
    pub mode: LockMode,
    pub days: u32,
}

impl WriteRetention {
    /// The longest retention accepted: S3 allows 100 years.
    pub const MAX_DAYS: u32 = 36_500;

    /// The retain-until date of a version written now: `days` ahead, rounded up to a
    /// whole second (S3 keeps seconds; rounding down would shorten the retention).
    pub fn until_from_now(&self) -> DateTime<Utc> {
        ceil_second(Utc::now() + chrono::Duration::days(i64::from(self.days)))
    }
}

impl std::fmt::Display for WriteRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.mode, self.days)
    }
}

impl std::str::FromStr for WriteRetention {
    type Err = Error;

    /// `MODE:DAYS`, as `--object-lock GOVERNANCE:30` gives it.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "invalid Object Lock retention {s:?}: want GOVERNANCE:DAYS or COMPLIANCE:DAYS, DAYS from 1 to {}",
                Self::MAX_DAYS
            ))
        };
        let (mode, days) = s.split_once(':').ok_or_else(bad)?;
        let mode: LockMode = mode.parse()?;
        let days: u32 = days.parse().map_err(|_| bad())?;
        if !(1..=Self::MAX_DAYS).contains(&days) {
            return Err(bad());
        }
        Ok(WriteRetention { mode, days })
    }
}

/// The Object Lock retention of one object version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub mode: Option<LockMode>,
    pub until: Option<DateTime<Utc>>,
}

/// A bucket's Object Lock configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketLock {
    /// Object Lock is enabled (such a bucket is always versioned).
    pub enabled: bool,
    /// The bucket's default retention rule, in days (a rule in years counts 365 days a
    /// year).
    pub default_retention: Option<(LockMode, u32)>,
}

/// `t` rounded up to a whole second.
pub(crate) fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = t.timestamp();
    let whole = if t.timestamp_subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    DateTime::from_timestamp(whole, 0).unwrap_or(t)
}

/// An S3 storage class name (`STANDARD`, `GLACIER`, a server's own such as Ceph's): upper
/// case letters, digits and `_`, 1 to 64 of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorageClass(String);

impl StorageClass {
    pub const STANDARD: &'static str = "STANDARD";

    pub fn standard() -> Self {
        StorageClass(Self::STANDARD.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an object of this class must be thawed (RestoreObject) before a GET: S3's
    /// Glacier Flexible Retrieval and Deep Archive. Every other class reads at once
    /// (STANDARD_IA, ONEZONE_IA, GLACIER_IR, INTELLIGENT_TIERING's instant tiers).
    pub fn delayed(&self) -> bool {
        matches!(self.0.as_str(), "GLACIER" | "DEEP_ARCHIVE")
    }

    pub fn is_standard(&self) -> bool {
        self.0 == Self::STANDARD
    }
}

impl std::fmt::Display for StorageClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StorageClass {
    type Err = Error;

    /// Any case; stored upper case, as S3 spells it.
    fn from_str(s: &str) -> Result<Self> {
        let upper = s.to_ascii_uppercase();
        let ok = (1..=64).contains(&upper.len())
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(Error::Usage(format!(
                "invalid storage class {s:?}: want an S3 storage class name such as STANDARD, STANDARD_IA, GLACIER_IR, GLACIER or DEEP_ARCHIVE"
            )));
        }
        Ok(StorageClass(upper))
    }
}

/// How fast (and how dearly) S3 thaws an archived object (RestoreObject's `Tier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ThawTier {
    Expedited,
    Standard,
    Bulk,
}

impl ThawTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ThawTier::Expedited => "Expedited",
            ThawTier::Standard => "Standard",
            ThawTier::Bulk => "Bulk",
        }
    }

    /// AWS's published retrieval cost class of the tier (docs/OPERATIONS.md has the prices).
    pub fn cost_class(self) -> &'static str {
        match self {
            ThawTier::Expedited => "highest (per-GB and per-request fees, the dearest tier)",
            ThawTier::Standard => "medium (per-GB and per-request fees)",
            ThawTier::Bulk => "lowest (free per GB for GLACIER, cheapest for DEEP_ARCHIVE)",
        }
    }

    /// AWS's published upper bound for a thaw of `class` in this tier, in minutes; `None`
    /// where the tier does not exist for the class (Expedited for DEEP_ARCHIVE).
    pub fn typical_minutes(self, class: &StorageClass) -> Option<u64> {
        match (class.as_str(), self) {
            ("DEEP_ARCHIVE", ThawTier::Expedited) => None,
            ("DEEP_ARCHIVE", ThawTier::Standard) => Some(12 * 60),
            ("DEEP_ARCHIVE", ThawTier::Bulk) => Some(48 * 60),
            (_, ThawTier::Expedited) => Some(5),
            (_, ThawTier::Standard) => Some(5 * 60),
            (_, ThawTier::Bulk) => Some(12 * 60),
        }
    }
}

/// Where an archived object's thaw stands (S3's `x-amz-restore` header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thaw {
    /// Never asked for, or its copy expired.
    NotRequested,
    /// RestoreObject was issued and S3 is still working on it.
    Ongoing,
    /// A temporary copy is readable, until `expiry` if S3 said.
    Ready { expiry: Option<String> },
}

/// What HeadObject says about an object's storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdState {
    pub class: StorageClass,
    pub thaw: Thaw,
}

impl ColdState {
    /// Whether a GET can read it now.
    pub fn readable(&self) -> bool {
        !self.class.delayed() || matches!(self.thaw, Thaw::Ready { .. })
    }
}

/// One object as a listing gives it, with its storage class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassedObject {
    pub key: String,
    pub size: u64,
    pub class: StorageClass,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// A human description (`/path` or `s3://bucket/prefix`) for messages.
    fn describe(&self) -> String;
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome>;
    /// The whole object; [`Error::NotFound`] if absent.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// `len` bytes from `offset`; fewer only if the object is shorter.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes>;
    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Stream an object of any size; [`Error::NotFound`] if absent.
    async fn open_read(&self, key: &str) -> Result<ByteReader>;
    /// Write an object of any size from a stream, atomically: readers see all of it or
    /// nothing. Memory stays bounded by one part.
    async fn put_stream(&self, key: &str, data: BoxStream<'_, Result<Bytes>>) -> Result<()>;
    /// The file an object is, for a store that is a local directory (restores write such a
    /// target in place, pack by pack); `None` for others.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    /// The bucket's Object Lock configuration; `None` for a store that cannot lock objects
    /// at all.
    async fn bucket_lock(&self) -> Result<Option<BucketLock>> {
        Ok(None)
    }

    /// From now on every write carries this retention, or none (`None`). While one is set
    /// (the "locked mode") the store also reads past delete markers: `delete` removes every
    /// version of a key, `list` and the reads see the newest version that is not a delete
    /// marker. Ignored by stores that cannot lock.
    fn set_write_retention(&self, _retention: Option<WriteRetention>) {}

    /// The retention of the object's current version (in locked mode past a delete
    /// marker: its newest version that is not one); both fields `None`: not locked;
    /// [`Error::NotFound`] if absent.
    async fn retention(&self, _key: &str) -> Result<Retention> {
        Ok(Retention::default())
    }

    /// The ids of an object's earlier versions that are not delete markers, newest first
    /// (the current one left out); empty outside locked mode or for a store without
    /// versions. What a reader falls back to when a bucket writer overwrote an object.
    async fn past_versions(&self, _key: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// One version of an object, by the id [`past_versions`](Store::past_versions) gave.
    async fn get_version(&self, key: &str, _version: &str) -> Result<Bytes> {
        Err(Error::NotFound(key.to_string()))
    }

    /// Lock the object's current version (as [`Store::retention`] finds it) until at least
    /// `until`, in the write retention's mode (a COMPLIANCE retention stays COMPLIANCE);
    /// never shortens a retention that already reaches further, and a date in the past
    /// does nothing. [`Error::NotFound`] if absent; [`Error::Usage`] for a store that cannot
    /// lock, or when neither the write retention nor the object has a mode.
    async fn extend_retention(&self, key: &str, _until: DateTime<Utc>) -> Result<()> {
        Err(Error::Usage(format!(
            "cannot lock {key}: {} does not support S3 Object Lock",
            self.describe()
        )))
    }

    /// [`put`](Store::put) into a storage class; stores without classes ignore it.
    async fn put_in_class(
        &self,
        key: &str,
        data: Bytes,
        mode: PutMode,
        _class: &StorageClass,
    ) -> Result<PutOutcome> {
        self.put(key, data, mode).await
    }

    /// Every object under `prefix` with its storage class; empty for a store without
    /// classes (everything in it reads at once).
    async fn list_classes(&self, _prefix: &str) -> Result<Vec<ClassedObject>> {
        Ok(Vec::new())
    }

    /// An object's storage class and thaw state (HeadObject); [`Error::NotFound`] if absent.
    async fn cold_state(&self, _key: &str) -> Result<ColdState> {
        Ok(ColdState {
            class: StorageClass::standard(),
            thaw: Thaw::NotRequested,
        })
    }

    /// Ask S3 to thaw an archived object for `days` days (RestoreObject). Asking again
    /// while a thaw runs, or for an object already readable, is not an error.
    async fn request_thaw(&self, key: &str, _tier: ThawTier, _days: u32) -> Result<()> {
        Err(Error::Usage(format!(
            "cannot thaw {key}: {} has no archival storage classes",
            self.describe()
        )))
    }
}

/// A store that refuses every write: a Velero BSL with `accessMode: ReadOnly`.
pub struct ReadOnly {
    inner: Arc<dyn Store>,
    why: String,
}

impl ReadOnly {
    pub fn wrap(inner: Arc<dyn Store>, why: impl Into<String>) -> Arc<dyn Store> {
        Arc::new(ReadOnly {
            inner,
            why: why.into(),
        })
    }

    fn refuse<T>(&self, key: &str) -> Result<T> {
        Err(Error::Usage(format!(
            "refusing to write {key}: {}",
            self.why
        )))
    }
}

#[async_trait]
impl Store for ReadOnly {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put(&self, key: &str, _: Bytes, _: PutMode) -> Result<PutOutcome> {
        self.refuse(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.refuse(key)
    }
    async fn open_read(&self, key: &str) -> Result<ByteReader> {
        self.inner.open_read(key).await
    }
    async fn put_stream(&self, key: &str, _: BoxStream<'_, Result<Bytes>>) -> Result<()> {
        self.refuse(key)
    }
    async fn bucket_lock(&self) -> Result<Option<BucketLock>> {
        self.inner.bucket_lock().await
    }
    /// Forwarded: it also switches how the inner store reads (past delete markers).
    fn set_write_retention(&self, retention: Option<WriteRetention>) {
        self.inner.set_write_retention(retention)
    }
    async fn retention(&self, key: &str) -> Result<Retention> {
        self.inner.retention(key).await
    }
    async fn extend_retention(&self, key: &str, _: DateTime<Utc>) -> Result<()> {
        self.refuse(key)
    }
    async fn past_versions(&self, key: &str) -> Result<Vec<String>> {
        self.inner.past_versions(key).await
    }
    async fn get_version(&self, key: &str, version: &str) -> Result<Bytes> {
        self.inner.get_version(key, version).await
    }
    async fn put_in_class(
        &self,
        key: &str,
        _: Bytes,
        _: PutMode,
        _: &StorageClass,
    ) -> Result<PutOutcome> {
        self.refuse(key)
    }
    async fn list_classes(&self, prefix: &str) -> Result<Vec<ClassedObject>> {
        self.inner.list_classes(prefix).await
    }
    async fn cold_state(&self, key: &str) -> Result<ColdState> {
        self.inner.cold_state(key).await
    }
    /// Forwarded: a thaw changes no object, and restoring from a read-only location needs it.
    async fn request_thaw(&self, key: &str, tier: ThawTier, days: u32) -> Result<()> {
        self.inner.request_thaw(key, tier, days).await
    }
}

/// A streaming object body.
pub type ByteReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// S3 connection settings given on the command line or in the environment.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// An INI credentials file (`[profile]` sections with `aws_access_key_id` and
    /// `aws_secret_access_key`); when set, it alone supplies the credentials.
    pub credentials_file: Option<std::path::PathBuf>,
    /// The profile to use from the credentials file (default `default`).
    pub profile: Option<String>,
    /// TLS trust beyond the system roots (a BSL's CA certificate, `insecureSkipTLSVerify`).
    pub tls: s3_settings::TlsTrust,
    /// What every request carries (a BSL's encryption, tagging and checksum settings).
    pub requests: s3_settings::RequestSettings,
    /// With neither region nor endpoint: ask S3 for the bucket's region, as the Velero AWS
    /// plugin does, instead of taking the environment's or us-east-1.
    pub discover_region: bool,
}

/// A parsed `--repo` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    pub fn parse(url: &str) -> Result<Self> {
        if url.is_empty() {
            return Err(Error::Usage(
                "the repository location is empty; give --repo".into(),
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || !valid_bucket(bucket) {
                return Err(Error::Usage(format!(
                    "invalid S3 bucket in {url:?}: want s3://bucket/prefix"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::Usage(format!(
                    "{url:?}: a file:// URL needs an absolute path"
                )));
            }
            return Ok(Location::Local(path.into()));
        }
        if url.contains("://") {
            return Err(Error::Usage(format!(
                "unsupported repository URL {url:?}: use s3://bucket/prefix, file:///path or a path"
            )));
        }
        Ok(Location::Local(url.into()))
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Open the store at `location`.
pub async fn open(location: &Location, s3: &S3Options) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::Local(path) => Arc::new(local::LocalStore::new(path.clone())),
        Location::S3 { bucket, prefix } => {
            Arc::new(s3::S3Store::connect(bucket, prefix, s3).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("/tmp/r").unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/r").unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert_eq!(
            Location::parse("s3://bkt/a/b/").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert!(matches!(Location::parse("s3://"), Err(Error::Usage(_))));
        assert!(matches!(
            Location::parse("s3://Bad_Bucket/x"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(Location::parse("ftp://x/y"), Err(Error::Usage(_))));
        assert!(matches!(
            Location::parse("file://rel"),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn parses_lock_modes_and_retentions() {
        for (text, mode) in [
            ("GOVERNANCE", LockMode::Governance),
            ("compliance", LockMode::Compliance),
        ] {
            assert_eq!(text.parse::<LockMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), text.to_uppercase());
        }
        assert!(matches!("LEGAL".parse::<LockMode>(), Err(Error::Usage(_))));
        let r: WriteRetention = "COMPLIANCE:30".parse().unwrap();
        assert_eq!(
            r,
            WriteRetention {
                mode: LockMode::Compliance,
                days: 30
            }
        );
        assert_eq!(r.to_string(), "COMPLIANCE:30");
        for bad in [
            "GOVERNANCE",
            "GOVERNANCE:",
            "GOVERNANCE:0",
            "GOVERNANCE:-1",
            "GOVERNANCE:36501",
            "NONE:3",
        ] {
            assert!(
                matches!(bad.parse::<WriteRetention>(), Err(Error::Usage(_))),
                "{bad}"
            );
        }
        let until = r.until_from_now();
        assert_eq!(until.timestamp_subsec_nanos(), 0);
        let want = Utc::now() + chrono::Duration::days(30);
        assert!((until - want).num_seconds().abs() <= 2);
    }

    #[test]
    fn rounds_up_to_a_second() {
        let t = DateTime::from_timestamp(100, 1).unwrap();
        assert_eq!(ceil_second(t), DateTime::from_timestamp(101, 0).unwrap());
        let whole = DateTime::from_timestamp(100, 0).unwrap();
        assert_eq!(ceil_second(whole), whole);
    }

    #[tokio::test]
    async fn read_only_forwards_lock_reads_and_refuses_locking() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(local::LocalStore::new(dir.path().to_owned()));
        inner
            .put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        let ro = ReadOnly::wrap(inner, "the location is read-only");
        ro.set_write_retention(Some(WriteRetention {
            mode: LockMode::Governance,
            days: 1,
        }));
        assert_eq!(ro.bucket_lock().await.unwrap(), None);
        assert_eq!(ro.retention("k").await.unwrap(), Retention::default());
        assert!(matches!(
            ro.extend_retention("k", Utc::now()).await,
            Err(Error::Usage(m)) if m.contains("read-only")
        ));
    }

    #[test]
    fn a_retained_object_is_a_plain_failure() {
        let e = Error::Retained("kept".into());
        assert_eq!(e.exit_code(), crate::error::exit::FAILURE);
        assert_eq!(e.hint(), None);
    }
}
