//! S3 Object Lock for a repository (FORMAT.md §11.2), on moto with an Object Lock bucket and
//! the three keys of the deployment: forget and prune delete nothing before its date and
//! retry after it, maintenance extends the retention of what stays, and a bucket writer's
//! deletes (delete markers) lose nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use common::*;

struct Locked {
    repo: Repo,
    maintenance: PathBuf,
    bucket: String,
}

/// A repository in a fresh Object Lock bucket, made with all three keys and `lock`.
fn locked_repo(dir: &Path, lock: &str) -> Locked {
    let endpoint = s3_endpoint();
    let bucket = new_locked_bucket();
    let args: Vec<String> = vec![
        "--repo".into(),
        format!("s3://{bucket}/drydock"),
        "--s3-endpoint".into(),
        endpoint.clone(),
        "--s3-path-style".into(),
    ];
    let (identity, backup_key, maintenance) = (
        dir.join("identity.txt"),
        dir.join("backup.key"),
        dir.join("maintenance.key"),
    );
    let mut init: Vec<&str> = args.iter().map(String::as_str).collect();
    init.extend([
        "init",
        "--object-lock",
        lock,
        "--identity-out",
        identity.to_str().unwrap(),
        "--backup-key-out",
        backup_key.to_str().unwrap(),
        "--maintenance-key-out",
        maintenance.to_str().unwrap(),
    ]);
    run(&init).expect(0);
    Locked {
        repo: Repo {
            args,
            identity,
            backup_key,
            local_root: None,
            s3: Some((endpoint, bucket.clone())),
        },
        maintenance,
        bucket,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Let every retention in the bucket end, as time would.
fn expire_everything(bucket: &str) {
    rt().block_on(async {
        for (key, version) in all_versions(bucket).await {
            set_version_retention(bucket, &key, &version, Utc::now() - Duration::hours(1)).await;
        }
    })
}

fn prune(l: &Locked) -> serde_json::Value {
    let r = l
        .repo
        .with_key(&l.maintenance, &["--json", "prune", "--safety-delay", "0s"]);
    r.expect(0);
    r.json()
}

#[test]
fn init_refuses_buckets_and_stores_that_cannot_lock() {
    let dir = tempfile::tempdir().unwrap();
    let plain = new_bucket();
    let id = dir.path().join("id.txt");
    run(&[
        "--repo",
        &format!("s3://{plain}/drydock"),
        "--s3-endpoint",
        &s3_endpoint(),
        "--s3-path-style",
        "init",
        "--object-lock",
        "GOVERNANCE:30",
        "--identity-out",
        id.to_str().unwrap(),
    ])
    .expect_error(2, "does not have S3 Object Lock enabled");
    assert!(!id.exists(), "a failed init left its identity behind");
    run(&[
        "--repo",
        dir.path().join("local").to_str().unwrap(),
        "init",
        "--object-lock",
        "COMPLIANCE:30",
        "--identity-out",
        id.to_str().unwrap(),
    ])
    .expect_error(2, "cannot lock objects");
    let r = run(&[
        "--repo",
        dir.path().join("local").to_str().unwrap(),
        "init",
        "--object-lock",
        "FOREVER:30",
        "--identity-out",
        id.to_str().unwrap(),
    ]);
    r.expect(2);
    assert!(
        r.stderr.contains("GOVERNANCE or COMPLIANCE"),
        "{}",
        r.stderr
    );
}

/// Forget and prune under retention: the snapshot is marked forgotten and its packs wait;
/// once the retention ends the next prunes delete them; the kept snapshot restores.
#[test]
fn forget_and_prune_wait_for_the_retention_date_then_delete() {
    let dir = tempfile::tempdir().unwrap();
    let l = locked_repo(dir.path(), "GOVERNANCE:1");
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 2, 6 << 20);
    let old = l.repo.backup_registry(&reg);
    // The second snapshot has other layers only: the first one's packs become unused.
    let reg2 = dir.path().join("registry2");
    fs::create_dir_all(&reg2).unwrap();
    registry_tree_with_layers(&reg2, 1, 3 << 20);
    let kept = {
        let r = l
            .repo
            .bk(&["--json", "backup", "--registry-fs", reg2.to_str().unwrap()]);
        r.expect(0);
        r.json()["snapshot"].as_str().unwrap().to_string()
    };
    let r = l.repo.with_key(&l.maintenance, &["forget", &old]);
    r.expect(0);
    assert!(
        r.stdout.contains("under Object Lock retention"),
        "{}",
        r.stdout
    );
    assert_eq!(l.repo.snapshot_ids(), vec![kept.clone()]);
    let mark = prune(&l);
    assert!(mark["marked"].as_u64().unwrap() > 0, "{mark}");
    let held = prune(&l);
    assert_eq!(held["deleted_packs"], 0, "{held}");
    assert!(held["packs_retained"].as_u64().unwrap() > 0, "{held}");
    // The old snapshot's object is still in the bucket, only forgotten.
    let objects = bucket_objects(&l.bucket);
    assert!(objects.iter().any(|(k, _)| k.ends_with(&old)));

    expire_everything(&l.bucket);
    let done = prune(&l);
    assert!(done["deleted_packs"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["packs_retained"], 0, "{done}");
    let objects = bucket_objects(&l.bucket);
    assert!(!objects.iter().any(|(k, _)| k.ends_with(&old)));
    assert_eq!(l.repo.snapshot_ids(), vec![kept]);
    l.repo.with_key(&l.maintenance, &["check"]).expect(0);
    l.repo.assert_restores_registry(dir.path(), &reg2);
}

/// A pack an old snapshot wrote and a newer one reuses gets its retention extended, so it
/// is never deletable before the snapshot that uses it.
#[test]
fn prune_extends_the_retention_of_packs_newer_snapshots_use() {
    let dir = tempfile::tempdir().unwrap();
    let l = locked_repo(dir.path(), "GOVERNANCE:2");
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 2, 1 << 20);
    l.repo.backup_registry(&reg);
    l.repo.backup_registry(&reg);
    // As if the packs had been written long ago: retention ends in an hour.
    rt().block_on(async {
        for (key, version) in all_versions(&l.bucket).await {
            set_version_retention(&l.bucket, &key, &version, Utc::now() + Duration::hours(1)).await;
        }
    });
    let p = prune(&l);
    assert!(p["retention_extended"].as_u64().unwrap() > 0, "{p}");
    let store = rt().block_on(l.repo.store());
    rt().block_on(async {
        for o in store.list("packs/").await.unwrap() {
            let until = store.retention(&o.key).await.unwrap().until.unwrap();
            assert!(
                until > Utc::now() + Duration::hours(40),
                "{} is retained only until {until}",
                o.key
            );
        }
    });
}

/// A bucket writer (Velero's credentials, ransomware) deletes every object without a
/// version id: S3 only adds delete markers. drydock still lists, checks and restores every
/// snapshot, and the deployed forget and prune lose nothing.
#[test]
fn deletes_by_a_bucket_writer_lose_nothing_under_object_lock() {
    let dir = tempfile::tempdir().unwrap();
    let l = locked_repo(dir.path(), "COMPLIANCE:1");
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 2, 1 << 20);
    l.repo.backup_registry(&reg);
    let before = l.repo.snapshot_ids();
    for (key, _) in bucket_objects(&l.bucket) {
        delete_object(&l.bucket, &key);
    }
    assert!(
        bucket_objects(&l.bucket).is_empty(),
        "the plain listing still shows objects"
    );
    assert_eq!(l.repo.snapshot_ids(), before);
    l.repo.deployed_forget_with(&l.maintenance).expect(0);
    prune(&l);
    assert_eq!(l.repo.snapshot_ids(), before);
    l.repo.id(&["check", "--read-data"]).expect(0);
    l.repo.assert_restores_registry(dir.path(), &reg);
}

/// A bucket writer overwrites every snapshot, index and pack object with garbage (new
/// versions; Object Lock keeps the originals). drydock reads the newest earlier version
/// that matches each object's name, so the snapshots stay listed and restorable, and
/// retention and prune keep their data.
#[test]
fn overwrites_by_a_bucket_writer_hide_nothing_under_object_lock() {
    let dir = tempfile::tempdir().unwrap();
    let l = locked_repo(dir.path(), "GOVERNANCE:1");
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 2, 1 << 20);
    l.repo.backup_registry(&reg);
    let before = l.repo.snapshot_ids();
    let packs_before: Vec<String> = bucket_objects(&l.bucket)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("/packs/"))
        .collect();
    for (key, _) in bucket_objects(&l.bucket) {
        if ["/snapshots/", "/index/", "/packs/"]
            .iter()
            .any(|d| key.contains(d))
        {
            put_object(&l.bucket, &key, &noise(200, 3));
        }
    }
    assert_eq!(l.repo.snapshot_ids(), before);
    l.repo
        .with_key(
            &l.maintenance,
            &[
                "forget",
                "--keep-daily",
                "7",
                "--prune",
                "--safety-delay",
                "0s",
            ],
        )
        .expect(0);
    prune(&l);
    let packs_after: Vec<String> = bucket_objects(&l.bucket)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("/packs/"))
        .collect();
    assert_eq!(packs_after, packs_before);
    l.repo.assert_restores_registry(dir.path(), &reg);
}
