//! `drydock restore`: put a snapshot's parts back.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{default_parallel, postgres_target, Context, Output};
use crate::error::{Error, Result};
use crate::harbor::config::{self, RestoreOptions};
use crate::harbor::db::restore::Mode;
use crate::harbor::db::{self};
use crate::harbor::registry;
use crate::ids::ByteSize;
use crate::progress::Progress;
use crate::repo::reader::BlobReader;
use crate::term::esc;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Restore the database into this PostgreSQL database (postgresql://user@host/db).
    #[arg(long, env = "DRYDOCK_POSTGRES", value_name = "URL")]
    pub postgres: Option<String>,
    /// empty: into an empty database (schema + data). running: replace all data of a live
    /// Harbor database of the same schema version, in one transaction.
    #[arg(long, value_enum, default_value = "empty")]
    pub mode: Mode,
    #[command(flatten)]
    pub registry: super::RegistryOpts,
    /// Restore configuration files under this directory, at their original absolute paths
    /// (/etc/harbor → DIR/etc/harbor).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Restore only these parts (comma-separated: db, registry, config).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub only: Vec<String>,
    /// Write configuration into a non-empty directory, replacing files with the snapshot's.
    #[arg(long)]
    pub force: bool,
    /// Say what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrent downloads and database connections.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
}

const PARTS: [&str; 3] = ["db", "registry", "config"];

pub async fn run(ctx: &Context, args: RestoreArgs) -> Result<Output> {
    for p in &args.only {
        if !PARTS.contains(&p.as_str()) {
            return Err(Error::Usage(format!(
                "--only {p:?}: the parts are db, registry and config"
            )));
        }
    }
    let pg = args.postgres.as_deref().map(postgres_target).transpose()?;
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    let held = snap.parts.names();
    for p in &args.only {
        if !held.contains(&p.as_str()) {
            return Err(Error::Usage(format!(
                "snapshot {} holds no {p} part (it holds: {})",
                id.short(),
                held.join(", ")
            )));
        }
    }
    // A part is restored when it was asked for (--only) or a target for it is given.
    let has_target = |p: &str| match p {
        "db" => pg.is_some(),
        "config" => args.config_dir.is_some(),
        "registry" => args.registry.given(),
        _ => false,
    };
    let option_for = |p: &str| match p {
        "db" => "--postgres URL",
        "config" => "--config-dir DIR",
        "registry" => "--registry-fs DIR or --registry-s3 URL",
        _ => "a target",
    };
    let chosen: Vec<&str> = if args.only.is_empty() {
        held.iter().copied().filter(|p| has_target(p)).collect()
    } else {
        args.only.iter().map(String::as_str).collect()
    };
    for p in &chosen {
        if !has_target(p) {
            return Err(Error::Usage(format!(
                "restoring the {p} part needs {}",
                option_for(p)
            )));
        }
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

    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index, "restore")?;
    let mut text = String::new();
    let mut parts = serde_json::Map::new();
    if let (Some(part), Some(pg), true) = (&snap.parts.database, &pg, chosen.contains(&"db")) {
        if args.dry_run {
            text += &format!(
                "would restore the database ({} tables, {} rows, {}) into {} in {:?} mode\n",
                part.tables.len(),
                part.total_rows(),
                ByteSize(part.total_bytes()),
                pg.describe(),
                args.mode
            );
            parts.insert(
                "db".into(),
                json!({"target": pg.describe(), "mode": args.mode, "dry_run": true}),
            );
        } else {
            let progress = Progress::new(ctx.global.progress, "restore db", None);
            let report = db::restore::restore(
                pg,
                &reader,
                part,
                args.mode,
                args.parallel,
                progress.clone(),
            )
            .await?;
            progress.finish();
            text +=
                &format!(
                "restored the database into {} ({:?} mode): {} tables, {} rows, {} sequences{}\n",
                pg.describe(),
                args.mode,
                report.tables,
                report.rows,
                report.sequences,
                if report.read_only_cleared { "; Harbor's read_only flag cleared" } else { "" }
            );
            parts.insert(
                "db".into(),
                json!({"target": pg.describe(), "mode": args.mode, "report": report}),
            );
        }
    }
    if let (Some(part), true) = (&snap.parts.registry, chosen.contains(&"registry")) {
        let target = args
            .registry
            .open()
            .await?
            .expect("checked: a registry target is given");
        let progress = Progress::new(ctx.global.progress, "restore registry", None);
        let report = registry::restore::restore(
            &reader,
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
                text += &format!("would write blob {}\n", esc(d));
            }
            text += &format!(
                "would restore the registry into {}: {} blobs to write, {} already present, {} links\n",
                target.root,
                report.would_write.len(),
                report.blobs_present,
                part.link_count
            );
        } else {
            text += &format!(
                "restored the registry into {}: {} blobs written ({}), {} already present, {} links\n",
                target.root,
                report.blobs_written,
                ByteSize(report.bytes_written),
                report.blobs_present,
                report.links_written
            );
        }
        parts.insert(
            "registry".into(),
            json!({"target": target.root, "dry_run": args.dry_run, "report": report}),
        );
    }
    if let (Some(part), Some(target), true) = (
        &snap.parts.config,
        &args.config_dir,
        chosen.contains(&"config"),
    ) {
        let opts = RestoreOptions {
            target: target.clone(),
            force: args.force,
            dry_run: args.dry_run,
            parallel: args.parallel,
        };
        let progress = Progress::new(ctx.global.progress, "restore config", None);
        let (counts, items) = config::restore(&reader, part, &opts, progress.clone()).await?;
        progress.finish();
        if args.dry_run {
            for (path, _) in &items {
                text += &format!("would write {}\n", esc(path.display()));
            }
        }
        text += &format!(
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
        let paths: Vec<PathBuf> = if args.dry_run {
            items.into_iter().map(|(p, _)| p).collect()
        } else {
            Vec::new()
        };
        parts.insert(
            "config".into(),
            json!({"target": target, "counts": counts, "dry_run": args.dry_run, "paths": paths}),
        );
    }
    Ok(Output::ok(
        text,
        json!({"snapshot": id.to_hex(), "parts": parts}),
    ))
}
