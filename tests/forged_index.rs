//! Index objects are authenticated (FORMAT.md §7), so a bucket writer without keys can add
//! none that drydock reads; these tests forge them with the backup-only key, which can. A
//! backup-only key cannot write deletion records (their tag needs the identity's deletion
//! key), so the backdated one planted here is ignored. Prune must never let such an index
//! make it delete the only copy of a blob a snapshot uses: it lets a pack go only when every
//! used blob the pack's own header lists has another copy that authenticates.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::forge::attacker_auth;
use common::*;
use drydock::ids::{sha256, PackId};
use drydock::repo::auth::Authenticator;
use drydock::repo::blob::BlobType;
use drydock::repo::index::{self, IndexFile};
use drydock::repo::pack::PackEntry;

fn indexes(auth: &Authenticator, root: &Path) -> Vec<(PathBuf, IndexFile)> {
    walk(&root.join("index"))
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let parsed = index::parse(&fs::read(&p).unwrap(), auth).unwrap();
            (p, parsed)
        })
        .collect()
}

fn packs(root: &Path) -> Vec<PathBuf> {
    walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

/// Every listing of every index object, as `forge` rewrites it (`None` drops it).
fn forged_from_real(
    auth: &Authenticator,
    root: &Path,
    forge: impl Fn(PackId, Vec<PackEntry>) -> Option<(PackId, Vec<PackEntry>)>,
) -> IndexFile {
    indexes(auth, root)
        .into_iter()
        .flat_map(|(_, file)| file)
        .filter_map(|(pack, entries)| forge(pack, entries))
        .collect()
}

/// Write `file` as an index object tagged with the backup-only key, named as a real one
/// would be; its path.
fn plant_index(auth: &Authenticator, root: &Path, file: &IndexFile) -> PathBuf {
    let bytes = index::encode(file, auth);
    let path = root.join("index").join(hex::encode(sha256(&bytes)));
    fs::write(&path, bytes).unwrap();
    path
}

/// A deletion record dated 2000 naming every pack, so its safety delay has long passed.
fn plant_backdated_deletions(root: &Path) {
    let names: Vec<String> = packs(root)
        .iter()
        .map(|p| format!("\"{}\"", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    fs::create_dir_all(root.join("deletions")).unwrap();
    fs::write(
        root.join("deletions/20000101T000000.000Z-0badc0de"),
        format!(
            r#"{{"version":2,"created":"2000-01-01T00:00:00Z","packs":[{}]}}{}"#,
            names.join(","),
            "t".repeat(32)
        ),
    )
    .unwrap();
}

/// The planted record, which `check` names as not authentic, removed as an operator would.
fn remove_planted_deletions(root: &Path, check: &str) {
    let planted = root.join("deletions/20000101T000000.000Z-0badc0de");
    if planted.exists() {
        assert!(
            check.contains("0badc0de") && check.contains("not authentic"),
            "{check}"
        );
        fs::remove_file(planted).unwrap();
    }
}

struct Setup {
    auth: Authenticator,
    dir: tempfile::TempDir,
    repo: Repo,
    root: PathBuf,
    src: PathBuf,
    snapshot: String,
    real_packs: Vec<PathBuf>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("layer.bin"), noise(3 << 20, 11)).unwrap();
    fs::write(src.join("harbor.yml"), b"hostname: h\n").unwrap();
    let snapshot = repo.backup(&[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let real_packs = packs(&root);
    Setup {
        auth: attacker_auth(&repo),
        dir,
        repo,
        root,
        src,
        snapshot,
        real_packs,
    }
}

/// Every real pack is still there, the snapshot restores identical, `check` names the
/// forged index, and once it is gone (as after an operator read `check`) all is clean.
fn assert_nothing_lost(s: &Setup, forged: &Path) {
    for p in &s.real_packs {
        assert!(p.exists(), "prune deleted a real pack: {}", p.display());
    }
    // Readers fall back to the copy that authenticates, forged index or not.
    let first = s.dir.path().join("out-forged");
    s.repo
        .id(&[
            "restore",
            &s.snapshot,
            "--config-dir",
            first.to_str().unwrap(),
        ])
        .expect(0);
    assert_same_tree(&s.src, &restored(&first, &s.src));
    let check = s.repo.id(&["--json", "check", "--read-data"]);
    assert_eq!(
        check.code, 4,
        "check must name the forged index: {}",
        check.stdout
    );
    let forged_name = forged.file_name().unwrap().to_str().unwrap();
    assert!(check.stdout.contains(forged_name), "{}", check.stdout);
    fs::remove_file(forged).unwrap();
    remove_planted_deletions(&s.root, &check.stdout);
    s.repo.id(&["check", "--read-data"]).expect(0);
    let out = s.dir.path().join("out");
    s.repo
        .id(&[
            "restore",
            &s.snapshot,
            "--config-dir",
            out.to_str().unwrap(),
        ])
        .expect(0);
    assert_same_tree(&s.src, &restored(&out, &s.src));
}

#[test]
fn an_index_moving_every_blob_to_a_missing_pack_cannot_make_prune_delete_data() {
    let s = setup();
    // Every entry of every index, moved to pack 00…00, which does not exist.
    let forged = forged_from_real(&s.auth, &s.root, |_, entries| {
        Some((PackId([0; 32]), entries))
    });
    let forged = plant_index(&s.auth, &s.root, &forged);
    plant_backdated_deletions(&s.root);
    s.repo.deployed_forget_and_prune();
    assert_nothing_lost(&s, &forged);
}

#[test]
fn an_index_with_impossible_entries_does_not_hide_the_real_ones() {
    let s = setup();
    // The real entries with the wrong blob type and a 4 GiB plaintext: whichever index is
    // read first, readers and prune pass over them to the real copies.
    let forged = forged_from_real(&s.auth, &s.root, |pack, entries| {
        let lies = entries
            .into_iter()
            .map(|e| PackEntry {
                blob_type: match e.blob_type {
                    BlobType::Data => BlobType::Tree,
                    _ => BlobType::Data,
                },
                raw_length: u32::MAX,
                ..e
            })
            .collect();
        Some((pack, lies))
    });
    let forged = plant_index(&s.auth, &s.root, &forged);
    plant_backdated_deletions(&s.root);
    s.repo.deployed_forget_and_prune();
    assert_nothing_lost(&s, &forged);
}

#[test]
fn an_index_pointing_at_a_decoy_pack_cannot_make_prune_delete_data() {
    let s = setup();
    // A decoy: a real pack of another backup, which holds none of the first one's blobs.
    let other = s.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("x.bin"), noise(1 << 20, 99)).unwrap();
    // Another host, so that the deployed policy keeps both snapshots on its own.
    s.repo
        .bk(&[
            "backup",
            "--host",
            "other",
            "--config",
            other.to_str().unwrap(),
        ])
        .expect(0);
    let decoy = packs(&s.root)
        .into_iter()
        .find(|p| !s.real_packs.contains(p))
        .unwrap();
    let decoy = PackId::from_hex(decoy.file_name().unwrap().to_str().unwrap()).unwrap();
    let forged = forged_from_real(&s.auth, &s.root, |pack, entries| {
        (pack != decoy).then_some((decoy, entries))
    });
    let forged = plant_index(&s.auth, &s.root, &forged);
    plant_backdated_deletions(&s.root);
    s.repo.deployed_forget_and_prune();
    assert_nothing_lost(&s, &forged);
}

#[test]
fn replacing_the_real_index_with_a_forged_one_cannot_make_prune_delete_data() {
    let s = setup();
    let forged = forged_from_real(&s.auth, &s.root, |_, entries| {
        Some((PackId([0; 32]), entries))
    });
    for (path, _) in indexes(&s.auth, &s.root) {
        fs::remove_file(path).unwrap();
    }
    let forged = plant_index(&s.auth, &s.root, &forged);
    plant_backdated_deletions(&s.root);
    s.repo.deployed_forget_and_prune();
    for p in &s.real_packs {
        assert!(p.exists(), "prune deleted a real pack: {}", p.display());
    }
    // The real packs are unindexed now; the next backup adopts them again.
    fs::remove_file(&forged).unwrap();
    s.repo.backup(&[&s.src]);
    let check = s.repo.id(&["check", "--read-data"]);
    remove_planted_deletions(&s.root, &check.stdout);
    s.repo.id(&["check", "--read-data"]).expect(0);
    let out = s.dir.path().join("out");
    s.repo
        .id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&s.src, &restored(&out, &s.src));
}

#[test]
fn an_index_rewritten_by_prune_keeps_its_own_entries_not_a_forged_indexs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    let auth = attacker_auth(&repo);
    let (old, src) = (dir.path().join("old"), dir.path().join("src"));
    for (d, seed) in [(&old, 1), (&src, 2)] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("layer.bin"), noise(2 << 20, seed)).unwrap();
    }
    // The older snapshot is forgotten by id; its packs are deleted.
    let older = repo.backup(&[&old])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = repo.backup(&[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // One real index naming every pack, as a backup of many packs writes: prune must
    // rewrite it, carrying the kept packs' entries over.
    let mut all: IndexFile = Vec::new();
    for (path, file) in indexes(&auth, &root) {
        fs::remove_file(path).unwrap();
        all.extend(file);
    }
    plant_index(&auth, &root, &all);
    // A forged index giving each kept pack one bogus entry.
    let forged: IndexFile = all
        .iter()
        .map(|(pack, entries)| {
            let mut bogus = entries[0];
            bogus.id = drydock::ids::BlobId([0xee; 32]);
            bogus.length = 10;
            (*pack, vec![bogus])
        })
        .collect();
    let forged = plant_index(&auth, &root, &forged);
    repo.id(&["forget", &older, "--prune", "--safety-delay", "0s"])
        .expect(0);
    repo.id(&["prune", "--safety-delay", "0s"]).expect(0);
    let out = dir.path().join("out");
    repo.id(&["restore", &kept, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
    // The forged index named deleted packs too, so prune rewrote it, without its lies.
    assert!(!forged.exists());
    repo.id(&["check", "--read-data"]).expect(0);
}

#[test]
fn an_index_written_without_a_key_is_not_read() {
    let s = setup();
    // The attack of format v1: a plaintext index moving every blob to a missing pack, with
    // a tag made up by someone who has no key.
    let forged = forged_from_real(&s.auth, &s.root, |_, entries| {
        Some((PackId([0; 32]), entries))
    });
    let mut bytes = index::encode(&forged, &s.auth);
    let n = bytes.len();
    bytes[n - 32..].copy_from_slice(&[0x5a; 32]);
    let path = s.root.join("index").join(hex::encode(sha256(&bytes)));
    fs::write(&path, bytes).unwrap();
    plant_backdated_deletions(&s.root);
    s.repo.deployed_forget_and_prune();
    let check = s.repo.id(&["--json", "check"]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    assert!(check.stdout.contains("not authentic"), "{}", check.stdout);
    assert_nothing_lost(&s, &path);
}
