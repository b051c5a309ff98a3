//! `drydock harbor read-only on|off`, and what `backup --harbor-url` does around a
//! snapshot: health check, Harbor version, read-only for the duration, secretKey check.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{Context, HarborOpts, Output};
use crate::error::{exit, Error, Result};
use crate::harbor::api::{self, on_off, HarborClient, ReadOnlyGuard, Settings};
use crate::harbor::secretkey;

#[derive(Subcommand, Debug)]
pub enum HarborCommand {
    /// Show Harbor's read-only mode, or turn it on or off. Needs no repository and no key;
    /// made to run as a Velero pre/post backup exec hook (no TTY, bounded by --harbor-timeout).
    ReadOnly(ReadOnlyArgs),
}

#[derive(Args, Debug)]
pub struct ReadOnlyArgs {
    /// `on` or `off`; without it, print the current value.
    #[arg(value_enum)]
    pub state: Option<OnOff>,
    #[command(flatten)]
    pub harbor: HarborOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// `backup --harbor-read-only`: how hard to try to hold Harbor still.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Quiesce {
    /// Fail the backup, writing nothing, when Harbor cannot be made read-only.
    Required,
    /// Warn and back up unquiesced when Harbor cannot be made read-only.
    BestEffort,
    /// Never switch read-only (still check health and record the version).
    Off,
}

/// What the backup learnt from Harbor, for the snapshot.
#[derive(Clone, Debug, Default)]
pub struct HarborState {
    /// Harbor's version from /api/v2.0/systeminfo.
    pub version: Option<String>,
    /// Harbor was read-only for the whole backup.
    pub quiesced: bool,
}

/// `--harbor-timeout`: a duration like 30s, 2m or 1m30s.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    let d = super::backup::parse_duration(s)?;
    d.to_std().map_err(|e| format!("{s:?}: {e}"))
}

impl HarborOpts {
    pub fn settings(&self) -> Option<Settings> {
        self.harbor_url.as_ref().map(|url| Settings {
            url: url.clone(),
            username: self.harbor_username.clone(),
            password_file: self.harbor_password_file.clone(),
            // Empty means none: a Kustomize component can only blank a ConfigMap value.
            ca: self.harbor_ca.clone().filter(|p| !p.as_os_str().is_empty()),
            timeout: self.harbor_timeout,
            allow_http: self.harbor_allow_http,
        })
    }

    /// A client when --harbor-url is given.
    pub fn client(&self) -> Result<Option<HarborClient>> {
        self.settings().map(|s| HarborClient::new(&s)).transpose()
    }
}

pub async fn run(_ctx: &Context, command: HarborCommand) -> Result<Output> {
    match command {
        HarborCommand::ReadOnly(args) => read_only(args).await,
    }
}

async fn read_only(args: ReadOnlyArgs) -> Result<Output> {
    let client = args.harbor.client()?.ok_or_else(|| {
        Error::Usage("no Harbor given: use --harbor-url URL or DRYDOCK_HARBOR_URL".into())
    })?;
    let timeout = client.timeout();
    let url = client.url().to_string();
    let want = args.state.map(|s| s == OnOff::On);
    let work = async {
        let before = client.read_only_setting().await?;
        let Some(want) = want else {
            return Ok((before, before.value));
        };
        if before.value == want {
            return Ok((before, want));
        }
        if !before.editable {
            return Err(api::locked_error(&url));
        }
        client.put_read_only(want).await?;
        let after = client.read_only().await?;
        if after != want {
            return Err(Error::Other(format!(
                "Harbor at {url} accepted read_only={want} but still reports {after}; check Harbor's core logs"
            )));
        }
        Ok((before, after))
    };
    // One bound for the whole command, as a hook's timeout expects.
    let (before, now) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| {
            Error::Other(format!(
                "Harbor at {url} did not finish answering within {}s; check that Harbor is up, or raise --harbor-timeout",
                timeout.as_secs_f64()
            ))
        })??;
    let changed = before.value != now;
    let text = match (want, changed) {
        (None, _) => format!("Harbor read-only mode: {}\n", on_off(now)),
        (Some(_), true) => format!(
            "Harbor read-only mode: {} -> {}\n",
            on_off(before.value),
            on_off(now)
        ),
        (Some(_), false) => format!(
            "Harbor read-only mode: {} -> {} (unchanged)\n",
            on_off(before.value),
            on_off(now)
        ),
    };
    Ok(Output::ok(
        text,
        json!({
            "harbor_url": url,
            "previous": before.value,
            "read_only": now,
            "changed": changed,
            "editable": before.editable,
        }),
    ))
}

/// Around `backup`: with --harbor-url, check health (fail before writing anything when the
/// registry or database is unhealthy), read the Harbor version for the snapshot, and hold
/// Harbor read-only while `work` runs, putting the previous value back however it ends.
/// Then check for the secretKey.
pub async fn around_backup<F, Fut>(
    opts: &HarborOpts,
    quiesce: Quiesce,
    secret_key: SecretKeyCheck,
    work: F,
) -> Result<Output>
where
    F: FnOnce(HarborState) -> Fut,
    Fut: Future<Output = Result<Output>>,
{
    let Some(client) = opts.client()? else {
        return Ok(secret_key.apply(work(HarborState::default()).await?));
    };
    let url = client.url().to_string();
    let health = client.health().await?;
    let unhealthy = check_health(&url, &health)?;
    let info = client.systeminfo().await?;
    let version = Some(info.harbor_version.clone());
    let guard = match quiesce {
        Quiesce::Off => None,
        Quiesce::Required => Some(ReadOnlyGuard::acquire(client).await?),
        Quiesce::BestEffort => match ReadOnlyGuard::acquire(client).await {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!("{e}; backing up anyway without read-only mode (--harbor-read-only best-effort): the snapshot is not quiesced");
                None
            }
        },
    };
    let (mut out, previous, changed) = match guard {
        Some(guard) => {
            let (previous, changed) = (guard.previous(), guard.changed());
            let state = HarborState {
                version,
                quiesced: true,
            };
            (guard.hold(work(state)).await?, Some(previous), changed)
        }
        None => {
            let state = HarborState {
                version,
                quiesced: false,
            };
            (work(state).await?, None, false)
        }
    };
    out.text += &format!(
        "Harbor {} at {url}: {}\n",
        info.harbor_version,
        match (previous, changed) {
            (None, _) => "not read-only during the backup (not quiesced)",
            (Some(_), true) => "read-only during the backup, then put back to off",
            (Some(_), false) => "read-only before and after the backup (left on)",
        }
    );
    if let Some(o) = out.json.as_object_mut() {
        o.insert(
            "harbor".into(),
            json!({
                "url": url,
                "harbor_version": info.harbor_version,
                "status": health.status,
                "unhealthy_components": unhealthy,
                "read_only_before": previous,
                "read_only_set_by_backup": changed,
                "quiesced": previous.is_some(),
            }),
        );
    }
    Ok(secret_key.apply(out))
}

/// Fail before anything is written when the registry or the database is unhealthy; warn
/// about other components. Returns the unhealthy components' names.
fn check_health(url: &str, health: &api::Health) -> Result<Vec<String>> {
    let critical = health.critical();
    if !critical.is_empty() {
        let details: Vec<String> = health
            .unhealthy
            .iter()
            .filter(|(n, _)| critical.contains(&n.as_str()))
            .map(|(n, e)| {
                if e.is_empty() {
                    n.clone()
                } else {
                    format!("{n}: {e}")
                }
            })
            .collect();
        return Err(Error::Other(format!(
            "Harbor at {url} reports its {} unhealthy ({}); nothing was backed up — fix Harbor and run again",
            critical.join(" and "),
            details.join("; ")
        )));
    }
    for (name, err) in &health.unhealthy {
        let err = if err.is_empty() {
            String::new()
        } else {
            format!(" ({err})")
        };
        tracing::warn!("Harbor at {url}: component {name} is unhealthy{err}; backing up anyway");
    }
    Ok(health.unhealthy.iter().map(|(n, _)| n.clone()).collect())
}

/// Whether the configuration inputs hold Harbor's secretKey, decided before the backup.
pub struct SecretKeyCheck {
    found: secretkey::Found,
    database: bool,
    strict: bool,
}

impl SecretKeyCheck {
    pub fn new(config: &[PathBuf], database: bool, strict: bool) -> Self {
        SecretKeyCheck {
            found: secretkey::find(config),
            database,
            strict,
        }
    }

    /// The key the backup captures, to check the database with: the first key file found.
    pub fn key_check(&self) -> Option<crate::harbor::db::encrypted::KeyCheck> {
        use crate::harbor::db::encrypted::{HarborKey, KeyCheck};
        let path = self.found.keys.first()?;
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
        let key = HarborKey::from_file_bytes(&bytes)?;
        Some(KeyCheck::new(path.display().to_string(), key))
    }

    /// Record `secret_key_found`; with a database and no key, warn (and with --strict,
    /// make the result partial: exit 3).
    pub fn apply(self, mut out: Output) -> Output {
        let found = self.found.found();
        let missing = self.database && !found;
        if missing {
            let warning = self.found.warning();
            tracing::warn!("{warning}");
            if self.strict {
                out.exit = out.exit.max(exit::PARTIAL);
                if let Some(w) = out.json.get_mut("warnings").and_then(|w| w.as_array_mut()) {
                    w.push(json!(warning));
                }
            }
        }
        if let Some(o) = out.json.as_object_mut() {
            o.insert("secret_key_found".into(), json!(found));
        }
        out
    }
}
