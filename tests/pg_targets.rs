//! Restores into the PostgreSQL targets Harbor operators run: another major (15 → 18),
//! a freshly installed Harbor's database, another owning role (CloudNativePG's `app`, not a
//! superuser), CloudNativePG's TLS, a standby or load-balanced service, several databases.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use common::pg::{self, Postgres, PASSWORD};
use common::*;

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

fn url_as(pg: &Postgres, user: &str, db: &str) -> String {
    format!(
        "postgresql://{user}@127.0.0.1:{}/{db}?sslmode=disable",
        pg.port
    )
}

fn backup(repo: &Repo, urls: &[&str]) -> Run {
    let mut args = vec!["--json", "backup"];
    for u in urls {
        args.extend(["--postgres", u]);
    }
    repo.with_key_env(&repo.backup_key, &args, ENV)
}

fn restore(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Run {
    repo.with_key_env(
        &repo.identity,
        &[&["--json", "restore", "latest"], args].concat(),
        env,
    )
}

/// A Harbor-shaped database whose objects the role `harbor` owns, with grants to
/// `harbor_reader` and default privileges of `harbor`.
fn harbor_owned_source(pg: &Postgres, db: &str) {
    pg.ensure_role("harbor LOGIN");
    pg.ensure_role("harbor_reader");
    pg.harbor_db(db);
    pg.sql(
        db,
        "DO $$DECLARE r record; BEGIN
           FOR r IN SELECT format('ALTER TABLE %I.%I OWNER TO harbor', schemaname, tablename) q
                    FROM pg_tables WHERE schemaname = 'public' LOOP EXECUTE r.q; END LOOP;
           FOR r IN SELECT format('ALTER FUNCTION %s OWNER TO harbor', p.oid::regprocedure) q
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' LOOP EXECUTE r.q; END LOOP;
         END$$;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO harbor_reader;
         ALTER DEFAULT PRIVILEGES FOR ROLE harbor IN SCHEMA public GRANT SELECT ON TABLES TO harbor_reader;",
    );
}

/// Two schema dumps equal but for the source server's version in the header; the first
/// differing line is shown, not two whole dumps.
fn assert_same_schema(a: &str, b: &str) {
    let lines = |d: &str| -> Vec<String> {
        d.lines()
            .filter(|l| !l.starts_with("-- Dumped from database version"))
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (lines(a), lines(b));
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        panic!(
            "the schemas differ at line {}: {:?} vs {:?}",
            i + 1,
            a.get(i),
            b.get(i)
        );
    }
}

fn owners(pg: &Postgres, db: &str) -> String {
    pg.sql(
        db,
        "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'",
    )
}

/// The cross-major, cross-role restore CloudNativePG migrations are: PostgreSQL 15 owned by
/// `harbor` into PostgreSQL 18 as `app`, a role without superuser rights.
#[test]
fn a_15_snapshot_restores_into_18_as_another_role_with_the_same_schema() {
    let Some(bin18) = pg::pg18_bin() else {
        panic!(
            "set DRYDOCK_TEST_PG18_BIN to PostgreSQL 18's bin directory (scripts/test installs it)"
        );
    };
    // It starts both servers itself: the PostgreSQL 18 pass of scripts/test would repeat it.
    if pg::default_bin() == bin18 {
        return;
    }
    let src = Postgres::start_in(Path::new("/usr/lib/postgresql/15/bin"));
    harbor_owned_source(&src, "xr_src");
    let dst = Postgres::start_in(&bin18);
    for sql in [
        "CREATE ROLE app LOGIN PASSWORD 'app-pw'",
        "CREATE DATABASE app OWNER app",
        "CREATE ROLE harbor_owner NOLOGIN",
        "GRANT harbor_owner TO app",
        "CREATE ROLE stranger NOLOGIN",
        "CREATE DATABASE app2 OWNER app",
    ] {
        dst.sql("postgres", sql);
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &[&src.url("xr_src")]).expect(0);

    let app = [("PGPASSWORD", "app-pw")];
    let r = restore(&repo, &["--postgres", &url_as(&dst, "app", "app")], &app);
    r.expect(0);
    let left_out = r.json()["parts"]["db"]["report"]["grants_left_out"].to_string();
    assert!(
        left_out.contains("harbor_reader")
            && left_out.contains("default privileges for role harbor"),
        "{left_out}"
    );
    assert_eq!(owners(&dst, "app"), "app");
    // The same schema, up to owners and grants, as PostgreSQL 18's pg_dump sees both.
    let plain = ["--no-owner", "--no-privileges"];
    assert_same_schema(
        &src.schema_dump_by(&bin18, "xr_src", &plain),
        &dst.schema_dump_by(&bin18, "app", &plain),
    );
    assert_eq!(src.content("xr_src"), dst.content("app"));
    repo.with_key_env(
        &repo.identity,
        &[
            "verify",
            "latest",
            "--postgres",
            &url_as(&dst, "app", "app"),
        ],
        &app,
    )
    .expect(0);

    // --owner: a role the restoring role may act as owns everything; one that does not
    // exist is refused before anything is written.
    restore(
        &repo,
        &[
            "--postgres",
            &url_as(&dst, "app", "app2"),
            "--owner",
            "nosuch",
        ],
        &app,
    )
    .expect_error(2, "--owner nosuch: no such role");
    assert_eq!(
        dst.sql(
            "app2",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    // A role the restoring role is no member of: refused at the first session, naming the
    // GRANT that would allow it, and nothing is written.
    restore(
        &repo,
        &[
            "--postgres",
            &url_as(&dst, "app", "app2"),
            "--owner",
            "stranger",
        ],
        &app,
    )
    .expect_error(2, "GRANT \"stranger\" TO \"app\"");
    assert_eq!(
        dst.sql(
            "app2",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    // The owner creates the objects, so it needs CREATE where they go.
    dst.sql("app2", "GRANT CREATE ON SCHEMA public TO harbor_owner");
    restore(
        &repo,
        &[
            "--postgres",
            &url_as(&dst, "app", "app2"),
            "--owner",
            "harbor_owner",
        ],
        &app,
    )
    .expect(0);
    assert_eq!(owners(&dst, "app2"), "harbor_owner");

    // Back the other way, an 18 snapshot into 15, is refused before anything is written.
    let path = format!("{}:{}", bin18.display(), std::env::var("PATH").unwrap());
    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &url_as(&dst, "app", "app")],
        &[("PGPASSWORD", "app-pw"), ("PATH", &path)],
    )
    .expect(0);
    src.createdb("from_18");
    restore(&repo, &["--postgres", &src.url("from_18")], ENV)
        .expect_error(2, "restore into PostgreSQL 18 or newer");
    assert_eq!(
        src.sql(
            "from_18",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
}

/// Harbor's database image runs initial-registry.sql at first start: the `registry`
/// database then holds an empty `schema_migrations`, and counts as empty.
#[test]
fn a_fresh_harbor_database_counts_as_empty() {
    let pg = pg::shared();
    pg.harbor_copy("fresh_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    backup(&repo, &[&pg.url("fresh_src")]).expect(0);
    let initial_registry =
        "CREATE TABLE schema_migrations(version bigint not null primary key, dirty boolean not null)";
    pg.createdb("fresh_dst");
    pg.sql("fresh_dst", initial_registry);
    restore(&repo, &["--postgres", &pg.url("fresh_dst")], ENV).expect(0);
    repo.with_key_env(
        &repo.identity,
        &["verify", "latest", "--postgres", &pg.url("fresh_dst")],
        ENV,
    )
    .expect(0);
    assert_eq!(pg.content("fresh_src"), pg.content("fresh_dst"));

    // Once Harbor core has migrated it, it is no longer empty: the message says what to use.
    pg.createdb("migrated_dst");
    pg.sql("migrated_dst", initial_registry);
    pg.sql(
        "migrated_dst",
        "INSERT INTO schema_migrations VALUES (150, false)",
    );
    restore(&repo, &["--postgres", &pg.url("migrated_dst")], ENV).expect_error(2, "--mode running");
    // Anything else beside it is plain "not empty", and nothing was dropped.
    pg.createdb("other_dst");
    pg.sql("other_dst", initial_registry);
    pg.sql("other_dst", "CREATE TABLE mine (x int)");
    restore(&repo, &["--postgres", &pg.url("other_dst")], ENV).expect_error(2, "not empty");
    assert_eq!(
        pg.sql(
            "other_dst",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "2"
    );
}

/// A TCP proxy that sends each new connection to the next of `upstreams` in turn: a
/// Kubernetes Service over several PostgreSQL instances (CloudNativePG's `-r`).
fn round_robin(upstreams: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstreams[i % upstreams.len()]))
            else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    port
}

#[test]
fn a_standby_and_a_load_balanced_service_are_refused_clearly() {
    let primary = Postgres::start();
    primary.harbor_copy_from_scratch("lb");
    let standby = Postgres::standby_of(&primary);
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());

    backup(&repo, &[&standby.url("lb")]).expect_error(2, "is a standby (in recovery)");
    backup(&repo, &[&primary.url("lb")]).expect(0);
    restore(&repo, &["--postgres", &standby.url("lb")], ENV)
        .expect_error(2, "is a standby (in recovery)");

    // Connections that alternate between the two, as a `-r` Service spreads them.
    let port = round_robin(vec![primary.port, standby.port]);
    let spread = format!("postgresql://postgres@127.0.0.1:{port}/lb?sslmode=disable");
    let r = backup(&repo, &[&spread]);
    r.expect(2);
    assert!(
        r.stderr.contains("different PostgreSQL servers") || r.stderr.contains("is a standby"),
        "{}",
        r.stderr
    );
    assert_eq!(
        repo.snapshot_ids().len(),
        1,
        "the refused backups recorded nothing"
    );
}

/// CloudNativePG's `-app` Secret gives a URI without sslmode, to a server whose certificate
/// its own CA signs: the error names both Secrets; with the `-ca` Secret's ca.crt it works.
#[test]
fn cloudnative_pg_tls_needs_its_ca_and_says_which_secret() {
    let host = "harbor-db-rw.harbor";
    let (pg, ca) = Postgres::start_tls_for(&format!("DNS:{host},DNS:harbor-db-rw"));
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // As the -app Secret's uri reads, reached through a tunnel to the loopback server.
    let uri = format!(
        "postgresql://postgres@{host}:{}/postgres?hostaddr=127.0.0.1",
        pg.port
    );
    let r = backup(&repo, &[&uri]);
    r.expect_error(5, "harbor-db-ca");
    assert!(r.stderr.contains("harbor-db-app"), "{}", r.stderr);
    let ca = ca.to_str().unwrap();
    repo.with_key_env(
        &repo.backup_key,
        &["backup", "--postgres", &uri],
        &[
            ("PGPASSWORD", PASSWORD),
            ("PGSSLROOTCERT", ca),
            ("PGSSLMODE", "verify-full"),
        ],
    )
    .expect(0);
}

/// Harbor 2.8 and older with Notary: three databases in one snapshot, each restored and
/// verified by name.
#[test]
fn two_databases_in_one_snapshot() {
    let pg = pg::shared();
    pg.harbor_copy("registry_md");
    pg.createdb("notary_server_md");
    pg.sql(
        "notary_server_md",
        "CREATE TABLE tuf_files (id serial PRIMARY KEY, gun text NOT NULL, data bytea);
         INSERT INTO tuf_files (gun, data) SELECT 'library/app' || g, sha256(g::text::bytea) FROM generate_series(1, 500) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let b = backup(
        &repo,
        &[&pg.url("registry_md"), &pg.url("notary_server_md")],
    );
    b.expect(0);
    assert_eq!(b.json()["parts"]["databases"].as_array().unwrap().len(), 2);
    let show = repo.id(&["show", "latest"]);
    assert!(
        show.stdout.contains("database \"registry_md\"")
            && show.stdout.contains("database \"notary_server_md\""),
        "{}",
        show.stdout
    );
    backup(&repo, &[&pg.url("registry_md"), &pg.url("registry_md")])
        .expect_error(2, "two databases called");

    pg.createdb("md_a");
    pg.createdb("md_b");
    let a = format!("registry_md={}", pg.url("md_a"));
    let b = format!("notary_server_md={}", pg.url("md_b"));
    restore(&repo, &["--postgres", &pg.url("md_a")], ENV).expect_error(2, "--postgres NAME=URL");
    let nosuch = format!("nosuch={}", pg.url("md_a"));
    restore(&repo, &["--postgres", &nosuch], ENV).expect_error(2, "holds no database \"nosuch\"");
    restore(&repo, &["--postgres", &a, "--postgres", &b], ENV).expect(0);
    assert_eq!(pg.content("registry_md"), pg.content("md_a"));
    assert_eq!(pg.content("notary_server_md"), pg.content("md_b"));
    let v = repo.with_key_env(
        &repo.identity,
        &[
            "--json",
            "verify",
            "latest",
            "--postgres",
            &a,
            "--postgres",
            &b,
        ],
        ENV,
    );
    v.expect(0);
    assert_eq!(v.json()["parts"]["databases"].as_array().unwrap().len(), 2);
    // A drill must be given every database.
    pg.createdb("md_c");
    let c = format!("registry_md={}", pg.url("md_c"));
    repo.with_key_env(&repo.identity, &["drill", "--postgres", &c], ENV)
        .expect_error(2, "--postgres notary_server_md=URL");
}
