//! Bad inputs: each gets one error line, a documented exit code, and changes nothing.

mod common;

use std::fs;

use common::*;

fn small_src(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("harbor.yml"), "hostname: x\n").unwrap();
    src
}

#[test]
fn backup_only_key_cannot_read_anything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = small_src(dir.path());
    repo.backup(&[&src]);
    let out = dir.path().join("out");
    repo.bk(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect_error(5, "identity");
    assert!(!out.exists());
    repo.bk(&["show", "latest"]).expect_error(5, "identity");
    repo.bk(&["snapshots"]).expect_error(5, "identity");
    repo.bk(&["check", "--read-data"])
        .expect_error(5, "identity");
    repo.bk(&[
        "key",
        "backup-only",
        "--out",
        dir.path().join("k2").to_str().unwrap(),
    ])
    .expect_error(5, "identity");
    // And it can still deduplicate: only sealed small files (salted anew by every backup,
    // FORMAT.md §5) and the trees naming them are stored again.
    let again = repo.backup(&[&src]);
    assert!(
        again["summary"]["new_bytes"].as_u64().unwrap() < 64 << 10,
        "{again}"
    );
}

#[test]
fn derived_backup_only_key_works_like_the_one_from_init() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let k2 = dir.path().join("derived.key");
    repo.id(&["key", "backup-only", "--out", k2.to_str().unwrap()])
        .expect(0);
    let src = small_src(dir.path());
    let r = repo.with_key(
        &k2,
        &["--json", "backup", "--config", src.to_str().unwrap()],
    );
    r.expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
}

#[test]
fn keys_of_another_repository_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = local_repo(&dir.path().join("a").tap_mkdir());
    let b = local_repo(&dir.path().join("b").tap_mkdir());
    let src = small_src(dir.path());
    a.backup(&[&src]);
    let before = repo_files(a.local_root.as_ref().unwrap()).len();
    a.with_key(&b.identity, &["snapshots"])
        .expect_error(5, "does not belong");
    a.with_key(
        &b.backup_key,
        &["backup", "--config", src.to_str().unwrap()],
    )
    .expect_error(5, "repository");
    // Nothing was written by the refused backup.
    assert_eq!(repo_files(a.local_root.as_ref().unwrap()).len(), before);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn unusable_key_files_are_key_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let garbage = dir.path().join("garbage.key");
    fs::write(&garbage, "hello\n").unwrap();
    repo.with_key(&garbage, &["snapshots"])
        .expect_error(5, "not a drydock key file");
    repo.with_key(&dir.path().join("absent.key"), &["snapshots"])
        .expect_error(5, "cannot read key file");
}

#[test]
fn unknown_and_ambiguous_snapshots_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect_error(2, "no snapshots");
    let src = small_src(dir.path());
    repo.backup(&[&src]);
    repo.id(&["show", "deadbeef"])
        .expect_error(2, "no snapshot");
    repo.id(&["show", "not-hex"])
        .expect_error(2, "not a snapshot id");
    let r = repo.id(&["--json", "show", "deadbeef"]);
    r.expect(2);
    assert_eq!(r.json()["error"]["exit_code"], 2);
}

#[test]
fn non_empty_restore_target_needs_force_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = small_src(dir.path());
    repo.backup(&[&src]);
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect_error(2, "--force");
    assert_eq!(walk(&out), vec![out.join("keep.txt")]);
    repo.id(&[
        "restore",
        "latest",
        "--config-dir",
        out.to_str().unwrap(),
        "--force",
    ])
    .expect(0);
    assert_eq!(
        fs::read(restored(&out, &src).join("harbor.yml")).unwrap(),
        b"hostname: x\n"
    );
    assert_eq!(fs::read(out.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn bad_locations_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    fs::write(&key, "x").unwrap();
    let k = key.to_str().unwrap();
    run(&["--repo", "ftp://host/x", "--key", k, "snapshots"])
        .expect_error(2, "unsupported repository URL");
    run(&["--repo", "s3://Bad_Bucket/x", "--key", k, "snapshots"])
        .expect_error(2, "invalid S3 bucket");
    run(&["--key", k, "snapshots"]).expect_error(2, "--repo");
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let repo = local_repo(dir.path());
    repo.id(&["snapshots"]).expect(0);
    run(&[
        "--repo",
        empty.to_str().unwrap(),
        "--key",
        repo.identity.to_str().unwrap(),
        "snapshots",
    ])
    .expect_error(2, "no drydock repository");
    run(&["--repo", empty.to_str().unwrap(), "snapshots"]).expect_error(2, "--key");
    run(&[
        "--repo",
        "s3://bkt/x",
        "--s3-endpoint",
        "not a url",
        "--key",
        repo.identity.to_str().unwrap(),
        "snapshots",
    ])
    .expect_error(2, "--s3-endpoint");
}

#[test]
fn unreachable_s3_endpoint_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    run(&[
        "--repo",
        "s3://bucket/x",
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
        "--key",
        repo.identity.to_str().unwrap(),
        "snapshots",
    ])
    .expect_error(1, "cannot reach the S3 endpoint");
}

#[test]
fn missing_bucket_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = s3_endpoint();
    let id = dir.path().join("id");
    run(&[
        "--repo",
        "s3://no-such-bucket-here/x",
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
        "init",
        "--identity-out",
        id.to_str().unwrap(),
    ])
    .expect_error(2, "does not exist");
    assert!(
        !id.exists(),
        "init must not leave an identity for a repository it did not create"
    );
}

#[test]
fn init_refuses_existing_repositories_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let mut args: Vec<&str> = repo.args.iter().map(String::as_str).collect();
    let other = dir.path().join("other.txt");
    args.extend_from_slice(&["init", "--identity-out", other.to_str().unwrap()]);
    run(&args).expect_error(2, "already exists");
    assert!(!other.exists());
    let before = fs::read(&repo.identity).unwrap();
    let fresh = dir.path().join("fresh");
    run(&[
        "--repo",
        fresh.to_str().unwrap(),
        "init",
        "--identity-out",
        repo.identity.to_str().unwrap(),
    ])
    .expect_error(2, "refusing to overwrite");
    assert_eq!(fs::read(&repo.identity).unwrap(), before);
    assert!(!fresh.join("config").exists());
    // Key files are private.
    use std::os::unix::fs::PermissionsExt;
    for k in [&repo.identity, &repo.backup_key] {
        assert_eq!(fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn missing_config_path_fails_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let before = repo_files(repo.local_root.as_ref().unwrap()).len();
    repo.bk(&[
        "backup",
        "--config",
        dir.path().join("nope").to_str().unwrap(),
    ])
    .expect_error(2, "nope");
    repo.bk(&["backup"]).expect_error(2, "--config");
    repo.bk(&["backup", "--config", "/", "--ttl", "soon"])
        .expect(2);
    assert_eq!(repo_files(repo.local_root.as_ref().unwrap()).len(), before);
}

#[test]
fn special_file_makes_a_partial_snapshot_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = small_src(dir.path());
    let _sock = std::os::unix::net::UnixListener::bind(src.join("harbor.sock")).unwrap();
    let r = repo.bk(&["--json", "backup", "--config", src.to_str().unwrap()]);
    r.expect(3);
    assert!(r.json()["warnings"][0]
        .as_str()
        .unwrap()
        .contains("harbor.sock"));
    // The rest was saved and is restorable.
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_eq!(
        fs::read(restored(&out, &src).join("harbor.yml")).unwrap(),
        b"hostname: x\n"
    );
}

#[test]
fn an_ambiguous_snapshot_prefix_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = small_src(dir.path());
    // Seventeen snapshots: two of them share a first hex digit.
    let mut firsts = std::collections::HashMap::new();
    for i in 0..17 {
        fs::write(src.join("n"), i.to_string()).unwrap();
        let id = repo.backup(&[&src])["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        *firsts.entry(id[..1].to_string()).or_insert(0) += 1;
    }
    let shared = firsts
        .iter()
        .find(|(_, n)| **n > 1)
        .map(|(d, _)| d.clone())
        .unwrap();
    repo.id(&["show", &shared]).expect_error(2, "ambiguous");
}

#[test]
fn key_backup_only_refuses_to_overwrite_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let out = dir.path().join("exists.key");
    fs::write(&out, "precious").unwrap();
    repo.id(&["key", "backup-only", "--out", out.to_str().unwrap()])
        .expect_error(2, "refusing to overwrite");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
}
