//! The database part against a real PostgreSQL server.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::pg::{self, Postgres, PASSWORD};
use common::*;

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

fn backup(repo: &Repo, url: &str, extra: &[&str]) -> Run {
    repo.with_key_env(
        &repo.backup_key,
        &[&["--json", "backup", "--postgres", url], extra].concat(),
        ENV,
    )
}

fn restore(repo: &Repo, url: &str, mode: &str) -> Run {
    repo.with_key_env(
        &repo.identity,
        &["restore", "latest", "--postgres", url, "--mode", mode],
        ENV,
    )
}

fn verify(repo: &Repo, url: &str) -> Run {
    repo.with_key_env(
        &repo.identity,
        &["--json", "verify", "latest", "--postgres", url],
        ENV,
    )
}

#[test]
fn empty_mode_round_trip_gives_an_identical_database() {
    let pg = pg::shared();
    pg.harbor_copy("rt_src");
    pg.createdb("rt_dst");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let b = backup(&repo, &pg.url("rt_src"), &[]);
    b.expect(0);
    let db = &b.json()["parts"]["db"];
    assert_eq!(db["harbor_schema_version"], 150);
    assert!(db["rows"].as_u64().unwrap() > 300_000, "{db}");

    restore(&repo, &pg.url("rt_dst"), "empty").expect(0);
    assert_eq!(pg.schema_dump("rt_src"), pg.schema_dump("rt_dst"));
    assert_eq!(pg.content("rt_src"), pg.content("rt_dst"));
    assert_eq!(pg.sequences("rt_src"), pg.sequences("rt_dst"));
    let v = verify(&repo, &pg.url("rt_dst"));
    v.expect(0);
    assert_eq!(v.json()["equal"], true);

    let show = repo.id(&["--json", "show", "latest"]);
    show.expect(0);
    let tables = show.json()["parts"]["db"]["tables"]
        .as_array()
        .unwrap()
        .clone();
    let audit = tables.iter().find(|t| t["name"] == "audit_log").unwrap();
    assert_eq!(audit["rows"], 200_000);
    assert_eq!(show.json()["parts"]["db"]["harbor_schema_version"], 150);

    // A second backup of the unchanged database stores almost nothing new.
    let again = backup(&repo, &pg.url("rt_src"), &[]);
    again.expect(0);
    let s = &again.json()["summary"];
    assert!(
        s["new_bytes"].as_f64().unwrap() < s["logical_bytes"].as_f64().unwrap() * 0.02,
        "{s}"
    );
}

#[test]
fn empty_mode_refuses_a_non_empty_database() {
    let pg = pg::shared();
    pg.harbor_copy("ne_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("ne_src"), &[]).expect(0);
    let before = pg.content("ne_src");
    restore(&repo, &pg.url("ne_src"), "empty").expect_error(2, "not empty");
    assert_eq!(pg.content("ne_src"), before);
}

#[test]
fn running_mode_replaces_everything_and_clears_read_only() {
    let pg = pg::shared();
    pg.harbor_copy("run_src");
    pg.sql(
        "run_src",
        "UPDATE properties SET v = 'true' WHERE k = 'read_only'",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("run_src"), &[]).expect(0);
    let at_backup = pg.content("run_src");
    let seq_at_backup = pg.sequences("run_src");
    // Harbor goes on: rows change, sequences advance.
    pg.sql("run_src", "DELETE FROM tag WHERE id % 2 = 0; INSERT INTO audit_log (project_id, operation, resource_type, resource, username) VALUES (1, 'push', 'artifact', 'x', 'y'); UPDATE repository SET pull_count = pull_count + 1");
    pg.sql(
        "run_src",
        "UPDATE properties SET v = 'false' WHERE k = 'read_only'",
    );
    assert_ne!(pg.content("run_src"), at_backup);

    let r = repo.with_key_env(
        &repo.identity,
        &[
            "--json",
            "restore",
            "latest",
            "--postgres",
            &pg.url("run_src"),
            "--mode",
            "running",
        ],
        ENV,
    );
    r.expect(0);
    assert_eq!(
        pg.sql("run_src", "SELECT v FROM properties WHERE k = 'read_only'"),
        "false"
    );
    assert_eq!(pg.sequences("run_src"), seq_at_backup);
    // Apart from the cleared flag, the database is the snapshot.
    pg.sql(
        "run_src",
        "UPDATE properties SET v = 'true' WHERE k = 'read_only'",
    );
    assert_eq!(pg.content("run_src"), at_backup);
}

#[test]
fn running_mode_failure_leaves_the_database_exactly_as_before() {
    let pg = pg::shared();
    pg.harbor_copy("rb_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("rb_src"), &[]).expect(0);
    pg.sql("rb_src", "DELETE FROM audit_log WHERE id % 3 = 0; SELECT nextval('audit_log_id_seq') FROM generate_series(1, 10)");
    // A trigger in the live database rejects one of the snapshot's tag rows, late in the load.
    pg.sql(
        "rb_src",
        "CREATE FUNCTION reject_tag() RETURNS trigger AS $$ BEGIN IF NEW.id = 1000 THEN RAISE EXCEPTION 'tag 1000 rejected'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER reject_tag BEFORE INSERT ON tag FOR EACH ROW EXECUTE PROCEDURE reject_tag()",
    );
    let before = pg.content("rb_src");
    let seq_before = pg.sequences("rb_src");
    restore(&repo, &pg.url("rb_src"), "running").expect_error(1, "tag");
    assert_eq!(
        pg.content("rb_src"),
        before,
        "a failed running-mode restore changed data"
    );
    assert_eq!(
        pg.sequences("rb_src"),
        seq_before,
        "a failed running-mode restore changed sequences"
    );
}

#[test]
fn running_mode_refuses_another_schema_version() {
    let pg = pg::shared();
    pg.harbor_copy("sv_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("sv_src"), &[]).expect(0);
    pg.sql("sv_src", "UPDATE schema_migrations SET version = 160");
    let before = pg.content("sv_src");
    restore(&repo, &pg.url("sv_src"), "running")
        .expect_error(2, "schema version is 160, the snapshot's is 150");
    assert_eq!(pg.content("sv_src"), before);
}

#[test]
fn dirty_schema_needs_force() {
    let pg = pg::shared();
    pg.harbor_copy("dirty_src");
    pg.sql("dirty_src", "UPDATE schema_migrations SET dirty = true");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("dirty_src"), &[]).expect_error(2, "dirty");
    let r = backup(&repo, &pg.url("dirty_src"), &["--force"]);
    r.expect(0);
}

#[test]
fn verify_lists_every_difference() {
    let pg = pg::shared();
    pg.harbor_copy("vf_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("vf_src"), &[]).expect(0);
    verify(&repo, &pg.url("vf_src")).expect(0);
    pg.sql(
        "vf_src",
        "UPDATE repository SET description = 'changed' WHERE repository_id = 7",
    );
    pg.sql("vf_src", "DELETE FROM task WHERE id = 2");
    pg.sql("vf_src", "DROP TABLE quota; CREATE TABLE extra (x int)");
    let v = verify(&repo, &pg.url("vf_src"));
    v.expect(1);
    let diffs: Vec<String> =
        serde_json::from_value(v.json()["parts"]["db"]["differences"].clone()).unwrap();
    let has = |needle: &str| diffs.iter().any(|d| d.contains(needle));
    assert!(has("public.repository: same row count"), "{diffs:?}");
    assert!(
        has("public.task: 27691 rows in the database") || has("public.task:"),
        "{diffs:?}"
    );
    assert!(has("public.quota: in the snapshot, missing"), "{diffs:?}");
    assert!(
        has("public.extra: in the database, not in the snapshot"),
        "{diffs:?}"
    );
    assert_eq!(diffs.len(), 4, "{diffs:?}");
}

#[test]
fn backup_is_one_point_in_time_while_harbor_writes() {
    let pg = pg::shared();
    pg.harbor_copy("pit_src");
    pg.createdb("pit_dst");
    pg.sql(
        "pit_src",
        "CREATE TABLE counter (n bigint NOT NULL); INSERT INTO counter VALUES (0)",
    );
    // Each transaction adds an audit row and bumps the counter: in any consistent state the
    // two agree. The two tables are copied by different connections.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, port) = (stop.clone(), pg.port);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let conf = format!("host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=pit_src");
                let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    client
                        .batch_execute(
                            "BEGIN; INSERT INTO audit_log (project_id, operation, resource_type, resource, username) VALUES (1, 'tick', 'x', 'x', 'x');
                             UPDATE counter SET n = n + 1; COMMIT;",
                        )
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("pit_src"), &["--parallel", "4"]).expect(0);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 10, "the writer made only {writes} transactions");
    restore(&repo, &pg.url("pit_dst"), "empty").expect(0);
    let ticks = pg.sql(
        "pit_dst",
        "SELECT count(*) FROM audit_log WHERE operation = 'tick'",
    );
    let counter = pg.sql("pit_dst", "SELECT n FROM counter");
    assert_eq!(ticks, counter, "the snapshot is not one point in time");
    assert!(
        ticks.parse::<u64>().unwrap() > 0,
        "the backup should have seen some writes"
    );
}

#[test]
fn connection_and_permission_errors_are_clear() {
    let pg = pg::shared();
    pg.harbor_copy("err_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let before = repo_files(repo.local_root.as_ref().unwrap()).len();

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgresql://postgres@127.0.0.1:{closed}/x?sslmode=disable");
    backup(&repo, &unreachable, &[]).expect_error(1, "cannot reach PostgreSQL");

    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &pg.url("err_src")],
        &[("PGPASSWORD", "wrong")],
    )
    .expect_error(5, "refused the login");
    backup(&repo, &pg.url("no_such_db"), &[]).expect_error(2, "does not exist");
    let with_password = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/err_src",
        pg.port
    );
    backup(&repo, &with_password, &[]).expect_error(2, "PGPASSWORD");

    pg.sql("err_src", "CREATE ROLE limited LOGIN PASSWORD 'limited'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited; REVOKE SELECT ON audit_log FROM limited");
    let limited = format!(
        "postgresql://limited@127.0.0.1:{}/err_src?sslmode=disable",
        pg.port
    );
    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &limited],
        &[("PGPASSWORD", "limited")],
    )
    .expect_error(5, "permission denied");
    // No snapshot was recorded by any of these.
    repo.id(&["snapshots"]).expect(0);
    let snaps = repo.id(&["--json", "snapshots"]).json()["snapshots"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(snaps, 0);
    let _ = before;
}

#[test]
fn database_and_configuration_in_one_snapshot() {
    let pg = pg::shared();
    pg.harbor_copy("both_src");
    pg.createdb("both_dst");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (etc, _) = harbor_config_tree(&dir.path().join("src"), 1000);
    let r = repo.with_key_env(
        &repo.backup_key,
        &[
            "--json",
            "backup",
            "--postgres",
            &pg.url("both_src"),
            "--config",
            etc.to_str().unwrap(),
        ],
        ENV,
    );
    r.expect(0);
    assert_eq!(r.json()["parts"]["config"]["files"], 4);
    let out = dir.path().join("out");
    // Only the config part: the database is left alone.
    repo.id(&[
        "restore",
        "latest",
        "--only",
        "config",
        "--config-dir",
        out.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&etc, &restored(&out, &etc));
    // Without a target for a held part, restore says which option to give.
    repo.id(&["restore", "latest", "--only", "db"])
        .expect_error(2, "--postgres");
    repo.id(&["restore", "latest"])
        .expect_error(2, "nothing to restore");
    repo.with_key_env(
        &repo.identity,
        &["restore", "latest", "--postgres", &pg.url("both_dst")],
        ENV,
    )
    .expect(0);
    let v = repo.with_key_env(
        &repo.identity,
        &[
            "verify",
            "latest",
            "--postgres",
            &pg.url("both_dst"),
            "--config-dir",
            out.to_str().unwrap(),
        ],
        ENV,
    );
    v.expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
}

#[test]
fn a_server_restart_during_backup_fails_clearly_and_records_nothing() {
    let mut own = Postgres::start();
    own.harbor_db("restart_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let mut args: Vec<String> = repo.args.clone();
    args.extend(
        [
            "--key",
            repo.backup_key.to_str().unwrap(),
            "backup",
            "--parallel",
            "1",
            "--postgres",
        ]
        .map(String::from),
    );
    args.push(own.url("restart_src"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = command(&argv);
    cmd.env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Restart the server while a table is being copied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while own.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%TO STDOUT'",
    ) == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started copying"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    own.restart();
    let run = wait(child);
    run.expect(1);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("table") || errors[0].contains("connection"),
        "{}",
        run.stderr
    );
    let snaps = repo.id(&["--json", "snapshots"]).json()["snapshots"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(snaps, 0, "a failed backup recorded a snapshot");
    repo.id(&["check"]).expect(0);
}

#[test]
fn tls_is_verified_by_default() {
    let (tls, ca) = Postgres::start_tls();
    tls.harbor_copy_from_scratch("tls_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let base = format!("postgresql://postgres@127.0.0.1:{}/tls_src", tls.port);
    // The server's certificate is signed by a CA the system does not trust: refused, even
    // with the default sslmode (prefer) and with require.
    for url in [base.clone(), format!("{base}?sslmode=require")] {
        backup(&repo, &url, &[]).expect_error(5, "TLS");
    }
    // With the CA, the chain and host name verify ("localhost" is the certificate's name).
    let ca = ca.to_str().unwrap();
    let by_name = format!("postgresql://postgres@localhost:{}/tls_src", tls.port);
    backup(
        &repo,
        &format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        &[],
    )
    .expect(0);
    // The same through the libpq environment.
    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &by_name],
        &[
            ("PGPASSWORD", PASSWORD),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", ca),
        ],
    )
    .expect(0);
    // By address, the name does not match: verify-full refuses, verify-ca accepts.
    backup(
        &repo,
        &format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        &[],
    )
    .expect_error(5, "TLS");
    backup(
        &repo,
        &format!("{base}?sslmode=verify-ca&sslrootcert={ca}"),
        &[],
    )
    .expect(0);
    // require verifies too, and pg_dump is told verify-full with the same CA: it connects.
    let r = backup(
        &repo,
        &format!("{by_name}?sslmode=require&sslrootcert={ca}"),
        &[],
    );
    r.expect(0);
    assert!(!r.stderr.contains("not encrypted"), "{}", r.stderr);
    backup(
        &repo,
        &format!("{base}?sslmode=require&sslrootcert={ca}"),
        &[],
    )
    .expect_error(5, "TLS");
}

#[test]
fn prefer_without_tls_warns_naming_the_server() {
    let pg = pg::shared();
    pg.harbor_copy("prefer_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let url = format!("postgresql://postgres@127.0.0.1:{}/prefer_src", pg.port);
    let r = backup(&repo, &url, &[]);
    r.expect(0);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("not encrypted"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{}/prefer_src", pg.port)),
        "{}",
        warnings[0]
    );
}

/// A table too small to chunk (its COPY text under the chunker's minimum) is sealed like a
/// small configuration file (FORMAT.md §5): its id is no oracle for a guess of its content
/// with the backup-only key, and it restores exactly.
#[test]
fn a_small_table_is_no_oracle_and_restores_exactly() {
    use drydock::repo::blob::BlobType;
    let pg = pg::shared();
    pg.createdb("small_src");
    pg.sql(
        "small_src",
        "CREATE TABLE robot_secret (name text, secret text); INSERT INTO robot_secret VALUES ('robot$ci', 'Harbor12345');",
    );
    pg.createdb("small_dst");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("small_src"), &[]).expect(0);
    let guess = b"robot$ci\tHarbor12345\n";
    let (ck, auth) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = common::forge::attacker(&repo).await;
            (
                r.keys.chunk_key("test").unwrap().clone(),
                r.keys.objects.clone(),
            )
        })
    };
    let id = ck.blob_id(BlobType::Data as u8, guess);
    for f in walk(&repo.local_root.as_ref().unwrap().join("index")) {
        if f.is_file() {
            let file = drydock::repo::index::parse(&std::fs::read(&f).unwrap(), &auth).unwrap();
            for (_, entries) in file {
                assert!(
                    entries.iter().all(|e| e.id != id),
                    "the guess matches a stored blob"
                );
            }
        }
    }
    restore(&repo, &pg.url("small_dst"), "empty").expect(0);
    assert_eq!(pg.content("small_src"), pg.content("small_dst"));
    verify(&repo, &pg.url("small_dst")).expect(0);
}

/// `show --postgres-major`, which the in-cluster drill runs to pick its scratch server:
/// the database part's major as one line, and a usage error for a snapshot without one.
#[test]
fn show_postgres_major_prints_the_major_of_the_database_part() {
    let pg = pg::shared();
    pg.createdb("major_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &pg.url("major_src"), &[]).expect(0);
    let show = repo.id(&["--json", "show", "latest"]);
    show.expect(0);
    let version = show.json()["parts"]["db"]["server_version"]
        .as_str()
        .unwrap()
        .to_string();
    let major = version.split(['.', ' ']).next().unwrap();
    assert!(major.parse::<i32>().unwrap() >= 13, "{version}");

    let r = repo.id(&["show", "latest", "--postgres-major"]);
    r.expect(0);
    assert_eq!(r.stdout, format!("{major}\n"));

    // A snapshot of the configuration only: nothing to pick a major from.
    let (config, _) = harbor_config_tree(dir.path(), 0);
    repo.backup(&[&config]);
    repo.id(&["show", "latest", "--postgres-major"])
        .expect_error(2, "has no database part");
}
