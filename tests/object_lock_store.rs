//! S3 Object Lock in the store layer, against a real S3 server (moto_server): writes carry
//! a retention, deletes remove every version or say why they cannot, and a delete marker
//! planted by a bucket writer hides nothing from a locked store.
//!
//! moto 5 quirks these tests work with (checked by experiment): GetObjectRetention is not
//! implemented (it answers with the object itself; the store reads HeadObject's lock
//! headers), CreateMultipartUpload drops the lock headers (the store locks the completed
//! version with PutObjectRetention), and PutObjectRetention accepts a shorter date in any
//! mode (so "never shortens" is the store's own doing, and tests expire a GOVERNANCE
//! retention by moving its date into the past with `bypass_governance_retention`).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use common::*;
use drydock::error::Error;
use drydock::store::s3::{S3Store, PART_SIZE};
use drydock::store::{BucketLock, LockMode, PutMode, ReadOnly, Retention, Store, WriteRetention};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(bucket: &str, prefix: &str) -> S3Store {
    S3Store::connect(bucket, prefix, &test_s3_options())
        .await
        .unwrap()
}

/// A store on `bucket` whose writes carry `mode` for `days`.
async fn locked(bucket: &str, prefix: &str, mode: LockMode, days: u32) -> S3Store {
    let s = open(bucket, prefix).await;
    s.set_write_retention(Some(WriteRetention { mode, days }));
    s
}

#[track_caller]
fn assert_near(t: DateTime<Utc>, want: DateTime<Utc>) {
    assert!(
        (t - want).num_seconds().abs() < 120,
        "{t} should be about {want}"
    );
}

/// Every version and delete marker of `key` (full key): (version ids, delete marker ids).
async fn raw_versions(bucket: &str, key: &str) -> (Vec<String>, Vec<String>) {
    let out = raw_s3_client()
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let versions = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| v.version_id().unwrap().to_string())
        .collect();
    let markers = out
        .delete_markers()
        .iter()
        .filter(|m| m.key() == Some(key))
        .map(|m| m.version_id().unwrap().to_string())
        .collect();
    (versions, markers)
}

/// Move a GOVERNANCE retention's date into the past, as its expiry would.
async fn expire(bucket: &str, key: &str, version: &str) {
    set_version_retention(bucket, key, version, Utc::now() - Duration::days(1)).await;
}

async fn read_all(s: &dyn Store, key: &str) -> Vec<u8> {
    let mut r = s.open_read(key).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

#[test]
fn bucket_lock_tells_a_locked_bucket_from_an_unlocked_one() {
    let (locked_bucket, plain_bucket) = (new_locked_bucket(), new_bucket());
    let with_rule = new_locked_bucket();
    let in_years = new_locked_bucket();
    runtime().block_on(async {
        assert_eq!(
            open(&locked_bucket, "r").await.bucket_lock().await.unwrap(),
            Some(BucketLock {
                enabled: true,
                default_retention: None
            })
        );
        assert_eq!(
            open(&plain_bucket, "r").await.bucket_lock().await.unwrap(),
            Some(BucketLock {
                enabled: false,
                default_retention: None
            })
        );
        // A default rule (moto takes one only while the bucket is empty).
        for (bucket, days, years, want) in [
            (&with_rule, Some(3), None, 3),
            (&in_years, None, Some(2), 730),
        ] {
            raw_s3_client()
                .put_object_lock_configuration()
                .bucket(bucket)
                .object_lock_configuration(
                    aws_sdk_s3::types::ObjectLockConfiguration::builder()
                        .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
                        .rule(
                            aws_sdk_s3::types::ObjectLockRule::builder()
                                .default_retention(
                                    aws_sdk_s3::types::DefaultRetention::builder()
                                        .mode(
                                            aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
                                        )
                                        .set_days(days)
                                        .set_years(years)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                open(bucket, "").await.bucket_lock().await.unwrap(),
                Some(BucketLock {
                    enabled: true,
                    default_retention: Some((LockMode::Compliance, want))
                })
            );
        }
        // Through the read-only wrapper too; a missing bucket is a usage error.
        let ro = ReadOnly::wrap(Arc::new(open(&locked_bucket, "r").await), "read-only");
        assert!(ro.bucket_lock().await.unwrap().unwrap().enabled);
        assert!(matches!(
            open("dd-no-such-bucket", "r").await.bucket_lock().await,
            Err(Error::Usage(_))
        ));
    });
}

#[test]
fn a_locked_write_carries_its_retention() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        let s = locked(&bucket, "repo", LockMode::Governance, 2).await;
        s.put("keys/a", Bytes::from_static(b"one"), PutMode::Overwrite)
            .await
            .unwrap();
        s.put("keys/b", Bytes::from_static(b"two"), PutMode::CreateNew)
            .await
            .unwrap();
        for key in ["keys/a", "keys/b"] {
            let r = s.retention(key).await.unwrap();
            assert_eq!(r.mode, Some(LockMode::Governance), "{key}");
            assert_near(r.until.unwrap(), Utc::now() + Duration::days(2));
            // What S3 itself says about the object.
            let head = raw_s3_client()
                .head_object()
                .bucket(&bucket)
                .key(format!("repo/{key}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.object_lock_mode().map(|m| m.as_str()),
                Some("GOVERNANCE")
            );
        }
        // A conditional create of an existing key still says so.
        assert_eq!(
            s.put("keys/b", Bytes::from_static(b"x"), PutMode::CreateNew)
                .await
                .unwrap(),
            drydock::store::PutOutcome::AlreadyExists
        );
        // COMPLIANCE, read by a store that writes without a lock.
        let c = locked(&bucket, "repo", LockMode::Compliance, 7).await;
        c.put("keys/c", Bytes::from_static(b"three"), PutMode::Overwrite)
            .await
            .unwrap();
        let plain = open(&bucket, "repo").await;
        let r = plain.retention("keys/c").await.unwrap();
        assert_eq!(r.mode, Some(LockMode::Compliance));
        assert_near(r.until.unwrap(), Utc::now() + Duration::days(7));
        // An object written without a lock, and one that does not exist.
        plain
            .put("keys/d", Bytes::from_static(b"four"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(
            plain.retention("keys/d").await.unwrap(),
            Retention::default()
        );
        assert!(matches!(
            s.retention("keys/none").await,
            Err(Error::NotFound(_))
        ));
        // Switched off, writes carry nothing again.
        s.set_write_retention(None);
        s.put("keys/e", Bytes::from_static(b"five"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(s.retention("keys/e").await.unwrap(), Retention::default());
    });
}

#[test]
fn deleting_a_retained_object_is_refused_and_it_stays_readable() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        let s = locked(&bucket, "repo", LockMode::Governance, 1).await;
        s.put(
            "data/pack",
            Bytes::from_static(b"pack bytes"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let err = s.delete("data/pack").await.unwrap_err();
        let Error::Retained(message) = &err else {
            panic!("want Retained, got {err:?}");
        };
        assert_eq!(err.exit_code(), drydock::error::exit::FAILURE);
        let until = s.retention("data/pack").await.unwrap().until.unwrap();
        for needle in [
            format!("s3://{bucket}/repo/data/pack"),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "later prune".to_string(),
        ] {
            assert!(
                message.contains(&needle),
                "{message:?} should name {needle:?}"
            );
        }
        assert_eq!(&s.get("data/pack").await.unwrap()[..], b"pack bytes");
        let listed = s.list("data/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("data/pack", 10));
        // Nothing was hidden either: no delete marker.
        let (versions, markers) = raw_versions(&bucket, "repo/data/pack").await;
        assert_eq!((versions.len(), markers.len()), (1, 0));

        // Two versions, one expired: the expired one goes, the retained one stays.
        s.put(
            "data/pack",
            Bytes::from_static(b"pack bytes"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let (versions, _) = raw_versions(&bucket, "repo/data/pack").await;
        assert_eq!(versions.len(), 2);
        expire(&bucket, "repo/data/pack", &versions[1]).await;
        assert!(matches!(
            s.delete("data/pack").await,
            Err(Error::Retained(_))
        ));
        let (left, _) = raw_versions(&bucket, "repo/data/pack").await;
        assert_eq!(left, vec![versions[0].clone()]);
        assert_eq!(&s.get("data/pack").await.unwrap()[..], b"pack bytes");

        // A missing key is no error.
        s.delete("data/none").await.unwrap();
        // The read-only wrapper refuses to delete or lock, and reads retention through.
        let ro = ReadOnly::wrap(Arc::new(s.clone()), "read-only");
        assert!(matches!(ro.delete("data/pack").await, Err(Error::Usage(_))));
        assert!(matches!(
            ro.extend_retention("data/pack", Utc::now() + Duration::days(9))
                .await,
            Err(Error::Usage(_))
        ));
        // (The version left is the second write's, locked a little later.)
        assert_near(
            ro.retention("data/pack").await.unwrap().until.unwrap(),
            until,
        );
    });
}

#[test]
fn a_delete_marker_planted_by_a_bucket_writer_hides_nothing() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        // Pages of two entries: the listing below spans several.
        let s = locked(&bucket, "repo", LockMode::Governance, 1)
            .await
            .with_version_page_size(2);
        let big: Vec<u8> = noise(100_000, 3);
        for (key, body) in [
            ("data/a", &b"alpha"[..]),
            ("data/b", &big[..]),
            ("data/c", b"gamma"),
        ] {
            s.put(key, Bytes::copy_from_slice(body), PutMode::Overwrite)
                .await
                .unwrap();
        }
        // Plain DELETEs: each only adds a delete marker, twice on data/b.
        let raw = raw_s3_client();
        for key in ["repo/data/a", "repo/data/b", "repo/data/b"] {
            raw.delete_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        }
        // Hidden from a store that does not look past delete markers.
        let plain = open(&bucket, "repo").await;
        assert!(matches!(plain.get("data/a").await, Err(Error::NotFound(_))));
        assert_eq!(plain.list("data/").await.unwrap().len(), 1);

        let listed = s.list("data/").await.unwrap();
        let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(
            keys,
            vec![("data/a", 5), ("data/b", 100_000), ("data/c", 5)]
        );
        assert!(listed.iter().all(|o| o.modified.is_some()));
        assert_eq!(&s.get("data/a").await.unwrap()[..], b"alpha");
        assert_eq!(
            &s.get_range("data/b", 10, 20).await.unwrap()[..],
            &big[10..30]
        );
        assert_eq!(read_all(&s, "data/b").await, big);
        assert_eq!(
            s.retention("data/a").await.unwrap().mode,
            Some(LockMode::Governance)
        );
        s.extend_retention("data/a", Utc::now() + Duration::days(4))
            .await
            .unwrap();
        assert_near(
            s.retention("data/a").await.unwrap().until.unwrap(),
            Utc::now() + Duration::days(4),
        );

        // A newer write over the marker is what is read.
        s.put("data/a", Bytes::from_static(b"alpha 2"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(&s.get("data/a").await.unwrap()[..], b"alpha 2");
        let listed = s.list("data/a").await.unwrap();
        assert_eq!((listed.len(), listed[0].size), (1, 7));

        // A key whose every version is gone but a delete marker is not listed or read.
        raw.put_object()
            .bucket(&bucket)
            .key("repo/data/d")
            .body(b"delta".to_vec().into())
            .send()
            .await
            .unwrap();
        raw.delete_object()
            .bucket(&bucket)
            .key("repo/data/d")
            .send()
            .await
            .unwrap();
        let (versions, markers) = raw_versions(&bucket, "repo/data/d").await;
        assert_eq!((versions.len(), markers.len()), (1, 1));
        raw.delete_object()
            .bucket(&bucket)
            .key("repo/data/d")
            .version_id(&versions[0])
            .send()
            .await
            .unwrap();
        assert!(!s
            .list("data/")
            .await
            .unwrap()
            .iter()
            .any(|o| o.key == "data/d"));
        assert!(matches!(s.get("data/d").await, Err(Error::NotFound(_))));
        assert!(matches!(
            s.open_read("data/d").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            s.retention("data/d").await,
            Err(Error::NotFound(_))
        ));
        // The store's delete clears the marker left behind.
        s.delete("data/d").await.unwrap();
        assert_eq!(raw_versions(&bucket, "repo/data/d").await, (vec![], vec![]));
    });
}

#[test]
fn extend_retention_moves_the_date_later_and_never_earlier() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        let s = locked(&bucket, "", LockMode::Governance, 1).await;
        s.put("snap", Bytes::from_static(b"s"), PutMode::Overwrite)
            .await
            .unwrap();
        let later = Utc::now() + Duration::days(5);
        s.extend_retention("snap", later).await.unwrap();
        let r = s.retention("snap").await.unwrap();
        assert_eq!(r.mode, Some(LockMode::Governance));
        assert_near(r.until.unwrap(), later);
        let extended = r.until.unwrap();
        // Earlier dates, the past included, change nothing (moto would shorten).
        for earlier in [
            Utc::now() + Duration::days(2),
            Utc::now() - Duration::days(1),
        ] {
            s.extend_retention("snap", earlier).await.unwrap();
            assert_eq!(s.retention("snap").await.unwrap().until, Some(extended));
        }
        assert!(matches!(
            s.extend_retention("none", later).await,
            Err(Error::NotFound(_))
        ));

        // A store that writes without a lock keeps the object's own mode.
        let plain = open(&bucket, "").await;
        let c = locked(&bucket, "", LockMode::Compliance, 1).await;
        c.put("compliant", Bytes::from_static(b"c"), PutMode::Overwrite)
            .await
            .unwrap();
        plain
            .extend_retention("compliant", Utc::now() + Duration::days(3))
            .await
            .unwrap();
        let r = plain.retention("compliant").await.unwrap();
        assert_eq!(r.mode, Some(LockMode::Compliance));
        assert_near(r.until.unwrap(), Utc::now() + Duration::days(3));
        // A GOVERNANCE store does not weaken COMPLIANCE.
        s.extend_retention("compliant", Utc::now() + Duration::days(4))
            .await
            .unwrap();
        assert_eq!(
            s.retention("compliant").await.unwrap().mode,
            Some(LockMode::Compliance)
        );
        // An unlocked object locks in the write retention's mode; with none, no mode.
        plain
            .put("loose", Bytes::from_static(b"l"), PutMode::Overwrite)
            .await
            .unwrap();
        assert!(matches!(
            plain.extend_retention("loose", later).await,
            Err(Error::Usage(_))
        ));
        s.extend_retention("loose", later).await.unwrap();
        assert_eq!(
            s.retention("loose").await.unwrap().mode,
            Some(LockMode::Governance)
        );
    });
}

#[test]
fn a_multipart_put_stream_carries_retention() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        let s = locked(&bucket, "repo", LockMode::Compliance, 3).await;
        // put_stream goes multipart once a whole part (PART_SIZE) has arrived: three parts.
        let data = Bytes::from(noise(2 * PART_SIZE + 12_345, 9));
        let pieces: Vec<drydock::error::Result<Bytes>> = (0..data.len())
            .step_by(1 << 20)
            .map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len()))))
            .collect();
        s.put_stream("data/big", futures::stream::iter(pieces).boxed())
            .await
            .unwrap();
        let head = raw_s3_client()
            .head_object()
            .bucket(&bucket)
            .key("repo/data/big")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert!(
            head.e_tag().unwrap_or_default().ends_with("-3\""),
            "not a three-part upload: {:?}",
            head.e_tag()
        );
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE")
        );
        // The parts carried their SHA-256 (the upload was created with that algorithm).
        assert!(head.checksum_sha256().is_some(), "no SHA-256 on {head:?}");
        let r = s.retention("data/big").await.unwrap();
        assert_eq!(r.mode, Some(LockMode::Compliance));
        assert_near(r.until.unwrap(), Utc::now() + Duration::days(3));
        assert!(s.get("data/big").await.unwrap() == data);
        assert!(matches!(
            s.delete("data/big").await,
            Err(Error::Retained(_))
        ));
        // A small stream is one PUT, locked as well.
        s.put_stream(
            "data/small",
            futures::stream::iter(vec![Ok(Bytes::from_static(b"tiny"))]).boxed(),
        )
        .await
        .unwrap();
        assert_eq!(
            s.retention("data/small").await.unwrap().mode,
            Some(LockMode::Compliance)
        );
    });
}

#[test]
fn an_expired_governance_retention_lets_delete_remove_every_version() {
    let bucket = new_locked_bucket();
    runtime().block_on(async {
        let s = locked(&bucket, "repo", LockMode::Governance, 1).await;
        for _ in 0..2 {
            s.put("index/i", Bytes::from_static(b"index"), PutMode::Overwrite)
                .await
                .unwrap();
        }
        // A neighbour whose key starts with the same characters.
        s.put("index/i2", Bytes::from_static(b"other"), PutMode::Overwrite)
            .await
            .unwrap();
        let raw = raw_s3_client();
        raw.delete_object()
            .bucket(&bucket)
            .key("repo/index/i")
            .send()
            .await
            .unwrap();
        let (versions, markers) = raw_versions(&bucket, "repo/index/i").await;
        assert_eq!((versions.len(), markers.len()), (2, 1));
        for v in &versions {
            expire(&bucket, "repo/index/i", v).await;
        }
        s.delete("index/i").await.unwrap();
        assert_eq!(
            raw_versions(&bucket, "repo/index/i").await,
            (vec![], vec![])
        );
        assert!(matches!(s.get("index/i").await, Err(Error::NotFound(_))));
        let keys: Vec<String> = s
            .list("index/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["index/i2"]);
        assert_eq!(&s.get("index/i2").await.unwrap()[..], b"other");
        // Deleting again is no error.
        s.delete("index/i").await.unwrap();
    });
}
