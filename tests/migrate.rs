//! `drydock migrate` brings a format version 1 repository to version 2 (FORMAT.md §15). The
//! fixture tests/fixtures/v1-repo was written by drydock e4ddf53, the last version 1 writer:
//! two snapshots of a configuration directory and a two-blob registry, and the sources.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn copy_fixture(dir: &Path) -> (Vec<String>, std::path::PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-repo");
    let status = Command::new("cp")
        .args(["-a", fixture.join("repo").to_str().unwrap()])
        .arg(dir.join("repo"))
        .status()
        .unwrap();
    assert!(status.success());
    let key = dir.join("id.key");
    fs::copy(fixture.join("id.key"), &key).unwrap();
    let mut perms = fs::metadata(&key).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&key, perms).unwrap();
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let status = Command::new("tar")
        .args(["-C", src.to_str().unwrap(), "-xf"])
        .arg(fixture.join("source.tar"))
        .status()
        .unwrap();
    assert!(status.success());
    let args = vec![
        "--repo".to_string(),
        dir.join("repo").to_str().unwrap().to_string(),
        "--key".to_string(),
        key.to_str().unwrap().to_string(),
    ];
    (args, src)
}

fn with(args: &[String], more: &[&str]) -> Run {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(more);
    run(&all)
}

#[test]
fn a_version_1_repository_is_migrated_and_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (args, src) = copy_fixture(dir.path());
    // Every other command says what to run.
    with(&args, &["snapshots"]).expect_error(2, "drydock migrate");
    let m = with(&args, &["--json", "migrate"]);
    m.expect(0);
    let report = m.json();
    assert_eq!(report["converted"], true, "{}", m.stdout);
    assert_eq!(report["snapshots"], 2, "{}", m.stdout);
    assert_eq!(report["registry_blobs"], 2, "{}", m.stdout);
    // Nothing of version 1 is left: every index, pack and snapshot object is version 2.
    for f in walk(&dir.path().join("repo")) {
        if f.is_file() && !f.ends_with("config") {
            let bytes = fs::read(&f).unwrap();
            let v2 = bytes.starts_with(b"DDINDX02")
                || bytes.starts_with(b"DDSNAP02")
                || bytes.ends_with(b"DDPACK02");
            assert!(v2, "{} is not version 2", f.display());
        }
    }
    with(&args, &["check", "--read-data"]).expect(0);
    let listed = with(&args, &["--json", "snapshots"]);
    listed.expect(0);
    let ids: Vec<String> = listed.json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let out = dir.path().join(format!("out-{}", &id[..8]));
        with(
            &args,
            &[
                "restore",
                id,
                "--config-dir",
                out.join("c").to_str().unwrap(),
                "--registry-fs",
                out.join("r").to_str().unwrap(),
            ],
        )
        .expect(0);
        for f in walk(&src.join("reg")) {
            if f.is_file() {
                let rel = f.strip_prefix(src.join("reg")).unwrap();
                assert_eq!(
                    fs::read(&f).unwrap(),
                    fs::read(out.join("r").join(rel)).unwrap()
                );
            }
        }
        let harbor = out.join("c/tmp/v1fx/src/etc/harbor");
        assert!(harbor.join("secret").exists(), "{}", harbor.display());
    }
    let again = with(&args, &["--json", "migrate"]);
    again.expect(0);
    assert_eq!(again.json()["converted"], false);
    // A backup into the migrated repository deduplicates against the migrated registry.
    let b = with(
        &args,
        &[
            "--json",
            "backup",
            "--registry-fs",
            src.join("reg").to_str().unwrap(),
        ],
    );
    b.expect(0);
    assert_eq!(
        b.json()["parts"]["registry"]["bytes_read"],
        0,
        "{}",
        b.stdout
    );
    assert_eq!(b.json()["packs_written"], 0, "{}", b.stdout);
}

#[test]
fn migrate_refuses_a_backup_only_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut args, _) = copy_fixture(dir.path());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-repo");
    let bk = dir.path().join("backup.key");
    fs::copy(fixture.join("backup.key"), &bk).unwrap();
    let mut perms = fs::metadata(&bk).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&bk, perms).unwrap();
    args[3] = bk.to_str().unwrap().to_string();
    with(&args, &["migrate"]).expect_error(5, "identity");
}

/// A migration stopped anywhere loses nothing (FORMAT.md §15). Stopped before the switch:
/// the version 1 config is still in place beside the version 2 objects already written,
/// and the next run converts everything. Stopped after it: version 1 objects are left
/// beside the version 2 config, and the next run only deletes them.
#[test]
fn a_migration_stopped_before_or_after_the_switch_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (args, src) = copy_fixture(dir.path());
    let repo = dir.path().join("repo");
    let v1 = repo_files(&repo);
    let put_back = |files: &[(std::path::PathBuf, Vec<u8>)]| {
        for (path, bytes) in files {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    };
    with(&args, &["migrate"]).expect(0);
    // Before the switch: put every version 1 object back, the config included.
    put_back(&v1);
    with(&args, &["snapshots"]).expect_error(2, "drydock migrate");
    with(&args, &["migrate"]).expect(0);
    with(&args, &["check", "--read-data"]).expect(0);
    // After the switch: version 1 objects back, the version 2 config kept.
    let config = fs::read(repo.join("config")).unwrap();
    put_back(&v1);
    fs::write(repo.join("config"), config).unwrap();
    let again = with(&args, &["--json", "migrate"]);
    again.expect(0);
    assert_eq!(again.json()["converted"], false, "{}", again.stdout);
    assert!(
        again.json()["objects_deleted"].as_u64().unwrap() > 0,
        "{}",
        again.stdout
    );
    with(&args, &["check", "--read-data"]).expect(0);
    let out = dir.path().join("out");
    with(
        &args,
        &["restore", "latest", "--registry-fs", out.to_str().unwrap()],
    )
    .expect(0);
    for f in walk(&src.join("reg")) {
        if f.is_file() {
            let rel = f.strip_prefix(src.join("reg")).unwrap();
            assert_eq!(fs::read(&f).unwrap(), fs::read(out.join(rel)).unwrap());
        }
    }
}
