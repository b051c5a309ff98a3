//! Repacking (FORMAT.md §11): a pack mostly unused after a forget is rewritten, its used
//! blobs copied byte for byte into a new pack, and the old pack goes through the same two
//! phases and copy rule as an unused one; with the identity and with the maintenance key.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn files(dir: &Path, n: u64, size: usize) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let d = dir.join(format!("set{i}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("data"), noise(size, 900 + i)).unwrap();
            d
        })
        .collect()
}

fn prune(repo: &Repo, key: &Path) -> serde_json::Value {
    let r = repo.with_key(key, &["--json", "prune", "--safety-delay", "0s"]);
    r.expect(0);
    r.json()
}

fn pack_bytes(repo: &Repo) -> u64 {
    walk(&repo.local_root.as_ref().unwrap().join("packs"))
        .iter()
        .filter(|p| p.is_file())
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Four 3 MiB files in one pack; a second snapshot keeps one. After the first is forgotten,
/// prune repacks that pack, the next prune deletes the old one, and the kept snapshot
/// restores identical with a quarter of the space.
fn repacks_with(key_of: impl Fn(&Repo, &Path) -> std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let key = key_of(&repo, dir.path());
    let sets = files(&dir.path().join("src"), 4, 3 << 20);
    let all: Vec<&Path> = sets.iter().map(|p| p.as_path()).collect();
    let first = repo.backup(&all)["snapshot"].as_str().unwrap().to_string();
    let kept = repo.backup(&all[..1])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let before = pack_bytes(&repo);
    repo.with_key(&key, &["forget", &first]).expect(0);
    let p = prune(&repo, &key);
    assert!(p["packs_repacked"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["packs_written"].as_u64().unwrap() >= 1, "{p}");
    let p = prune(&repo, &key);
    assert!(p["deleted_packs"].as_u64().unwrap() >= 1, "{p}");
    let after = pack_bytes(&repo);
    assert!(after * 2 < before, "{after} of {before} bytes left");
    repo.id(&["check", "--read-data"]).expect(0);
    let out = dir.path().join("out");
    repo.id(&["restore", &kept, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&sets[0], &restored(&out, &sets[0]));
}

#[test]
fn a_mostly_unused_pack_is_repacked_with_the_identity() {
    repacks_with(|repo, _| repo.identity.clone());
}

#[test]
fn a_mostly_unused_pack_is_repacked_with_the_maintenance_key() {
    repacks_with(|repo, dir| {
        let mk = dir.join("maintenance.key");
        repo.id(&["key", "maintenance", "--out", mk.to_str().unwrap()])
            .expect(0);
        mk
    });
}

#[test]
fn repacking_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let sets = files(&dir.path().join("src"), 4, 3 << 20);
    let all: Vec<&Path> = sets.iter().map(|p| p.as_path()).collect();
    let first = repo.backup(&all)["snapshot"].as_str().unwrap().to_string();
    repo.backup(&all[..1]);
    repo.id(&["forget", &first]).expect(0);
    let r = repo.id(&[
        "--json",
        "prune",
        "--safety-delay",
        "0s",
        "--repack-threshold",
        "100",
    ]);
    r.expect(0);
    assert_eq!(r.json()["packs_repacked"], 0);
    repo.id(&["prune", "--repack-threshold", "0"]).expect(2);
}

/// With the backup-only key, an index object (sorted first) lists the pack to be repacked
/// with every entry's offset moved to 0. Repacking copies from the pack's own header, not
/// the index, so the maintenance key's prune keeps every real blob.
#[test]
fn a_forged_index_cannot_make_repacking_copy_garbage() {
    use drydock::ids::{sha256, PackId};
    use drydock::repo::index;
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let mk = dir.path().join("maintenance.key");
    repo.id(&["key", "maintenance", "--out", mk.to_str().unwrap()])
        .expect(0);
    let sets = files(&dir.path().join("src"), 4, 3 << 20);
    let all: Vec<&Path> = sets.iter().map(|p| p.as_path()).collect();
    let first = repo.backup(&all)["snapshot"].as_str().unwrap().to_string();
    let kept = repo.backup(&all[..1])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let root = repo.local_root.clone().unwrap();
    let auth = common::forge::attacker_auth(&repo);
    let real: Vec<(String, index::IndexFile)> = walk(&root.join("index"))
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, index::parse(&fs::read(&p).unwrap(), &auth).unwrap())
        })
        .collect();
    let first_name = real.iter().map(|(n, _)| n.clone()).min().unwrap();
    let mut shifted: index::IndexFile = real
        .iter()
        .flat_map(|(_, f)| f.clone())
        .map(|(pack, entries)| {
            let moved = entries
                .into_iter()
                .map(|mut e| {
                    e.offset = 0;
                    e
                })
                .collect();
            (pack, moved)
        })
        .collect();
    // Ground so that its name sorts before every real index object, so it is read first.
    shifted.push((PackId([0; 32]), Vec::new()));
    let bytes = (0u32..)
        .map(|i| {
            let last = shifted.len() - 1;
            shifted[last].0 .0[..4].copy_from_slice(&i.to_le_bytes());
            index::encode(&shifted, &auth)
        })
        .find(|b| hex::encode(sha256(b)) < first_name)
        .unwrap();
    fs::write(root.join("index").join(hex::encode(sha256(&bytes))), bytes).unwrap();

    repo.with_key(&mk, &["forget", &first]).expect(0);
    for _ in 0..3 {
        prune(&repo, &mk);
    }
    let out = dir.path().join("out");
    repo.id(&["restore", &kept, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&sets[0], &restored(&out, &sets[0]));
}
