//! Object stores: a flat key → bytes namespace under a repository root.
//!
//! Keys use `/` as separator and never start with one. Two implementations: [`local`] (a
//! directory, the embedded default) and [`s3`] (any S3-compatible server).

pub mod local;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
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
}
