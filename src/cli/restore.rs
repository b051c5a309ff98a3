//! `drydock restore`: put a snapshot's parts back.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{databases, default_parallel, Context, Output};
use crate::error::{Error, Result};
use crate::harbor::config::{self, RestoreOptions};
use crate::harbor::db::restore::{DbRestoreOptions, Mode};
use crate::harbor::db::{self, DatabasePart, PgTarget};
use crate::harbor::registry;
use crate::ids::{ByteSize, SnapshotId};
use crate::progress::Progress;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::Snapshot;
use crate::repo::thaw;
use crate::term::esc;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Restore the database into this PostgreSQL database (postgresql://user@host/db).
    /// Repeatable for a snapshot of several databases: NAME=URL restores the snapshot's
    /// database NAME into URL (a bare URL goes to the only one, or to the one of its name).
    #[arg(long, env = "DRYDOCK_POSTGRES", value_name = "[NAME=]URL")]
    pub postgres: Vec<String>,
    /// Who owns the restored objects (empty mode). Default: the restoring role, or the
    /// database's owner when restoring as a superuser. Grants to roles the target lacks
    /// are left out and listed.
    #[arg(long, value_name = "ROLE")]
    pub owner: Option<String>,
    /// empty: into an empty database (schema + data). running: replace all data of a live
    /// Harbor database of the same schema version, in one transaction.
    #[arg(long, value_enum, default_value = "empty")]
    pub mode: Mode,
    #[command(flatten)]
    pub registry: super::RegistryOpts,
    /// Push this Harbor project's images back through the registry API of --registry-url
    /// (Harbor records them itself; nothing in its database is edited). The project must
    /// exist in Harbor.
    #[arg(long, value_name = "NAME", requires = "registry_url",
          conflicts_with_all = ["registry_fs", "registry_s3", "postgres", "config_dir", "only"])]
    pub project: Option<String>,
    /// With --project: only this repository (its full name or its name within the
    /// project), or only one tag of it.
    #[arg(long, value_name = "NAME[:TAG]", requires = "project")]
    pub repository: Option<String>,
    // The registry API --project pushes to.
    #[command(flatten)]
    pub registry_api: super::RegistryApiOpts,
    /// Restore configuration files under this directory, at their original absolute paths
    /// (/etc/harbor → DIR/etc/harbor).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Restore only these parts (comma-separated: db, registry, config).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub only: Vec<String>,
    /// Write configuration into a non-empty directory, replacing files with the snapshot's;
    /// with --project, move tags the registry has on another manifest now.
    #[arg(long)]
    pub force: bool,
    /// Say what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrent downloads and database connections.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
    #[command(flatten)]
    pub thaw: super::ThawArgs,
}

const PARTS: [&str; 3] = ["db", "registry", "config"];

/// What the restore printed and reports in --json, part by part.
#[derive(Default)]
struct Report {
    text: String,
    parts: serde_json::Map<String, serde_json::Value>,
    databases: Vec<serde_json::Value>,
}

pub async fn run(ctx: &Context, args: RestoreArgs) -> Result<Output> {
    check_only(&args.only)?;
    check_registry_url(&args)?;
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    if let Some(project) = &args.project {
        return super::restore_project::run(ctx, &args, &repo, &id, &snap, project).await;
    }
    let targets = databases::match_targets(&snap.parts.databases, &args.postgres)?;
    let chosen = choose_parts(&args, &id, &snap, !targets.is_empty())?;
    let index = Arc::new(repo.load_index().await?);
    let thawer = args.thaw.thawer(repo.clone(), args.dry_run);
    // With the thawer from the start: a tree pack archived behind drydock's back (a bucket
    // lifecycle rule) is thawed when its read fails, not a failure.
    let reader = BlobReader::new(repo.clone(), index.clone(), "restore")?.with_thaw(thawer.clone());
    let needed = restored_view(&snap, &chosen, &targets);
    let thaw = thawer
        .prepare(&thaw::packs_for(&reader, &index, &[needed]).await?)
        .await?;
    let thaw_json = serde_json::to_value(&thaw).expect("serialises");
    if args.dry_run && thaw.requested + thaw.thawing + thaw.to_thaw.len() > 0 {
        // The parts' own dry runs would read data that is not readable yet.
        return Ok(Output::ok(
            super::thaw_text(&thaw),
            json!({"snapshot": id.to_hex(), "dry_run": true, "thaw": thaw_json}),
        ));
    }
    let mut report = Report {
        text: super::thaw_text(&thaw),
        ..Default::default()
    };
    if chosen.contains(&"db") {
        for (part, pg) in &targets {
            restore_database(ctx, &args, &reader, part, pg, &mut report).await?;
        }
    }
    if let (Some(part), true) = (&snap.parts.registry, chosen.contains(&"registry")) {
        restore_registry(ctx, &args, &reader, part, &mut report).await?;
    }
    if let (Some(part), Some(dir), true) = (
        &snap.parts.config,
        &args.config_dir,
        chosen.contains(&"config"),
    ) {
        restore_config(ctx, &args, &reader, part, dir, &mut report).await?;
    }
    let Report {
        text,
        mut parts,
        databases,
    } = report;
    if let Some(first) = databases.first() {
        parts.insert("db".into(), first.clone());
        parts.insert("databases".into(), json!(databases));
    }
    Ok(Output::ok(
        text,
        json!({"snapshot": id.to_hex(), "parts": parts, "thaw": thaw_json}),
    ))
}

/// The snapshot cut down to what this restore reads: the parts chosen, the databases
/// given a target. Only their packs are thawed.
fn restored_view(
    snap: &Snapshot,
    chosen: &[&str],
    targets: &[(&DatabasePart, PgTarget)],
) -> Snapshot {
    let mut view = snap.clone();
    let dbs = chosen.contains(&"db");
    view.parts
        .databases
        .retain(|d| dbs && targets.iter().any(|(t, _)| t.database == d.database));
    if !chosen.contains(&"registry") {
        view.parts.registry = None;
    }
    if !chosen.contains(&"config") {
        view.parts.config = None;
    }
    view
}

fn check_only(only: &[String]) -> Result<()> {
    match only.iter().find(|p| !PARTS.contains(&p.as_str())) {
        Some(p) => Err(Error::Usage(format!(
            "--only {p:?}: the parts are db, registry and config"
        ))),
        None => Ok(()),
    }
}

/// `--registry-url` is where `--project` pushes; alone it restores nothing.
fn check_registry_url(args: &RestoreArgs) -> Result<()> {
    match (&args.registry_api.registry_url, &args.project) {
        (Some(_), None) => Err(Error::Usage(
            "--registry-url restores one project through the registry API: give --project NAME (or --registry-fs/--registry-s3 for the whole registry's storage)".into(),
        )),
        _ => Ok(()),
    }
}

fn option_for(part: &str) -> &'static str {
    match part {
        "db" => "--postgres URL",
        "config" => "--config-dir DIR",
        "registry" => {
            "--registry-fs DIR or --registry-s3 URL (or --registry-url URL --project NAME)"
        }
        _ => "a target",
    }
}

/// The parts to restore: those asked for with --only, else those a target is given for.
fn choose_parts(
    args: &RestoreArgs,
    id: &SnapshotId,
    snap: &Snapshot,
    databases_given: bool,
) -> Result<Vec<&'static str>> {
    let held = snap.parts.names();
    if let Some(p) = args.only.iter().find(|p| !held.contains(&p.as_str())) {
        return Err(Error::Usage(format!(
            "snapshot {} holds no {p} part (it holds: {})",
            id.short(),
            held.join(", ")
        )));
    }
    let has_target = |p: &str| match p {
        "db" => databases_given,
        "config" => args.config_dir.is_some(),
        "registry" => args.registry.given(),
        _ => false,
    };
    let chosen: Vec<&'static str> = match args.only.is_empty() {
        true => held.iter().copied().filter(|p| has_target(p)).collect(),
        false => PARTS
            .into_iter()
            .filter(|p| args.only.iter().any(|o| o == p))
            .collect(),
    };
    if let Some(p) = chosen.iter().find(|p| !has_target(p)) {
        return Err(Error::Usage(format!(
            "restoring the {p} part needs {}",
            option_for(p)
        )));
    }
    if chosen.is_empty() {
        let wanted: Vec<String> = held
            .iter()
            .map(|p| format!("{} for {p}", option_for(p)))
            .collect();
        return Err(Error::Usage(format!(
            "nothing to restore: snapshot {} holds {}; give {}",
            id.short(),
            held.join(", "),
            wanted.join(", ")
        )));
    }
    Ok(chosen)
}

async fn restore_database(
    ctx: &Context,
    args: &RestoreArgs,
    reader: &BlobReader,
    part: &DatabasePart,
    pg: &PgTarget,
    out: &mut Report,
) -> Result<()> {
    let name = &part.database;
    if args.dry_run {
        out.text += &format!(
            "would restore database {name} ({} tables, {} rows, {}) into {} in {:?} mode\n",
            part.tables.len(),
            part.total_rows(),
            ByteSize(part.total_bytes()),
            pg.describe(),
            args.mode
        );
        out.databases.push(
            json!({"database": name, "target": pg.describe(), "mode": args.mode, "dry_run": true}),
        );
        return Ok(());
    }
    let opts = DbRestoreOptions {
        mode: args.mode,
        parallel: args.parallel,
        owner: args.owner.clone(),
    };
    let progress = Progress::new(ctx.global.progress, "restore db", None);
    let report = db::restore::restore(pg, reader, part, &opts, progress.clone()).await?;
    progress.finish();
    let mut notes = String::new();
    if report.read_only_cleared {
        notes += "; Harbor's read_only flag cleared";
    }
    if !report.grants_left_out.is_empty() {
        notes += &format!("; left out: {}", report.grants_left_out.join("; "));
    }
    out.text += &format!(
        "restored database {name} into {} ({:?} mode): {} tables, {} rows, {} sequences{}\n",
        pg.describe(),
        args.mode,
        report.tables,
        report.rows,
        report.sequences,
        esc(notes)
    );
    out.databases.push(
        json!({"database": name, "target": pg.describe(), "mode": args.mode, "report": report}),
    );
    Ok(())
}

async fn restore_registry(
    ctx: &Context,
    args: &RestoreArgs,
    reader: &BlobReader,
    part: &registry::RegistryPart,
    out: &mut Report,
) -> Result<()> {
    let target = args
        .registry
        .open()
        .await?
        .expect("checked: a registry target is given");
    let progress = Progress::new(ctx.global.progress, "restore registry", None);
    let report = registry::restore::restore(
        reader,
        part,
        target.store.clone(),
        args.parallel,
        args.dry_run,
        progress.clone(),
    )
    .await?;
    progress.finish();
    if args.dry_run {
        for d in &report.would_write {
            out.text += &format!("would write blob {}\n", esc(d));
        }
        out.text += &format!(
            "would restore the registry into {}: {} blobs to write, {} already present, {} links\n",
            target.root,
            report.would_write.len(),
            report.blobs_present,
            part.link_count
        );
    } else {
        out.text += &format!(
            "restored the registry into {}: {} blobs written ({}), {} already present, {} links\n",
            target.root,
            report.blobs_written,
            ByteSize(report.bytes_written),
            report.blobs_present,
            report.links_written
        );
    }
    out.parts.insert(
        "registry".into(),
        json!({"target": target.root, "dry_run": args.dry_run, "report": report}),
    );
    Ok(())
}

async fn restore_config(
    ctx: &Context,
    args: &RestoreArgs,
    reader: &BlobReader,
    part: &config::ConfigPart,
    target: &std::path::Path,
    out: &mut Report,
) -> Result<()> {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        force: args.force,
        dry_run: args.dry_run,
        parallel: args.parallel,
    };
    let progress = Progress::new(ctx.global.progress, "restore config", None);
    let (counts, items) = config::restore(reader, part, &opts, progress.clone()).await?;
    progress.finish();
    if args.dry_run {
        for (path, _) in &items {
            out.text += &format!("would write {}\n", esc(path.display()));
        }
    }
    out.text += &format!(
        "{} configuration: {} files, {} dirs, {} symlinks, {} into {}\n",
        if args.dry_run {
            "would restore"
        } else {
            "restored"
        },
        counts.files,
        counts.dirs,
        counts.symlinks,
        ByteSize(counts.bytes),
        target.display()
    );
    let paths: Vec<PathBuf> = match args.dry_run {
        true => items.into_iter().map(|(p, _)| p).collect(),
        false => Vec::new(),
    };
    out.parts.insert(
        "config".into(),
        json!({"target": target, "counts": counts, "dry_run": args.dry_run, "paths": paths}),
    );
    Ok(())
}
