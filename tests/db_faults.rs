//! Database faults: the PostgreSQL server restarts, or stops, in the middle of a backup's
//! COPY and in the middle of a running-mode restore.
//!
//! Each test has its own server (`Postgres::start`, not the shared one: it is restarted)
//! and a Harbor-shaped database whose audit_log is grown with `generate_series` until
//! copying it takes a good part of a second or more, so the fault lands inside a COPY.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::pg::{Postgres, PASSWORD};
use common::*;

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

/// Rows added to audit_log (about 150 bytes of COPY text each; the fixture has 200 000).
const BIG_ROWS: u64 = 200_000;

/// How long drydock may take to notice a server that went away.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The Harbor-shaped fixture database with a large audit_log.
fn big_harbor_db(pg: &Postgres, name: &str) {
    pg.harbor_db(name);
    pg.sql(
        name,
        &format!(
            "INSERT INTO audit_log (project_id, operation, resource_type, resource, username, payload)
             SELECT 1 + g % 300, 'pull', 'artifact', 'project-' || (g % 300) || '/app:' || g,
                    'user' || (g % 2000), md5(g::text) || repeat('p', 64) || md5((g * 7)::text)
             FROM generate_series(1, {BIG_ROWS}) g;
             ANALYZE"
        ),
    );
}

/// Start drydock with `key` and the password in the environment.
fn spawn(repo: &Repo, key: &std::path::Path, args: &[&str]) -> Child {
    repo.command_with(key, args)
        .env_remove("DRYDOCK_POSTGRES")
        .env("PGPASSWORD", PASSWORD)
        .spawn()
        .expect("spawn drydock")
}

/// Wait (bounded) for the child to exit after a fault at `fault`; its result.
fn wait(mut child: Child, what: &str, fault: Instant) -> Run {
    let deadline = fault + GIVE_UP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: drydock still runs {GIVE_UP:?} after the fault");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = common::wait(child);
    println!(
        "{what}: drydock exited {:?} after the fault",
        fault.elapsed()
    );
    run
}

/// Wait until `query` (a count on pg_stat_activity) is not 0, while drydock runs.
fn wait_for(pg: &Postgres, query: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + GIVE_UP;
    while pg.sql("postgres", query) == "0" {
        assert!(
            child.try_wait().unwrap().is_none(),
            "drydock finished before {what}"
        );
        assert!(Instant::now() < deadline, "drydock never reached {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until drydock runs a COPY of audit_log in direction `dir` (`TO STDOUT` or
/// `FROM STDIN`), then let it stream for `into`: the fault lands mid-COPY.
fn wait_for_copy(pg: &Postgres, db: &str, dir: &str, child: &mut Child, into: Duration) {
    let query = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'active' AND query LIKE 'COPY \"public\".\"audit_log\"%{dir}'"
    );
    wait_for(pg, &query, child, "the COPY of audit_log");
    std::thread::sleep(into);
    assert!(
        pg.sql("postgres", &query) != "0",
        "the COPY of audit_log ended within {into:?}: the table is too small to fault inside it"
    );
}

/// Exit 1 (failure, documented) and exactly one error line that names the database and
/// says the connection went away.
#[track_caller]
fn assert_clear_connection_error(r: &Run, pg: &Postgres, db: &str) {
    r.expect(1);
    let lines = r.error_lines();
    assert_eq!(lines.len(), 1, "want one error line, stderr: {}", r.stderr);
    let line = lines[0];
    let target = format!("127.0.0.1:{}/{db}", pg.port);
    assert!(line.contains(&target), "{line:?} should name {target}");
    assert!(
        line.contains("connection") || line.contains("terminat"),
        "{line:?} should say the connection was lost"
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// Hit the server under drydock (`child`) with `fault` (`Postgres::restart` or
/// `Postgres::stop`): drydock must fail with a clear connection error naming `db`.
fn fault_now(pg: &mut Postgres, db: &str, child: Child, fault: fn(&mut Postgres), what: &str) {
    let at = Instant::now();
    fault(pg);
    let r = wait(child, what, at);
    println!("{what}: {}", r.stderr.trim());
    assert_clear_connection_error(&r, pg, db);
}

/// `fault_now` once drydock streams a COPY of audit_log in direction `dir`.
fn fault_mid_copy(
    pg: &mut Postgres,
    db: &str,
    dir: &str,
    mut child: Child,
    fault: fn(&mut Postgres),
    what: &str,
) {
    wait_for_copy(pg, db, dir, &mut child, Duration::from_millis(200));
    fault_now(pg, db, child, fault, what);
}

fn snapshot_count(repo: &Repo) -> usize {
    let r = repo.id(&["--json", "snapshots"]);
    r.expect(0);
    r.json()["snapshots"].as_array().unwrap().len()
}

fn backup_args(url: &str) -> Vec<&str> {
    vec!["--json", "backup", "--parallel", "2", "--postgres", url]
}

#[test]
fn a_server_restart_or_stop_mid_copy_fails_the_backup_clearly_and_records_nothing() {
    let mut pg = Postgres::start();
    big_harbor_db(&pg, "src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let url = pg.url("src");

    // An uninterrupted backup, for the time it takes.
    let started = Instant::now();
    repo.with_key_env(&repo.backup_key, &backup_args(&url), ENV)
        .expect(0);
    println!("an uninterrupted backup takes {:?}", started.elapsed());
    assert_eq!(snapshot_count(&repo), 1);

    // A restart (immediate shutdown, then up again on the same port) mid-COPY.
    let child = spawn(&repo, &repo.backup_key, &backup_args(&url));
    let what = "backup, server restarted mid-COPY";
    fault_mid_copy(&mut pg, "src", "TO STDOUT", child, Postgres::restart, what);
    assert_eq!(
        snapshot_count(&repo),
        1,
        "a failed backup recorded a snapshot"
    );
    repo.id(&["check"]).expect(0);

    // A stop mid-COPY: drydock gives up while the server is still down; it does not hang.
    let child = spawn(&repo, &repo.backup_key, &backup_args(&url));
    let what = "backup, server stopped mid-COPY";
    fault_mid_copy(&mut pg, "src", "TO STDOUT", child, Postgres::stop, what);
    pg.restart();
    assert_eq!(
        snapshot_count(&repo),
        1,
        "a failed backup recorded a snapshot"
    );
    repo.id(&["check"]).expect(0);

    // With the server back, the next backup succeeds and matches the database.
    repo.with_key_env(&repo.backup_key, &backup_args(&url), ENV)
        .expect(0);
    assert_eq!(snapshot_count(&repo), 2);
    let v = repo.with_key_env(
        &repo.identity,
        &["--json", "verify", "latest", "--postgres", &url],
        ENV,
    );
    v.expect(0);
    assert_eq!(v.json()["equal"], true, "{}", v.stdout);
    repo.id(&["check", "--read-data"]).expect(0);
}

/// What a running-mode restore must leave alone when it fails: every row, every
/// sequence, and Harbor's read_only flag (which a successful restore clears).
struct Live {
    content: Vec<(String, String, String)>,
    sequences: String,
    read_only: String,
}

fn live(pg: &Postgres, db: &str) -> Live {
    Live {
        content: pg.content(db),
        sequences: pg.sequences(db),
        read_only: pg.sql(db, "SELECT v FROM properties WHERE k = 'read_only'"),
    }
}

#[track_caller]
fn assert_unchanged(pg: &Postgres, db: &str, before: &Live, what: &str) {
    let now = live(pg, db);
    assert_eq!(now.read_only, before.read_only, "{what}: read_only changed");
    assert_eq!(now.sequences, before.sequences, "{what}: sequences changed");
    assert!(now.content == before.content, "{what}: rows changed");
}

#[test]
fn a_server_restart_or_stop_mid_running_restore_leaves_the_target_unchanged() {
    let mut pg = Postgres::start();
    big_harbor_db(&pg, "live");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let url = pg.url("live");
    repo.with_key_env(&repo.backup_key, &backup_args(&url), ENV)
        .expect(0);
    let at_backup = pg.content("live");
    let seq_at_backup = pg.sequences("live");
    // Harbor goes on after the backup: rows change, sequences advance, and an operator
    // put Harbor in read-only mode for the restore.
    pg.sql(
        "live",
        "DELETE FROM tag WHERE id % 5 = 0;
         INSERT INTO audit_log (project_id, operation, resource_type, resource, username)
             SELECT 1, 'push', 'artifact', 'after-backup-' || g, 'admin' FROM generate_series(1, 1000) g;
         UPDATE repository SET pull_count = pull_count + 1;
         UPDATE properties SET v = 'true' WHERE k = 'read_only'",
    );
    let before = live(&pg, "live");
    assert_ne!(before.content, at_backup);
    // A crash (an immediate shutdown) makes PostgreSQL replay each sequence's last WAL
    // record, which logs 32 values ahead: sequences used since the last checkpoint jump
    // by up to 32 whoever the client is. Checkpoint first, so what is compared is what
    // drydock did.
    pg.sql("live", "CHECKPOINT");

    let restore = [
        "--json",
        "restore",
        "latest",
        "--postgres",
        url.as_str(),
        "--mode",
        "running",
    ];
    // A restart mid-COPY of the restore's one transaction.
    let child = spawn(&repo, &repo.identity, &restore);
    let what = "running restore, server restarted mid-COPY";
    fault_mid_copy(
        &mut pg,
        "live",
        "FROM STDIN",
        child,
        Postgres::restart,
        what,
    );
    assert_unchanged(&pg, "live", &before, "after a restart mid-restore");

    // A stop mid-COPY: drydock gives up while the server is down; once it is back, the
    // database is as it was.
    pg.sql("live", "CHECKPOINT");
    let child = spawn(&repo, &repo.identity, &restore);
    let what = "running restore, server stopped mid-COPY";
    fault_mid_copy(&mut pg, "live", "FROM STDIN", child, Postgres::stop, what);
    pg.restart();
    assert_unchanged(&pg, "live", &before, "after a stop mid-restore");

    // A restart while the restore commits, after it has set the sequences (setval is not
    // transactional, and the crash recovery replays it): the rows roll back, and the
    // sequences must be put back too. A deferred trigger holds the COMMIT open.
    pg.sql(
        "live",
        "CREATE FUNCTION slow_commit() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$ LANGUAGE plpgsql;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON registry DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW WHEN (NEW.id = 1) EXECUTE FUNCTION slow_commit();
         CHECKPOINT",
    );
    let mut child = spawn(&repo, &repo.identity, &restore);
    wait_for(
        &pg,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'live' AND query = 'COMMIT' AND wait_event = 'PgSleep'",
        &mut child,
        "the restore's COMMIT",
    );
    // A checkpoint (PostgreSQL makes one every few minutes) writes the sequence pages as
    // setval left them: the crash keeps those values.
    pg.sql("postgres", "CHECKPOINT");
    let what = "running restore, server restarted in COMMIT";
    fault_now(&mut pg, "live", child, Postgres::restart, what);
    assert_unchanged(&pg, "live", &before, "after a restart in COMMIT");
    pg.sql(
        "live",
        "DROP TRIGGER slow_commit ON registry; DROP FUNCTION slow_commit()",
    );

    // With the server up, the restore completes: the snapshot's rows and sequences, and
    // read_only cleared so Harbor accepts writes again.
    let r = repo.with_key_env(&repo.identity, &restore, ENV);
    r.expect(0);
    assert_eq!(
        pg.sql("live", "SELECT v FROM properties WHERE k = 'read_only'"),
        "false"
    );
    assert_eq!(pg.sequences("live"), seq_at_backup);
    assert!(
        pg.content("live") == at_backup,
        "restored rows differ from the snapshot"
    );
}
