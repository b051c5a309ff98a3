//! The maintenance key (docs/SECURITY.md §2): forget, prune and check without the identity,
//! reading no file content, file name, table or repository name, and unable to be steered
//! by a holder of the backup-only key.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::forge::{attacker, forge_raw};
use common::*;
use drydock::crypto::KeyFile;
use drydock::ids::BlobId;
use drydock::repo::blob::BlobType;
use drydock::repo::tree::RegistryEntry;
use drydock::repo::Repository;

/// A local repository made with all three keys; the maintenance key's path.
fn repo_with_maintenance_key(dir: &Path) -> (Repo, PathBuf) {
    let root = dir.join("repo");
    let (identity, backup_key, maintenance) = (
        dir.join("identity.txt"),
        dir.join("backup.key"),
        dir.join("maintenance.key"),
    );
    run(&[
        "--repo",
        root.to_str().unwrap(),
        "init",
        "--identity-out",
        identity.to_str().unwrap(),
        "--backup-key-out",
        backup_key.to_str().unwrap(),
        "--maintenance-key-out",
        maintenance.to_str().unwrap(),
    ])
    .expect(0);
    let repo = Repo {
        args: vec!["--repo".into(), root.to_str().unwrap().into()],
        identity,
        backup_key,
        local_root: Some(root),
        s3: None,
    };
    (repo, maintenance)
}

/// The deployed CronJob's forget, then a prune past the safety delay, with the key given.
fn forget_and_prune(repo: &Repo, key: &Path) {
    repo.deployed_forget_with(key).expect(0);
    repo.with_key(key, &["prune", "--safety-delay", "0s"])
        .expect(0);
}

#[test]
fn the_maintenance_key_forgets_and_prunes_and_reads_no_content() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mk) = repo_with_maintenance_key(dir.path());
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 3, 6 << 20);
    let first = repo.backup_registry(&reg);
    // The second backup reuses every layer by digest: its summary names the registry blobs
    // but not their chunks, which the maintenance key reads from the registry blobs.
    let second = repo.backup_registry(&reg);
    assert_ne!(first, second);
    repo.with_key(&mk, &["forget", &first]).expect(0);
    for _ in 0..2 {
        repo.with_key(&mk, &["prune", "--safety-delay", "0s"])
            .expect(0);
    }
    forget_and_prune(&repo, &mk);
    assert_eq!(repo.snapshot_ids(), vec![second.clone()]);
    // It lists snapshots from their summaries, without sizes (those are encrypted).
    let listed = repo.with_key(&mk, &["--json", "snapshots"]).json();
    assert_eq!(listed["snapshots"][0]["id"], second.as_str());
    assert_eq!(listed["snapshots"][0]["parts"][0], "registry");
    assert!(listed["snapshots"][0]["stored_bytes"].is_null());
    repo.assert_restores_registry(dir.path(), &reg);
    repo.with_key(&mk, &["check"]).expect(0);
    // The maintenance key cannot read or write backups.
    let out = dir.path().join("denied");
    repo.with_key(
        &mk,
        &["restore", "latest", "--registry-fs", out.to_str().unwrap()],
    )
    .expect_error(5, "identity");
    repo.with_key(&mk, &["backup", "--registry-fs", reg.to_str().unwrap()])
        .expect_error(5, "maintenance key can run forget, prune and check only");
    // Of every stored blob, its identity opens registry blobs (digests and chunk ids) only.
    let opened = blobs_the_maintenance_key_opens(&repo, &mk);
    assert!(opened.contains(&BlobType::Registry));
    assert!(
        opened.iter().all(|t| *t == BlobType::Registry),
        "{opened:?}"
    );
}

/// The types of the stored blobs the maintenance key's own identity decrypts.
fn blobs_the_maintenance_key_opens(repo: &Repo, mk: &Path) -> Vec<BlobType> {
    let KeyFile::Maintenance(key) = KeyFile::load(mk).unwrap() else {
        panic!("not a maintenance key")
    };
    let identity = key.identity.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = repo.store().await;
        let r = Repository::open(store, KeyFile::Maintenance(key))
            .await
            .unwrap();
        let mut opened = Vec::new();
        for (pack, size) in r.list_packs().await.unwrap() {
            let bytes = r.store.get(&drydock::repo::pack::key(&pack)).await.unwrap();
            for e in r.read_pack_header(&pack, size).await.unwrap() {
                let stored = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                if drydock::crypto::decrypt(&identity, stored).is_ok() {
                    opened.push(e.blob_type);
                }
            }
        }
        opened
    })
}

#[test]
fn key_maintenance_readies_an_existing_repository_and_revokes_the_previous_key() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 3, 6 << 20);
    let before = [repo.backup_registry(&reg), repo.backup_registry(&reg)];
    let mk = dir.path().join("maintenance.key");
    let r = repo.id(&[
        "--json",
        "key",
        "maintenance",
        "--out",
        mk.to_str().unwrap(),
    ]);
    r.expect(0);
    let renamed = r.json()["snapshots"].as_array().unwrap().clone();
    assert_eq!(renamed.len(), 2);
    let after = repo.snapshot_ids();
    for id in &before {
        assert!(!after.contains(id), "snapshot {id} was not rewritten");
    }
    // A backup after the switch reuses the registry blobs written before it.
    let newest = repo.backup_registry(&reg);
    for old in &after {
        repo.with_key(&mk, &["forget", old]).expect(0);
    }
    for _ in 0..2 {
        repo.with_key(&mk, &["prune", "--safety-delay", "0s"])
            .expect(0);
    }
    assert_eq!(repo.snapshot_ids(), vec![newest]);
    repo.assert_restores_registry(dir.path(), &reg);
    // A new maintenance key revokes the old one.
    let mk2 = dir.path().join("maintenance2.key");
    repo.id(&["key", "maintenance", "--out", mk2.to_str().unwrap()])
        .expect(0);
    repo.with_key(&mk, &["prune"])
        .expect_error(5, "not repository");
    repo.with_key(&mk2, &["check"]).expect(0);
}

/// A holder of the backup-only key stores a copy of a real registry blob, under its id,
/// whose chunk list is empty. The maintenance key cannot check ids, so it unites the chunk
/// lists of every copy: the real layers stay through the deployed forget and prune.
#[test]
fn a_short_registry_copy_cannot_steer_the_maintenance_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mk) = repo_with_maintenance_key(dir.path());
    let reg = dir.path().join("registry");
    // Large enough that a pack holds layer chunks only: a pack shared with a used link file
    // would stay whatever prune thought of the chunks.
    let digests = registry_tree_with_layers(&reg, 3, 6 << 20);
    let first = repo.backup_registry(&reg);
    let _second = repo.backup_registry(&reg);
    let real: Vec<(String, BlobId)> = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = attacker(&repo).await;
            let index = r.load_index().await.unwrap();
            let ck = r.keys.chunk_key("test").unwrap().clone();
            digests
                .iter()
                .map(|d| {
                    let lookup = drydock::repo::blob::lookup_key(&ck, d);
                    let id = index
                        .registry_blobs()
                        .find(|(l, _)| *l == lookup)
                        .unwrap()
                        .1;
                    (d.clone(), id)
                })
                .collect()
        })
    };
    forge_raw(
        &repo,
        move |r| {
            let m = r.keys.maintenance_recipient.clone().unwrap();
            real.iter()
                .map(|(digest, id)| {
                    let body = RegistryEntry {
                        digest: digest.clone(),
                        size: 0,
                        content: vec![],
                    }
                    .to_bytes();
                    let mut e = drydock::repo::blob::encode_with_id(
                        *id,
                        &[&r.keys.recipient, &m],
                        BlobType::Registry,
                        &body,
                        3,
                    );
                    e.lookup = Some(drydock::repo::blob::lookup_key(
                        r.keys.chunk_key("test").unwrap(),
                        digest,
                    ));
                    e
                })
                .collect()
        },
        |_, _| Vec::new(),
    );
    repo.with_key(&mk, &["forget", &first]).expect(0);
    for _ in 0..2 {
        repo.with_key(&mk, &["prune", "--safety-delay", "0s"])
            .expect(0);
    }
    forget_and_prune(&repo, &mk);
    repo.assert_restores_registry(dir.path(), &reg);
}

#[test]
fn a_backup_only_key_can_neither_forget_nor_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _mk) = repo_with_maintenance_key(dir.path());
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 1, 100 << 10);
    let id = repo.backup_registry(&reg);
    repo.bk(&["forget", &id])
        .expect_error(5, "needs the maintenance key or the identity");
    repo.bk(&["prune"])
        .expect_error(5, "needs the maintenance key or the identity");
    assert_eq!(repo.snapshot_ids(), vec![id]);
}

/// The attacker's B1 (helper report): every index object overwritten with garbage, and one
/// authentic index (backup-only key) naming the packs that hold registry blobs with no
/// entries, so that no index locates a registry blob a kept snapshot reuses. The
/// maintenance key's prune must stop rather than treat the layer chunks as unused.
#[test]
fn registry_blobs_no_index_locates_stop_the_maintenance_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mk) = repo_with_maintenance_key(dir.path());
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 2, 3 << 20);
    let first = repo.backup_registry(&reg);
    repo.backup_registry(&reg);
    repo.with_key(&mk, &["forget", &first]).expect(0);
    let root = repo.local_root.clone().unwrap();
    let saved: Vec<(PathBuf, Vec<u8>)> = walk(&root.join("index"))
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let registry_packs: Vec<drydock::ids::PackId> = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = attacker(&repo).await;
            let mut out = Vec::new();
            for (pack, size) in r.list_packs().await.unwrap() {
                let header = r.read_pack_header(&pack, size).await.unwrap();
                if header.iter().any(|e| e.blob_type == BlobType::Registry) {
                    out.push(pack);
                }
            }
            out
        })
    };
    assert!(!registry_packs.is_empty());
    for (p, _) in &saved {
        fs::write(p, noise(100, 7)).unwrap();
    }
    let auth = common::forge::attacker_auth(&repo);
    let forged: drydock::repo::index::IndexFile =
        registry_packs.iter().map(|p| (*p, Vec::new())).collect();
    let bytes = drydock::repo::index::encode(&forged, &auth);
    let name = hex::encode(drydock::ids::sha256(&bytes));
    fs::write(root.join("index").join(name), bytes).unwrap();

    for _ in 0..3 {
        let r = repo.with_key(&mk, &["prune", "--safety-delay", "0s"]);
        assert_ne!(r.code, 0, "prune went on: {}", r.stdout);
    }
    for (p, b) in &saved {
        fs::write(p, b).unwrap();
    }
    repo.assert_restores_registry(dir.path(), &reg);
}

/// With the backup-only key, a snapshot without a summary: forget and prune with the
/// maintenance key stop (they cannot tell what it keeps) and say how to go on; forgotten by
/// id, it no longer stops them, and the real snapshot is untouched.
#[test]
fn a_snapshot_without_a_summary_is_forgotten_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mk) = repo_with_maintenance_key(dir.path());
    let reg = dir.path().join("registry");
    registry_tree_with_layers(&reg, 1, 1 << 20);
    let real = repo.backup_registry(&reg);
    let forged = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = attacker(&repo).await;
            let s = common::forge::manifest(
                chrono::Utc::now(),
                "harbor",
                drydock::repo::snapshot::Parts::default(),
            );
            r.put_snapshot(&s, None).await.unwrap().to_hex()
        })
    };
    repo.with_key(&mk, &["prune"])
        .expect_error(4, "forget` it by id");
    repo.with_key(&mk, &["forget", &forged]).expect(0);
    repo.with_key(&mk, &["prune", "--safety-delay", "0s"])
        .expect(0);
    assert_eq!(repo.snapshot_ids(), vec![real]);
    repo.assert_restores_registry(dir.path(), &reg);
}
