//! Kills at random instants and concurrent writers leave a valid repository.
//!
//! Each kill series draws its SIGKILL instants from a seeded generator, within the measured
//! duration of the same operation run to completion, so kills land inside the work. The
//! seed is printed; `DRYDOCK_TEST_SEED=<seed>` replays a series. After every kill, `check`
//! passes and the next operation of the same kind succeeds; each series ends with
//! `check --read-data` and a restore compared byte for byte.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use common::*;

/// Kill trials per series, locally and in S3.
const TRIALS: u64 = 20;
const S3_TRIALS: u64 = 5;

/// Finished packs (temporary files of a write in progress do not count).
fn packs(root: &Path) -> usize {
    walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
}

/// Packs of a local repository, or "-" in S3 (only printed).
fn pack_count(repo: &Repo) -> String {
    match &repo.local_root {
        Some(root) => packs(root).to_string(),
        None => "-".into(),
    }
}

/// A small deterministic generator, so a failing trial can be replayed from its seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The series' seed: DRYDOCK_TEST_SEED, or the series' default. Printed, to replay it.
fn series_seed(series: &str, default: u64) -> u64 {
    let seed = std::env::var("DRYDOCK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("{series}: kill trials seed {seed} (set DRYDOCK_TEST_SEED={seed} to replay)");
    seed.max(1)
}

/// A kill instant in [1 ms, `span`).
fn kill_delay(seed: &mut u64, span: Duration) -> Duration {
    let us = span.as_micros().max(2000) as u64;
    Duration::from_micros(1000 + next(seed) % (us - 1000))
}

/// 1 MiB packs and 64 KiB chunks instead of 16 MiB and 1 MiB (FORMAT.md §4 allows both):
/// a few MiB of data then make many blobs, packs and index objects to be killed among.
fn small_packs(repo: &Repo) {
    reseal_config(repo, |c| {
        c["pack_size"] = (1u64 << 20).into();
        c["chunker"]["min_size"] = (16u64 << 10).into();
        c["chunker"]["avg_size"] = (64u64 << 10).into();
        c["chunker"]["max_size"] = (256u64 << 10).into();
    });
}

/// SIGKILL `child` after `delay` unless it exits first. True when the kill landed.
fn kill_after(mut child: Child, delay: Duration) -> (bool, ExitStatus) {
    let started = Instant::now();
    while started.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            return (false, status);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    // A process that exited on its own right before the kill reports its exit code.
    (status.code().is_none(), status)
}

/// How long `args` takes run to completion (it must succeed).
#[track_caller]
fn timed(repo: &Repo, key: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    repo.with_key(key, args).expect(0);
    started.elapsed()
}

#[track_caller]
fn check(repo: &Repo, what: &str, read_data: bool) {
    let args: &[&str] = if read_data {
        &["check", "--read-data"]
    } else {
        &["check"]
    };
    let r = repo.id(args);
    assert_eq!(r.code, 0, "{what}: check\n{}\n{}", r.stdout, r.stderr);
}

/// Snapshot ids, oldest first.
fn snapshot_ids(repo: &Repo) -> Vec<String> {
    let r = repo.id(&["--json", "snapshots"]);
    r.expect(0);
    let mut snaps: Vec<(String, String)> = r.json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["time"].as_str().unwrap().to_string(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    snaps.sort();
    snaps.into_iter().map(|(_, id)| id).collect()
}

/// At least a quarter of the kills (and at least one) must land before the operation
/// finished, or the delays are not exercising what they should (the machine got much
/// faster than measured).
#[track_caller]
fn assert_kills_landed(series: &str, landed: u64, trials: u64) {
    println!("{series}: {landed} of {trials} kills landed before the operation finished");
    assert!(
        landed >= (trials / 4).max(1),
        "{series}: only {landed} of {trials} kills landed inside the operation"
    );
}

// ---------------------------------------------------------------- backup

/// `trials` backups, each of new data, killed at random instants; after each, `check`
/// passes and a backup runs to completion. Ends with `check --read-data` and restores.
///
/// The source is a small fixed file and one layer replaced by new data every trial (drydock
/// reads every source file at every backup, so a growing source would make each backup
/// longer than the span the kills are drawn from).
fn backup_kills(repo: &Repo, dir: &Path, series: &str, trials: u64, seed: u64) {
    let mut seed = series_seed(series, seed);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let layer = 6 << 20;
    fs::write(src.join("base.bin"), noise(256 << 10, 98)).unwrap();
    fs::write(src.join("layer.bin"), noise(layer, 99)).unwrap();
    let config = src.to_str().unwrap().to_string();
    let backup = ["--json", "backup", "--parallel", "2", "--config", &config];
    let mut span = timed(repo, &repo.backup_key, &backup);
    println!("{series}: an uninterrupted backup of {layer} new bytes takes {span:?}");
    // Each snapshot and the noise seed of the layer it holds (a kill that lands after the
    // snapshot is written leaves one more snapshot).
    let mut layers: Vec<(String, u64)> =
        snapshot_ids(repo).into_iter().map(|id| (id, 99)).collect();
    let mut landed = 0;
    for trial in 0..trials {
        fs::write(src.join("layer.bin"), noise(layer, 100 + trial)).unwrap();
        let delay = kill_delay(&mut seed, span);
        let (killed, status) = kill_after(repo.spawn_bk(&backup), delay);
        landed += killed as u64;
        let after_kill = pack_count(repo);
        check(
            repo,
            &format!("{series} trial {trial}, after the kill"),
            false,
        );
        let started = Instant::now();
        let again = repo.bk(&backup);
        again.expect(0);
        span = (span + started.elapsed()) / 2;
        println!(
            "{series} trial {trial}: kill after {delay:?}: {status}, {after_kill} packs; the next backup stored {} of {layer} new bytes",
            again.json()["summary"]["new_bytes"]
        );
        for id in snapshot_ids(repo) {
            if !layers.iter().any(|(known, _)| *known == id) {
                layers.push((id, 100 + trial));
            }
        }
    }
    assert_kills_landed(series, landed, trials);
    check(repo, &format!("{series}: at the end"), true);

    // Snapshots hold the layer of their time: a random one and the latest.
    assert!(
        layers.len() as u64 > trials,
        "one snapshot per finished backup"
    );
    let pick = (next(&mut seed) % layers.len() as u64) as usize;
    for (id, layer_seed) in [&layers[pick], layers.last().unwrap()] {
        let out = dir.join(format!("out-{id}"));
        repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
            .expect(0);
        let got = restored(&out, &src);
        assert!(
            fs::read(got.join("layer.bin")).unwrap() == noise(layer, *layer_seed),
            "snapshot {id}: layer.bin is not layer {layer_seed}"
        );
        assert!(
            fs::read(got.join("base.bin")).unwrap() == fs::read(src.join("base.bin")).unwrap(),
            "snapshot {id}: base.bin"
        );
        fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn sigkill_mid_backup_leaves_a_valid_repository_and_the_next_backup_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    small_packs(&repo);
    let root = repo.local_root.clone().unwrap();
    backup_kills(&repo, dir.path(), "backup", TRIALS, 0x5eed_0001);
    let src = dir.path().join("src");

    // Kill right after a few packs of new data land, before their index is written:
    // the next backup must find those packs and reuse them.
    let fresh = 12 << 20;
    fs::write(src.join("fresh.bin"), noise(fresh, 999)).unwrap();
    let before = packs(&root);
    let mut child = repo.spawn_bk(&["backup", "--config", src.to_str().unwrap()]);
    while packs(&root) < before + 3 && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let landed = packs(&root) - before;
    assert!(
        landed >= 3,
        "the interrupted backup uploaded {landed} packs"
    );
    check(&repo, "after the kill among the first packs", false);

    let resumed = repo.backup(&[&src]);
    let new = resumed["summary"]["new_bytes"].as_u64().unwrap();
    assert!(
        new <= (fresh as u64) - (2 << 20),
        "resume stored {new} new bytes of a {fresh}-byte file after {landed} 1 MiB packs had landed: they were not reused"
    );
    check(&repo, "after the resumed backup", true);
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
}

// ---------------------------------------------------------------- prune

/// The number of deletion records.
fn records(repo: &Repo) -> String {
    match &repo.local_root {
        Some(root) => walk(&root.join("deletions")).len().to_string(),
        None => "-".into(),
    }
}

/// One round of new data: the file is replaced, backed up, and the previous snapshot
/// forgotten, so its packs become unused.
fn new_round(repo: &Repo, src: &Path, n: u64) {
    fs::write(src.join("data.bin"), noise(6 << 20, 1000 + n)).unwrap();
    repo.backup(&[src]);
    repo.id(&["forget", "--keep-last", "1"]).expect(0);
}

/// `trials` prunes killed at random instants. Each trial forgets a snapshot first, so
/// every prune has both phases of work: packs marked by the previous prune are due (the
/// safety delay is 0) and get deleted, the newly unused ones get marked.
fn prune_kills(repo: &Repo, dir: &Path, series: &str, trials: u64, seed: u64) {
    let mut seed = series_seed(series, seed);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let prune = ["--json", "prune", "--safety-delay", "0s"];
    // Warm up to the steady state (a mark pending), then measure a prune that deletes
    // and marks.
    new_round(repo, &src, 0);
    new_round(repo, &src, 1);
    repo.id(&prune).expect(0);
    new_round(repo, &src, 2);
    let mut span = timed(repo, &repo.identity, &prune);
    println!("{series}: an uninterrupted prune (delete and mark) takes {span:?}");
    let (mut landed, mut deleted) = (0, 0);
    for trial in 0..trials {
        new_round(repo, &src, 3 + trial);
        let before = (pack_count(repo), records(repo));
        let delay = kill_delay(&mut seed, span);
        let (killed, status) = kill_after(repo.spawn_with(&repo.identity, &prune), delay);
        landed += killed as u64;
        let after = (pack_count(repo), records(repo));
        check(
            repo,
            &format!("{series} trial {trial}, after the kill"),
            false,
        );
        let started = Instant::now();
        let again = repo.id(&prune);
        again.expect(0);
        span = (span + started.elapsed()) / 2;
        let report = again.json();
        deleted += report["deleted_packs"].as_u64().unwrap();
        println!(
            "{series} trial {trial}: kill after {delay:?}: {status}; packs/records {before:?} -> {after:?}; the next prune deleted {} packs, marked {}",
            report["deleted_packs"], report["marked"]
        );
        check(
            repo,
            &format!("{series} trial {trial}, after the next prune"),
            false,
        );
    }
    assert_kills_landed(series, landed, trials);
    assert!(deleted > 0, "{series}: no prune ever deleted a pack");
    // Two more prunes delete everything left over: the repository shrinks back to the
    // packs of the one remaining snapshot.
    repo.id(&prune).expect(0);
    let last = repo.id(&prune);
    last.expect(0);
    assert_eq!(last.json()["packs_unused"], 0, "{}", last.stdout);
    check(repo, &format!("{series}: at the end"), true);
    assert_eq!(snapshot_ids(repo).len(), 1);
    let out = dir.join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
}

#[test]
fn sigkill_mid_prune_leaves_a_valid_repository_and_the_next_prune_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    small_packs(&repo);
    prune_kills(&repo, dir.path(), "prune", TRIALS, 0x5eed_0002);
}

// ---------------------------------------------------------------- restore

/// A configuration tree (Kubernetes Secret symlinks, odd modes, unicode) and a dozen
/// layer-sized files, so a restore has many files to be killed among.
fn restore_source(dir: &Path) -> Vec<PathBuf> {
    let src = dir.join("src");
    let (etc, secret) = harbor_config_tree(&src, 1 << 20);
    let layers = src.join("layers");
    fs::create_dir_all(&layers).unwrap();
    for i in 0..12u64 {
        fs::write(layers.join(format!("layer-{i}")), noise(700 << 10, 500 + i)).unwrap();
    }
    vec![etc, secret, layers]
}

/// Restore into `target` again; a target the killed restore already wrote into needs
/// --force (exit 2 without it, as documented). Returns how long the completing run took.
fn restore_again(repo: &Repo, target: &Path) -> Duration {
    let t = target.to_str().unwrap();
    let started = Instant::now();
    let r = repo.id(&["restore", "latest", "--config-dir", t]);
    if r.code != 2 {
        r.expect(0);
        return started.elapsed();
    }
    assert!(
        r.stderr.contains("not empty") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    timed(
        repo,
        &repo.identity,
        &["restore", "latest", "--config-dir", t, "--force"],
    )
}

/// `trials` restores killed at random instants; restoring again into the same target
/// completes and gives the source tree exactly (no partial or temporary files left).
fn restore_kills(repo: &Repo, dir: &Path, series: &str, trials: u64, seed: u64) {
    let mut seed = series_seed(series, seed);
    let roots = restore_source(dir);
    let mut args = vec!["backup"];
    for r in &roots {
        args.extend(["--config", r.to_str().unwrap()]);
    }
    repo.bk(&args).expect(0);
    let measure = dir.join("measure");
    let mut span = timed(
        repo,
        &repo.identity,
        &[
            "restore",
            "latest",
            "--config-dir",
            measure.to_str().unwrap(),
        ],
    );
    fs::remove_dir_all(&measure).unwrap();
    println!("{series}: an uninterrupted restore takes {span:?}");
    let mut landed = 0;
    for trial in 0..trials {
        let target = dir.join(format!("target-{trial}"));
        let t = target.to_str().unwrap();
        let delay = kill_delay(&mut seed, span);
        let child = repo.spawn_with(
            &repo.identity,
            &["restore", "latest", "--config-dir", t, "--parallel", "2"],
        );
        let (killed, status) = kill_after(child, delay);
        landed += killed as u64;
        let left = walk(&target).len();
        span = (span + restore_again(repo, &target)) / 2;
        for r in &roots {
            assert_same_tree(r, &restored(&target, r));
        }
        println!(
            "{series} trial {trial}: kill after {delay:?}: {status}, {left} entries in the target; restored again"
        );
        fs::remove_dir_all(&target).unwrap();
    }
    assert_kills_landed(series, landed, trials);
    check(repo, &format!("{series}: at the end"), true);
}

#[test]
fn sigkill_mid_restore_then_restoring_again_gives_the_exact_tree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    small_packs(&repo);
    restore_kills(&repo, dir.path(), "restore", TRIALS, 0x5eed_0003);
}

#[test]
fn sigkill_mid_backup_prune_and_restore_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    for (series, seed) in [
        ("s3 backup", 0x5eed_0011),
        ("s3 prune", 0x5eed_0012),
        ("s3 restore", 0x5eed_0013),
    ] {
        let sub = dir.path().join(series.replace(' ', "-"));
        fs::create_dir_all(&sub).unwrap();
        let repo = s3_repo(&sub, "kills");
        small_packs(&repo);
        match series {
            "s3 backup" => backup_kills(&repo, &sub, series, S3_TRIALS, seed),
            "s3 prune" => prune_kills(&repo, &sub, series, S3_TRIALS, seed),
            _ => restore_kills(&repo, &sub, series, S3_TRIALS, seed),
        }
        fs::remove_dir_all(&sub).unwrap();
    }
}

// ---------------------------------------------------------------- concurrent writers

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
        wait(c).expect(0);
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
