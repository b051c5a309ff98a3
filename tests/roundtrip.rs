//! Backup and restore round trips, locally and against a real S3 server.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn round_trip(repo: &Repo, dir: &Path) {
    let src = dir.join("src");
    let (etc, secret) = harbor_config_tree(&src, 3 << 20);
    let summary = repo.backup(&[&etc, &secret]);
    assert_eq!(summary["parts"]["config"]["files"], 6);
    assert_eq!(summary["parts"]["config"]["symlinks"], 3);

    let out = dir.join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&etc, &restored(&out, &etc));
    assert_same_tree(&secret, &restored(&out, &secret));
    // The Secret volume's visible files read the same through the restored symlinks.
    assert_eq!(
        fs::read(restored(&out, &secret).join("secretKey")).unwrap(),
        b"not-a-real-key16"
    );

    repo.id(&["check", "--read-data"]).expect(0);
}

#[test]
fn local_round_trip_is_byte_identical_with_modes_mtimes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    round_trip(&repo, dir.path());
}

#[test]
fn s3_round_trip_is_byte_identical_with_modes_mtimes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = s3_repo(dir.path(), "velero/plugins/drydock");
    round_trip(&repo, dir.path());
    // Everything lives under the prefix.
    let (_, bucket) = repo.s3.clone().unwrap();
    for (key, _) in bucket_objects(&bucket) {
        assert!(key.starts_with("velero/plugins/drydock/"), "{key}");
    }
}

#[test]
fn s3_multipart_packs_round_trip() {
    // 40 MiB of noise: packs above the multipart threshold.
    let dir = tempfile::tempdir().unwrap();
    let repo = s3_repo(dir.path(), "");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("layer.tar.gz"), noise(40 << 20, 3)).unwrap();
    let s = repo.backup(&[&src]);
    assert!(s["packs_written"].as_u64().unwrap() >= 2);
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
}

#[test]
fn unchanged_second_backup_stores_under_one_percent_new() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    let (etc, secret) = harbor_config_tree(&src, 24 << 20);
    let first = repo.backup(&[&etc, &secret]);
    let second = repo.backup(&[&etc, &secret]);
    let logical = second["summary"]["logical_bytes"].as_f64().unwrap();
    let new = second["summary"]["new_bytes"].as_f64().unwrap();
    assert!(
        new < logical * 0.01,
        "second backup stored {new} new of {logical}"
    );
    assert_eq!(
        first["summary"]["logical_bytes"],
        second["summary"]["logical_bytes"]
    );

    // A small edit in the middle of the big file costs about one chunk, not the file.
    let big = etc.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    data[12 << 20] ^= 0xff;
    fs::write(&big, &data).unwrap();
    let third = repo.backup(&[&etc, &secret]);
    let new = third["summary"]["new_bytes"].as_u64().unwrap();
    assert!(new < 9 << 20, "one changed byte stored {new} new bytes");
    assert!(third["summary"]["reused_bytes"].as_u64().unwrap() > 14 << 20);
}

#[test]
fn nothing_readable_is_stored_locally_or_in_s3() {
    let name = "drydock-marker-name-7f3a";
    let content = b"DRYDOCK-PLAINTEXT-CONTENT-MARKER ".repeat(2000);
    let markers: [&[u8]; 4] = [
        name.as_bytes(),
        b"DRYDOCK-PLAINTEXT",
        b"hostname: harbor",
        b"not-a-real-key16",
    ];
    for s3 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo = if s3 {
            s3_repo(dir.path(), "p")
        } else {
            local_repo(dir.path())
        };
        let src = dir.path().join("src");
        let (etc, secret) = harbor_config_tree(&src, 1 << 20);
        fs::write(etc.join(name), &content).unwrap();
        repo.backup(&[&etc, &secret]);
        let objects: Vec<(String, Vec<u8>)> = match &repo.s3 {
            Some((_, bucket)) => bucket_objects(bucket),
            None => repo_files(repo.local_root.as_ref().unwrap())
                .into_iter()
                .map(|(p, b)| (p.display().to_string(), b))
                .collect(),
        };
        assert!(objects.len() >= 4, "config, pack, index, snapshot");
        for (key, bytes) in &objects {
            for m in markers {
                assert!(
                    !contains(key.as_bytes(), m),
                    "{key} names {}",
                    String::from_utf8_lossy(m)
                );
                assert!(
                    !contains(bytes, m),
                    "{key} holds {:?} in plaintext",
                    String::from_utf8_lossy(m)
                );
            }
        }
    }
}

#[test]
fn restore_dry_run_writes_nothing_and_lists_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    let (etc, _) = harbor_config_tree(&src, 1000);
    repo.backup(&[&etc]);
    let out = dir.path().join("out");
    let r = repo.id(&[
        "--json",
        "restore",
        "latest",
        "--config-dir",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    r.expect(0);
    assert!(!out.exists());
    let paths = r.json()["parts"]["config"]["paths"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(paths, walk(&etc).len() + 1);
}

#[test]
fn show_and_snapshots_describe_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    let (etc, _) = harbor_config_tree(&src, 1000);
    let r = repo.bk(&[
        "--json",
        "backup",
        "--config",
        etc.to_str().unwrap(),
        "--tag",
        "velero.io/schedule-name=daily",
        "--ttl",
        "48h",
    ]);
    r.expect(0);
    let id = r.json()["short_id"].as_str().unwrap().to_string();
    let list = repo.id(&["--json", "snapshots"]);
    list.expect(0);
    let snaps = list.json()["snapshots"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"]["velero.io/schedule-name"], "daily");
    let show = repo.id(&["--json", "show", &id[..6]]);
    show.expect(0);
    let entries = show.json()["parts"]["config"]["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(entries
        .iter()
        .any(|e| e["path"].as_str().unwrap().ends_with("harbor.yml") && e["mode"] == 0o640));
}
