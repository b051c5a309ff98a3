//! The secretKey check: `<enc-v1>` values seeded into a Harbor-shaped database with key K,
//! encrypted as Harbor's ReversibleEncrypt does (AES-128-CFB, random IV, base64 of IV and
//! ciphertext). A snapshot with K opens them all; one with another key opens none and says
//! which columns; no plaintext ever shows.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use aes::Aes128;
use base64::Engine;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use common::pg::PASSWORD;
use common::*;

/// Trace logging too: the plaintext must not show even there.
const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD), ("DRYDOCK_LOG", "drydock=trace")];

const K: &[u8; 16] = b"drydock-enc-K-16";
const WRONG: &[u8; 16] = b"another-key-16ch";

/// Every seeded secret: what must never appear in any output.
const PLAINTEXTS: &[&str] = &[
    "registry-password-PT1-c0ffee",
    "oidc-cli-secret-PT2-c0ffee",
    r#"{"access_token":"PT3-c0ffee","token_type":"Bearer","expiry":"2026-12-01T00:00:00Z"}"#,
    "ldap-search-PT4-c0ffee",
    r#"{"token":"PT5-c0ffee"}"#,
    "stray-secret-PT6-c0ffee",
];

/// Harbor's ReversibleEncrypt, with the IV from a counter (Harbor's is random).
fn harbor_encrypt(key: &[u8; 16], iv_seed: u8, plain: &str) -> String {
    let iv = [iv_seed; 16];
    let mut buf = plain.as_bytes().to_vec();
    cfb_mode::Encryptor::<Aes128>::new(key.into(), (&iv).into()).encrypt(&mut buf);
    let mut raw = iv.to_vec();
    raw.extend(buf);
    format!(
        "<enc-v1>{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A Harbor 2.15-shaped database (schema 180) holding the seeded values.
fn seed(pg: &common::pg::Postgres, db: &str) {
    pg.harbor_copy(db);
    let e = |i: usize| harbor_encrypt(K, i as u8 + 1, PLAINTEXTS[i]);
    pg.sql(
        db,
        &format!(
            "UPDATE schema_migrations SET version = 180;
             UPDATE registry SET access_secret = '{}' WHERE name = 'quay';
             CREATE TABLE oidc_user (id serial PRIMARY KEY, user_id int NOT NULL, secret varchar(255) NOT NULL,
                                     subiss varchar(255) NOT NULL, token text);
             INSERT INTO oidc_user (user_id, secret, subiss, token) VALUES (1, '{}', 'sub-iss', '{}');
             UPDATE properties SET v = '{}' WHERE k = 'ldap_search_password';
             CREATE TABLE p2p_preheat_instance (id serial PRIMARY KEY, name varchar(255) NOT NULL, auth_data text);
             INSERT INTO p2p_preheat_instance (name, auth_data) VALUES ('dragonfly', '{}');
             UPDATE registry SET description = '{}' WHERE name = 'quay';",
            e(0),
            e(1),
            e(2),
            e(3),
            e(4),
            e(5)
        ),
    );
}

/// `DIR/core/key` holding `key`, as the core container mounts it.
fn key_dir(root: &Path, key: &[u8]) -> PathBuf {
    let dir = root.join("core");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("key"), key).unwrap();
    dir
}

fn assert_no_plaintext(what: &str, run: &Run) {
    for p in PLAINTEXTS {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(p),
                "{what} printed a seeded plaintext on {stream}: {text}"
            );
        }
    }
}

/// `table.column` -> (known, opened, did not) from a --json key report.
fn counts(report: &serde_json::Value) -> Vec<(String, bool, u64, u64)> {
    report["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no columns in {report}"))
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap().to_string(),
                c["known"].as_bool().unwrap(),
                c["opened"].as_u64().unwrap(),
                c["failed"].as_u64().unwrap() + c["malformed"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn expected(opened: bool) -> Vec<(String, bool, u64, u64)> {
    let (o, f) = if opened { (1, 0) } else { (0, 1) };
    let mut v: Vec<(String, bool, u64, u64)> = [
        ("oidc_user.secret", true),
        ("oidc_user.token", true),
        ("p2p_preheat_instance.auth_data", true),
        ("properties.v", true),
        ("registry.description", false),
    ]
    .iter()
    .map(|(c, known)| (c.to_string(), *known, o, f))
    .collect();
    // The fixture's dockerhub row holds an empty secret (an IV only): it opens with any
    // key and proves nothing, so it counts as neither.
    v.push(("registry.access_secret".into(), true, o, f));
    v.sort();
    v
}

#[test]
fn the_snapshots_secret_key_must_open_its_database() {
    let pg = common::pg::shared();
    seed(pg, "enc_src");
    pg.createdb("enc_scratch_ok");
    pg.createdb("enc_scratch_bad");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let right = key_dir(&dir.path().join("right"), K);
    let wrong = key_dir(&dir.path().join("wrong"), WRONG);
    let src = pg.url("enc_src");
    let backup = |key_dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "--json",
            "backup",
            "--postgres",
            &src,
            "--config",
            key_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let run = repo.with_key_env(&repo.backup_key, &args, ENV);
        assert_no_plaintext("backup", &run);
        run
    };
    // `--postgres` checks the database read; `--secret-key` alone the stored part.
    let verify = |id: &str, json: bool| {
        let mut args = vec!["verify", id, "--postgres", &src];
        if json {
            args = vec!["--json", "verify", id, "--secret-key"];
        }
        let run = repo.with_key_env(&repo.identity, &args, ENV);
        assert_no_plaintext("verify", &run);
        run
    };
    let drill = |id: &str, scratch: &str| {
        let cfg = dir.path().join(format!("cfg-{scratch}"));
        let run = repo.with_key_env(
            &repo.identity,
            &[
                "--json",
                "drill",
                id,
                "--postgres",
                &pg.url(scratch),
                "--config-dir",
                cfg.to_str().unwrap(),
            ],
            ENV,
        );
        assert_no_plaintext("drill", &run);
        run
    };

    // The right key: backup, verify and drill open every value and say so per column.
    let b = backup(&right, &["--strict"]);
    b.expect(0);
    let j = b.json();
    let good_id = j["snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        counts(&j["secret_key_check"][0]["report"]),
        expected(true),
        "{j}"
    );
    let v = verify(&good_id, false);
    v.expect(0);
    assert!(
        v.stdout
            .contains("registry.access_secret: 1 opened, 0 did not, 1 empty"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains(
            "registry.description: 1 opened, 0 did not (not a column Harbor is known to encrypt)"
        ),
        "{}",
        v.stdout
    );
    let stored = |id: &str, opened: bool| {
        let v = verify(id, true);
        v.expect(if opened { 0 } else { 1 });
        assert_eq!(
            counts(&v.json()["parts"]["secret_key"][0]["report"]),
            expected(opened)
        );
    };
    stored(&good_id, true);
    let d = drill(&good_id, "enc_scratch_ok");
    d.expect(0);
    assert_eq!(counts(&d.json()["parts"][0]["secret_key"]), expected(true));

    // Another 16-character key: the backup warns (exit 0), and with --strict is partial.
    let b = backup(&wrong, &[]);
    b.expect(0);
    assert!(
        b.stderr
            .contains("does not decrypt 1 of 1 values in oidc_user.token"),
        "{}",
        b.stderr
    );
    let bad_id = b.json()["snapshot"].as_str().unwrap().to_string();
    let strict = backup(&wrong, &["--strict"]);
    strict.expect(3);
    let warnings = strict.json()["warnings"].to_string();
    assert!(
        warnings.contains("does not decrypt 1 of 2 values in registry.access_secret"),
        "{warnings}"
    );

    // verify and drill of that snapshot: exit 1, naming every column.
    let v = verify(&bad_id, false);
    v.expect(1);
    for (column, _, _, _) in expected(false) {
        let line = v
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" values in {column}")))
            .unwrap_or_else(|| panic!("no line names {column}: {}", v.stdout));
        assert!(line.contains("does not decrypt 1 of"), "{line}");
    }
    assert!(
        v.stdout.contains("the secretKey in this snapshot (/"),
        "{}",
        v.stdout
    );
    stored(&bad_id, false);
    let d = drill(&bad_id, "enc_scratch_bad");
    d.expect(1);
    let j = d.json();
    assert_eq!(j["passed"], false);
    assert_eq!(counts(&j["parts"][0]["secret_key"]), expected(false));
    let diffs = j["parts"][0]["differences"].to_string();
    assert!(
        diffs.contains("values in p2p_preheat_instance.auth_data"),
        "{diffs}"
    );

    // Nothing of the plaintext in the repository either (it is encrypted, and so are the
    // values): a last check over every file the runs left.
    for (path, bytes) in repo_files(dir.path()) {
        for p in PLAINTEXTS {
            assert!(
                !contains(&bytes, p.as_bytes()),
                "{} holds a seeded plaintext",
                path.display()
            );
        }
    }
}
