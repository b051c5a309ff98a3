//! Connecting to PostgreSQL like libpq does: a URL, then the standard `PG*` environment,
//! `~/.pgpass`, and `sslmode` — with TLS certificates verified whenever TLS is used.
//!
//! The password is never accepted inside a `--postgres` URL given on the command line
//! (it would show in `ps`); it comes from `PGPASSWORD`, `PGPASSFILE`/`~/.pgpass`, or a URL
//! taken from the environment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it (verified), plaintext otherwise.
    Prefer,
    /// TLS required, chain and host name verified.
    Require,
    /// TLS required, chain verified, host name not checked.
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(Error::Usage(format!("unknown sslmode {other:?}"))),
        })
    }
}

/// Everything needed to reach one database.
#[derive(Clone)]
pub struct PgTarget {
    /// A host name, an IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    /// libpq's `hostaddr`: the address to connect to, while `host` names the server for
    /// TLS (a certificate for a Kubernetes service name, reached through a tunnel).
    pub hostaddr: Option<std::net::IpAddr>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// A `prefer` connection to this server ended up in plaintext (shared by clones).
    plaintext: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl PgTarget {
    /// Parse a `postgresql://` URL, filling the gaps from the `PG*` environment and pgpass.
    /// `from_command_line` refuses a password inside the URL.
    pub fn parse(url: &str, from_command_line: bool) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::Usage(format!(
                "--postgres {}: {e}; want postgresql://user@host:port/db",
                redact(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "postgresql" | "postgres") {
            return Err(Error::Usage(format!(
                "--postgres {}: the URL must start with postgresql://",
                redact(url)
            )));
        }
        let mut password = parsed.password().map(decode);
        if password.is_some() && from_command_line {
            return Err(Error::Usage(
                "--postgres holds a password, which would be visible to every user of this machine; \
                 put it in PGPASSWORD or PGPASSFILE (or give the URL in DRYDOCK_POSTGRES)"
                    .into(),
            ));
        }
        let mut host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| decode(h.trim_matches(['[', ']'])));
        let mut port = parsed.port();
        let mut user = Some(decode(parsed.username())).filter(|u| !u.is_empty());
        let mut dbname =
            Some(decode(parsed.path().trim_start_matches('/'))).filter(|d| !d.is_empty());
        let mut sslmode = None;
        let mut sslrootcert = None;
        let mut hostaddr = None;
        let mut timeout = None;
        for (k, v) in parsed.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "host" => host = Some(v),
                "port" => port = Some(v.parse().map_err(|_| Error::Usage(format!("bad port {v:?}")))?),
                "user" => user = Some(v),
                "dbname" => dbname = Some(v),
                "password" if from_command_line => {
                    return Err(Error::Usage("--postgres holds a password; use PGPASSWORD or PGPASSFILE".into()))
                }
                "password" => password = Some(v),
                "sslmode" => sslmode = Some(SslMode::parse(&v)?),
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v)),
                "hostaddr" => hostaddr = Some(v.parse().map_err(|_| Error::Usage(format!("bad hostaddr {v:?}: want an IP address")))?),
                "connect_timeout" => timeout = Some(v.parse::<u64>().map_err(|_| Error::Usage(format!("bad connect_timeout {v:?}")))?),
                "application_name" => {}
                other => {
                    return Err(Error::Usage(format!(
                        "--postgres: unsupported parameter {other:?} (supported: host, hostaddr, port, user, dbname, sslmode, sslrootcert, connect_timeout, application_name)"
                    )))
                }
            }
        }
        let host = host.or_else(|| env("PGHOST")).unwrap_or_else(default_host);
        let port = match port {
            Some(p) => p,
            None => match env("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::Usage(format!("PGPORT {p:?} is not a port")))?,
                None => 5432,
            },
        };
        let user = user
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = dbname
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let sslmode = match sslmode {
            Some(m) => m,
            None => env("PGSSLMODE")
                .map(|m| SslMode::parse(&m))
                .transpose()?
                .unwrap_or(SslMode::Prefer),
        };
        let sslrootcert = sslrootcert.or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
        let timeout = timeout
            .or_else(|| env("PGCONNECT_TIMEOUT").and_then(|t| t.parse().ok()))
            .unwrap_or(10);
        let mut target = PgTarget {
            host,
            port,
            user,
            password,
            dbname,
            hostaddr: hostaddr.or_else(|| env("PGHOSTADDR").and_then(|a| a.parse().ok())),
            sslmode,
            sslrootcert,
            connect_timeout: Duration::from_secs(timeout.max(1)),
            plaintext: Arc::default(),
        };
        if target.password.is_none() {
            target.password = env("PGPASSWORD").or_else(|| target.pgpass_lookup());
        }
        Ok(target)
    }

    /// `user@host:port/db`, never the password.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    /// The same database under another name (for scratch targets and tests).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        PgTarget {
            dbname: dbname.into(),
            ..self.clone()
        }
    }

    fn pgpass_lookup(&self) -> Option<String> {
        let path = env("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
        let text = std::fs::read_to_string(path).ok()?;
        let port = self.port.to_string();
        let host = if self.host.starts_with('/') {
            "localhost"
        } else {
            self.host.as_str()
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let fields = split_pgpass(line);
                let [h, p, d, u, pw] = fields.as_slice() else {
                    return None;
                };
                let hit = |pat: &String, val: &str| pat == "*" || pat == val;
                (hit(h, host) && hit(p, &port) && hit(d, &self.dbname) && hit(u, &self.user))
                    .then(|| pw.clone())
            })
    }

    /// The same server and database as another role (restore's scratch role). The
    /// password stays in this process: it goes on the connection config, never to a child.
    pub fn as_role(&self, user: &str, password: &str) -> Self {
        PgTarget {
            user: user.into(),
            password: Some(password.into()),
            ..self.clone()
        }
    }

    /// The sslmode a libpq child must use to check the server as drydock does: drydock
    /// verifies the chain and the host name whenever TLS is used (`prefer`, `require`),
    /// while libpq's `prefer` and `require` verify nothing. After a `prefer` connection
    /// that found no TLS, the child is told `disable`, as drydock was.
    fn child_sslmode(&self) -> &'static str {
        match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::VerifyCa => "verify-ca",
            SslMode::Prefer if self.plaintext_seen() => "disable",
            SslMode::Prefer | SslMode::Require | SslMode::VerifyFull => "verify-full",
        }
    }

    /// The root certificates drydock trusts, as a file libpq can read: `sslrootcert`, or
    /// the system bundle drydock loaded (SSL_CERT_FILE, or where OpenSSL keeps it).
    fn child_sslrootcert(&self) -> Option<PathBuf> {
        if let Some(c) = &self.sslrootcert {
            return Some(c.clone());
        }
        openssl_probe::probe().cert_file
    }

    /// Environment for pg_dump: the connection, with the password, never in argv. The
    /// caller clears everything else (no drydock key or option reaches the child).
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let sslmode = self.child_sslmode();
        let mut v = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", sslmode.to_string()),
            (
                "PGCONNECT_TIMEOUT",
                self.connect_timeout.as_secs().to_string(),
            ),
        ];
        if let Some(a) = self.hostaddr {
            v.push(("PGHOSTADDR", a.to_string()));
        }
        if let Some(p) = &self.password {
            v.push(("PGPASSWORD", p.clone()));
        }
        if sslmode != "disable" {
            if let Some(c) = self.child_sslrootcert() {
                v.push(("PGSSLROOTCERT", c.display().to_string()));
            }
        }
        v
    }

    fn plaintext_seen(&self) -> bool {
        self.plaintext.load(Ordering::Relaxed)
    }

    fn config(&self) -> Config {
        let mut c = Config::new();
        c.user(&self.user)
            .dbname(&self.dbname)
            .port(self.port)
            .connect_timeout(self.connect_timeout);
        c.application_name("drydock");
        if self.host.starts_with('/') {
            c.host_path(&self.host);
        } else {
            c.host(&self.host);
        }
        if let Some(a) = self.hostaddr {
            c.hostaddr(a);
        }
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.ssl_mode(match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        c
    }

    /// Connect, retrying transient failures (refused, reset, server starting up) with backoff.
    pub async fn connect(&self) -> Result<Client> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect_once().await {
                Ok(c) => return Ok(c),
                Err((e, transient)) if transient && attempt < ATTEMPTS => {
                    tracing::warn!(target = %self.describe(), attempt, error = %e, "PostgreSQL connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn connect_once(&self) -> std::result::Result<Client, (Error, bool)> {
        let config = self.config();
        let result = if self.sslmode == SslMode::Disable || self.host.starts_with('/') {
            match config.connect(NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                Err(e) => Err(e),
            }
        } else {
            let tls = self.tls().map_err(|e| (e, false))?;
            match config.connect(tls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                Err(e) => Err(e),
            }
        };
        let client = result.map_err(|e| {
            let transient = e
                .as_db_error()
                .is_none_or(|d| *d.code() == SqlState::CANNOT_CONNECT_NOW);
            (connect_error(self, e), transient)
        })?;
        prepare_session(&client).await.map_err(|e| (e, false))?;
        if self.sslmode == SslMode::Prefer && !self.host.starts_with('/') {
            self.note_plaintext(&client).await.map_err(|e| (e, false))?;
        }
        Ok(client)
    }

    /// `prefer` falls back to plaintext when the server offers no TLS: say so, once.
    async fn note_plaintext(&self, client: &Client) -> Result<()> {
        let tls: Option<bool> = client
            .query_one(
                "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| pg_error("asking whether the connection uses TLS", e))?
            .get(0);
        if tls != Some(true) && !self.plaintext.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                server = %self.describe(),
                "the PostgreSQL connection is not encrypted (sslmode=prefer and the server offers no TLS); the password and data cross the network in plaintext; use sslmode=verify-full, or sslmode=disable on a trusted network to silence this"
            );
        }
        Ok(())
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.sslrootcert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::Usage(format!("sslrootcert {}: {e}", path.display())))?;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: CertificateDer<'static> = cert.map_err(|e| {
                        Error::Usage(format!("sslrootcert {}: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::Usage(format!("sslrootcert {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let roots = Arc::new(roots);
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Usage(format!("TLS setup: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Other(format!("TLS setup: {e}")))?;
        let config = if self.sslmode == SslMode::VerifyCa {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        } else {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// sslmode=verify-ca: the chain must verify; the host name need not match.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn default_host() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".into()
    } else {
        "localhost".into()
    }
}

/// Split a pgpass line on unescaped `:`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Fixed session settings, so COPY text is the same whoever runs it and wherever. The
/// search path holds no schema a snapshot can create objects in: drydock's own queries (as
/// a superuser, in a drill's verify) must never resolve a name or an operator to a
/// snapshot's function (pg_dump's SQL sets its own path).
async fn prepare_session(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "SET search_path = pg_catalog, pg_temp; \
             SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
             SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
        )
        .await
        .map_err(|e| pg_error("setting up the session", e))
}

fn connect_error(target: &PgTarget, e: tokio_postgres::Error) -> Error {
    let place = target.describe();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return Error::Key(format!(
                "PostgreSQL refused the login for {place}: {}; check the user and PGPASSWORD / PGPASSFILE",
                db.message()
            ));
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return Error::Usage(format!(
                "database {:?} does not exist on {place}; create it or fix --postgres",
                target.dbname
            ));
        }
        return pg_error(&format!("connecting to {place}"), e);
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    if msg.contains("certificate") || msg.contains("InvalidCertificate") || msg.contains("tls") {
        let fix = match cloudnative_pg_cluster(&target.host) {
            Some(cluster) => format!(
                "{} names a CloudNativePG service, whose certificate its own CA signs: mount Secret {cluster}-ca (key ca.crt) and set PGSSLROOTCERT to that file (the URI in Secret {cluster}-app sets no sslmode or CA)",
                target.host
            ),
            None => "give the server's CA with sslrootcert=/path (or PGSSLROOTCERT), or sslmode=disable on a trusted network".into(),
        };
        return Error::Key(format!("TLS to PostgreSQL at {place} failed: {msg}; {fix}"));
    }
    Error::Other(format!(
        "cannot reach PostgreSQL at {place}: {msg}; check --postgres and that the server is running"
    ))
}

/// Which server instance a session reached. Behind a load-balanced service (CloudNativePG's
/// `-r` and `-ro`) each connection may land on another instance, and an exported snapshot
/// exists only on the one that exported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    pub in_recovery: bool,
    started: String,
    address: String,
}

impl ServerIdentity {
    pub async fn of(client: &Client) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_postmaster_start_time()::text,
                        coalesce(pg_catalog.host(pg_catalog.inet_server_addr()), '') || ':' ||
                        coalesce(pg_catalog.inet_server_port()::text, '')",
                &[],
            )
            .await
            .map_err(|e| pg_error("asking which server this is", e))?;
        Ok(ServerIdentity {
            in_recovery: row.get(0),
            started: row.get(1),
            address: row.get(2),
        })
    }
}

/// What to point `--postgres` at instead of a standby or a load-balanced service.
fn primary_hint(target: &PgTarget) -> String {
    match cloudnative_pg_cluster(&target.host) {
        Some(c) => format!("point --postgres at the primary: CloudNativePG's {c}-rw service, never {c}-r or {c}-ro"),
        None => "point --postgres at the primary server itself, not at a standby or a load-balanced service".into(),
    }
}

/// Sessions to `target` reached different servers.
pub fn different_servers(target: &PgTarget) -> Error {
    Error::Usage(format!(
        "connections to {} reach different PostgreSQL servers (a load-balanced service), so they cannot share one snapshot; {}",
        target.describe(),
        primary_hint(target)
    ))
}

impl PgTarget {
    /// A session on the primary: a standby is refused, and so is a service that spreads
    /// connections over several servers (a second session must reach the same one).
    pub async fn connect_primary(&self) -> Result<(Client, ServerIdentity)> {
        let client = self.connect().await?;
        let server = ServerIdentity::of(&client).await?;
        if server.in_recovery {
            return Err(Error::Usage(format!(
                "{} is a standby (in recovery); {}",
                self.describe(),
                primary_hint(self)
            )));
        }
        let probe = self.connect().await?;
        if ServerIdentity::of(&probe).await? != server {
            return Err(different_servers(self));
        }
        Ok((client, server))
    }
}

/// The cluster name in a CloudNativePG service host (`<cluster>-rw`, `-ro` or `-r`, with or
/// without `.<namespace>[.svc[.<domain>]]`), for messages that name its Secrets.
pub fn cloudnative_pg_cluster(host: &str) -> Option<&str> {
    let service = host.split('.').next()?;
    ["-rw", "-ro", "-r"]
        .iter()
        .find_map(|s| service.strip_suffix(s))
        .filter(|c| !c.is_empty())
}

/// Name the database in a failure that does not already: "copying table x: the connection
/// was closed" alone does not say which server went away.
pub fn in_database(target: &PgTarget, e: Error) -> Error {
    let place = target.describe();
    match e {
        Error::Other(m) if !m.contains(&place) => Error::Other(format!("database {place}: {m}")),
        other => other,
    }
}

/// Map a PostgreSQL error to drydock's kinds, saying what was being done.
pub fn pg_error(doing: &str, e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => Error::Key(format!(
            "{doing}: permission denied: {}; grant the backup user SELECT on every table (or use the table owner)",
            db.message()
        )),
        Some(db) => Error::Other(format!("{doing}: {} ({})", db.message(), db.code().code())),
        None if e.is_closed() => Error::Other(format!("{doing}: the PostgreSQL connection was closed (server restart?)")),
        None => {
            let mut msg = e.to_string();
            if let Some(s) = std::error::Error::source(&e) {
                msg = format!("{msg}: {s}");
            }
            Error::Other(format!("{doing}: {msg}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_refuses_passwords_on_the_command_line() {
        let t = PgTarget::parse(
            "postgresql://harbor@db.example:6543/registry?sslmode=verify-full",
            true,
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str(), t.dbname.as_str()),
            ("db.example", 6543, "harbor", "registry")
        );
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        assert!(matches!(
            PgTarget::parse("postgresql://u:secret@h/db", true),
            Err(Error::Usage(_))
        ));
        let t = PgTarget::parse("postgresql://u:s%40cret@h/db", false).unwrap();
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert!(!t.describe().contains("cret"));
        assert!(PgTarget::parse("mysql://h/db", true).is_err());
        assert!(PgTarget::parse("postgresql://h/db?sslmode=bogus", true).is_err());
        assert!(PgTarget::parse("postgresql://h/db?foo=1", true).is_err());
        let t = PgTarget::parse("postgresql:///db?host=/tmp/sock&port=7000", true).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("/tmp/sock", 7000));
    }

    #[test]
    fn children_verify_the_server_as_drydock_does() {
        let env_of = |url: &str| {
            let t = PgTarget::parse(url, true).unwrap();
            let env = t.libpq_env();
            let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            (t, get("PGSSLMODE"), get("PGSSLROOTCERT"))
        };
        let ca = "sslrootcert=/etc/ca.pem";
        for (mode, child) in [
            ("prefer", "verify-full"),
            ("require", "verify-full"),
            ("verify-ca", "verify-ca"),
            ("verify-full", "verify-full"),
        ] {
            let (_, m, root) = env_of(&format!("postgresql://u@h/db?sslmode={mode}&{ca}"));
            assert_eq!(m.as_deref(), Some(child), "{mode}");
            assert_eq!(root.as_deref(), Some("/etc/ca.pem"), "{mode}");
        }
        let (_, m, root) = env_of(&format!("postgresql://u@h/db?sslmode=disable&{ca}"));
        assert_eq!((m.as_deref(), root), (Some("disable"), None));
        // A prefer connection that found no TLS: the child does what drydock did.
        let (t, _, _) = env_of("postgresql://u@h/db?sslmode=prefer");
        t.plaintext.store(true, Ordering::Relaxed);
        let env = t.libpq_env();
        assert!(env.contains(&("PGSSLMODE", "disable".into())), "{env:?}");
        // No key, option or other variable of drydock's reaches the child.
        let names: Vec<&str> = env.iter().map(|(n, _)| *n).collect();
        assert!(names.iter().all(|n| n.starts_with("PG")), "{names:?}");
    }

    #[test]
    fn cloudnative_pg_service_hosts_name_their_cluster() {
        for (host, cluster) in [
            ("harbor-db-rw", Some("harbor-db")),
            ("harbor-db-ro.harbor", Some("harbor-db")),
            ("pg-r.ns.svc.cluster.local", Some("pg")),
            ("-rw.ns", None),
            ("db.example.com", None),
            ("127.0.0.1", None),
        ] {
            assert_eq!(cloudnative_pg_cluster(host), cluster, "{host}");
        }
    }

    #[test]
    fn hostaddr_reaches_libpq_children() {
        let t = PgTarget::parse(
            "postgresql://app@harbor-db-rw.harbor:5432/app?hostaddr=127.0.0.1",
            true,
        )
        .unwrap();
        assert_eq!(t.host, "harbor-db-rw.harbor");
        assert!(t
            .libpq_env()
            .contains(&("PGHOSTADDR", "127.0.0.1".to_string())));
        assert!(PgTarget::parse("postgresql://h/db?hostaddr=not-an-ip", true).is_err());
    }

    #[test]
    fn pgpass_fields_unescape() {
        assert_eq!(
            split_pgpass(r"h:5432:*:u:p\:w\\d"),
            vec!["h", "5432", "*", "u", r"p:w\d"]
        );
    }
}
