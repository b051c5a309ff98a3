//! A repository in a local directory: one file per object, written atomically.
//!
//! A write goes to a temporary file in the target directory, is fsynced, then moved into
//! place (`rename`, or `link` for a conditional create) and the directory is fsynced, so
//! a crash leaves either the whole object or none of it.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::WriteRetention;
use super::{BucketLock, ByteReader, ObjectInfo, PutMode, PutOutcome, Retention, Store};
use crate::error::{Error, Result};

const TMP_PREFIX: &str = ".tmp-";

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("I/O task failed: {e}")))?
}

fn not_found_or(key: &str, what: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(key.to_string())
    } else {
        Error::io(format!("cannot {what} {key}"), e)
    }
}

fn write_atomic(path: &Path, data: &[u8], mode: PutMode) -> Result<PutOutcome> {
    let dir = path.parent().expect("object paths have a parent");
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot create a file in {}", dir.display()), e))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    let outcome = match mode {
        PutMode::Overwrite => {
            tmp.persist(path).map_err(|e| {
                Error::io(format!("cannot rename into {}", path.display()), e.error)
            })?;
            PutOutcome::Written
        }
        PutMode::CreateNew => match tmp.persist_noclobber(path) {
            Ok(_) => PutOutcome::Written,
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
            Err(e) => {
                return Err(Error::io(
                    format!("cannot create {}", path.display()),
                    e.error,
                ))
            }
        },
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))?;
    Ok(outcome)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &entry.path(), out)?;
        } else if meta.is_file() {
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_owned();
            out.push(ObjectInfo {
                key: rel.to_string_lossy().into_owned(),
                size: meta.len(),
                modified: meta.modified().ok().map(chrono::DateTime::from),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let path = self.path(key);
        blocking(move || write_atomic(&path, &data, mode)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| not_found_or(&key, "read", e))
        })
        .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || {
            let mut f = fs::File::open(&path).map_err(|e| not_found_or(&key, "open", e))?;
            // The length comes from an index or pack header: reserve only what the file
            // holds past `offset`, never what was asked for.
            let size = f
                .metadata()
                .map_err(|e| Error::io(format!("cannot read {key}"), e))?
                .len();
            let mut buf = Vec::with_capacity(len.min(size.saturating_sub(offset)) as usize);
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.take(len).read_to_end(&mut buf))
                .map_err(|e| Error::io(format!("cannot read {key}"), e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the directory that can hold the prefix, then filter.
            let dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut out = Vec::new();
            walk(&root, &dir, &mut out)
                .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn open_read(&self, key: &str) -> Result<ByteReader> {
        let f = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| not_found_or(key, "open", e))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, f)))
    }

    async fn put_stream(&self, key: &str, mut data: BoxStream<'_, Result<Bytes>>) -> Result<()> {
        let path = self.path(key);
        let dir = path
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        let io = |what: &str, e| Error::io(format!("cannot {what} {}", path.display()), e);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("create the directory of", e))?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| io("create a temporary file for", e))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        while let Some(piece) = data.next().await {
            file.write_all(&piece?).await.map_err(|e| io("write", e))?;
        }
        // tokio reports a failed write (a full disk) on the next write or flush, never on
        // sync_all: without the flush the last write's failure would be lost and a short
        // file renamed into place.
        file.flush().await.map_err(|e| io("write", e))?;
        file.sync_all().await.map_err(|e| io("sync", e))?;
        drop(file);
        tmp_path
            .persist(&path)
            .map_err(|e| io("rename into", e.error))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(format!("cannot delete {key}"), e))
            }
            _ => Ok(()),
        })
        .await
    }

    /// A directory cannot lock anything.
    async fn bucket_lock(&self) -> Result<Option<BucketLock>> {
        Ok(None)
    }

    /// Ignored: nothing here can be locked.
    fn set_write_retention(&self, _: Option<WriteRetention>) {}

    async fn retention(&self, _: &str) -> Result<Retention> {
        Ok(Retention::default())
    }

    async fn extend_retention(&self, _: &str, _: chrono::DateTime<chrono::Utc>) -> Result<()> {
        Err(Error::Usage(
            "S3 Object Lock needs an S3 bucket; a local repository cannot lock objects".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_owned());
        assert_eq!(
            s.put("a/b/c", Bytes::from_static(b"hello"), PutMode::Overwrite)
                .await
                .unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            s.put("a/b/c", Bytes::from_static(b"x"), PutMode::CreateNew)
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(&s.get("a/b/c").await.unwrap()[..], b"hello");
        assert_eq!(&s.get_range("a/b/c", 1, 3).await.unwrap()[..], b"ell");
        assert_eq!(&s.get_range("a/b/c", 3, 10).await.unwrap()[..], b"lo");
        // A forged 4 GiB range reads what is there and reserves no more.
        let huge = s.get_range("a/b/c", 1, u32::MAX as u64).await.unwrap();
        assert_eq!((&huge[..], huge.len()), (&b"ello"[..], 4));
        assert!(s.get_range("a/b/c", 99, 10).await.unwrap().is_empty());
        s.put("a/d", Bytes::from_static(b"1"), PutMode::Overwrite)
            .await
            .unwrap();
        let keys: Vec<String> = s
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a/b/c", "a/d"]);
        assert!(s.list("zzz/").await.unwrap().is_empty());
        s.delete("a/d").await.unwrap();
        s.delete("a/d").await.unwrap();
        assert!(matches!(s.get("a/d").await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn cannot_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_owned());
        assert_eq!(s.bucket_lock().await.unwrap(), None);
        s.set_write_retention(Some(WriteRetention {
            mode: super::super::LockMode::Compliance,
            days: 1,
        }));
        s.put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(s.retention("k").await.unwrap(), Retention::default());
        assert!(matches!(
            s.extend_retention("k", chrono::Utc::now()).await,
            Err(Error::Usage(m)) if m.contains("local repository")
        ));
        // Deleting stays a plain delete.
        s.delete("k").await.unwrap();
        assert!(matches!(s.get("k").await, Err(Error::NotFound(_))));
    }
}
