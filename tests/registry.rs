//! The registry part against the real distribution registry, with real images.

mod common;

use std::fs;
use std::path::Path;

use common::registry::{assert_serves, push_images, Registry};
use common::*;

fn registry_args<'a>(flag: &'a str, root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![flag, root];
    v.extend_from_slice(extra);
    v
}

/// A filesystem registry with the test images pushed: (root, registry, pushed refs).
fn pushed_fs_registry(dir: &Path) -> (std::path::PathBuf, Registry, Vec<(String, String)>) {
    let root = dir.join("storage");
    fs::create_dir_all(&root).unwrap();
    let reg = Registry::filesystem(&root);
    let pushed = push_images(&reg);
    (root, reg, pushed)
}

#[test]
fn filesystem_round_trip_serves_every_tag_again() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, pushed) = pushed_fs_registry(dir.path());
    // A leftover upload must not be captured.
    let uploads = root.join("docker/registry/v2/repositories/library/app-a/_uploads/0000-abcd");
    fs::create_dir_all(&uploads).unwrap();
    fs::write(uploads.join("data"), b"half an upload").unwrap();

    let b = repo.bk(&["--json", "backup", "--registry-fs", root.to_str().unwrap()]);
    b.expect(0);
    let r = &b.json()["parts"]["registry"];
    assert_eq!(r["repositories"], 3, "{r}");
    assert_eq!(r["tags"], PUSHED_TAGS, "{r}");

    let restored_root = dir.path().join("restored");
    repo.id(&[
        "restore",
        "latest",
        "--registry-fs",
        restored_root.to_str().unwrap(),
    ])
    .expect(0);
    assert!(!restored_root
        .join("docker/registry/v2/repositories/library/app-a/_uploads")
        .exists());
    let again = Registry::filesystem(&restored_root);
    assert_serves(&again, &pushed, dir.path());

    repo.id(&[
        "verify",
        "latest",
        "--registry-fs",
        restored_root.to_str().unwrap(),
    ])
    .expect(0);
    repo.id(&["verify", "latest", "--registry-url", &again.url()])
        .expect(0);
    let show = repo.id(&["--json", "show", "latest"]);
    show.expect(0);
    let repos = show.json()["parts"]["registry"]["repositories"].clone();
    assert_eq!(
        repos["team/sub/app-b"],
        serde_json::json!(["latest", "multi"])
    );
    repo.id(&["check", "--read-data"]).expect(0);
}

const PUSHED_TAGS: usize = 6;

#[test]
fn s3_driver_round_trip_serves_every_tag_again() {
    let dir = tempfile::tempdir().unwrap();
    let repo = s3_repo(dir.path(), "repo");
    let endpoint = s3_endpoint();
    let (src_bucket, dst_bucket) = (new_bucket(), new_bucket());
    let live = Registry::s3(&endpoint, &src_bucket, "harbor/registry");
    let pushed = push_images(&live);
    let s3 = |bucket: &str| format!("s3://{bucket}/harbor/registry");
    let opts = [
        "--registry-s3-endpoint",
        endpoint.as_str(),
        "--registry-s3-path-style",
    ];
    let src = s3(&src_bucket);
    let b = repo.bk(&[
        &["--json", "backup"][..],
        &registry_args("--registry-s3", &src, &opts),
    ]
    .concat());
    b.expect(0);
    let dst = s3(&dst_bucket);
    repo.id(&[
        &["restore", "latest"][..],
        &registry_args("--registry-s3", &dst, &opts),
    ]
    .concat())
        .expect(0);
    let again = Registry::s3(&endpoint, &dst_bucket, "harbor/registry");
    assert_serves(&again, &pushed, dir.path());
    repo.id(&[
        &["verify", "latest"][..],
        &registry_args("--registry-s3", &dst, &opts),
    ]
    .concat())
        .expect(0);
}

#[test]
fn unchanged_second_backup_reads_no_blob_content() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, _) = pushed_fs_registry(dir.path());
    let first = repo.bk(&["--json", "backup", "--registry-fs", root.to_str().unwrap()]);
    first.expect(0);
    assert!(
        first.json()["parts"]["registry"]["bytes_read"]
            .as_u64()
            .unwrap()
            > 20 << 20
    );
    let second = repo.bk(&["--json", "backup", "--registry-fs", root.to_str().unwrap()]);
    second.expect(0);
    let j = second.json();
    assert_eq!(j["parts"]["registry"]["bytes_read"], 0, "{j}");
    assert!(
        j["summary"]["new_bytes"].as_u64().unwrap() < 64 << 10,
        "{j}"
    );
}

#[test]
fn a_corrupted_blob_is_reported_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, _) = pushed_fs_registry(dir.path());
    let blobs = root.join("docker/registry/v2/blobs/sha256");
    let victim = walk(&blobs)
        .into_iter()
        .filter(|p| p.ends_with("data"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let hex = victim
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    let b = repo.bk(&["--json", "backup", "--registry-fs", root.to_str().unwrap()]);
    b.expect(3);
    let warnings = b.json()["warnings"].to_string();
    assert!(
        warnings.contains(&hex) && warnings.contains("does not match its digest"),
        "{warnings}"
    );
    // The snapshot holds every other blob and the repository is sound.
    repo.id(&["check", "--read-data"]).expect(0);
    let out = dir.path().join("restored");
    repo.id(&["restore", "latest", "--registry-fs", out.to_str().unwrap()])
        .expect(0);
    assert!(!out
        .join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
        .exists());
}

#[test]
fn an_interrupted_restore_resumes_and_never_leaves_a_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, pushed) = pushed_fs_registry(dir.path());
    repo.bk(&["backup", "--registry-fs", root.to_str().unwrap()])
        .expect(0);
    let target = dir.path().join("restored");
    let mut args: Vec<String> = repo.args.clone();
    args.extend(
        [
            "--key",
            repo.identity.to_str().unwrap(),
            "restore",
            "latest",
            "--parallel",
            "1",
            "--registry-fs",
        ]
        .map(String::from),
    );
    args.push(target.to_str().unwrap().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&argv).spawn().unwrap();
    let blobs = target.join("docker/registry/v2/blobs");
    let data_files = || {
        walk(&blobs)
            .into_iter()
            .filter(|p| p.ends_with("data"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while data_files() < 2 && child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap();
    // Whatever was written is whole: verify lists missing blobs, never corrupt ones.
    let v = repo.id(&[
        "--json",
        "verify",
        "latest",
        "--registry-fs",
        target.to_str().unwrap(),
    ]);
    assert!(!v.stdout.contains("corrupt"), "{}", v.stdout);
    let r = repo.id(&[
        "--json",
        "restore",
        "latest",
        "--registry-fs",
        target.to_str().unwrap(),
    ]);
    r.expect(0);
    let report = &r.json()["parts"]["registry"]["report"];
    assert!(report["blobs_present"].as_u64().unwrap() >= 1, "{report}");
    repo.id(&[
        "verify",
        "latest",
        "--registry-fs",
        target.to_str().unwrap(),
    ])
    .expect(0);
    let again = Registry::filesystem(&target);
    assert_serves(&again, &pushed, dir.path());
}

#[test]
fn dry_run_lists_blobs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, _) = pushed_fs_registry(dir.path());
    repo.bk(&["backup", "--registry-fs", root.to_str().unwrap()])
        .expect(0);
    let target = dir.path().join("restored");
    let r = repo.id(&[
        "--json",
        "restore",
        "latest",
        "--dry-run",
        "--registry-fs",
        target.to_str().unwrap(),
    ]);
    r.expect(0);
    let would = r.json()["parts"]["registry"]["report"]["would_write"]
        .as_array()
        .unwrap()
        .len();
    assert!(would >= 8, "{}", r.stdout);
    assert!(!target.exists());
}

#[test]
fn digests_the_database_refers_to_but_the_registry_lacks_are_reported() {
    let pg = common::pg::shared();
    pg.harbor_copy("reg_refs");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, _live, pushed) = pushed_fs_registry(dir.path());
    // Make the database's blob table describe exactly the pushed images, plus one blob the
    // storage lost, plus GC's leftovers: rows marked for deletion whose files are gone
    // (src/pkg/blob/models/blob.go), which are no loss.
    let lost = format!("sha256:{}", "ab".repeat(32));
    let leftovers: Vec<String> = ["delete", "deleting", "deletefailed"]
        .iter()
        .enumerate()
        .map(|(i, status)| {
            format!(
                "('sha256:{}', 'layer', 1, '{status}')",
                format!("c{i}").repeat(32)
            )
        })
        .collect();
    let digests: Vec<String> = pushed
        .iter()
        .map(|(_, d)| format!("('{d}', 'm', 1)"))
        .collect();
    pg.sql(
        "reg_refs",
        &format!(
            "TRUNCATE artifact_blob, project_blob, tag, artifact, blob CASCADE; \
             INSERT INTO blob (digest, content_type, size) VALUES {}, ('{lost}', 'layer', 1) ON CONFLICT DO NOTHING; \
             INSERT INTO blob (digest, content_type, size, status) VALUES {}",
            digests.join(", "),
            leftovers.join(", ")
        ),
    );
    let r = repo.with_key_env(
        &repo.backup_key,
        &[
            "--json",
            "backup",
            "--postgres",
            &pg.url("reg_refs"),
            "--registry-fs",
            root.to_str().unwrap(),
        ],
        &[("PGPASSWORD", common::pg::PASSWORD)],
    );
    r.expect(3);
    let missing = r.json()["parts"]["registry"]["missing_digests"].clone();
    assert_eq!(missing, serde_json::json!([lost]), "{}", r.stdout);
    assert_eq!(
        r.json()["parts"]["registry"]["gc_leftovers"],
        3,
        "{}",
        r.stdout
    );
}

#[test]
fn verify_finds_missing_corrupt_and_retagged() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (root, live, _) = pushed_fs_registry(dir.path());
    repo.bk(&["backup", "--registry-fs", root.to_str().unwrap()])
        .expect(0);
    repo.id(&["verify", "latest", "--registry-fs", root.to_str().unwrap()])
        .expect(0);
    // Retag, delete a blob, corrupt another.
    live.push(common::registry::images(), "a-v2", "library/app-a:v1");
    // Layers only: a lost or corrupt manifest makes the registry answer its tags with
    // errors instead of digests, and which blob sorts first changes with every build of the
    // test images.
    let manifests: std::collections::HashSet<String> =
        walk(&root.join("docker/registry/v2/repositories"))
            .into_iter()
            .filter(|p| {
                p.ends_with("link") && p.to_string_lossy().contains("/_manifests/revisions/")
            })
            .filter_map(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
            .collect();
    let datas: Vec<_> = walk(&root.join("docker/registry/v2/blobs"))
        .into_iter()
        .filter(|p| p.ends_with("data"))
        .filter(|p| {
            let hex = p
                .parent()
                .and_then(|d| d.file_name())
                .unwrap()
                .to_string_lossy();
            !manifests.contains(hex.as_ref())
        })
        .collect();
    assert!(datas.len() >= 2, "{datas:?}");
    fs::remove_file(&datas[0]).unwrap();
    let mut b = fs::read(&datas[1]).unwrap();
    b[0] ^= 1;
    fs::write(&datas[1], b).unwrap();
    let v = repo.id(&[
        "--json",
        "verify",
        "latest",
        "--registry-fs",
        root.to_str().unwrap(),
    ]);
    v.expect(1);
    let diffs = v.json()["parts"]["registry"]["differences"].to_string();
    assert!(diffs.contains("missing"), "{diffs}");
    assert!(diffs.contains("corrupt"), "{diffs}");
    assert!(diffs.contains("tag library/app-a:v1: points to"), "{diffs}");
    let h = repo.id(&["--json", "verify", "latest", "--registry-url", &live.url()]);
    h.expect(1);
    assert!(
        h.stdout.contains("tag library/app-a:v1: serves"),
        "{}",
        h.stdout
    );
}
