//! Harbor's API: `drydock harbor read-only`, and `backup --harbor-url` (health check, Harbor
//! version, read-only for the duration, always put back), against a small fake Harbor; and
//! the secretKey check against a real PostgreSQL.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::{self, PASSWORD};
use common::*;
use serde_json::{json, Value};

const VERSION: &str = "v2.12.0-abcdef12";
/// base64("admin:secret")
const GOOD_AUTH: &str = "Basic YWRtaW46c2VjcmV0";

// ---------------------------------------------------------------- fake Harbor

#[derive(Debug)]
struct State {
    read_only: bool,
    /// false: harbor-core runs with CONFIG_OVERWRITE_JSON set, and answers as Harbor does
    /// then (src/controller/config/controller.go): every item `"editable": false`, and
    /// every PUT refused with 403.
    editable: bool,
    reject_auth: bool,
    /// Components reported unhealthy by /health.
    unhealthy: Vec<&'static str>,
    /// Every PUT's read_only value, in order.
    puts: Vec<bool>,
    /// Every request: method and path.
    requests: Vec<String>,
}

/// A tiny HTTP/1.1 server speaking the four endpoints drydock uses, on a loopback port, in
/// a thread; optionally over TLS with a certificate from a fresh test CA.
struct FakeHarbor {
    url: String,
    state: Arc<Mutex<State>>,
    /// The CA certificate, when serving TLS.
    ca: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeHarbor {
    fn start() -> Self {
        Self::start_with(false)
    }

    fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            read_only: false,
            editable: true,
            reject_auth: false,
            unhealthy: Vec::new(),
            puts: Vec::new(),
            requests: Vec::new(),
        }));
        let (tls_config, ca, dir) = if tls {
            let (config, ca, dir) = tls_server_config();
            (Some(config), Some(ca), Some(dir))
        } else {
            (None, None, None)
        };
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = shared.clone();
                let tls_config = tls_config.clone();
                std::thread::spawn(move || match tls_config {
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(server, conn), &state);
                    }
                    None => serve(conn, &state),
                });
            }
        });
        let scheme = if tls { "https" } else { "http" };
        FakeHarbor {
            url: format!("{scheme}://127.0.0.1:{port}"),
            state,
            ca,
            _dir: dir,
        }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    fn read_only(&self) -> bool {
        self.state.lock().unwrap().read_only
    }

    fn puts(&self) -> Vec<bool> {
        self.state.lock().unwrap().puts.clone()
    }
}

/// One request on one connection (the server answers `Connection: close`).
fn serve<S: Read + Write>(stream: S, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (code, reply) = respond(state, &method, &path, &auth, &body);
    let reply = reply.to_string();
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
}

fn respond(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {path}"));
    let authorized = !s.reject_auth && auth == GOOD_AUTH;
    let unauthorized = (
        401,
        json!({"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]}),
    );
    match (method, path) {
        ("GET", "/api/v2.0/health") => {
            let components: Vec<Value> = ["core", "database", "jobservice", "registry", "trivy"]
                .iter()
                .map(|c| {
                    if s.unhealthy.contains(c) {
                        json!({"name": c, "status": "unhealthy", "error": "connection refused"})
                    } else {
                        json!({"name": c, "status": "healthy"})
                    }
                })
                .collect();
            let status = if s.unhealthy.is_empty() {
                "healthy"
            } else {
                "unhealthy"
            };
            (200, json!({"status": status, "components": components}))
        }
        ("GET", "/api/v2.0/systeminfo") if authorized => (
            200,
            json!({"harbor_version": VERSION, "read_only": s.read_only, "registry_storage_provider_name": "filesystem"}),
        ),
        ("GET", "/api/v2.0/configurations") if authorized => (
            200,
            json!({
                "auth_mode": {"value": "db_auth", "editable": s.editable},
                "project_creation_restriction": {"value": "everyone", "editable": s.editable},
                "read_only": {"value": s.read_only, "editable": s.editable},
            }),
        ),
        ("PUT", "/api/v2.0/configurations") if authorized => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(ro) = v.get("read_only").and_then(Value::as_bool) else {
                return (400, json!({"errors": [{"message": "bad body"}]}));
            };
            s.puts.push(ro);
            if !s.editable {
                return (
                    403,
                    json!({"errors": [{"code": "FORBIDDEN", "message": "current config is init by env variable: CONFIG_OVERWRITE_JSON, it cannot be updated"}]}),
                );
            }
            s.read_only = ro;
            (200, Value::Null)
        }
        (_, "/api/v2.0/systeminfo" | "/api/v2.0/configurations") => unauthorized,
        _ => (404, json!({"errors": [{"code": "NOT_FOUND"}]})),
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn tls_server_config() -> (Arc<rustls::ServerConfig>, PathBuf, tempfile::TempDir) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = common::tls::make_pki(d, "drydock harbor test CA", "IP:127.0.0.1");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let ca = pki.ca_cert.clone();
    (Arc::new(config), ca, dir)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A "PostgreSQL" that accepts connections and never answers: a backup against it hangs
/// in the database part until it is killed.
fn blackhole_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

const PW: &[(&str, &str)] = &[("HARBOR_PASSWORD", "secret")];

fn harbor(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_env(&[&["harbor", "read-only"], args].concat(), env)
}

fn config_dir(root: &Path) -> PathBuf {
    let etc = root.join("etc/harbor");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("harbor.yml"), "hostname: harbor.example.com\n").unwrap();
    etc
}

fn snapshot_count(repo: &Repo) -> usize {
    let r = repo.id(&["--json", "snapshots"]);
    r.expect(0);
    r.json()["snapshots"].as_array().unwrap().len()
}

// ---------------------------------------------------------------- harbor read-only

#[test]
fn read_only_on_and_off_change_the_value() {
    let h = FakeHarbor::start();
    let on = harbor(&["on", "--harbor-url", &h.url], PW);
    on.expect(0);
    assert!(on.stdout.contains("off -> on"), "{}", on.stdout);
    assert!(h.read_only());
    assert_eq!(h.puts(), vec![true]);

    // Without a state: the current value, nothing changed.
    let show = harbor(&["--harbor-url", &h.url], PW);
    show.expect(0);
    assert!(show.stdout.contains(": on"), "{}", show.stdout);

    // The password from a file (one trailing newline ignored), JSON output.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let off = run(&[
        "--json",
        "harbor",
        "read-only",
        "off",
        "--harbor-url",
        &format!("{}/", h.url),
        "--harbor-password-file",
        pw.to_str().unwrap(),
    ]);
    off.expect(0);
    let j = off.json();
    assert_eq!(j["previous"], true);
    assert_eq!(j["read_only"], false);
    assert_eq!(j["changed"], true);
    assert!(!off.stdout.contains("secret"));
    assert!(!h.read_only());

    // Already off: no PUT, exit 0 (a post hook run twice is harmless).
    let again = harbor(&["off", "--harbor-url", &h.url, "--json"], PW);
    again.expect(0);
    assert_eq!(again.json()["changed"], false);
    assert_eq!(h.puts(), vec![true, false]);

    // The URL from the environment.
    harbor(
        &["on"],
        &[
            ("HARBOR_PASSWORD", "secret"),
            ("DRYDOCK_HARBOR_URL", &h.url),
        ],
    )
    .expect(0);
    assert!(h.read_only());
}

#[test]
fn wrong_or_missing_credentials() {
    let h = FakeHarbor::start();
    harbor(
        &["on", "--harbor-url", &h.url],
        &[("HARBOR_PASSWORD", "wrong")],
    )
    .expect_error(5, "check HARBOR_USERNAME / password");
    harbor(
        &["on", "--harbor-url", &h.url],
        &[("HARBOR_PASSWORD", "secret"), ("HARBOR_USERNAME", "bob")],
    )
    .expect_error(5, "\"bob\"");
    h.set(|s| s.reject_auth = true);
    harbor(&["on", "--harbor-url", &h.url], PW).expect_error(5, "HTTP 401");
    // No password at all: a usage error naming both ways to give one.
    harbor(&["on", "--harbor-url", &h.url], &[]).expect_error(2, "HARBOR_PASSWORD");
    // Never as an argument.
    let r = harbor(
        &["on", "--harbor-url", &h.url, "--harbor-password", "secret"],
        &[],
    );
    r.expect(2);
    assert!(h.puts().is_empty());
    assert!(!h.read_only());
}

/// With CONFIG_OVERWRITE_JSON set, each `--harbor-read-only` mode does what it says, and
/// the snapshot records whether it was quiesced.
#[test]
fn config_overwrite_json_in_each_read_only_mode() {
    let h = FakeHarbor::start();
    h.set(|s| s.editable = false);
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let etc = config_dir(dir.path());
    let etc = etc.to_str().unwrap();
    let run = |mode: &str| {
        repo.with_key_env(
            &repo.backup_key,
            &backup_args(&h.url, &["--config", etc, "--harbor-read-only", mode]),
            PW,
        )
    };
    let r = run("required");
    r.expect_error(2, "CONFIG_OVERWRITE_JSON");
    assert!(
        r.stderr.contains("whatever the variable holds") && !r.stderr.contains("remove read_only"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot_count(&repo), 0);

    let r = run("best-effort");
    r.expect(0);
    assert!(r.stderr.contains("not quiesced"), "{}", r.stderr);
    assert_eq!(r.json()["quiesced"], false);
    assert_eq!(r.json()["harbor"]["quiesced"], false);
    let off = run("off");
    off.expect(0);
    assert_eq!(off.json()["quiesced"], false);
    assert!(
        h.puts().is_empty(),
        "no mode tried a PUT it knew would fail"
    );
    assert_eq!(snapshot_count(&repo), 2);

    // A Harbor that can be switched: quiesced, and `show` and `snapshots` say so.
    h.set(|s| s.editable = true);
    let q = run("required");
    q.expect(0);
    assert_eq!(q.json()["quiesced"], true);
    let id = q.json()["snapshot"].as_str().unwrap().to_string();
    let show = repo.id(&["--json", "show", &id]);
    assert_eq!(show.json()["quiesced"], true);
    assert!(repo.id(&["show", &id]).stdout.contains("quiesced: yes"));
    let list = repo.id(&["--json", "snapshots"]).json();
    let quiesced: Vec<bool> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["quiesced"].as_bool().unwrap())
        .collect();
    assert_eq!(quiesced.iter().filter(|q| **q).count(), 1, "{list}");
}

#[test]
fn a_locked_setting_is_a_usage_error() {
    let h = FakeHarbor::start();
    h.set(|s| s.editable = false);
    harbor(&["on", "--harbor-url", &h.url], PW).expect_error(2, "CONFIG_OVERWRITE_JSON");
    assert!(
        h.puts().is_empty(),
        "no PUT once the setting is known to be locked"
    );
    // Asking for the value it already has is fine.
    harbor(&["off", "--harbor-url", &h.url], PW).expect(0);
}

#[test]
fn unreachable_or_missing_harbor() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let r = harbor(&["on", "--harbor-url", &url], PW);
    r.expect_error(1, "cannot reach Harbor at");
    assert!(r.error_lines()[0].contains(&url));
    harbor(&["on"], PW).expect_error(2, "--harbor-url");
    harbor(&["on", "--harbor-url", "harbor.example.com"], PW).expect_error(2, "--harbor-url");
    // A server that accepts and never answers: bounded by --harbor-timeout.
    let url = format!("http://127.0.0.1:{}", blackhole_port());
    let started = Instant::now();
    harbor(&["on", "--harbor-url", &url, "--harbor-timeout", "2s"], PW)
        .expect_error(1, "--harbor-timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn tls_needs_the_ca() {
    let h = FakeHarbor::start_tls();
    let ca = h.ca.clone().unwrap();
    harbor(&["on", "--harbor-url", &h.url], PW).expect_error(5, "--harbor-ca");
    assert!(h.puts().is_empty());
    harbor(
        &[
            "on",
            "--harbor-url",
            &h.url,
            "--harbor-ca",
            ca.to_str().unwrap(),
        ],
        PW,
    )
    .expect(0);
    assert!(h.read_only());
    harbor(
        &[
            "on",
            "--harbor-url",
            &h.url,
            "--harbor-ca",
            "/nonexistent.pem",
        ],
        PW,
    )
    .expect_error(2, "--harbor-ca");
}

// ---------------------------------------------------------------- backup --harbor-url

fn backup_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["--json", "backup", "--harbor-url", url], extra].concat()
}

#[test]
fn backup_records_the_version_and_puts_read_only_back() {
    let h = FakeHarbor::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let etc = config_dir(dir.path());
    let b = repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--config", etc.to_str().unwrap()]),
        PW,
    );
    b.expect(0);
    let j = b.json();
    assert_eq!(j["harbor"]["harbor_version"], VERSION);
    assert_eq!(j["harbor"]["read_only_before"], false);
    assert_eq!(j["harbor"]["read_only_set_by_backup"], true);
    assert_eq!(j["secret_key_found"], false);
    assert!(!b.stdout.contains("secret\""));
    assert_eq!(h.puts(), vec![true, false]);
    assert!(!h.read_only());
    // Health first, then the version, then the switch.
    let reqs = h.state.lock().unwrap().requests.clone();
    assert_eq!(reqs[0], "GET /api/v2.0/health");
    assert_eq!(reqs[1], "GET /api/v2.0/systeminfo");

    let show = repo.id(&["--json", "show", "latest"]);
    show.expect(0);
    assert_eq!(show.json()["harbor_version"], VERSION);
    let text = repo.id(&["show", "latest"]);
    assert!(text.stdout.contains(VERSION), "{}", text.stdout);
    let list = repo.id(&["--json", "snapshots"]);
    assert_eq!(list.json()["snapshots"][0]["harbor_version"], VERSION);

    // Without --harbor-url nothing is recorded and Harbor is not asked.
    let before = h.state.lock().unwrap().requests.len();
    repo.backup(&[&etc]);
    assert_eq!(h.state.lock().unwrap().requests.len(), before);
    let show = repo.id(&["--json", "show", "latest"]);
    assert_eq!(show.json()["harbor_version"], Value::Null);
}

#[test]
fn already_read_only_harbor_stays_read_only() {
    let h = FakeHarbor::start();
    h.set(|s| s.read_only = true);
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let etc = config_dir(dir.path());
    let b = repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--config", etc.to_str().unwrap()]),
        PW,
    );
    b.expect(0);
    assert_eq!(b.json()["harbor"]["read_only_before"], true);
    assert_eq!(b.json()["harbor"]["read_only_set_by_backup"], false);
    assert!(h.puts().is_empty());
    assert!(h.read_only());
    // Even when the backup fails.
    let bad = format!("postgresql://harbor@127.0.0.1:{}/registry", closed_port());
    repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--postgres", &bad]),
        PW,
    )
    .expect(1);
    assert!(h.puts().is_empty());
    assert!(h.read_only());
}

#[test]
fn a_failed_backup_still_puts_read_only_back() {
    let h = FakeHarbor::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let bad = format!("postgresql://harbor@127.0.0.1:{}/registry", closed_port());
    let r = repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--postgres", &bad]),
        PW,
    );
    r.expect_error(1, "PostgreSQL");
    assert_eq!(h.puts(), vec![true, false]);
    assert!(!h.read_only());
    assert_eq!(snapshot_count(&repo), 0);

    // Refused credentials: nothing changed, nothing written.
    let etc = config_dir(dir.path());
    let r = repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--config", etc.to_str().unwrap()]),
        &[("HARBOR_PASSWORD", "wrong")],
    );
    r.expect_error(5, "HARBOR_USERNAME");
    assert_eq!(h.puts(), vec![true, false]);
    // A locked setting: exit 2 before anything is written.
    h.set(|s| s.editable = false);
    let r = repo.with_key_env(
        &repo.backup_key,
        &backup_args(&h.url, &["--config", etc.to_str().unwrap()]),
        PW,
    );
    r.expect_error(2, "CONFIG_OVERWRITE_JSON");
    assert_eq!(h.puts(), vec![true, false]);
    // Unreachable: exit 1.
    let gone = format!("http://127.0.0.1:{}", closed_port());
    repo.with_key_env(
        &repo.backup_key,
        &backup_args(&gone, &["--config", etc.to_str().unwrap()]),
        PW,
    )
    .expect_error(1, "cannot reach Harbor");
    assert_eq!(snapshot_count(&repo), 0);
}

#[test]
fn unhealthy_registry_or_database_fails_before_anything_is_written() {
    let h = FakeHarbor::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let etc = config_dir(dir.path());
    let args = backup_args(&h.url, &["--config", etc.to_str().unwrap()]);
    for bad in ["registry", "database"] {
        h.set(|s| s.unhealthy = vec![bad, "trivy"]);
        repo.with_key_env(&repo.backup_key, &args, PW)
            .expect_error(1, bad);
        assert!(h.puts().is_empty());
        assert_eq!(snapshot_count(&repo), 0);
    }
    // Another component unhealthy: a warning, and the backup goes on.
    h.set(|s| s.unhealthy = vec!["trivy"]);
    let r = repo.with_key_env(&repo.backup_key, &args, PW);
    r.expect(0);
    assert!(r.stderr.contains("trivy is unhealthy"), "{}", r.stderr);
    assert_eq!(r.json()["harbor"]["unhealthy_components"], json!(["trivy"]));
    assert_eq!(h.puts(), vec![true, false]);
    assert_eq!(snapshot_count(&repo), 1);
}

#[test]
fn a_signal_mid_backup_puts_read_only_back() {
    let h = FakeHarbor::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let hang = format!(
        "postgresql://harbor@127.0.0.1:{}/registry",
        blackhole_port()
    );
    for (n, (signal, name)) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")]
        .into_iter()
        .enumerate()
    {
        let mut all: Vec<&str> = repo.args.iter().map(String::as_str).collect();
        all.extend_from_slice(&["--key", repo.backup_key.to_str().unwrap()]);
        all.extend_from_slice(&["backup", "--harbor-url", &h.url, "--postgres", &hang]);
        let child = command(&all)
            .env("HARBOR_PASSWORD", "secret")
            .env_remove("PGPASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until Harbor is read-only and the backup is stuck in the database part.
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.puts().len() < 2 * n + 1 {
            assert!(Instant::now() < deadline, "the backup never set read-only");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(h.read_only());
        let started = Instant::now();
        unsafe { libc::kill(child.id() as i32, signal) };
        wait(child).expect_error(1, &format!("interrupted by {name}"));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!h.read_only());
        assert_eq!(h.puts().len(), 2 * n + 2);
        assert_eq!(h.puts()[2 * n..], [true, false]);
    }
    // The repository is still valid.
    repo.bk(&["check"]).expect(0);
}

// ---------------------------------------------------------------- secretKey

const PG_ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

#[test]
fn a_database_without_the_secret_key_warns_and_strict_exits_3() {
    let pg = pg::shared();
    pg.harbor_copy("sk_src");
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let url = pg.url("sk_src");
    let etc = config_dir(dir.path());
    let etc_s = etc.to_str().unwrap();
    // backup --postgres with these extra arguments, as the CronJob would run it.
    let backup = |extra: &[&str]| {
        let args = [
            &["--json", "backup", "--postgres", &url, "--config", etc_s][..],
            extra,
        ]
        .concat();
        repo.with_key_env(&repo.backup_key, &args, PG_ENV)
    };

    let r = backup(&[]);
    r.expect(0);
    assert_eq!(r.json()["secret_key_found"], false);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("no Harbor secretKey"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(
        warnings[0].contains("cannot be decrypted"),
        "{}",
        warnings[0]
    );

    let r = backup(&["--strict"]);
    r.expect(3);
    let j = r.json();
    assert_eq!(j["secret_key_found"], false);
    assert!(j["warnings"].to_string().contains("secretKey"), "{j}");

    // A file named secretkey that is not 16 bytes does not count, and is named.
    let keys = dir.path().join("data/secret/keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("secretkey"), "short\n").unwrap();
    let data = dir.path().join("data");
    let r = backup(&["--config", data.to_str().unwrap(), "--strict"]);
    r.expect(3);
    assert!(r.stderr.contains("is 6 bytes, not 16"), "{}", r.stderr);

    // docker-compose's 16-byte secretkey among the --config paths: no warning, exit 0 (it
    // is the key the fixture's <enc-v1> values are encrypted with: it opens them).
    std::fs::write(keys.join("secretkey"), "not-a-real-key16\n").unwrap();
    let r = backup(&["--config", data.to_str().unwrap(), "--strict"]);
    r.expect(0);
    assert_eq!(r.json()["secret_key_found"], true);
    assert!(!r.stderr.contains("secretKey"), "{}", r.stderr);
    assert!(!r.stdout.contains("not-a-real-key16"));

    // Without a database part the key is not required, even with --strict.
    let r = repo.with_key_env(
        &repo.backup_key,
        &["--json", "backup", "--config", etc_s, "--strict"],
        &[],
    );
    r.expect(0);
    assert_eq!(r.json()["secret_key_found"], false);
}

#[test]
fn the_secret_key_is_found_in_core_and_secret_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // /etc/core/key given directly.
    let core = dir.path().join("etc/core");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(core.join("key"), "0123456789abcdef").unwrap();
    let j = repo.backup(&[&core.join("key")]);
    assert_eq!(j["secret_key_found"], true);
    // A mounted Kubernetes Secret (harbor-core) with its ..data layout.
    let (_, secret) = harbor_config_tree(&dir.path().join("k8s"), 10);
    let j = repo.backup(&[&secret]);
    assert_eq!(j["secret_key_found"], true);
}

#[test]
fn the_global_timeout_puts_read_only_back() {
    let h = FakeHarbor::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let hang = format!(
        "postgresql://harbor@127.0.0.1:{}/registry",
        blackhole_port()
    );
    let started = Instant::now();
    let r = repo.with_key_env(
        &repo.backup_key,
        &[
            "--timeout",
            "2s",
            "backup",
            "--harbor-url",
            &h.url,
            "--postgres",
            &hang,
        ],
        PW,
    );
    r.expect_error(1, "--timeout");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(h.puts(), vec![true, false]);
    assert!(!h.read_only());
}
