//! Harbor's REST API (`/api/v2.0`): health, system information, and the read-only switch
//! that quiesces Harbor while a backup runs.
//!
//! Every failure becomes one line that says what to check, mapped to drydock's exit codes:
//! Harbor unreachable or failing → [`Error::Other`] (1); a setting locked by
//! `CONFIG_OVERWRITE_JSON` or a missing password → [`Error::Usage`] (2); credentials refused
//! or a certificate not trusted → [`Error::Key`] (5).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::{Error, Result};
use crate::net::{error_chain, is_tls_error};
use crate::secret::Password;

/// Components whose failure makes a backup pointless: the registry's storage and the
/// database are what drydock copies.
pub const CRITICAL_COMPONENTS: &[&str] = &["registry", "database"];

/// How to reach Harbor: base URL, credentials and trust.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub username: String,
    /// A file holding the password; otherwise `HARBOR_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates to trust besides the system and built-in roots.
    pub ca: Option<PathBuf>,
    /// Bound on each request (connect included).
    pub timeout: Duration,
    /// Send the password over plain http:// to a host that is not loopback.
    pub allow_http: bool,
}

/// `GET /api/v2.0/health`.
#[derive(Clone, Debug)]
pub struct Health {
    pub status: String,
    /// Unhealthy components: name and Harbor's error text (possibly empty).
    pub unhealthy: Vec<(String, String)>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.status == "healthy" && self.unhealthy.is_empty()
    }

    /// Unhealthy components a backup cannot do without.
    pub fn critical(&self) -> Vec<&str> {
        self.unhealthy
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| CRITICAL_COMPONENTS.contains(n))
            .collect()
    }

    fn parse(v: &Value) -> Option<Self> {
        let status = v.get("status")?.as_str()?.to_string();
        let unhealthy = v
            .get("components")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.get("status").and_then(Value::as_str) != Some("healthy"))
                    .map(|c| {
                        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                        let err = c.get("error").and_then(Value::as_str).unwrap_or("");
                        (name.to_string(), err.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Health { status, unhealthy })
    }
}

/// `GET /api/v2.0/systeminfo` (authenticated).
#[derive(Clone, Debug)]
pub struct SystemInfo {
    /// Like `v2.12.0-abcdef12`.
    pub harbor_version: String,
    pub read_only: Option<bool>,
}

/// The `read_only` item of `GET /api/v2.0/configurations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOnlySetting {
    pub value: bool,
    /// False when `CONFIG_OVERWRITE_JSON` fixes the value: the API cannot change it.
    pub editable: bool,
}

/// A client for one Harbor instance. The password is never printed (no `Debug`).
pub struct HarborClient {
    base: String,
    username: String,
    password: Option<Password>,
    http: reqwest::Client,
    timeout: Duration,
    /// To build a fresh client outside this runtime (see `ReadOnlyGuard`'s `Drop`).
    settings: Settings,
}

pub fn on_off(v: bool) -> &'static str {
    if v {
        "on"
    } else {
        "off"
    }
}

/// The error for a read-only setting Harbor will not let the API change.
pub fn locked_error(base: &str) -> Error {
    Error::Usage(format!(
        "Harbor at {base} cannot be switched to read-only: harbor-core has CONFIG_OVERWRITE_JSON set \
(the Helm chart's core.configureUserSettings), and while that variable exists Harbor refuses every \
configuration change through its API, whatever the variable holds; remove the variable from harbor-core \
(make those settings in Harbor's UI or API instead), or back up with --harbor-read-only best-effort \
(warns, not quiesced) or off"
    ))
}

impl HarborClient {
    pub fn new(s: &Settings) -> Result<Self> {
        let base = normalize_url(&s.url, s.allow_http)?;
        let password = load_password(s.password_file.as_deref())?;
        let builder = crate::net::http_client_builder(s.ca.as_deref(), "--harbor-ca")?
            .timeout(s.timeout)
            .connect_timeout(s.timeout);
        let http = builder
            .build()
            .map_err(|e| Error::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HarborClient {
            base,
            username: s.username.clone(),
            password,
            http,
            timeout: s.timeout,
            settings: s.clone(),
        })
    }

    /// The base URL, as used in messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn health(&self) -> Result<Health> {
        let v = self
            .request(Method::GET, "/api/v2.0/health", false, None)
            .await?;
        Health::parse(&v).ok_or_else(|| self.unexpected("/api/v2.0/health", "status"))
    }

    pub async fn systeminfo(&self) -> Result<SystemInfo> {
        let path = "/api/v2.0/systeminfo";
        let v = self.request(Method::GET, path, true, None).await?;
        let harbor_version = v
            .get("harbor_version")
            .and_then(Value::as_str)
            .ok_or_else(|| self.unexpected(path, "harbor_version"))?
            .to_string();
        Ok(SystemInfo {
            harbor_version,
            read_only: v.get("read_only").and_then(Value::as_bool),
        })
    }

    /// The `read_only` configuration item: value and whether the API may change it.
    pub async fn read_only_setting(&self) -> Result<ReadOnlySetting> {
        let path = "/api/v2.0/configurations";
        let v = self.request(Method::GET, path, true, None).await?;
        let item = v
            .get("read_only")
            .ok_or_else(|| self.unexpected(path, "read_only"))?;
        // Harbor answers {"value": bool, "editable": bool}; accept a bare bool too.
        let value = item
            .get("value")
            .and_then(Value::as_bool)
            .or_else(|| item.as_bool())
            .ok_or_else(|| self.unexpected(path, "read_only.value"))?;
        let editable = item
            .get("editable")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Ok(ReadOnlySetting { value, editable })
    }

    pub async fn read_only(&self) -> Result<bool> {
        Ok(self.read_only_setting().await?.value)
    }

    /// `PUT /api/v2.0/configurations {"read_only": on}`, refusing early (exit 2) when the
    /// setting is locked.
    pub async fn set_read_only(&self, on: bool) -> Result<()> {
        let current = self.read_only_setting().await?;
        if current.value == on {
            return Ok(());
        }
        if !current.editable {
            return Err(locked_error(&self.base));
        }
        self.put_read_only(on).await
    }

    /// The PUT alone, without looking first.
    pub async fn put_read_only(&self, on: bool) -> Result<()> {
        self.request(
            Method::PUT,
            "/api/v2.0/configurations",
            true,
            Some(json!({ "read_only": on })),
        )
        .await
        .map(drop)
    }

    fn unexpected(&self, path: &str, field: &str) -> Error {
        Error::Other(format!(
            "Harbor at {}: {path} answered without {field:?}; is --harbor-url the address of Harbor 2.x?",
            self.base
        ))
    }

    /// One request; JSON in and out (an empty body reads as null).
    async fn request(
        &self,
        method: Method,
        path: &str,
        auth: bool,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Accept", "application/json");
        if auth {
            let password = self.password.as_ref().ok_or_else(|| {
                Error::Usage(format!(
                    "Harbor at {} needs a password for {path}: give --harbor-password-file FILE or set HARBOR_PASSWORD",
                    self.base
                ))
            })?;
            req = req.basic_auth(&self.username, Some(password.expose()));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&method, path, &e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport_error(&method, path, &e))?;
        if !status.is_success() {
            return Err(self.status_error(&method, path, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            Error::Other(format!(
                "Harbor at {}: {method} {path} did not answer JSON ({e}); is --harbor-url the address of Harbor?",
                self.base
            ))
        })
    }

    fn status_error(&self, method: &Method, path: &str, status: StatusCode, body: &str) -> Error {
        let detail = error_detail(body);
        let base = &self.base;
        let user = &self.username;
        let lower = body.to_ascii_lowercase();
        if method == Method::PUT
            && (lower.contains("can not be modified")
                || lower.contains("cannot be modified")
                || lower.contains("overwrite"))
        {
            return locked_error(base);
        }
        match status {
            StatusCode::UNAUTHORIZED => Error::Key(format!(
                "Harbor at {base} refused the credentials of user {user:?} (HTTP 401 on {path}): check HARBOR_USERNAME / password (--harbor-password-file or HARBOR_PASSWORD)"
            )),
            StatusCode::FORBIDDEN => Error::Key(format!(
                "Harbor at {base} denied {method} {path} to user {user:?} (HTTP 403): check HARBOR_USERNAME / password; read-only mode needs a Harbor system administrator"
            )),
            StatusCode::NOT_FOUND => Error::Other(format!(
                "Harbor at {base}: {method} {path} answered HTTP 404; is --harbor-url the address of Harbor 2.x (scheme, host and port only)?"
            )),
            _ => Error::Other(format!(
                "Harbor at {base}: {method} {path} answered HTTP {}{}; check Harbor's core logs",
                status.as_u16(),
                if detail.is_empty() { String::new() } else { format!(": {detail}") }
            )),
        }
    }

    fn transport_error(&self, method: &Method, path: &str, e: &reqwest::Error) -> Error {
        let base = &self.base;
        let detail = error_chain(e);
        if detail.contains("corrupt message") || detail.contains("InvalidContentType") {
            return Error::Other(format!(
                "Harbor at {base} does not speak TLS ({detail}); use http:// in --harbor-url if Harbor serves plain HTTP there"
            ));
        }
        if is_tls_error(e) {
            return Error::Key(format!(
                "TLS to Harbor at {base} failed: {detail}; give --harbor-ca FILE with the CA (PEM) that signed Harbor's certificate"
            ));
        }
        if e.is_timeout() {
            return Error::Other(format!(
                "Harbor at {base} did not answer {method} {path} within {}s; check that Harbor is up and reachable from here, or raise --harbor-timeout",
                self.timeout.as_secs_f64()
            ));
        }
        Error::Other(format!(
            "cannot reach Harbor at {base}: {detail}; check --harbor-url, that Harbor is running, and DNS, firewall and proxy between here and Harbor"
        ))
    }
}

/// The URL without a trailing `/` or `/api/v2.0`, checked to be http(s), and https unless
/// it is loopback or `allow_http`: every request carries the admin password (basic auth).
fn normalize_url(raw: &str, allow_http: bool) -> Result<String> {
    const OPTION: crate::net::UrlOption = crate::net::UrlOption {
        flag: "--harbor-url",
        secret: "the Harbor password",
        ca_flag: "--harbor-ca",
        allow_flag: "--harbor-allow-http",
    };
    let parsed = crate::net::service_url(raw, &OPTION, true, allow_http)?;
    let mut s = parsed.as_str().trim_end_matches('/').to_string();
    for suffix in ["/api/v2.0", "/api"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = stripped.to_string();
        }
    }
    Ok(s)
}

/// The password from `--harbor-password-file`, else `HARBOR_PASSWORD`.
fn load_password(file: Option<&Path>) -> Result<Option<Password>> {
    crate::secret::load_password(file, "--harbor-password-file", "HARBOR_PASSWORD")
}

/// What an error answer says: Harbor's `{"errors": [{"message"}]}`, or the text itself
/// (not an HTML page).
fn error_detail(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if let Some(m) = v.pointer("/errors/0/message").and_then(Value::as_str) {
            return one_line(m);
        }
    }
    if body.trim_start().starts_with('<') {
        return String::new();
    }
    one_line(body)
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// SIGTERM and SIGINT, caught while Harbor is held read-only.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        let err = |e| Error::Other(format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Harbor in read-only mode for as long as the guard is held. [`ReadOnlyGuard::hold`] runs
/// work under it and always puts the previous value back: on success, on error, and on
/// SIGTERM/SIGINT. A Harbor that was already read-only is left read-only.
pub struct ReadOnlyGuard {
    client: HarborClient,
    previous: bool,
    changed: bool,
    released: bool,
    signals: Signals,
}

impl ReadOnlyGuard {
    /// Turn read-only on (if it is off). Signal handlers are installed first, so a signal
    /// that arrives while the switch is being made is acted on right after.
    pub async fn acquire(client: HarborClient) -> Result<Self> {
        let signals = Signals::install()?;
        let current = client.read_only_setting().await?;
        let mut guard = ReadOnlyGuard {
            client,
            previous: current.value,
            changed: false,
            released: false,
            signals,
        };
        if current.value {
            tracing::info!(harbor = %guard.client.url(), "Harbor is already read-only; leaving it so");
            return Ok(guard);
        }
        if !current.editable {
            guard.released = true;
            return Err(locked_error(guard.client.url()));
        }
        // From here on the value may have changed even if the answer is lost.
        guard.changed = true;
        if let Err(e) = guard.client.put_read_only(true).await {
            // A refusal (credentials, locked setting) changed nothing; a lost answer or a
            // server error may have: make sure it is off again.
            if matches!(e, Error::Other(_)) {
                if let Err(again) = guard.client.put_read_only(false).await {
                    tracing::error!(harbor = %guard.client.url(), error = %again, "could not make sure read-only is off again; check Harbor");
                }
            }
            guard.released = true;
            return Err(e);
        }
        tracing::info!(harbor = %guard.client.url(), "Harbor is read-only for the backup");
        Ok(guard)
    }

    /// The value before the guard: what [`release`](Self::release) puts back.
    pub fn previous(&self) -> bool {
        self.previous
    }

    /// Whether the guard turned read-only on (false when Harbor already was).
    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn client(&self) -> &HarborClient {
        &self.client
    }

    /// Run `work` under the guard and release it whatever happens. On SIGTERM or SIGINT
    /// the work is abandoned, the previous value is put back, and a one-line error returned.
    pub async fn hold<T>(mut self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let outcome = tokio::select! {
            r = work => Ok(r),
            sig = self.signals.recv() => Err(sig),
        };
        if let Err(sig) = outcome {
            tracing::warn!("{sig} received; putting Harbor's read-only mode back before exiting");
        }
        let released = self.release_inner().await;
        match (outcome, released) {
            (Ok(r), Ok(())) => r,
            (Ok(Ok(_)), Err(e)) => Err(e),
            (Ok(Err(e)), Err(r)) => {
                tracing::error!("{r}");
                Err(e)
            }
            (Err(sig), Ok(())) => Err(Error::Other(format!(
                "interrupted by {sig}; Harbor read-only mode put back to {}",
                on_off(self.previous)
            ))),
            (Err(sig), Err(r)) => Err(Error::Other(format!("interrupted by {sig}; {r}"))),
        }
    }

    /// Put back the previous value (nothing to do when Harbor was already read-only).
    pub async fn release(mut self) -> Result<()> {
        self.release_inner().await
    }

    async fn release_inner(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        if !self.changed {
            return Ok(());
        }
        // One retry: a Harbor that is briefly busy must not stay read-only.
        let mut result = self.client.put_read_only(self.previous).await;
        if result.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            result = self.client.put_read_only(self.previous).await;
        }
        match result {
            Ok(()) => {
                tracing::info!(harbor = %self.client.url(), "Harbor read-only mode put back to {}", on_off(self.previous));
                Ok(())
            }
            Err(e) => Err(Error::Other(format!(
                "Harbor read-only mode could not be put back to {}: {e}; run `drydock harbor read-only {} --harbor-url {}`",
                on_off(self.previous),
                on_off(self.previous),
                self.client.url()
            ))),
        }
    }
}

/// The guard dropped without release: its work was cancelled from outside (the global
/// `--timeout`, a panic). Put the value back synchronously, on a thread with its own
/// runtime and client, before the process goes on to exit.
impl Drop for ReadOnlyGuard {
    fn drop(&mut self) {
        if !self.changed || self.released {
            return;
        }
        self.released = true;
        let (settings, previous) = (self.client.settings.clone(), self.previous);
        tracing::warn!(harbor = %self.client.url(), "backup cancelled; putting Harbor's read-only mode back to {}", on_off(previous));
        let result = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(format!("cannot start a runtime: {e}")))?;
            rt.block_on(async { HarborClient::new(&settings)?.put_read_only(previous).await })
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Other("the restoring thread panicked".into())));
        if let Err(e) = result {
            tracing::error!(
                harbor = %self.client.url(),
                error = %e,
                "Harbor was left read-only; run `drydock harbor read-only {} --harbor-url {}`",
                on_off(previous),
                self.client.url()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        let norm = |u: &str| normalize_url(u, false);
        assert_eq!(
            norm("https://harbor.example.com/").unwrap(),
            "https://harbor.example.com"
        );
        assert_eq!(
            norm("http://127.0.0.1:8080/api/v2.0/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            norm("https://h.example/harbor").unwrap(),
            "https://h.example/harbor"
        );
        for bad in ["harbor.example.com", "ftp://h", "", "https://"] {
            assert!(norm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_password_goes_over_plain_http_only_to_loopback_or_when_allowed() {
        for url in ["http://harbor-core", "http://10.1.2.3:8080/api/v2.0"] {
            let err = normalize_url(url, false).unwrap_err();
            assert!(
                matches!(&err, Error::Usage(m) if m.contains("--harbor-allow-http") && m.contains("https://")),
                "{err}"
            );
            assert!(normalize_url(url, true).is_ok());
        }
        for url in [
            "http://localhost:8080",
            "http://[::1]",
            "https://harbor-core",
        ] {
            assert!(normalize_url(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn health_lists_unhealthy_components() {
        let v = json!({"status": "unhealthy", "components": [
            {"name": "core", "status": "healthy"},
            {"name": "trivy", "status": "unhealthy", "error": "down"},
            {"name": "registry", "status": "unhealthy"}]});
        let h = Health::parse(&v).unwrap();
        assert!(!h.healthy());
        assert_eq!(
            h.unhealthy,
            vec![
                ("trivy".to_string(), "down".to_string()),
                ("registry".to_string(), String::new())
            ]
        );
        assert_eq!(h.critical(), vec!["registry"]);
        let ok = Health::parse(&json!({"status": "healthy", "components": []})).unwrap();
        assert!(ok.healthy() && ok.critical().is_empty());
    }
}
