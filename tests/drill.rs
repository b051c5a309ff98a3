//! Drills over a snapshot of all three parts; metrics; bounded time.

mod common;

use std::fs;

use common::pg::PASSWORD;
use common::registry::{push_images, Registry};
use common::*;

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

#[test]
fn a_drill_restores_and_verifies_every_part_then_fails_on_a_corrupt_pack() {
    let pg = common::pg::shared();
    pg.harbor_copy("drill_src");
    // The fixture's blob table names digests this registry does not hold; empty it so the
    // backup is whole.
    pg.sql(
        "drill_src",
        "TRUNCATE artifact_blob, project_blob, tag, artifact, blob CASCADE",
    );
    pg.createdb("drill_scratch");
    pg.createdb("drill_scratch2");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let storage = dir.path().join("storage");
    fs::create_dir_all(&storage).unwrap();
    let live = Registry::filesystem(&storage);
    push_images(&live);
    let (etc, _) = harbor_config_tree(&dir.path().join("src"), 1000);
    let metrics = dir.path().join("drydock.prom");
    let b = repo.with_key_env(
        &repo.backup_key,
        &[
            "--json",
            "--metrics-textfile",
            metrics.to_str().unwrap(),
            "backup",
            "--postgres",
            &pg.url("drill_src"),
            "--registry-fs",
            storage.to_str().unwrap(),
            "--config",
            etc.to_str().unwrap(),
        ],
        ENV,
    );
    b.expect(0);
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("drydock_backup_bytes{kind=\"stored\"}"),
        "{prom}"
    );
    assert!(
        prom.contains("drydock_last_exit_code{command=\"backup\"}"),
        "{prom}"
    );

    let scratch = |name: &str| dir.path().join(name);
    let d = repo.with_key_env(
        &repo.identity,
        &[
            "--json",
            "--metrics-textfile",
            metrics.to_str().unwrap(),
            "drill",
            "--postgres",
            &pg.url("drill_scratch"),
            "--registry-fs",
            scratch("reg").to_str().unwrap(),
            "--config-dir",
            scratch("cfg").to_str().unwrap(),
        ],
        ENV,
    );
    d.expect(0);
    let j = d.json();
    assert_eq!(j["passed"], true, "{j}");
    assert_eq!(j["parts"].as_array().unwrap().len(), 3, "{j}");
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("drydock_drill_success 1"), "{prom}");
    assert!(
        prom.contains("drydock_drill_recovery_seconds{part=\"total\"}"),
        "{prom}"
    );
    // The backup's last success is still there after the drill wrote the file.
    assert!(
        prom.contains("drydock_last_success_timestamp_seconds{command=\"backup\"}"),
        "{prom}"
    );

    // A scratch target is required for every part.
    repo.with_key_env(
        &repo.identity,
        &["drill", "--postgres", &pg.url("drill_scratch2")],
        ENV,
    )
    .expect_error(2, "--registry-fs");

    // Corrupt the biggest pack: the drill fails with exit 4.
    let root = repo.local_root.clone().unwrap();
    let pack = walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
    let d = repo.with_key_env(
        &repo.identity,
        &[
            "drill",
            "--postgres",
            &pg.url("drill_scratch2"),
            "--registry-fs",
            scratch("reg2").to_str().unwrap(),
            "--config-dir",
            scratch("cfg2").to_str().unwrap(),
        ],
        ENV,
    );
    d.expect(4);
    assert_eq!(d.error_lines().len(), 1, "{}", d.stderr);
}

#[test]
fn metrics_keep_the_last_success_through_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("harbor.yml"), "x").unwrap();
    let metrics = dir.path().join("m.prom");
    let m = metrics.to_str().unwrap();
    repo.bk(&[
        "--metrics-textfile",
        m,
        "backup",
        "--config",
        src.to_str().unwrap(),
    ])
    .expect(0);
    let first = fs::read_to_string(&metrics).unwrap();
    let success_line = first
        .lines()
        .find(|l| l.starts_with("drydock_last_success_timestamp_seconds{command=\"backup\"}"))
        .unwrap()
        .to_string();
    repo.bk(&[
        "--metrics-textfile",
        m,
        "backup",
        "--config",
        dir.path().join("gone").to_str().unwrap(),
    ])
    .expect(2);
    let second = fs::read_to_string(&metrics).unwrap();
    assert!(second.contains(&success_line), "{second}");
    assert!(
        second.contains("drydock_last_exit_code{command=\"backup\"} 2"),
        "{second}"
    );
    assert!(second.contains("# HELP drydock_last_exit_code"), "{second}");
}

#[test]
fn timeout_bounds_a_hung_command() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let url = format!("postgresql://postgres@127.0.0.1:{port}/x?sslmode=disable");
    repo.bk(&["--timeout", "2s", "backup", "--postgres", &url])
        .expect_error(1, "--timeout");
}
