//! `drydock check`: repository integrity.

use clap::Args;
use serde_json::json;

use super::{default_parallel, Context, Output};
use crate::error::{exit, Result};
use crate::ids::ByteSize;
use crate::repo::check::{check, CheckOptions};
use crate::term::esc;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download every pack, decrypt and authenticate every blob (needs the identity).
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Like --read-data for a random share of packs, e.g. 10%.
    #[arg(long, value_name = "N%", value_parser = parse_percent)]
    pub read_data_subset: Option<f64>,
    /// Concurrent downloads.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
    /// With --read-data: list the archived packs it would thaw (and their bytes and the
    /// tier's cost class); thaw and read nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub thaw: super::ThawArgs,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
    if n > 0.0 && n <= 100.0 {
        Ok(n / 100.0)
    } else {
        Err(format!("{s:?}: give a percentage above 0 and at most 100"))
    }
}

pub async fn run(ctx: &Context, args: CheckArgs) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    let read_data = if args.read_data {
        1.0
    } else {
        args.read_data_subset.unwrap_or(0.0)
    };
    if args.dry_run && read_data == 0.0 {
        return Err(crate::error::Error::Usage(
            "--dry-run goes with --read-data or --read-data-subset (a structural check reads no archived pack)".into(),
        ));
    }
    let thaw = (read_data > 0.0).then(|| args.thaw.thawer(repo.clone(), args.dry_run));
    let report = check(
        repo,
        &CheckOptions {
            read_data,
            parallel: args.parallel,
            thaw,
        },
    )
    .await?;
    let mut text = format!(
        "{} snapshots, {} index objects, {} packs, {} blobs",
        report.snapshots, report.indexes, report.packs, report.blobs
    );
    if read_data > 0.0 {
        text += &format!(
            "; read {} packs ({})",
            report.packs_read,
            ByteSize(report.bytes_read)
        );
    }
    text.push('\n');
    if let Some(t) = &report.thaw {
        text += &super::thaw_text(t);
        for key in &t.to_thaw {
            text += &format!("  {}\n", esc(key));
        }
    }
    for w in &report.warnings {
        text += &format!("warning: {}\n", esc(w));
    }
    for p in &report.problems {
        let snaps = if p.snapshots.is_empty() {
            String::new()
        } else {
            format!(" [affects snapshots {}]", p.snapshots.join(", "))
        };
        text += &format!("error: {}: {}{snaps}\n", esc(&p.object), esc(&p.message));
    }
    text += if report.ok() {
        "no errors found\n"
    } else {
        "repository has errors\n"
    };
    if !report.ok() {
        eprintln!(
            "drydock: error: {} problem(s) found; affected snapshots: {}",
            report.problems.len(),
            if report.affected_snapshots.is_empty() {
                "none".to_string()
            } else {
                report.affected_snapshots.join(", ")
            }
        );
    }
    let exit = if report.ok() {
        exit::SUCCESS
    } else {
        exit::INTEGRITY
    };
    Ok(Output {
        text,
        json: json!({"ok": report.ok(), "report": report}),
        exit,
    })
}
