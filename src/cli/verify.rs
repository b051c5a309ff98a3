//! `drydock verify`: compare a running instance with a snapshot and list every difference.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{default_parallel, Context, Output};
use crate::error::{exit, Error, Result};
use crate::harbor::{config, db, registry};
use crate::ids::SnapshotId;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::term::esc;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("registry_target").args(["registry_fs", "registry_s3", "registry_url"])))]
pub struct VerifyArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Compare this database (row counts and content checksums of every table, and every
    /// `<enc-v1>` value decrypted with the snapshot's secretKey); NAME=URL, repeated,
    /// compares each named database of a snapshot that holds several.
    #[arg(long, env = "DRYDOCK_POSTGRES", value_name = "[NAME=]URL")]
    pub postgres: Vec<String>,
    #[command(flatten)]
    pub registry: super::RegistryOpts,
    // Or through the registry's HTTP API: tags, manifests, layers.
    #[command(flatten)]
    pub registry_api: super::RegistryApiOpts,
    /// Compare configuration under this directory, laid out as `restore --config-dir` writes
    /// it (`/` compares the live files in place).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Without a database to compare: decrypt every `<enc-v1>` value of the snapshot's
    /// database part, read from the repository, with the snapshot's secretKey (with
    /// --postgres that check is made on the database read anyway).
    #[arg(long)]
    pub secret_key: bool,
    /// Concurrent database connections.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
    #[command(flatten)]
    pub thaw: super::ThawArgs,
}

/// Every difference found, each part's --json report, and lines that only inform.
#[derive(Default)]
struct Found {
    differences: Vec<String>,
    parts: serde_json::Map<String, serde_json::Value>,
    notes: Vec<String>,
}

impl Found {
    fn add(&mut self, label: &str, diffs: &[String]) {
        self.differences
            .extend(diffs.iter().map(|d| format!("{label}: {d}")));
    }
}

fn holds_no(id: &SnapshotId, what: &str) -> Error {
    Error::Usage(format!(
        "snapshot {} holds no {what} part to compare",
        id.short()
    ))
}

pub async fn run(ctx: &Context, args: VerifyArgs) -> Result<Output> {
    if args.postgres.is_empty()
        && !args.secret_key
        && args.config_dir.is_none()
        && !args.registry.given()
        && args.registry_api.registry_url.is_none()
    {
        return Err(Error::Usage(
            "nothing to verify: give --postgres URL, --registry-fs/--registry-s3/--registry-url, --config-dir DIR, and/or --secret-key".into(),
        ));
    }
    let registry_api = args.registry_api.client()?;
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    let mut found = Found::default();
    let registry_target = args.registry.open().await?;
    let registry_wanted = registry_target.is_some() || registry_api.is_some();
    // One index load serves every part that reads blobs (a database's secretKey check reads
    // the configuration part).
    let key_wanted = key_wanted(&args, &snap);
    let reader = match registry_wanted || args.config_dir.is_some() || key_wanted {
        true => Some(reader(&repo, &args, &snap, registry_wanted).await?),
        false => None,
    };
    let key = match (key_wanted, &reader) {
        (true, Some(r)) => super::databases::snapshot_key(r, &snap).await?,
        _ => None,
    };
    verify_databases(&args, &id, &snap, key.as_ref(), &mut found).await?;
    if args.secret_key && args.postgres.is_empty() {
        let key = key.ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {} holds no Harbor secretKey to check with --secret-key; back up with --config /etc/core/key (or the compose or Helm key path)",
                id.short()
            ))
        })?;
        let reader = reader.as_ref().expect("made for the key");
        check_stored_databases(reader, &snap, &key, args.parallel, &mut found).await?;
    }
    if let (true, Some(reader)) = (registry_wanted, &reader) {
        let part = snap
            .parts
            .registry
            .as_ref()
            .ok_or_else(|| holds_no(&id, "registry"))?;
        let diffs = match (&registry_target, &registry_api) {
            (Some(t), _) => {
                registry::verify::verify_storage(reader, part, t.store.clone(), args.parallel)
                    .await?
            }
            (None, Some(client)) => {
                registry::verify::verify_http(reader, part, client, args.parallel).await?
            }
            (None, None) => unreachable!("checked above"),
        };
        found.add("registry", &diffs);
        found
            .parts
            .insert("registry".into(), json!({"differences": diffs}));
    }
    if let (Some(dir), Some(reader)) = (&args.config_dir, &reader) {
        let part = snap
            .parts
            .config
            .as_ref()
            .ok_or_else(|| holds_no(&id, "configuration"))?;
        let diffs = config::verify(reader, &repo, part, dir).await?;
        found.add("config", &diffs);
        found
            .parts
            .insert("config".into(), json!({"differences": diffs}));
    }
    Ok(report(&id, found))
}

/// A reader for the parts compared, their archived packs thawed first.
/// Whether the snapshot's secretKey is read, to check the databases' encrypted values.
fn key_wanted(args: &VerifyArgs, snap: &Snapshot) -> bool {
    (!args.postgres.is_empty() || args.secret_key) && snap.parts.config.is_some()
}

async fn reader(
    repo: &Arc<Repository>,
    args: &VerifyArgs,
    snap: &Snapshot,
    registry: bool,
) -> Result<BlobReader> {
    let index = Arc::new(repo.load_index().await?);
    let thawer = args.thaw.thawer(repo.clone(), false);
    let reader = BlobReader::new(repo.clone(), index.clone(), "verify")?.with_thaw(thawer.clone());
    let mut view = snap.clone();
    view.parts.databases.clear();
    if !registry {
        view.parts.registry = None;
    }
    if args.config_dir.is_none() && !key_wanted(args, snap) {
        view.parts.config = None;
    }
    let packs = crate::repo::thaw::packs_for(&reader, &index, &[view]).await?;
    thawer.prepare(&packs).await?;
    Ok(reader)
}

/// Each database given with `--postgres`, by name.
async fn verify_databases(
    args: &VerifyArgs,
    id: &SnapshotId,
    snap: &Snapshot,
    key: Option<&db::encrypted::KeyCheck>,
    found: &mut Found,
) -> Result<()> {
    if !args.postgres.is_empty() && snap.parts.databases.is_empty() {
        return Err(holds_no(id, "database"));
    }
    let several = snap.parts.databases.len() > 1;
    let mut databases = Vec::new();
    for (part, pg) in super::databases::match_targets(&snap.parts.databases, &args.postgres)? {
        let report = db::verify::verify(&pg, part, args.parallel, key).await?;
        let label = match several {
            true => format!("db {}", part.database),
            false => "db".into(),
        };
        found.add(&label, &report.differences);
        found.notes.extend(super::databases::key_lines(
            &label,
            report.secret_key.as_ref(),
        ));
        found.parts.entry("db").or_insert_with(|| json!(report));
        databases.push(json!({"database": part.database, "report": report}));
    }
    if !databases.is_empty() {
        found.parts.insert("databases".into(), json!(databases));
    }
    Ok(())
}

/// `--secret-key` alone: the check over the database parts as stored in the repository.
async fn check_stored_databases(
    reader: &BlobReader,
    snap: &Snapshot,
    key: &db::encrypted::KeyCheck,
    parallel: usize,
    found: &mut Found,
) -> Result<()> {
    if snap.parts.databases.is_empty() {
        return Err(Error::Usage(
            "--secret-key: the snapshot holds no database part to check the key against".into(),
        ));
    }
    let several = snap.parts.databases.len() > 1;
    let mut reports = Vec::new();
    for part in &snap.parts.databases {
        let r = db::restore::check_secret_key(reader, part, key, parallel).await?;
        let label = match several {
            true => format!("db {}", part.database),
            false => "db".into(),
        };
        found.add(&label, &r.failures("this snapshot"));
        found
            .notes
            .extend(super::databases::key_lines(&label, Some(&r)));
        reports.push(json!({"database": part.database, "report": r}));
    }
    found.parts.insert("secret_key".into(), json!(reports));
    Ok(())
}

fn report(id: &SnapshotId, found: Found) -> Output {
    let Found {
        differences,
        parts,
        notes,
    } = found;
    let mut text = String::new();
    for d in notes.iter().chain(&differences) {
        text += &format!("{}\n", esc(d));
    }
    text += &match differences.is_empty() {
        true => format!("matches snapshot {}\n", id.short()),
        false => format!(
            "{} difference(s) from snapshot {}\n",
            differences.len(),
            id.short()
        ),
    };
    let exit = match differences.is_empty() {
        true => exit::SUCCESS,
        false => exit::FAILURE,
    };
    Output {
        text,
        json: json!({"snapshot": id.to_hex(), "equal": differences.is_empty(), "parts": parts}),
        exit,
    }
}
