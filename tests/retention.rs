//! Retention that forged snapshots cannot game: a snapshot whose time the store contradicts
//! is never `latest`, never fills a `--keep-*` slot and is never forgotten by a policy; the
//! newest trusted snapshot of each host and part set survives every policy.

mod common;

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone, Utc};
use common::forge::{file_node, forge_snapshots, manifest, root};
use common::*;
use drydock::repo::snapshot::Parts;

fn snapshot_ids(repo: &Repo) -> BTreeSet<String> {
    repo.snapshot_ids().into_iter().collect()
}

#[test]
fn forged_future_and_backdated_snapshots_cannot_push_real_ones_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (etc, secret) = harbor_config_tree(&dir.path().join("src"), 300_000);
    // Two hosts, so both real snapshots are kept by the deployed policy on their own (two
    // backups of one host on one day are one daily slot).
    let real: Vec<String> = ["harbor-a", "harbor-b"]
        .iter()
        .map(|host| {
            let (etc, secret) = (etc.to_str().unwrap(), secret.to_str().unwrap());
            let r = repo.bk(&[
                "--json", "backup", "--host", host, "--config", etc, "--config", secret,
            ]);
            r.expect(0);
            r.json()["snapshot"].as_str().unwrap().to_string()
        })
        .collect();
    let host = repo.id(&["--json", "show", "latest"]).json()["host"]
        .as_str()
        .unwrap()
        .to_string();
    // 15 snapshots dated 2099 with no parts, as in the reported attack, and one dated 40
    // days back to take an old monthly slot; all with the real host name.
    let forged = forge_snapshots(&repo, move |_| {
        let mut snaps: Vec<_> = (0..15)
            .map(|i| {
                let t = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap() + Duration::days(i);
                manifest(t, &host, Parts::default())
            })
            .collect();
        snaps.push(manifest(
            Utc::now() - Duration::days(40),
            &host,
            Parts::default(),
        ));
        snaps
    });
    let listed = repo.id(&["snapshots"]);
    listed.expect(0);
    assert_eq!(
        listed.stdout.matches("time not trusted").count(),
        16,
        "{}",
        listed.stdout
    );

    // `latest` is the newest real snapshot, not a forged one.
    let latest = repo.id(&["--json", "show", "latest"]).json();
    assert_eq!(latest["id"].as_str().unwrap(), real[1], "{latest}");

    repo.deployed_forget_and_prune();
    let left = snapshot_ids(&repo);
    for id in &real {
        assert!(left.contains(id), "a real snapshot was forgotten: {left:?}");
    }
    // The forged ones are flagged by check (exit 4), each by name; untrusted, they are kept
    // for the operator to look at and forget by id.
    let check = repo.id(&["--json", "check", "--read-data"]);
    assert_eq!(check.code, 4, "{}", check.stderr);
    let problems = check.json()["report"]["problems"].to_string();
    for id in &forged {
        assert!(
            problems.contains(&id.to_hex()),
            "{id:?} not named: {problems}"
        );
    }
    for id in &real {
        assert!(
            !problems.contains(id.as_str()),
            "a real snapshot was flagged: {problems}"
        );
        let out = dir.path().join(format!("out-{}", &id[..8]));
        repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
            .expect(0);
        assert_same_tree(&etc, &restored(&out, &etc));
        assert_same_tree(&secret, &restored(&out, &secret));
    }
    // Named, they go; then the repository checks clean again.
    let mut args = vec!["forget".to_string()];
    args.extend(forged.iter().map(|id| id.to_hex()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    repo.id(&args).expect(0);
    assert_eq!(snapshot_ids(&repo), real.iter().cloned().collect());
    repo.id(&["check"]).expect(0);
}

#[test]
fn the_newest_snapshot_of_each_host_survives_every_policy_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (etc, _) = harbor_config_tree(&dir.path().join("src"), 1000);
    let backup = |host: &str| {
        let r = repo.bk(&[
            "--json",
            "backup",
            "--host",
            host,
            "--ttl",
            "1s",
            "--config",
            etc.to_str().unwrap(),
        ]);
        r.expect(0);
        r.json()["snapshot"].as_str().unwrap().to_string()
    };
    let _a_old = backup("a");
    let a_new = backup("a");
    let b_only = backup("b");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Every snapshot has expired and keep-last 1 keeps only one, but the newest of each
    // host stays.
    let r = repo.id(&["--json", "forget", "--expired", "--keep-last", "1"]);
    r.expect(0);
    assert_eq!(
        r.json()["forgotten"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    assert_eq!(
        r.json()["kept_anyway"].as_array().unwrap().len(),
        2,
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("\"kept_because\""), "{}", r.stdout);
    assert_eq!(
        snapshot_ids(&repo),
        BTreeSet::from([a_new.clone(), b_only.clone()])
    );
    // Named, it goes.
    repo.id(&["forget", &b_only[..10]]).expect(0);
    assert_eq!(snapshot_ids(&repo), BTreeSet::from([a_new]));
    repo.id(&["forget", "ffffffffffffffff"])
        .expect_error(2, "no snapshot");
}

#[test]
fn keep_within_keeps_everything_close_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (etc, _) = harbor_config_tree(&dir.path().join("src"), 1000);
    for _ in 0..3 {
        repo.backup(&[&etc]);
    }
    let r = repo.id(&["--json", "forget", "--keep-within", "1h"]);
    r.expect(0);
    assert_eq!(
        r.json()["forgotten"].as_array().unwrap().len(),
        0,
        "{}",
        r.stdout
    );
    assert_eq!(r.json()["remaining"], 3);
    let bad = repo.id(&["forget", "--keep-within", "soon"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("not a duration"), "{}", bad.stderr);
}

/// With the backup-only key a flood of snapshots is as authentic as the CronJob's: 60 of the
/// real host and part set, dated now. The deployed forget refuses to apply its policy while
/// the burst is there (exit 4, saying what to do), so no real snapshot is pushed out; the
/// prune that follows keeps everything they use.
#[test]
fn a_flood_of_snapshots_from_the_backup_only_key_pushes_no_real_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("harbor.yml"), b"hostname: h\n").unwrap();
    let real: Vec<String> = (0..2)
        .map(|_| {
            repo.backup(&[&src])["snapshot"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let host = repo.id(&["--json", "show", "latest"]).json()["host"]
        .as_str()
        .unwrap()
        .to_string();
    forge_snapshots(&repo, move |w| {
        (0..60)
            .map(|i| {
                let parts = Parts {
                    config: Some(drydock::harbor::config::ConfigPart {
                        roots: vec![root("/etc/x", file_node(w, "x", format!("{i}").as_bytes()))],
                    }),
                    ..Default::default()
                };
                manifest(Utc::now(), &host, parts)
            })
            .collect()
    });
    let forget = repo.deployed_forget();
    forget.expect_error(4, "--allow-burst");
    repo.id(&["prune", "--safety-delay", "0s"]).expect(0);
    let left = snapshot_ids(&repo);
    assert_eq!(left.len(), 62, "{left:?}");
    for id in &real {
        assert!(left.contains(id), "a real snapshot was forgotten: {left:?}");
        let out = dir.path().join(format!("out-{}", &id[..8]));
        repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
            .expect(0);
        assert_same_tree(&src, &restored(&out, &src));
    }
    // Named, the policy applies: the operator's decision, not the attacker's.
    repo.id(&["forget", "--keep-last", "1", "--allow-burst", "--dry-run"])
        .expect(0);
}

#[test]
fn a_snapshot_the_backup_only_key_writes_later_the_same_day_pushes_no_real_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("harbor.yml"), b"hostname: real\n").unwrap();
    let real = repo.backup(&[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = repo.id(&["--json", "show", &real]).json();
    let host = shown["host"].as_str().unwrap().to_string();
    let time: chrono::DateTime<Utc> = shown["time"].as_str().unwrap().parse().unwrap();
    // The attack of FORMAT.md §13 before version 2.1: the real host and part set, with a
    // decoy configuration, written after the real backup and dated after it (the newest of
    // its day) and before it (backdated into its slot).
    let forged = forge_snapshots(&repo, move |w| {
        [time + Duration::seconds(1), time - Duration::seconds(1)]
            .into_iter()
            .map(|t| {
                let parts = Parts {
                    config: Some(drydock::harbor::config::ConfigPart {
                        roots: vec![root("/etc/x", file_node(w, "x", b"decoy"))],
                    }),
                    ..Default::default()
                };
                manifest(t, &host, parts)
            })
            .collect()
    });
    repo.deployed_forget_and_prune();
    let left = snapshot_ids(&repo);
    assert!(
        left.contains(&real),
        "the real snapshot was forgotten: {left:?}"
    );
    let out = dir.path().join("out");
    repo.id(&["restore", &real, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
    // The newest forgery stays as the newest of its host and parts; the operator forgets
    // it by id.
    assert!(left.contains(&forged[0].to_hex()), "{left:?}");
}
