//! Sharing Velero's BackupStorageLocation; retention; prune while backups run.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

struct Bsl {
    _dir: tempfile::TempDir,
    bucket: String,
    yaml: PathBuf,
    creds: PathBuf,
    identity: PathBuf,
    backup_key: PathBuf,
}

const VELERO_OBJECTS: &[(&str, &str)] = &[
    (
        "cluster/backups/daily-20261120010000/velero-backup.json",
        r#"{"kind":"Backup","status":{"phase":"Completed","expiration":"2999-01-01T00:00:00Z"}}"#,
    ),
    (
        "cluster/backups/daily-20261120010000/daily-20261120010000.tar.gz",
        "tarball",
    ),
    ("cluster/metadata/revision", "abc"),
    ("cluster/kopia/harbor/kopia.repository", "{}"),
];

fn bsl_yaml(bucket: &str, endpoint: &str, mode: &str) -> String {
    format!(
        "apiVersion: velero.io/v1\nkind: BackupStorageLocation\nmetadata:\n  name: default\n  namespace: velero\nspec:\n  provider: aws\n  objectStorage:\n    bucket: {bucket}\n    prefix: cluster\n  config:\n    region: us-east-1\n    s3Url: {endpoint}\n    s3ForcePathStyle: \"true\"\n    profile: velero\n  accessMode: {mode}\n"
    )
}

fn setup(mode: &str) -> Bsl {
    let dir = tempfile::tempdir().unwrap();
    let bucket = new_bucket();
    for (k, v) in VELERO_OBJECTS {
        put_object(&bucket, k, v.as_bytes());
    }
    let yaml = dir.path().join("bsl.yaml");
    fs::write(&yaml, bsl_yaml(&bucket, &s3_endpoint(), "ReadWrite")).unwrap();
    let creds = dir.path().join("cloud");
    fs::write(&creds, "[default]\naws_access_key_id=nope\naws_secret_access_key=nope\n[velero]\naws_access_key_id=testing\naws_secret_access_key=testing\n").unwrap();
    let (identity, backup_key) = (dir.path().join("id.txt"), dir.path().join("backup.key"));
    let b = Bsl {
        _dir: dir,
        bucket,
        yaml,
        creds,
        identity,
        backup_key,
    };
    b.run(
        None,
        &[
            "init",
            "--identity-out",
            b.identity.to_str().unwrap(),
            "--backup-key-out",
            b.backup_key.to_str().unwrap(),
        ],
    )
    .expect(0);
    fs::write(&b.yaml, bsl_yaml(&b.bucket, &s3_endpoint(), mode)).unwrap();
    b
}

impl Bsl {
    fn run(&self, key: Option<&Path>, args: &[&str]) -> Run {
        let mut all = vec![
            "--velero-bsl",
            self.yaml.to_str().unwrap(),
            "--velero-credentials",
            self.creds.to_str().unwrap(),
        ];
        if let Some(k) = key {
            all.extend(["--key", k.to_str().unwrap()]);
        }
        all.extend_from_slice(args);
        run_env(
            &all,
            &[
                ("AWS_ACCESS_KEY_ID", "wrong"),
                ("AWS_SECRET_ACCESS_KEY", "wrong"),
            ],
        )
    }
    fn bk(&self, args: &[&str]) -> Run {
        self.run(Some(&self.backup_key), args)
    }
    fn id(&self, args: &[&str]) -> Run {
        self.run(Some(&self.identity), args)
    }
    fn snapshot_count(&self) -> usize {
        let r = self.id(&["--json", "snapshots"]);
        r.expect(0);
        r.json()["snapshots"].as_array().unwrap().len()
    }
}

fn src(dir: &Path, name: &str, seed: u64, mib: usize) -> PathBuf {
    let d = dir.join(name);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("data.bin"), noise(mib << 20, seed)).unwrap();
    d
}

#[test]
fn a_shared_bsl_keeps_velero_layout_valid_and_velero_objects_untouched() {
    let b = setup("ReadWrite");
    let work = tempfile::tempdir().unwrap();
    let s = src(work.path(), "a", 1, 2);
    let r = b.bk(&[
        "--json",
        "backup",
        "--config",
        s.to_str().unwrap(),
        "--velero-backup",
        "daily-20261120010000",
    ]);
    r.expect(0);
    b.id(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--safety-delay",
        "0s",
    ])
    .expect(0);
    b.id(&["prune", "--safety-delay", "0s"]).expect(0);
    b.id(&["check", "--read-data"]).expect(0);
    let objects = bucket_objects(&b.bucket);
    let top: BTreeSet<String> = objects
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("cluster/"))
        .filter_map(|k| k.split_once('/').map(|(t, _)| t.to_string()))
        .collect();
    for t in &top {
        assert!(
            drydock::velero::VELERO_TOP_LEVEL.contains(&t.as_str()),
            "top-level folder {t} would make Velero mark the BSL Unavailable"
        );
    }
    for (k, _) in &objects {
        assert!(
            k.starts_with("cluster/"),
            "{k} written outside the BSL prefix"
        );
        if !k.starts_with("cluster/plugins/drydock/") {
            assert!(
                VELERO_OBJECTS.iter().any(|(vk, _)| vk == k),
                "{k} is not Velero's"
            );
        }
    }
    for (k, v) in VELERO_OBJECTS {
        let got = objects.iter().find(|(ok, _)| ok == k).unwrap();
        assert_eq!(got.1, v.as_bytes(), "{k} changed");
    }
    let snaps = b.id(&["--json", "snapshots"]).json()["snapshots"].clone();
    assert_eq!(
        snaps[0]["tags"]["velero.io/backup-name"],
        "daily-20261120010000"
    );
    assert_eq!(snaps[0]["tags"]["velero.io/schedule-name"], "daily");
}

#[test]
fn a_read_only_bsl_refuses_every_write() {
    let b = setup("ReadOnly");
    let work = tempfile::tempdir().unwrap();
    let s = src(work.path(), "a", 2, 1);
    let before = bucket_objects(&b.bucket).len();
    b.bk(&["backup", "--config", s.to_str().unwrap()])
        .expect_error(2, "ReadOnly");
    b.id(&["forget", "--keep-last", "1"]).expect(0); // nothing to forget: no write attempted
    b.id(&["prune", "--safety-delay", "0s"]).expect(0);
    assert_eq!(bucket_objects(&b.bucket).len(), before);
    b.id(&["snapshots"]).expect(0);
    b.id(&["check"]).expect(0);
}

/// A base64 PEM CA certificate, as `objectStorage.caCert` holds it.
fn ca_cert(dir: &Path) -> String {
    use base64::Engine;
    let pki = common::tls::make_pki(dir, "minio CA", "DNS:localhost");
    base64::engine::general_purpose::STANDARD.encode(fs::read(pki.ca_cert).unwrap())
}

#[test]
fn a_bsl_with_a_ca_certificate_and_a_named_profile_works_and_a_missing_profile_is_a_key_error() {
    let b = setup("ReadWrite");
    let work = tempfile::tempdir().unwrap();
    let ca = ca_cert(work.path());
    let yaml = fs::read_to_string(&b.yaml).unwrap().replace(
        "    prefix: cluster\n",
        &format!("    prefix: cluster\n    caCert: {ca}\n"),
    );
    fs::write(&b.yaml, &yaml).unwrap();
    let s = src(work.path(), "a", 5, 1);
    b.bk(&["backup", "--config", s.to_str().unwrap()]).expect(0);
    b.id(&["check"]).expect(0);
    fs::write(&b.yaml, yaml.replace("profile: velero", "profile: nosuch")).unwrap();
    b.id(&["snapshots"]).expect_error(5, "nosuch");
}

#[test]
fn bsl_errors_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("bsl.yaml");
    fs::write(
        &yaml,
        bsl_yaml("b-x", "http://127.0.0.1:1", "ReadWrite")
            .replace("profile: velero", "profle: velero"),
    )
    .unwrap();
    run(&[
        "--velero-bsl",
        yaml.to_str().unwrap(),
        "snapshots",
        "--key",
        "/dev/null",
    ])
    .expect_error(2, "profle");
    fs::write(&yaml, "kind: Deployment\n").unwrap();
    run(&["--velero-bsl", yaml.to_str().unwrap(), "snapshots"])
        .expect_error(2, "BackupStorageLocation");
    run(&[
        "--velero-bsl",
        yaml.to_str().unwrap(),
        "--repo",
        "/tmp/x",
        "snapshots",
    ])
    .expect(2);
}

#[test]
fn follow_velero_forgets_snapshots_whose_velero_backup_is_gone_or_expired() {
    let b = setup("ReadWrite");
    let work = tempfile::tempdir().unwrap();
    let s = src(work.path(), "a", 3, 1);
    put_object(
        &b.bucket,
        "cluster/backups/daily-20261121010000/velero-backup.json",
        br#"{"status":{"phase":"Completed","expiration":"2999-01-01T00:00:00Z"}}"#,
    );
    put_object(
        &b.bucket,
        "cluster/backups/old-20200101010000/velero-backup.json",
        br#"{"status":{"phase":"Completed","expiration":"2020-01-31T00:00:00Z"}}"#,
    );
    for name in [
        "daily-20261120010000",
        "daily-20261121010000",
        "old-20200101010000",
    ] {
        b.bk(&[
            "backup",
            "--config",
            s.to_str().unwrap(),
            "--velero-backup",
            name,
        ])
        .expect(0);
    }
    b.bk(&["backup", "--config", s.to_str().unwrap()]).expect(0); // not Velero's: never touched
                                                                  // A Velero backup still running has no velero-backup.json yet (Velero writes it at the
                                                                  // end): not taken for deleted while it is young, by its schedule name's time.
    let running = format!("daily-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    b.bk(&[
        "backup",
        "--config",
        s.to_str().unwrap(),
        "--velero-backup",
        &running,
    ])
    .expect(0);
    delete_object(
        &b.bucket,
        "cluster/backups/daily-20261120010000/velero-backup.json",
    );
    let dry = b.id(&["--json", "forget", "--follow-velero", "--dry-run"]);
    dry.expect(0);
    assert_eq!(
        dry.json()["forgotten"].as_array().unwrap().len(),
        2,
        "{}",
        dry.stdout
    );
    assert_eq!(b.snapshot_count(), 5);
    let r = b.id(&["--json", "forget", "--follow-velero"]);
    r.expect(0);
    let reasons = r.json()["forgotten"].to_string();
    assert!(
        reasons.contains("is gone") && reasons.contains("expired"),
        "{reasons}"
    );
    let left = b.id(&["--json", "snapshots"]).json()["snapshots"].clone();
    let names: BTreeSet<String> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["tags"]["velero.io/backup-name"]
                .as_str()
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["-".to_string(), "daily-20261121010000".to_string(), running])
    );
    // Without a BSL there is no Velero to follow.
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    repo.id(&["forget", "--follow-velero"])
        .expect_error(2, "--velero-bsl");
}

#[test]
fn ttl_expiry_and_keep_policies() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let s = src(dir.path(), "a", 4, 1);
    repo.bk(&["backup", "--config", s.to_str().unwrap(), "--ttl", "1s"])
        .expect(0);
    for _ in 0..4 {
        repo.bk(&["backup", "--config", s.to_str().unwrap()])
            .expect(0);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = repo.id(&["--json", "forget", "--expired"]);
    r.expect(0);
    assert_eq!(r.json()["forgotten"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["remaining"], 4);
    let r = repo.id(&["--json", "forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(r.json()["forgotten"].as_array().unwrap().len(), 2);
    repo.id(&["forget", "--keep-last", "2"]).expect(0);
    assert_eq!(
        repo.id(&["--json", "snapshots"]).json()["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    repo.id(&["forget"]).expect_error(2, "nothing to forget by");
    repo.bk(&["forget", "--keep-last", "1"])
        .expect_error(5, "identity");
}

fn packs(root: &Path) -> usize {
    walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file())
        .count()
}

#[test]
fn prune_reclaims_space_in_two_phases_and_never_breaks_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    let x = src(dir.path(), "x", 10, 20);
    let y = src(dir.path(), "y", 11, 20);
    repo.bk(&["backup", "--config", x.to_str().unwrap()])
        .expect(0);
    repo.bk(&["backup", "--config", y.to_str().unwrap()])
        .expect(0);
    let full = packs(&root);
    // Forget the X snapshot (the older one).
    repo.id(&["forget", "--keep-last", "1"]).expect(0);

    // Phase 1 marks X's packs; nothing is deleted yet.
    let p1 = repo.id(&["--json", "prune", "--safety-delay", "0s"]);
    p1.expect(0);
    assert!(p1.json()["marked"].as_u64().unwrap() >= 1, "{}", p1.stdout);
    assert_eq!(packs(&root), full);

    // A backup that starts after the mark does not reuse marked packs: it stores X again.
    let after = repo.bk(&["--json", "backup", "--config", x.to_str().unwrap()]);
    after.expect(0);
    assert!(
        after.json()["summary"]["new_bytes"].as_u64().unwrap() >= 20 << 20,
        "{}",
        after.stdout
    );

    // Phase 2 deletes the marked packs, which no snapshot uses now.
    let p2 = repo.id(&["--json", "prune", "--safety-delay", "0s"]);
    p2.expect(0);
    assert!(
        p2.json()["deleted_packs"].as_u64().unwrap() >= 1,
        "{}",
        p2.stdout
    );
    repo.id(&["check", "--read-data"]).expect(0);
    for s in repo.id(&["--json", "snapshots"]).json()["snapshots"]
        .as_array()
        .unwrap()
    {
        let id = s["short_id"].as_str().unwrap();
        let out = dir.path().join(format!("out-{id}"));
        repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
            .expect(0);
    }
}

#[test]
fn a_backup_running_while_packs_are_marked_keeps_them_alive() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let x = src(dir.path(), "x", 20, 24);
    let y = src(dir.path(), "y", 21, 24);
    repo.bk(&["backup", "--config", x.to_str().unwrap()])
        .expect(0);
    repo.bk(&["backup", "--config", y.to_str().unwrap()])
        .expect(0);
    repo.id(&["forget", "--keep-last", "1"]).expect(0);
    // Back up X again while prune marks X's packs: whichever comes first, the backup's
    // snapshot must stay whole after the next prune deletes what is unused.
    let child = repo.spawn_bk(&["backup", "--parallel", "1", "--config", x.to_str().unwrap()]);
    repo.id(&["prune", "--safety-delay", "0s"]).expect(0);
    wait(child).expect(0);
    repo.id(&["prune", "--safety-delay", "0s"]).expect(0);
    repo.id(&["prune", "--safety-delay", "0s"]).expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
    let target = dir.path().join("out");
    repo.id(&[
        "restore",
        "latest",
        "--config-dir",
        target.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&x, &restored(&target, &x));
}
