//! A real PostgreSQL server for tests: started from its binaries as the `postgres` OS user
//! (PostgreSQL refuses root), on a free loopback port, in a temporary directory.
//!
//! Host connections need a password (scram-sha-256), so the password path is exercised;
//! the password is `drydock-test` and reaches drydock through PGPASSWORD.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "drydock-test";
/// The application_name of the tests' own psql and pg_dump runs.
const TEST_APP: &str = "drydock-tests";
/// Debian's PostgreSQL 15, the default server.
const DEBIAN_15: &str = "/usr/lib/postgresql/15/bin";

/// The server binaries tests start by default: `DRYDOCK_TEST_PG_BIN` (scripts/test runs the
/// database tests a second time with PostgreSQL 18's), else Debian's 15.
pub fn default_bin() -> PathBuf {
    std::env::var_os("DRYDOCK_TEST_PG_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_15))
}

/// PostgreSQL 18's binaries (`DRYDOCK_TEST_PG18_BIN`, set by scripts/test), if installed.
pub fn pg18_bin() -> Option<PathBuf> {
    std::env::var_os("DRYDOCK_TEST_PG18_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub struct Postgres {
    pub port: u16,
    /// The directory of initdb, postgres, psql and pg_dump of this server's major.
    pub bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres user");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id");
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres group");
    (uid, gid)
}

/// Run a server binary, as `postgres` when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A temporary directory the server (run as `postgres`) owns, for its data and socket.
fn server_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    give_to_postgres(dir.path());
    dir
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        chown(path, Some(uid), Some(gid)).unwrap();
    }
}

impl Postgres {
    pub fn start() -> Self {
        Postgres::start_in(&default_bin())
    }

    /// A server from the binaries in `bin`.
    pub fn start_in(bin: &Path) -> Self {
        let dir = server_dir("drydock-pg");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        give_to_postgres(&pwfile);
        let out = as_postgres(&bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args([
                "--pwfile",
                pwfile.to_str().unwrap(),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: 0,
            bin: bin.to_path_buf(),
            dir,
            child: None,
            settings: Vec::new(),
        };
        pg.launch();
        pg
    }

    /// A server with TLS on, its certificate (for the name localhost only) signed by a
    /// fresh test CA. Returns the server and the CA certificate's path.
    ///
    /// Always Debian's PostgreSQL 15: the PyPI build of 18 has no SSL support.
    pub fn start_tls() -> (Self, PathBuf) {
        Postgres::start_tls_for("DNS:localhost")
    }

    /// [`Postgres::start_tls`] with a certificate for `san` (`DNS:a,DNS:b`).
    pub fn start_tls_for(san: &str) -> (Self, PathBuf) {
        let mut pg = Postgres::start_in(Path::new(DEBIAN_15));
        pg.stop();
        let d = pg.dir.path().to_path_buf();
        let pki = super::tls::make_pki(&d, "drydock test CA", san);
        for f in ["server.key", "server.crt"] {
            give_to_postgres(&d.join(f));
        }
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        pg.settings = vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", pki.server_cert.display()),
            format!("ssl_key_file={}", pki.server_key.display()),
        ];
        pg.launch();
        (pg, pki.ca_cert)
    }

    /// A hot standby of `primary` (pg_basebackup -R, streaming), same binaries.
    pub fn standby_of(primary: &Postgres) -> Self {
        let dir = server_dir("drydock-pg-standby");
        let data = dir.path().join("data");
        let out = as_postgres(&primary.bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-c",
                "fast",
            ])
            .args([
                "-p",
                &primary.port.to_string(),
                "-D",
                data.to_str().unwrap(),
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: 0,
            bin: primary.bin.clone(),
            dir,
            child: None,
            settings: vec!["hot_standby=on".into()],
        };
        pg.launch();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let port = if self.port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            self.port
        };
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let child = as_postgres(&self.bin.join("postgres"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-p",
                &port.to_string(),
                "-k",
                self.dir.path().to_str().unwrap(),
            ])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            // Every connection is logged with its application_name: tests can tell that
            // drydock never ran psql (the tests' own psql calls say "drydock-tests").
            .args(["-c", "log_connections=on"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Stop (fast shutdown) and start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// `pg_ctl stop -m immediate`: the server is a throw-away.
    fn pg_ctl_stop(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args([
                "stop",
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.pg_ctl_stop();
            let _ = c.wait();
        }
    }

    /// A URL without the password (drydock gets it from PGPASSWORD).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    fn psql_cmd(&self, db: &str) -> Command {
        self.psql_as("postgres", PASSWORD, db)
    }

    fn psql_as(&self, user: &str, password: &str, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args(["-U", user, "-p", &self.port.to_string(), "-d", db])
        .env("PGPASSWORD", password)
        .env("PGAPPNAME", TEST_APP)
        .env_remove("PGSERVICE");
        c
    }

    /// Connections drydock (or a child it ran) made as `psql`.
    pub fn psql_connections(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("connection authorized") && l.contains("application_name=psql"))
            .count()
    }

    /// Replace pg_hba.conf; restart, so the next connection surely sees it.
    pub fn set_hba(&mut self, hba: &str) {
        let path = self.data().join("pg_hba.conf");
        std::fs::write(&path, hba).unwrap();
        give_to_postgres(&path);
        self.restart();
    }

    /// Run SQL, panic on error, return stdout.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.sql_as("postgres", PASSWORD, db, sql)
    }

    /// [`Postgres::sql`] as another login role.
    pub fn sql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let out = self
            .psql_as(user, password, db)
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run an SQL file.
    pub fn sql_file(&self, db: &str, file: &Path) {
        let out = self
            .psql_cmd(db)
            .args(["-f", file.to_str().unwrap()])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `CREATE ROLE spec` unless its role exists: roles belong to the server, which tests
    /// share.
    pub fn ensure_role(&self, spec: &str) {
        let name = spec.split_whitespace().next().expect("a role name");
        let found = self.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
        );
        if found == "0" {
            self.sql("postgres", &format!("CREATE ROLE {spec}"));
        }
    }

    pub fn createdb(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// A database with the Harbor-shaped schema and data of tests/fixtures.
    pub fn harbor_db(&self, name: &str) {
        self.createdb(name);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        self.sql_file(name, &fixtures.join("harbor_schema.sql"));
        self.sql_file(name, &fixtures.join("harbor_data.sql"));
    }

    /// `pg_dump --schema-only`, without the lines that differ between any two dumps.
    pub fn schema_dump(&self, db: &str) -> String {
        self.schema_dump_by(&self.bin, db, &[])
    }

    /// [`Postgres::schema_dump`] by the pg_dump in `bin`, with `extra` options.
    pub fn schema_dump_by(&self, bin: &Path, db: &str, extra: &[&str]) -> String {
        let out = Command::new(bin.join("pg_dump"))
            .args(extra)
            .args([
                "--schema-only",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &self.port.to_string(),
                db,
            ])
            .env("PGPASSWORD", PASSWORD)
            .env("PGAPPNAME", TEST_APP)
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every table's rows, sorted, hashed: equal databases give equal maps.
    pub fn content(&self, db: &str) -> Vec<(String, String, String)> {
        let tables = self.sql(
            db,
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
        );
        let mut out = Vec::new();
        for t in tables.lines() {
            let count = self.sql(db, &format!("SELECT count(*) FROM {t}"));
            let hash = self.sql(db, &format!("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"));
            out.push((t.to_string(), count, hash));
        }
        out
    }

    /// Every sequence's state.
    pub fn sequences(&self, db: &str) -> String {
        self.sql(db, "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY schemaname, sequencename) FROM pg_sequences")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server shared by a test binary, with a Harbor-shaped template database; stopped at
/// process exit. Tests make their own databases from the template.
pub fn shared() -> &'static Postgres {
    static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(pg) = SHARED.get() {
            pg.pg_ctl_stop();
            // A static's TempDir is never dropped: remove the data directory here.
            let _ = std::fs::remove_dir_all(pg.dir.path());
        }
    }
    SHARED.get_or_init(|| {
        let pg = Postgres::start();
        pg.harbor_db("harbor_template");
        unsafe { libc::atexit(stop_shared) };
        pg
    })
}

impl Postgres {
    /// A small Harbor-shaped database on a server without the shared template.
    pub fn harbor_copy_from_scratch(&self, name: &str) {
        self.createdb(name);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        self.sql_file(name, &fixtures.join("harbor_schema.sql"));
    }

    /// A new Harbor-shaped database copied from the template.
    pub fn harbor_copy(&self, name: &str) {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" TEMPLATE harbor_template"),
        );
    }
}
