//! A holder of the backup-only key forges a database part: schema SQL with psql
//! meta-commands, superuser-only statements, and table names that try to break out of
//! their quotes. Restore and drill must refuse or contain each one: no payload runs on this
//! machine or on the server, the identity is never read, and no scratch role is left.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::forge::{forge_snapshots, manifest};
use common::pg::{self, Postgres, PASSWORD};
use common::*;
use drydock::harbor::db::{
    table_node_name, DatabasePart, RowDigest, SequenceEntry, TableEntry, POST_DATA, PRE_DATA,
};
use drydock::repo::blob::BlobType;
use drydock::repo::snapshot::Parts;
use drydock::repo::tree::{Node, NodeKind, Tree};
use drydock::repo::writer::BlobWriter;

/// What the attacker writes: the two schema sections, tables with their COPY text, and
/// sequences.
#[derive(Default)]
struct Forged {
    pre: String,
    post: String,
    tables: Vec<(TableEntry, Vec<u8>)>,
    sequences: Vec<SequenceEntry>,
}

/// A table entry whose counts and checksum match its COPY text, as backup records them.
fn table(name: &str, columns: &[&str], data: &[u8]) -> (TableEntry, Vec<u8>) {
    let mut d = RowDigest::default();
    d.update(data);
    let entry = TableEntry {
        schema: "public".into(),
        name: name.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: d.rows,
        bytes: d.bytes,
        checksum: d.checksum(),
    };
    (entry, data.to_vec())
}

fn file(w: &BlobWriter, name: &str, data: &[u8]) -> Node {
    let mut n = Node::new(name, NodeKind::File);
    n.mode = 0o600;
    n.size = data.len() as u64;
    if !data.is_empty() {
        n.content = vec![w.save(BlobType::Data, data).unwrap()];
    }
    n
}

/// Write `f` as the latest snapshot's database part, with the backup-only key, the way
/// FORMAT.md describes it.
fn forge(repo: &Repo, f: Forged) {
    forge_databases(repo, f, &["registry"]);
}

/// [`forge`] with one database part per name, all of `f`'s content.
fn forge_databases(repo: &Repo, f: Forged, names: &'static [&'static str]) {
    forge_snapshots(repo, move |w| {
        let mut nodes = vec![
            file(w, PRE_DATA, f.pre.as_bytes()),
            file(w, POST_DATA, f.post.as_bytes()),
        ];
        let mut tables = Vec::new();
        for (i, (t, data)) in f.tables.into_iter().enumerate() {
            nodes.push(file(w, &table_node_name(i), &data));
            tables.push(t);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = w.save(BlobType::Tree, &Tree { nodes }.to_bytes()).unwrap();
        let part = DatabasePart {
            server_version: "15.0".into(),
            server_version_num: 150000,
            database: String::new(),
            pg_dump_version: "15.0".into(),
            harbor_schema_version: None,
            harbor_schema_dirty: None,
            tree,
            tables,
            sequences: f.sequences,
            foreign_keys: vec![],
        };
        let databases = names
            .iter()
            .map(|n| DatabasePart {
                database: n.to_string(),
                ..part.clone()
            })
            .collect();
        let parts = Parts {
            databases,
            ..Default::default()
        };
        vec![manifest(chrono::Utc::now(), "attacker", parts)]
    });
}

/// A directory any user can write (the server runs as `postgres`), where payloads would
/// leave their marker, and a PATH whose first `psql` leaves one too.
struct Traps {
    _dir: tempfile::TempDir,
    markers: PathBuf,
    path: String,
}

impl Traps {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let markers = dir.path().join("markers");
        fs::create_dir(&markers).unwrap();
        fs::set_permissions(&markers, fs::Permissions::from_mode(0o777)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let fake = bin.join("psql");
        fs::write(
            &fake,
            format!("#!/bin/sh\ntouch {}/psql-ran\nexit 1\n", markers.display()),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        Traps {
            _dir: dir,
            markers,
            path,
        }
    }

    fn marker(&self, name: &str) -> String {
        self.markers.join(name).display().to_string()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let left: Vec<_> = fs::read_dir(&self.markers)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "a payload ran: {left:?}");
    }
}

/// `restore --mode empty` (or `drill`) of the latest snapshot into `db`, with the traps'
/// PATH.
fn run_db(repo: &Repo, traps: &Traps, command: &str, url: &str) -> Run {
    let mut args = vec![command, "latest", "--postgres", url];
    if command == "restore" {
        args.extend(["--mode", "empty"]);
    }
    repo.with_key_env(
        &repo.identity,
        &args,
        &[("PGPASSWORD", PASSWORD), ("PATH", &traps.path)],
    )
}

fn scratch_roles(pg: &Postgres) -> String {
    pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'drydock\\_restore\\_%'",
    )
}

fn relations(pg: &Postgres, db: &str) -> String {
    pg.sql(
        db,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
}

/// Restore and drill each fail with `code` and one error line holding every `needles`;
/// nothing ran, no psql connected, no scratch role is left.
#[track_caller]
fn both_refuse(pg: &Postgres, repo: &Repo, traps: &Traps, db: &str, code: i32, needles: &[&str]) {
    let psql_before = pg.psql_connections();
    for command in ["restore", "drill"] {
        let target = format!("{db}_{command}");
        pg.createdb(&target);
        let r = run_db(repo, traps, command, &pg.url(&target));
        r.expect(code);
        let lines = r.error_lines();
        assert_eq!(lines.len(), 1, "{command}: {}", r.stderr);
        println!("{command}: {}", lines[0]);
        for n in needles {
            assert!(
                lines[0].contains(n),
                "{command}: {:?} lacks {n:?}",
                lines[0]
            );
        }
        assert!(!r.stdout.contains("PASSED"), "{}", r.stdout);
        if code == 4 {
            assert_eq!(relations(pg, &target), "0", "{command} sent SQL");
        }
    }
    traps.assert_untouched();
    assert_eq!(scratch_roles(pg), "0", "a scratch role was left behind");
    assert_eq!(pg.psql_connections(), psql_before, "psql connected");
    // The server logs application names: the count above can see a psql.
    assert!(pg.log().contains("application_name=drydock-tests"));
}

const PRELUDE: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict Ab12Cd34\n\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\nCREATE TABLE public.t (x integer);\n\nALTER TABLE public.t OWNER TO postgres;\n";

#[test]
fn psql_meta_commands_in_the_schema_are_refused_before_anything_is_sent() {
    let pg = pg::shared();
    let traps = Traps::new();
    let identity_marker = traps.marker("identity");
    let payloads = [
        format!("\\! touch {identity_marker}"),
        format!("\\set x `touch {identity_marker}`"),
        format!("\\copy (select 1) to program 'touch {identity_marker}'"),
        format!("\\o |touch {identity_marker}"),
    ];
    // The payloads are live: psql runs each of them.
    for p in &payloads {
        let file = traps.markers.join("control.sql");
        fs::write(&file, format!("{p}\nSELECT 1;\n")).unwrap();
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &pg.port.to_string(), "-d", "postgres", "-f"])
            .arg(&file)
            .env("PGPASSWORD", PASSWORD)
            .env("PGAPPNAME", "drydock-tests")
            .output()
            .unwrap();
        assert!(
            Path::new(&identity_marker).exists(),
            "control: psql did not run {p}"
        );
        fs::remove_file(&identity_marker).unwrap();
        fs::remove_file(&file).unwrap();
    }
    for (i, p) in payloads.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        // In pre-data after a statement (line 13), or in post-data.
        let (pre, post, line) = if i % 2 == 0 {
            (format!("{PRELUDE}{p}\n"), String::new(), 13)
        } else {
            (
                PRELUDE.to_string(),
                format!("SET lock_timeout = 0;\n\n{p}\n"),
                3,
            )
        };
        forge(
            &repo,
            Forged {
                pre,
                post,
                ..Default::default()
            },
        );
        let line = format!("psql meta-command (line {line}); refusing it");
        both_refuse(pg, &repo, &traps, &format!("meta{i}"), 4, &[&line]);
    }
}

#[test]
fn superuser_only_statements_fail_naming_the_statement_and_run_nothing() {
    let pg = pg::shared();
    let traps = Traps::new();
    let m = traps.marker("server");
    // The payload is live: as the superuser, the server runs it.
    pg.sql(
        "postgres",
        &format!(
            "COPY (SELECT 1) TO PROGRAM 'touch {}'",
            traps.marker("control")
        ),
    );
    assert!(Path::new(&traps.marker("control")).exists());
    fs::remove_file(traps.marker("control")).unwrap();
    let statements = [
        (
            format!("COPY (SELECT 1) TO PROGRAM 'touch {m}';"),
            "COPY (SELECT 1) TO PROGRAM",
        ),
        (
            format!("SELECT pg_catalog.lo_export(pg_catalog.lo_from_bytea(0, '\\x41'), '{m}');"),
            "lo_export",
        ),
        (
            "CREATE FUNCTION public.sh(cstring) RETURNS integer AS 'libc.so.6', 'system' LANGUAGE c;"
                .to_string(),
            "CREATE FUNCTION public.sh",
        ),
        (
            format!("CREATE FUNCTION public.py() RETURNS void LANGUAGE plpython3u AS $$import os; os.system('touch {m}')$$;"),
            "plpython3u",
        ),
        (
            format!("ALTER SYSTEM SET archive_command = 'touch {m}';"),
            "ALTER SYSTEM",
        ),
    ];
    for (i, (sql, needle)) in statements.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        forge(
            &repo,
            Forged {
                pre: format!("{PRELUDE}\n{sql}\n"),
                ..Default::default()
            },
        );
        both_refuse(
            pg,
            &repo,
            &traps,
            &format!("su{i}"),
            1,
            &["applying the pre-data schema", needle, "(line 14)"],
        );
    }
    assert_eq!(
        pg.sql("postgres", "SHOW archive_command"),
        "(disabled)",
        "ALTER SYSTEM reached the server"
    );
}

#[test]
fn a_trigger_that_copy_data_fires_runs_without_superuser_rights() {
    let pg = pg::shared();
    let traps = Traps::new();
    let m = traps.marker("trigger");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let pre = format!(
        "{PRELUDE}\nCREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN COPY (SELECT 1) TO PROGRAM 'touch {m}'; RETURN NEW; END$$;\n\
         CREATE TRIGGER tr BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n"
    );
    forge(
        &repo,
        Forged {
            pre,
            tables: vec![table("t", &["x"], b"1\n")],
            ..Default::default()
        },
    );
    both_refuse(
        pg,
        &repo,
        &traps,
        "trig",
        1,
        &["loading table public.t", "external program"],
    );
}

/// Where the name's payload would leave its marker: short, for the name must fit
/// PostgreSQL's 63 bytes.
const NAME_MARKER: &str = "/tmp/dd-inj";

/// A table, column and sequence name that would end its quotes and run a payload if
/// spliced into SQL unquoted.
fn hostile_name(first: char) -> String {
    format!("{first}\"; COPY (SELECT 1) TO PROGRAM 'touch {NAME_MARKER}'; -- \\'")
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[test]
fn forged_names_in_the_manifest_stay_identifiers() {
    let pg = pg::shared();
    let traps = Traps::new();
    let _ = fs::remove_file(NAME_MARKER);
    let (name, seq) = (hostile_name('t'), hostile_name('s'));
    assert!(name.len() < 64, "{name}");
    let create = format!(
        "CREATE TABLE public.{t} ({t} integer);\nCREATE SEQUENCE public.{s};\n",
        t = quoted(&name),
        s = quoted(&seq)
    );
    let forged = || Forged {
        pre: format!("{PRELUDE}{create}"),
        tables: vec![table("t", &["x"], b""), table(&name, &[&name], b"7\n8\n")],
        sequences: vec![SequenceEntry {
            schema: "public".into(),
            name: seq.clone(),
            last_value: 42,
            is_called: true,
        }],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge(&repo, forged());
    let check = |db: &str| {
        let t = quoted(&name);
        assert_eq!(
            pg.sql(
                db,
                &format!("SELECT string_agg({t}::text, ',' ORDER BY 1) FROM public.{t}")
            ),
            "7,8"
        );
        let s = quoted(&seq);
        assert_eq!(
            pg.sql(db, &format!("SELECT last_value FROM public.{s}")),
            "42"
        );
    };
    // Empty mode and drill: restored as written.
    pg.createdb("names_empty");
    run_db(&repo, &traps, "restore", &pg.url("names_empty")).expect(0);
    check("names_empty");
    pg.createdb("names_drill");
    let d = run_db(&repo, &traps, "drill", &pg.url("names_drill"));
    d.expect(0);
    assert!(d.stdout.contains("PASSED"), "{}", d.stdout);
    // Running mode, into a live database holding the same table and sequence.
    pg.createdb("names_live");
    pg.sql("names_live", "CREATE TABLE public.t (x integer)");
    pg.sql("names_live", &create);
    pg.sql(
        "names_live",
        &format!("INSERT INTO public.{} VALUES (1)", quoted(&name)),
    );
    repo.with_key_env(
        &repo.identity,
        &[
            "restore",
            "latest",
            "--postgres",
            &pg.url("names_live"),
            "--mode",
            "running",
        ],
        &[("PGPASSWORD", PASSWORD), ("PATH", &traps.path)],
    )
    .expect(0);
    check("names_live");
    traps.assert_untouched();
    assert!(!Path::new(NAME_MARKER).exists(), "a forged name ran as SQL");
    assert_eq!(scratch_roles(pg), "0");
}

#[test]
fn a_non_superuser_restores_as_itself_and_owns_what_it_restores() {
    let pg = pg::shared();
    pg.harbor_copy("own_src");
    pg.sql(
        "postgres",
        "CREATE ROLE harbor_owner LOGIN PASSWORD 'owner-pw'",
    );
    pg.sql("postgres", "CREATE DATABASE own_dst OWNER harbor_owner");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &pg.url("own_src")],
        &[("PGPASSWORD", PASSWORD)],
    )
    .expect(0);
    let url = format!(
        "postgresql://harbor_owner@127.0.0.1:{}/own_dst?sslmode=disable",
        pg.port
    );
    repo.with_key_env(
        &repo.identity,
        &["restore", "latest", "--postgres", &url],
        &[("PGPASSWORD", "owner-pw")],
    )
    .expect(0);
    assert_eq!(pg.content("own_src"), pg.content("own_dst"));
    assert_eq!(
        pg.sql(
            "own_dst",
            "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "harbor_owner"
    );
    assert_eq!(scratch_roles(pg), "0");
}

#[test]
fn a_server_that_refuses_the_scratch_role_says_what_to_change() {
    let mut own = Postgres::start();
    own.set_hba(
        "local all all trust\nhost all postgres 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 reject\n",
    );
    let traps = Traps::new();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge(
        &repo,
        Forged {
            pre: PRELUDE.into(),
            ..Default::default()
        },
    );
    own.createdb("hba_dst");
    run_db(&repo, &traps, "restore", &own.url("hba_dst")).expect_error(2, "pg_hba.conf");
    assert_eq!(relations(&own, "hba_dst"), "0");
    assert_eq!(scratch_roles(&own), "0");
}

#[test]
fn a_signal_mid_restore_still_removes_the_scratch_role() {
    let pg = pg::shared();
    let traps = Traps::new();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // The schema waits for an advisory lock this test holds: the restore is surely
    // running, as the scratch role, when the signal comes.
    forge(
        &repo,
        Forged {
            pre: format!("{PRELUDE}SELECT pg_catalog.pg_advisory_lock(4242);\n"),
            ..Default::default()
        },
    );
    pg.createdb("sig_dst");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let holder = rt.block_on(async {
        let conf = format!(
            // Advisory locks are per database.
            "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=sig_dst",
            pg.port
        );
        let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("SELECT pg_advisory_lock(4242)")
            .await
            .unwrap();
        client
    });
    let url = pg.url("sig_dst");
    let mut child = repo
        .command_with(
            &repo.identity,
            &["restore", "latest", "--postgres", &url, "--mode", "empty"],
        )
        .env("PGPASSWORD", PASSWORD)
        .env("PATH", &traps.path)
        .spawn()
        .unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'sig_dst' \
                   AND usename LIKE 'drydock\\_restore\\_%' AND wait_event_type = 'Lock'";
    while pg.sql("postgres", waiting) == "0" {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let r = wait(child);
    r.expect_error(1, "interrupted by SIGTERM");
    assert_eq!(scratch_roles(pg), "0", "the scratch role was left behind");
    drop(holder);
    traps.assert_untouched();
}

/// The attacker's code must not run when drydock reads a database a snapshot created, as
/// the superuser a drill or verify connects as: a `schema_migrations` that is a view over
/// its function, and an operator of its own where drydock's queries might resolve one.
#[test]
fn a_superuser_drill_or_verify_calls_none_of_the_snapshots_functions() {
    let pg = pg::shared();
    let traps = Traps::new();
    let m = traps.marker("superuser-ran-it");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let as_superuser = |name: &str| {
        format!(
            "CREATE FUNCTION public.{name}() RETURNS boolean LANGUAGE plpgsql AS $$BEGIN \
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN \
             COPY (SELECT 1) TO PROGRAM 'touch {m}'; END IF; RETURN false; END$$;\n"
        )
    };
    let pre = format!(
        "{PRELUDE}\n{}{}\
         CREATE VIEW public.schema_migrations AS SELECT 150::bigint AS version, public.mig() AS dirty;\n\
         CREATE FUNCTION public.nlike(name, name) RETURNS boolean LANGUAGE sql AS $$SELECT public.op()$$;\n\
         CREATE OPERATOR public.!~~ (LEFTARG = name, RIGHTARG = name, FUNCTION = public.nlike);\n",
        as_superuser("mig"),
        as_superuser("op"),
    );
    forge(
        &repo,
        Forged {
            pre,
            ..Default::default()
        },
    );
    pg.createdb("su_read_drill");
    let drill = run_db(&repo, &traps, "drill", &pg.url("su_read_drill"));
    assert_ne!(drill.code, 101, "{}", drill.stderr);
    traps.assert_untouched();
    // The same database, verified again as the superuser: still nothing ran.
    let verify = run_db(&repo, &traps, "verify", &pg.url("su_read_drill"));
    assert_ne!(verify.code, 101, "{}", verify.stderr);
    traps.assert_untouched();
    // The payload is live: the superuser reading the view runs it.
    pg.sql("su_read_drill", "SELECT * FROM public.schema_migrations");
    assert!(
        Path::new(&m).exists(),
        "control: the view did not run its function"
    );
}

/// With standard_conforming_strings off the server ends `'a\''` where drydock's scanner
/// does not: text drydock takes for one statement must never run as several.
#[test]
fn a_statement_the_server_would_split_differently_runs_as_nothing() {
    let pg = pg::shared();
    let traps = Traps::new();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let pre = format!(
        "{PRELUDE}\nSET standard_conforming_strings = off;\n\
         SELECT 'a\\'' ; CREATE TABLE public.smuggled (x int); SELECT 1 --';\n"
    );
    forge(
        &repo,
        Forged {
            pre,
            ..Default::default()
        },
    );
    pg.createdb("smuggle");
    let r = run_db(&repo, &traps, "restore", &pg.url("smuggle"));
    r.expect(1);
    assert_eq!(
        pg.sql(
            "smuggle",
            "SELECT count(*) FROM pg_class WHERE relname = 'smuggled'"
        ),
        "0",
        "the smuggled statement ran"
    );
}

/// `--owner` holds: SQL that changes the session's role is refused, and a role change no
/// filter sees (a function calling set_config) fails the restore instead of leaving
/// objects the owner does not own. A fresh Harbor database whose schema_migrations only
/// looks empty (row-level security hides its row) is not dropped.
#[test]
fn owner_and_fresh_database_checks_cannot_be_talked_around() {
    let pg = pg::shared();
    let traps = Traps::new();
    pg.ensure_role("own_login LOGIN PASSWORD 'own-pw'");
    pg.ensure_role("own_owner NOLOGIN");
    pg.sql("postgres", "GRANT own_owner TO own_login");
    let login = [("PGPASSWORD", "own-pw"), ("PATH", traps.path.as_str())];
    let url = |db: &str| {
        format!(
            "postgresql://own_login@127.0.0.1:{}/{db}?sslmode=disable",
            pg.port
        )
    };
    let fresh = |db: &str| {
        pg.sql("postgres", &format!("CREATE DATABASE {db} OWNER own_login"));
        pg.sql(db, "GRANT CREATE ON SCHEMA public TO own_owner");
    };
    for (i, payload, code, needle) in [
        (0, "RESET ROLE;\nCREATE TABLE public.mine (x int);\n", 4, "changes the session's role"),
        (
            1,
            "CREATE FUNCTION public.sw() RETURNS text LANGUAGE sql AS $$SELECT pg_catalog.set_config('role', 'own_login', false)$$;\n\
             SELECT public.sw();\nCREATE TABLE public.mine (x int);\n",
            4,
            "does not own",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        forge(
            &repo,
            Forged {
                pre: format!("{PRELUDE}\n{payload}"),
                ..Default::default()
            },
        );
        let db = format!("owner_trick{i}");
        fresh(&db);
        repo.with_key_env(
            &repo.identity,
            &["restore", "latest", "--postgres", &url(&db), "--owner", "own_owner"],
            &login,
        )
        .expect_error(code, needle);
    }

    // schema_migrations with a row that row-level security hides from its owner.
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge(
        &repo,
        Forged {
            pre: PRELUDE.to_string(),
            ..Default::default()
        },
    );
    pg.sql("postgres", "CREATE DATABASE rls_fresh OWNER own_login");
    pg.sql_as(
        "own_login",
        "own-pw",
        "rls_fresh",
        "CREATE TABLE schema_migrations(version bigint not null primary key, dirty boolean not null);
         INSERT INTO schema_migrations VALUES (140, false);
         ALTER TABLE schema_migrations ENABLE ROW LEVEL SECURITY;
         ALTER TABLE schema_migrations FORCE ROW LEVEL SECURITY;
         CREATE POLICY hide ON schema_migrations USING (false);",
    );
    repo.with_key_env(
        &repo.identity,
        &["restore", "latest", "--postgres", &url("rls_fresh")],
        &login,
    )
    .expect_error(2, "row-level security");
    assert_eq!(
        pg.sql("rls_fresh", "SELECT count(*) FROM public.schema_migrations"),
        "1",
        "the hidden row was dropped"
    );
    traps.assert_untouched();
}

/// A forged manifest with two databases of one name: restore, verify and drill select
/// databases by name, so it is damage, refused before anything reaches a server.
#[test]
fn two_databases_of_one_name_are_refused_as_damage() {
    let pg = pg::shared();
    let traps = Traps::new();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge_databases(
        &repo,
        Forged {
            pre: PRELUDE.to_string(),
            ..Default::default()
        },
        &["registry", "registry"],
    );
    pg.createdb("twice");
    let id = repo.snapshot_ids().remove(0);
    for command in ["restore", "drill", "verify"] {
        repo.with_key_env(
            &repo.identity,
            &[command, &id, "--postgres", &pg.url("twice")],
            &[("PGPASSWORD", PASSWORD), ("PATH", &traps.path)],
        )
        .expect_error(4, "two databases named \"registry\"");
        // `latest` passes over it, with a warning, and finds nothing else to restore.
        let r = run_db(&repo, &traps, command, &pg.url("twice"));
        assert_ne!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains("two databases named"), "{}", r.stderr);
    }
    assert_eq!(relations(pg, "twice"), "0", "SQL reached the server");
    traps.assert_untouched();
}
