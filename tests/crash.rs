//! Kills at random instants and concurrent writers leave a valid repository.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Finished packs (temporary files of a write in progress do not count).
fn packs(root: &Path) -> usize {
    walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
}

/// A small deterministic generator, so a failing trial can be replayed from its seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn spawn_backup(repo: &Repo, src: &Path) -> std::process::Child {
    repo.spawn_bk(&[
        "backup",
        "--parallel",
        "2",
        "--config",
        src.to_str().unwrap(),
    ])
}

#[test]
fn sigkill_mid_backup_leaves_a_valid_repository_and_the_next_backup_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut seed: u64 = std::env::var("DRYDOCK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    println!("kill trials seed {seed} (set DRYDOCK_TEST_SEED to replay)");
    // Each trial adds new data, so every kill interrupts real work at a random instant.
    for trial in 0..8u64 {
        fs::write(
            src.join(format!("layer-{trial}.bin")),
            noise(24 << 20, 100 + trial),
        )
        .unwrap();
        let delay = Duration::from_millis(next(&mut seed) % (400 + 200 * trial));
        let mut child = spawn_backup(&repo, &src);
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        println!(
            "trial {trial}: kill after {delay:?}: {status}, {} packs",
            packs(&root)
        );
        let check = repo.id(&["check"]);
        assert_eq!(
            check.code, 0,
            "trial {trial}: check after kill\n{}\n{}",
            check.stdout, check.stderr
        );
    }
    repo.backup(&[&src]);

    // Kill right after the first pack of new data lands, before its index is written:
    // the next backup must find that pack and reuse it.
    fs::write(src.join("fresh.bin"), noise(40 << 20, 999)).unwrap();
    let before = packs(&root);
    let mut child = spawn_backup(&repo, &src);
    while packs(&root) == before && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(
        packs(&root) > before,
        "the interrupted backup uploaded a pack"
    );
    repo.id(&["check"]).expect(0);

    let resumed = repo.backup(&[&src]);
    let new = resumed["summary"]["new_bytes"].as_u64().unwrap();
    assert!(
        new < 30 << 20,
        "resume stored {new} new bytes of a 40 MiB file: the uploaded pack was not reused"
    );
    repo.id(&["check", "--read-data"]).expect(0);
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
}

fn concurrent_backups(repo: &Repo, dir: &Path) {
    let shared = noise(20 << 20, 5);
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (d, seed) in [(&a, 1), (&b, 2)] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("shared.bin"), &shared).unwrap();
        fs::write(d.join("own.bin"), noise(10 << 20, seed)).unwrap();
    }
    let ca = repo.spawn_bk(&["backup", "--config", a.to_str().unwrap()]);
    let cb = repo.spawn_bk(&["backup", "--config", b.to_str().unwrap()]);
    for c in [ca, cb] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = repo.id(&["--json", "snapshots"]);
    list.expect(0);
    let snaps = list.json()["snapshots"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2);
    repo.id(&["check", "--read-data"]).expect(0);
    for s in snaps {
        let id = s["short_id"].as_str().unwrap();
        let out = dir.join(format!("out-{id}"));
        repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
            .expect(0);
        let restored_a = restored(&out, &a);
        let which = if restored_a.exists() { &a } else { &b };
        assert_same_tree(which, &restored(&out, which));
    }
}

#[test]
fn two_concurrent_backups_are_both_restorable_locally() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    concurrent_backups(&repo, dir.path());
}

#[test]
fn two_concurrent_backups_are_both_restorable_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    let repo = s3_repo(dir.path(), "conc");
    concurrent_backups(&repo, dir.path());
}
