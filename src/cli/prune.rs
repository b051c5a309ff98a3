//! `drydock prune`: reclaim the space of forgotten snapshots, in two phases.

use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{Context, Output};
use crate::error::Result;
use crate::ids::ByteSize;
use crate::repo::prune::{prune, PruneOptions};
use crate::repo::Repository;

/// Default time between marking a pack unused and deleting it: longer than any backup.
pub const SAFETY_DELAY: &str = "24h";

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// How old a deletion mark must be before its packs are deleted. Make it longer than
    /// the longest backup: a backup running when packs were marked must finish within it.
    #[arg(long, value_name = "DURATION", default_value = SAFETY_DELAY, value_parser = super::backup::parse_duration_or_zero)]
    pub safety_delay: chrono::Duration,
    /// Say what would be marked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite packs of which at least this percentage of bytes is unused: their used blobs
    /// are copied into new packs and the old packs marked (100 turns repacking off).
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_REPACK_THRESHOLD, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub repack_threshold: u8,
    /// Repack packs stored outside STANDARD too (an archived one must be thawed first).
    /// Off by default: reading them costs retrieval fees and deleting them early a
    /// minimum-storage-duration charge, more than the space repacking saves.
    #[arg(long)]
    pub repack_cold: bool,
}

/// Packs at least this unused (percent) are repacked by default.
pub const DEFAULT_REPACK_THRESHOLD: u8 = 50;

pub async fn run(ctx: &Context, args: PruneArgs) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    run_prune(repo, &args).await
}

pub async fn run_prune(repo: Arc<Repository>, args: &PruneArgs) -> Result<Output> {
    let report = prune(
        repo,
        &PruneOptions {
            safety_delay: args.safety_delay,
            dry_run: args.dry_run,
            repack_threshold: (args.repack_threshold < 100)
                .then(|| f64::from(args.repack_threshold) / 100.0),
            repack_cold: args.repack_cold,
        },
    )
    .await?;
    let would = if args.dry_run { "would be " } else { "" };
    let mut text = format!(
        "prune: {} packs, {} unused; {} {would}deleted ({}), {} {would}marked for deletion after {}, {} waiting; {} packs partly used ({} unused inside)\n",
        report.packs,
        report.packs_unused,
        report.deleted_packs,
        ByteSize(report.deleted_bytes),
        report.marked,
        humanize(args.safety_delay),
        report.waiting,
        report.packs_partly_used,
        ByteSize(report.bytes_unused_in_used_packs),
    );
    if report.packs_repacked > 0 {
        text += &format!(
            "repacked {} mostly unused packs ({} of used blobs copied into {} new packs); the old ones are marked\n",
            report.packs_repacked,
            ByteSize(report.bytes_repacked),
            report.packs_written
        );
    }
    if report.packs_retained > 0 || report.retention_extended > 0 {
        text += &format!(
            "Object Lock: {} unused packs still retained (deleted by a prune after their date); retention extended on {} objects that stay\n",
            report.packs_retained, report.retention_extended
        );
    }
    Ok(Output::ok(text, json!(report)))
}

fn humanize(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}
