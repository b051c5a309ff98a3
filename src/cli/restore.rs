//! `drydock restore`: put a snapshot's parts back.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{default_parallel, Context, Output};
use crate::error::{Error, Result};
use crate::harbor::config::{self, RestoreOptions};
use crate::ids::ByteSize;
use crate::progress::Progress;
use crate::repo::reader::BlobReader;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Restore configuration files under this directory, at their original absolute paths
    /// (/etc/harbor → DIR/etc/harbor).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Restore only these parts (comma-separated: config).
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub only: Vec<String>,
    /// Write into a non-empty target, replacing files with the snapshot's.
    #[arg(long)]
    pub force: bool,
    /// List what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrent downloads.
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
    let wants = |p: &str| args.only.is_empty() || args.only.iter().any(|o| o == p);
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    for p in &args.only {
        if p != "config" || snap.parts.config.is_none() {
            return Err(Error::Usage(format!(
                "snapshot {} holds no {p} part",
                id.short()
            )));
        }
    }
    let mut text = String::new();
    let mut parts = serde_json::Map::new();
    if let (Some(part), true) = (&snap.parts.config, wants("config")) {
        let target = args.config_dir.clone().ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {} holds configuration: give --config-dir DIR (or --only to skip it)",
                id.short()
            ))
        })?;
        let index = Arc::new(repo.load_index().await?);
        let reader = BlobReader::new(repo.clone(), index, "restore")?;
        let opts = RestoreOptions {
            target: target.clone(),
            force: args.force,
            dry_run: args.dry_run,
            parallel: args.parallel,
        };
        let progress = Progress::new(ctx.global.progress, "restore", None);
        let (counts, items) = config::restore(&reader, part, &opts, progress.clone()).await?;
        progress.finish();
        if args.dry_run {
            for (path, _) in &items {
                text += &format!("would write {}\n", path.display());
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
        parts.insert(
            "config".into(),
            json!({"target": target, "counts": counts, "dry_run": args.dry_run,
                   "paths": if args.dry_run { items.iter().map(|(p, _)| p.clone()).collect() } else { Vec::new() }}),
        );
    }
    Ok(Output::ok(
        text,
        json!({"snapshot": id.to_hex(), "parts": parts}),
    ))
}
