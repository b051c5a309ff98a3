//! The command line: global options, one module per command, output and exit codes.

mod backup;
mod check;
mod completions;
mod databases;
mod drill;
mod forget;
mod harbor;
mod init;
mod key;
mod migrate;
mod prune;
mod restore;
mod restore_project;
mod show;
mod snapshots;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::crypto::KeyFile;
use crate::error::{exit, Error, Result};
use crate::progress::ProgressMode;
use crate::repo::Repository;
use crate::store::{self, Location, S3Options, Store};
use crate::velero::{AccessMode, Bsl};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O, network, server error after retries; verify found differences)
  2  usage or configuration error (bad option, unknown snapshot, no repository, non-empty
     target, other Harbor schema version, pg_dump missing or too old)
  3  partial: finished with warnings that matter (skipped files; with backup --strict,
     a database without Harbor's secretKey)
  4  integrity error: missing or corrupt repository data
  5  key or permission error (wrong key, backup-only key where the identity is needed,
     access denied, database login refused, untrusted TLS certificate)

Secrets are read from files or the environment only, never from arguments.";

#[derive(Parser, Debug)]
#[command(
    name = "drydock",
    version,
    about = "Encrypted, deduplicated backups of Harbor: database, registry blobs and configuration",
    long_about = "drydock backs up a Harbor instance into encrypted, deduplicated, compressed chunks in a \
local directory or S3 (also inside a Velero BackupStorageLocation), and restores or verifies them.\n\n\
Start with `drydock init --repo DIR --identity-out id.txt --backup-key-out backup.key`. Give the CronJob \
only the backup-only key: it can write backups but not read them. Keep the identity offline; restore, \
show and check --read-data need it.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes; `--help` lists them after the command's own.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOpts {
    /// Repository: s3://bucket/prefix, file:///path or a local path.
    #[arg(long, env = "DRYDOCK_REPO", global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// S3-compatible endpoint (MinIO, Ceph, R2…); AWS when absent.
    #[arg(long, env = "DRYDOCK_S3_ENDPOINT", global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region; otherwise AWS_REGION, the AWS config file, or us-east-1.
    #[arg(long, env = "DRYDOCK_S3_REGION", global = true, value_name = "R")]
    pub s3_region: Option<String>,
    /// Address buckets as http://host/bucket (MinIO, Ceph, moto) instead of bucket.host.
    #[arg(long, env = "DRYDOCK_S3_PATH_STYLE", global = true)]
    pub s3_path_style: bool,
    /// Use a Velero BackupStorageLocation (YAML as `kubectl get bsl NAME -o yaml` prints it)
    /// instead of --repo: the repository lives under <prefix>/plugins/drydock in its bucket.
    #[arg(
        long,
        env = "DRYDOCK_VELERO_BSL",
        global = true,
        value_name = "FILE",
        conflicts_with = "repo"
    )]
    pub velero_bsl: Option<PathBuf>,
    /// The BSL's INI credentials file (Velero mounts it at /credentials/cloud); its
    /// `profile` config key picks the section.
    #[arg(
        long,
        env = "AWS_SHARED_CREDENTIALS_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub velero_credentials: Option<PathBuf>,
    /// Where the Secrets a BSL names are mounted (spec.credential, objectStorage.caCertRef,
    /// config.customerKeyEncryptionSecret): key K of Secret S is read from DIR/S/K.
    #[arg(
        long,
        env = "DRYDOCK_VELERO_SECRETS",
        global = true,
        value_name = "DIR",
        default_value = "/velero-secrets"
    )]
    pub velero_secrets: PathBuf,
    /// Write Prometheus metrics to this file (node-exporter textfile collector), atomically.
    #[arg(
        long,
        env = "DRYDOCK_METRICS_TEXTFILE",
        global = true,
        value_name = "PATH"
    )]
    pub metrics_textfile: Option<PathBuf>,
    /// Push Prometheus metrics to this Pushgateway (job "drydock", instance = host).
    #[arg(long, env = "DRYDOCK_PUSHGATEWAY", global = true, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Give up after this long (e.g. 30s, 2h) with exit code 1: bounded time for Velero
    /// exec hooks and CronJobs.
    #[arg(long, global = true, value_name = "DURATION", value_parser = backup::parse_duration)]
    pub timeout: Option<chrono::Duration>,
    /// Key file: the repository identity, or a backup-only key.
    #[arg(long, env = "DRYDOCK_KEY_FILE", global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Progress bars on a terminal (auto), always, or never; without a terminal, log lines.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub progress: ProgressMode,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository and its keys.
    Init(init::InitArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Take one snapshot of the parts named.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// Show what a snapshot holds.
    Show(show::ShowArgs),
    /// Restore a snapshot.
    Restore(restore::RestoreArgs),
    /// Compare a running instance with a snapshot; exit 0 only when they match.
    Verify(verify::VerifyArgs),
    /// Check repository integrity.
    Check(check::CheckArgs),
    /// Restore a snapshot into scratch targets, verify every part, report the recovery time.
    Drill(drill::DrillArgs),
    /// Forget snapshots by --keep-* policy, expiry (--expired) or Velero (--follow-velero).
    Forget(forget::ForgetArgs),
    /// Reclaim space of forgotten snapshots (two phases, safe while backups run).
    Prune(prune::PruneArgs),
    /// Bring a format version 1 repository to version 2, in place (needs the identity).
    Migrate(migrate::MigrateArgs),
    /// Talk to Harbor's API: `harbor read-only on|off` (a Velero pre/post exec hook).
    #[command(subcommand)]
    Harbor(harbor::HarborCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) on stdout.
    Man(completions::ManArgs),
}

/// What a command produced: text for humans, JSON for machines, and an exit code.
pub struct Output {
    pub text: String,
    pub json: serde_json::Value,
    pub exit: i32,
}

impl Output {
    pub fn ok(text: String, json: serde_json::Value) -> Self {
        Output {
            text,
            json,
            exit: exit::SUCCESS,
        }
    }
}

/// The global options, with helpers every command uses.
pub struct Context {
    pub global: GlobalOpts,
}

/// How a command that reads data thaws packs in an archival storage class (GLACIER,
/// DEEP_ARCHIVE): RestoreObject for exactly the packs it needs, then it waits.
#[derive(Args, Debug, Clone)]
pub struct ThawArgs {
    /// S3 retrieval tier for archived packs: Expedited (GLACIER 1–5 minutes, dearest; none
    /// for DEEP_ARCHIVE), Standard (GLACIER 3–5 h, DEEP_ARCHIVE within 12 h) or Bulk
    /// (GLACIER 5–12 h, DEEP_ARCHIVE within 48 h; cheapest).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "standard",
        value_name = "TIER"
    )]
    pub thaw_tier: store::ThawTier,
    /// Days S3 keeps a thawed copy readable (billed as STANDARD meanwhile); a run
    /// interrupted within them resumes without thawing again.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650), value_name = "DAYS")]
    pub thaw_days: u32,
}

impl ThawArgs {
    pub fn thawer(&self, repo: Arc<Repository>, dry_run: bool) -> Arc<crate::repo::thaw::Thawer> {
        crate::repo::thaw::Thawer::new(
            repo,
            crate::repo::thaw::ThawOptions {
                tier: self.thaw_tier,
                days: self.thaw_days,
                dry_run,
            },
        )
    }
}

/// One line on what a thaw found and did.
pub fn thaw_text(r: &crate::repo::thaw::ThawReport) -> String {
    if r.packs == 0 {
        return String::new();
    }
    let verb = if r.dry_run { "would thaw" } else { "thawed" };
    format!(
        "archived packs needed: {} ({}); {verb} {} with the {} tier (cost: {}), {} days; {} already thawing, {} already thawed\n",
        r.packs,
        crate::ids::ByteSize(r.bytes),
        r.to_thaw.len(),
        r.tier,
        r.cost_class,
        r.days,
        r.thawing,
        r.thawed
    )
}

/// Where Harbor's registry keeps its storage: a filesystem root or an S3 bucket with its
/// own endpoint and credentials (never the repository's).
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryOpts {
    /// The registry's filesystem storage root (its `rootdirectory`, e.g. /storage or
    /// /data/registry), holding docker/registry/v2.
    #[arg(long, value_name = "DIR", conflicts_with = "registry_s3")]
    pub registry_fs: Option<PathBuf>,
    /// The registry's S3 storage: s3://bucket/rootdirectory.
    #[arg(long, value_name = "URL")]
    pub registry_s3: Option<String>,
    /// S3 endpoint of the registry's bucket.
    #[arg(long, env = "DRYDOCK_REGISTRY_S3_ENDPOINT", value_name = "URL")]
    pub registry_s3_endpoint: Option<String>,
    /// Region of the registry's bucket.
    #[arg(long, env = "DRYDOCK_REGISTRY_S3_REGION", value_name = "R")]
    pub registry_s3_region: Option<String>,
    /// Path-style addressing for the registry's bucket.
    #[arg(long, env = "DRYDOCK_REGISTRY_S3_PATH_STYLE")]
    pub registry_s3_path_style: bool,
    /// INI credentials file for the registry's bucket (otherwise the standard AWS chain).
    #[arg(long, env = "DRYDOCK_REGISTRY_S3_CREDENTIALS", value_name = "FILE")]
    pub registry_s3_credentials: Option<PathBuf>,
    /// Profile in that credentials file.
    #[arg(long, env = "DRYDOCK_REGISTRY_S3_PROFILE", value_name = "NAME")]
    pub registry_s3_profile: Option<String>,
}

/// Harbor's API (src/cli/harbor.rs, src/harbor/api.rs): the password comes from a file or
/// HARBOR_PASSWORD, never from an argument.
#[derive(Args, Debug, Clone)]
pub struct HarborOpts {
    /// Harbor's address, e.g. https://harbor.example.com.
    #[arg(long, env = "DRYDOCK_HARBOR_URL", value_name = "URL")]
    pub harbor_url: Option<String>,
    /// Harbor user (a system administrator, to switch read-only mode).
    #[arg(
        long,
        env = "HARBOR_USERNAME",
        default_value = "admin",
        value_name = "U"
    )]
    pub harbor_username: String,
    /// File holding the Harbor password (otherwise the HARBOR_PASSWORD variable).
    #[arg(long, env = "DRYDOCK_HARBOR_PASSWORD_FILE", value_name = "FILE")]
    pub harbor_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for Harbor (a self-signed or private CA); empty for
    /// none.
    #[arg(long, env = "DRYDOCK_HARBOR_CA", value_name = "FILE")]
    pub harbor_ca: Option<PathBuf>,
    /// Allow --harbor-url http:// to a host that is not loopback, sending the password
    /// unencrypted (only where something else protects the path, e.g. a mesh's mTLS).
    #[arg(long, env = "DRYDOCK_HARBOR_ALLOW_HTTP")]
    pub harbor_allow_http: bool,
    /// Bound on each Harbor request, and on `harbor read-only` as a whole (30s, 1m).
    #[arg(long, default_value = "30s", value_parser = harbor::parse_timeout, value_name = "DURATION")]
    pub harbor_timeout: std::time::Duration,
}

/// A registry's HTTP API (src/oci): its address, and an account (a Harbor robot account or
/// an htpasswd user) whose password comes from a file or DRYDOCK_REGISTRY_PASSWORD, never
/// from an argument. Commands flatten it next to their own options.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryApiOpts {
    /// The registry's HTTP API: Harbor's address (https://harbor.example.com) or a
    /// registry's (http://registry:5000).
    #[arg(long, value_name = "URL")]
    pub registry_url: Option<String>,
    /// Account for --registry-url, e.g. a Harbor robot account 'robot$drydock'.
    #[arg(long, env = "DRYDOCK_REGISTRY_USERNAME", value_name = "NAME")]
    pub registry_username: Option<String>,
    /// File holding that account's password or robot secret (otherwise the
    /// DRYDOCK_REGISTRY_PASSWORD variable).
    #[arg(long, env = "DRYDOCK_REGISTRY_PASSWORD_FILE", value_name = "FILE")]
    pub registry_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for --registry-url (a private CA).
    #[arg(long, env = "DRYDOCK_REGISTRY_CA_CERT", value_name = "FILE")]
    pub registry_ca_cert: Option<PathBuf>,
    /// Allow sending the password over plain http:// to a host that is not loopback
    /// (e.g. Harbor's internal registry without internal TLS).
    #[arg(long, env = "DRYDOCK_REGISTRY_ALLOW_HTTP")]
    pub registry_allow_http: bool,
}

impl RegistryApiOpts {
    /// A client for `--registry-url`, if given; a username needs a password and back.
    pub fn client(&self) -> Result<Option<crate::oci::RegistryClient>> {
        let Some(url) = &self.registry_url else {
            return Ok(None);
        };
        let password = crate::secret::load_password(
            self.registry_password_file.as_deref(),
            "--registry-password-file",
            "DRYDOCK_REGISTRY_PASSWORD",
        )?;
        let credentials = match (&self.registry_username, password) {
            (Some(username), Some(password)) => Some(crate::oci::Credentials {
                username: username.clone(),
                password,
            }),
            (None, None) => None,
            (Some(u), None) => {
                return Err(Error::Usage(format!(
                    "--registry-username {u} needs a password: give --registry-password-file FILE or set DRYDOCK_REGISTRY_PASSWORD"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "a registry password is given but no --registry-username".into(),
                ))
            }
        };
        crate::oci::RegistryClient::new(&crate::oci::ClientOptions {
            url: url.clone(),
            credentials,
            ca_cert: self.registry_ca_cert.clone(),
            allow_http: self.registry_allow_http,
            timeout: std::time::Duration::from_secs(60),
        })
        .map(Some)
    }
}

/// An opened registry storage: the store, its driver name and its description.
pub struct RegistryStore {
    pub store: Arc<dyn Store>,
    pub driver: &'static str,
    pub root: String,
}

impl RegistryOpts {
    pub fn given(&self) -> bool {
        self.registry_fs.is_some() || self.registry_s3.is_some()
    }

    pub async fn open(&self) -> Result<Option<RegistryStore>> {
        if let Some(dir) = &self.registry_fs {
            return Ok(Some(RegistryStore {
                store: Arc::new(store::local::LocalStore::new(dir.clone())),
                driver: "filesystem",
                root: std::path::absolute(dir)
                    .unwrap_or_else(|_| dir.clone())
                    .display()
                    .to_string(),
            }));
        }
        let Some(url) = &self.registry_s3 else {
            return Ok(None);
        };
        let Location::S3 { bucket, prefix } = Location::parse(url)? else {
            return Err(Error::Usage(format!(
                "--registry-s3 {url:?}: want s3://bucket/rootdirectory"
            )));
        };
        let opts = S3Options {
            endpoint: self.registry_s3_endpoint.clone(),
            region: self.registry_s3_region.clone(),
            path_style: self.registry_s3_path_style,
            credentials_file: self.registry_s3_credentials.clone(),
            profile: self.registry_s3_profile.clone(),
            ..Default::default()
        };
        let store = store::s3::S3Store::connect(&bucket, &prefix, &opts).await?;
        Ok(Some(RegistryStore {
            store: Arc::new(store),
            driver: "s3",
            root: url.clone(),
        }))
    }
}

/// A `--postgres` URL; a password in it is refused unless it came from DRYDOCK_POSTGRES.
pub fn postgres_target(url: &str) -> Result<crate::harbor::db::PgTarget> {
    let from_env = std::env::var("DRYDOCK_POSTGRES").ok().as_deref() == Some(url);
    crate::harbor::db::PgTarget::parse(url, !from_env)
}

pub fn default_parallel() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

impl Context {
    /// The BSL given with --velero-bsl, if any.
    pub fn bsl(&self) -> Result<Option<Bsl>> {
        self.global.velero_bsl.as_deref().map(Bsl::load).transpose()
    }

    /// The S3 settings of a BSL, for its repository and Velero's folders alike (SSE-C:
    /// Velero's own objects are encrypted with the same key).
    fn bsl_s3(&self, bsl: &Bsl) -> Result<S3Options> {
        bsl.s3_options(
            self.global.velero_credentials.as_deref(),
            &self.global.velero_secrets,
        )
    }

    /// Velero's own folders in the BSL (for --follow-velero), read-only.
    pub async fn velero_store(&self) -> Result<Arc<dyn Store>> {
        let bsl = self
            .bsl()?
            .ok_or_else(|| Error::Usage("--follow-velero needs --velero-bsl".into()))?;
        let Location::S3 { bucket, prefix } = Location::parse(&bsl.velero_url())? else {
            unreachable!("an s3 URL")
        };
        let store = store::s3::S3Store::connect(&bucket, &prefix, &self.bsl_s3(&bsl)?).await?;
        Ok(store::ReadOnly::wrap(
            Arc::new(store),
            "drydock never writes Velero's folders",
        ))
    }

    pub async fn store(&self) -> Result<Arc<dyn Store>> {
        if let Some(bsl) = self.bsl()? {
            let Location::S3 { bucket, prefix } = Location::parse(&bsl.repo_url())? else {
                unreachable!("an s3 URL")
            };
            let s3 = self.bsl_s3(&bsl)?;
            let store: Arc<dyn Store> =
                Arc::new(store::s3::S3Store::connect(&bucket, &prefix, &s3).await?);
            return Ok(match bsl.access_mode {
                AccessMode::ReadWrite => store,
                AccessMode::ReadOnly => store::ReadOnly::wrap(
                    store,
                    format!(
                        "the Velero BackupStorageLocation {:?} has accessMode ReadOnly",
                        bsl.name
                    ),
                ),
            });
        }
        let url = self.global.repo.as_deref().ok_or_else(|| {
            Error::Usage(
                "no repository given: use --repo URL, DRYDOCK_REPO or --velero-bsl FILE".into(),
            )
        })?;
        let location = Location::parse(url)?;
        let s3 = S3Options {
            endpoint: self.global.s3_endpoint.clone(),
            region: self.global.s3_region.clone(),
            path_style: self.global.s3_path_style,
            ..Default::default()
        };
        store::open(&location, &s3).await
    }

    pub fn key(&self) -> Result<KeyFile> {
        let path = self.global.key.as_ref().ok_or_else(|| {
            Error::Usage("no key given: use --key FILE or DRYDOCK_KEY_FILE".into())
        })?;
        KeyFile::load(path)
    }

    pub async fn open_repo(&self) -> Result<Arc<Repository>> {
        let store = self.store().await?;
        let key = self.key()?;
        Ok(Arc::new(Repository::open(store, key).await?))
    }
}

fn init_logging(g: &GlobalOpts) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRYDOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("drydock={default},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match g.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

async fn dispatch(ctx: &Context, command: Command) -> Result<Output> {
    match command {
        Command::Init(a) => init::run(ctx, a).await,
        Command::Key(k) => key::run(ctx, k).await,
        Command::Backup(a) => backup::run(ctx, a).await,
        Command::Snapshots(a) => snapshots::run(ctx, a).await,
        Command::Show(a) => show::run(ctx, a).await,
        Command::Restore(a) => restore::run(ctx, a).await,
        Command::Verify(a) => verify::run(ctx, a).await,
        Command::Check(a) => check::run(ctx, a).await,
        Command::Forget(a) => forget::run(ctx, a).await,
        Command::Drill(a) => drill::run(ctx, a).await,
        Command::Prune(a) => prune::run(ctx, a).await,
        Command::Migrate(a) => migrate::run(ctx, a).await,
        Command::Harbor(c) => harbor::run(ctx, c).await,
        Command::Completions(a) => completions::completions(ctx, a).await,
        Command::Man(a) => completions::man(ctx, a).await,
    }
}

/// Write or push the run's metrics when asked; a failure here is a warning, not a failed run.
async fn report_metrics(g: &GlobalOpts, command: &str, code: i32, took: std::time::Duration) {
    if g.metrics_textfile.is_none() && g.pushgateway.is_none() {
        return;
    }
    let samples = crate::metrics::finish(command, code, took);
    if let Some(path) = &g.metrics_textfile {
        if let Err(e) = crate::metrics::write_textfile(path, &samples) {
            tracing::warn!("metrics not written: {e}");
        }
    }
    if let Some(url) = &g.pushgateway {
        if let Err(e) = crate::metrics::push(url, &samples).await {
            tracing::warn!("metrics not pushed: {e}");
        }
    }
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let name = m.subcommand_name().unwrap_or_default().to_string();
        Cli::from_arg_matches(&m).map(|c| (c, name))
    });
    let (cli, command_name) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drydock: error: cannot start the runtime: {e}");
            return exit::FAILURE;
        }
    };
    let json = cli.global.json;
    let ctx = Context { global: cli.global };
    let started = std::time::Instant::now();
    let result = runtime.block_on(async {
        match ctx.global.timeout.and_then(|t| t.to_std().ok()) {
            Some(limit) => tokio::time::timeout(limit, dispatch(&ctx, cli.command))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Other(format!(
                        "gave up after --timeout {}s",
                        limit.as_secs()
                    )))
                }),
            None => dispatch(&ctx, cli.command).await,
        }
    });
    let code = match &result {
        Ok(out) => out.exit,
        Err(e) => e.exit_code(),
    };
    runtime.block_on(report_metrics(
        &ctx.global,
        &command_name,
        code,
        started.elapsed(),
    ));
    // The outcome is decided: do not wait for blocking work an interrupted or failed
    // command left behind (a file still being read after SIGTERM).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(out) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out.json).expect("JSON output")
                );
            } else if !out.text.is_empty() {
                // Commands escape each name they print; this catches any they missed.
                print!("{}", crate::term::escape_lines(&out.text));
            }
            out.exit
        }
        Err(e) => {
            let code = e.exit_code();
            let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
            // Errors quote names from snapshots and servers: one escaped line.
            eprintln!("drydock: error: {}", crate::term::esc(format!("{e}{hint}")));
            if json {
                let doc = json!({"error": {"message": e.to_string(), "exit_code": code}});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("JSON output")
                );
            }
            code
        }
    }
}
