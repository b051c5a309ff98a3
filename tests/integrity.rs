//! Corruption is detected (exit 4) and attributed to the snapshots it damages; restore
//! never leaves corrupt data under a real name.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repo,
    root: PathBuf,
    src: PathBuf,
    snapshot: String,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), noise(3 << 20, 11)).unwrap();
    fs::write(src.join("harbor.yml"), "hostname: x\n").unwrap();
    let s = repo.backup(&[&src]);
    let snapshot = s["short_id"].as_str().unwrap().to_string();
    let root = repo.local_root.clone().unwrap();
    let work = dir.path().to_path_buf();
    Fixture {
        _dir: dir,
        repo,
        root,
        src,
        snapshot,
        work,
    }
}

fn objects(root: &Path, dir: &str) -> Vec<PathBuf> {
    walk(&root.join(dir))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

/// The pack holding the file data (trees have a pack of their own).
fn data_pack(root: &Path) -> PathBuf {
    objects(root, "packs")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack")
}

fn one(root: &Path, dir: &str) -> PathBuf {
    let v = objects(root, dir);
    assert_eq!(v.len(), 1, "{dir}: {v:?}");
    v[0].clone()
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x04;
    fs::write(path, b).unwrap();
}

fn truncate(path: &Path) {
    let b = fs::read(path).unwrap();
    fs::write(path, &b[..b.len() / 2]).unwrap();
}

/// `check` fails with exit 4 and names the damaged snapshot.
#[track_caller]
fn assert_check_names_snapshot(f: &Fixture, args: &[&str]) {
    let r = f.repo.id(&[&["--json", "check"], args].concat());
    r.expect(4);
    let affected = r.json()["report"]["affected_snapshots"].clone();
    assert!(
        affected
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == f.snapshot.as_str()),
        "affected {affected} should name {}\n{}",
        f.snapshot,
        r.stdout
    );
    let text = f.repo.id(&[&["check"], args].concat());
    text.expect(4);
    assert!(text.stdout.contains(&f.snapshot));
}

/// Restore fails with exit 4 and leaves no file under the damaged name.
#[track_caller]
fn assert_restore_refuses(f: &Fixture) {
    let out = f.work.join("restore-out");
    let r = f
        .repo
        .id(&["restore", "latest", "--config-dir", out.to_str().unwrap()]);
    r.expect(4);
    assert_eq!(r.error_lines().len(), 1, "{}", r.stderr);
    let target = restored(&out, &f.src).join("data.bin");
    assert!(
        !target.exists(),
        "a corrupt file was written under its real name"
    );
    let leftovers: Vec<_> = if out.exists() {
        walk(&out)
            .into_iter()
            .filter(|p| is_restore_temp(p))
            .collect()
    } else {
        vec![]
    };
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn flipped_bit_in_a_pack_is_found_by_read_data() {
    let f = fixture();
    let pack = data_pack(&f.root);
    flip(&pack, 1 << 20);
    // Structure alone cannot see a flipped bit (sizes are right)…
    f.repo.id(&["check"]).expect(0);
    // …reading the data does, and names the snapshot.
    assert_check_names_snapshot(&f, &["--read-data"]);
    assert_check_names_snapshot(&f, &["--read-data-subset", "100%"]);
    assert_restore_refuses(&f);
}

#[test]
fn flipped_bit_in_a_pack_header_is_found() {
    let f = fixture();
    let pack = data_pack(&f.root);
    let len = fs::metadata(&pack).unwrap().len() as usize;
    flip(&pack, len - 20);
    assert_check_names_snapshot(&f, &["--read-data"]);
}

#[test]
fn truncated_pack_is_found_by_structure_check() {
    let f = fixture();
    truncate(&data_pack(&f.root));
    assert_check_names_snapshot(&f, &[]);
    assert_restore_refuses(&f);
}

#[test]
fn missing_pack_is_found() {
    let f = fixture();
    fs::remove_file(data_pack(&f.root)).unwrap();
    assert_check_names_snapshot(&f, &[]);
    assert_restore_refuses(&f);
}

#[test]
fn missing_index_is_found_and_names_the_snapshot() {
    let f = fixture();
    fs::remove_file(one(&f.root, "index")).unwrap();
    assert_check_names_snapshot(&f, &[]);
    // The data is still in its pack: the next backup re-indexes it and all is well again.
    f.repo.backup(&[&f.src]);
    f.repo.id(&["check", "--read-data"]).expect(0);
}

#[test]
fn damaged_index_is_found() {
    let f = fixture();
    flip(&one(&f.root, "index"), 30);
    assert_check_names_snapshot(&f, &[]);
}

#[test]
fn damaged_or_truncated_snapshot_object_is_found() {
    for damage in [flip as fn(&Path, usize), |p: &Path, _| truncate(p)] {
        let f = fixture();
        damage(&one(&f.root, "snapshots"), 100);
        assert_check_names_snapshot(&f, &[]);
        f.repo.id(&["snapshots"]).expect(4);
        let r = f.repo.id(&[
            "restore",
            &f.snapshot,
            "--config-dir",
            f.work.join("o").to_str().unwrap(),
        ]);
        r.expect(4);
    }
}

#[test]
fn damaged_config_object_is_an_integrity_error() {
    let f = fixture();
    fs::write(f.root.join("config"), b"{ not json").unwrap();
    f.repo.id(&["snapshots"]).expect_error(4, "config");
}

#[test]
fn intact_repository_checks_clean_with_every_option() {
    let f = fixture();
    f.repo.id(&["check"]).expect(0);
    f.repo.id(&["check", "--read-data"]).expect(0);
    f.repo.id(&["check", "--read-data-subset", "50%"]).expect(0);
    // With the backup-only key, structure can be checked; reading data cannot.
    f.repo.bk(&["check"]).expect(0);
    f.repo
        .bk(&["check", "--read-data"])
        .expect_error(5, "identity");
}
