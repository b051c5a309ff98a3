//! S3 Object Lock for a repository (FORMAT.md §4, §11.2): every object is written with a
//! retention date, nothing is deleted before it, and maintenance keeps what stays locked.
//!
//! The store does the S3 side (src/store); this module decides: which retention the config
//! asks for, whether a delete may be tried yet, and which objects get their retention
//! extended so that data a kept snapshot uses never becomes deletable before the snapshot.

use chrono::{DateTime, Utc};

use super::config::RepoConfig;
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, Store, WriteRetention};

/// The retention the repository's config asks for, if any.
pub fn configured(config: &RepoConfig) -> Result<Option<WriteRetention>> {
    config
        .object_lock
        .as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                Error::Integrity(format!(
                    "the repository config is damaged: its object_lock {s:?} is not MODE:DAYS"
                ))
            })
        })
        .transpose()
}

/// Check that the store can lock objects as `retention` asks, for `init --object-lock`.
pub async fn require(store: &dyn Store, retention: &WriteRetention) -> Result<()> {
    match store.bucket_lock().await? {
        None => Err(Error::Usage(format!(
            "--object-lock {retention} needs an S3 bucket with Object Lock; {} cannot lock objects",
            store.describe()
        ))),
        Some(b) if !b.enabled => Err(Error::Usage(format!(
            "the bucket of {} does not have S3 Object Lock enabled: create the bucket with Object Lock (e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`), or init without --object-lock",
            store.describe()
        ))),
        Some(_) => Ok(()),
    }
}

/// Whether any of `keys` is retained past `now` (so none of them may be deleted yet).
pub async fn any_retained(store: &dyn Store, keys: &[String], now: DateTime<Utc>) -> Result<bool> {
    for key in keys {
        match store.retention(key).await {
            Ok(r) if r.until.is_some_and(|u| u > now) => return Ok(true),
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Delete `key`, or leave it for a later run when the store says it is still retained.
pub async fn delete_unless_retained(store: &dyn Store, key: &str) -> Result<bool> {
    match store.delete(key).await {
        Ok(()) => Ok(true),
        Err(Error::Retained(why)) => {
            tracing::info!("{why}");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// How many retention requests run at once.
const CONCURRENCY: usize = 16;

/// Extend the retention of every object in `objects` that could otherwise become deletable
/// within half the retention period, to a full period from now; returns how many were
/// extended. Each object's retention is asked (one HEAD), since its write time says nothing
/// about an extension or a shortening since; at most one extension per object per half
/// period follows.
pub async fn extend(
    store: &dyn Store,
    objects: &[ObjectInfo],
    retention: &WriteRetention,
) -> Result<usize> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let now = Utc::now();
    let period = chrono::Duration::days(i64::from(retention.days));
    let horizon = now + period / 2;
    let extended: Vec<bool> = stream::iter(objects)
        .map(|o| async move {
            let current = match store.retention(&o.key).await {
                Ok(r) => r.until,
                Err(Error::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            if current.is_some_and(|u| u >= horizon) {
                return Ok(false);
            }
            store.extend_retention(&o.key, now + period).await?;
            Ok(true)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(extended.into_iter().filter(|e| *e).count())
}
