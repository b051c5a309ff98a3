//! `drydock drill`: restore a snapshot into scratch targets, verify every part against it,
//! and report how long recovery took. Exit 0 only when everything matches.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::{default_parallel, Context, Output};
use crate::error::{exit, Error, Result};
use crate::harbor::config::{self, RestoreOptions};
use crate::harbor::{db, registry};
use crate::metrics::{record, Sample};
use crate::progress::Progress;
use crate::repo::reader::BlobReader;
use crate::term::esc;

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Snapshot id, unique prefix, or `latest` (the default).
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// A scratch, empty PostgreSQL database for the database part; NAME=URL, repeated,
    /// for each database of a snapshot that holds several.
    #[arg(long, env = "DRYDOCK_POSTGRES", value_name = "[NAME=]URL")]
    pub postgres: Vec<String>,
    #[command(flatten)]
    pub registry: super::RegistryOpts,
    /// A scratch, empty directory for the configuration part.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Concurrent downloads and database connections.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
}

#[derive(Debug, Serialize)]
struct PartResult {
    /// `db`, `registry`, `config`; `db:NAME` for each database of a snapshot of several.
    part: String,
    restore_seconds: f64,
    verify_seconds: f64,
    differences: Vec<String>,
    /// A database part's secretKey check: counts per encrypted column.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<db::encrypted::KeyReport>,
}

fn missing_target(part: &str, option: &str) -> Error {
    Error::Usage(format!("the snapshot holds a {part} part: a drill restores every part, so give {option} (a scratch target)"))
}

pub async fn run(ctx: &Context, args: DrillArgs) -> Result<Output> {
    let started = Instant::now();
    let registry_target = args.registry.open().await?;
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    // Every part the snapshot holds needs a scratch target before anything is restored.
    let databases = super::databases::match_targets(&snap.parts.databases, &args.postgres)?;
    if let Some(d) = snap
        .parts
        .databases
        .iter()
        .find(|d| !databases.iter().any(|(p, _)| p.database == d.database))
    {
        let option = match snap.parts.databases.len() {
            1 => "--postgres URL".to_string(),
            _ => format!("--postgres {}=URL", d.database),
        };
        return Err(missing_target("database", &option));
    }
    if snap.parts.registry.is_some() && registry_target.is_none() {
        return Err(missing_target(
            "registry",
            "--registry-fs DIR or --registry-s3 URL",
        ));
    }
    if snap.parts.config.is_some() && args.config_dir.is_none() {
        return Err(missing_target("configuration", "--config-dir DIR"));
    }
    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index, "drill")?;
    let key = match databases.is_empty() {
        true => None,
        false => super::databases::snapshot_key(&reader, &snap).await?,
    };
    let mut results = Vec::new();
    let opts = db::restore::DbRestoreOptions {
        mode: db::restore::Mode::Empty,
        parallel: args.parallel,
        owner: None,
    };
    for (part, pg) in &databases {
        let t = Instant::now();
        let progress = Progress::new(ctx.global.progress, "drill db", None);
        db::restore::restore(pg, &reader, part, &opts, progress.clone()).await?;
        progress.finish();
        let restored = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let report = db::verify::verify(pg, part, args.parallel, key.as_ref()).await?;
        results.push(PartResult {
            part: match databases.len() {
                1 => "db".into(),
                _ => format!("db:{}", part.database),
            },
            restore_seconds: restored,
            verify_seconds: t.elapsed().as_secs_f64(),
            differences: report.differences,
            secret_key: report.secret_key,
        });
    }
    if let (Some(part), Some(target)) = (&snap.parts.registry, &registry_target) {
        let t = Instant::now();
        let progress = Progress::new(ctx.global.progress, "drill registry", None);
        registry::restore::restore(
            &reader,
            part,
            target.store.clone(),
            args.parallel,
            false,
            progress.clone(),
        )
        .await?;
        progress.finish();
        let restored = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let differences =
            registry::verify::verify_storage(&reader, part, target.store.clone(), args.parallel)
                .await?;
        results.push(PartResult {
            part: "registry".into(),
            restore_seconds: restored,
            verify_seconds: t.elapsed().as_secs_f64(),
            differences,
            secret_key: None,
        });
    }
    if let (Some(part), Some(dir)) = (&snap.parts.config, &args.config_dir) {
        let t = Instant::now();
        let opts = RestoreOptions {
            target: dir.clone(),
            force: false,
            dry_run: false,
            parallel: args.parallel,
        };
        let progress = Progress::new(ctx.global.progress, "drill config", None);
        config::restore(&reader, part, &opts, progress.clone()).await?;
        progress.finish();
        let restored = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let differences = config::verify(&reader, &repo, part, dir).await?;
        results.push(PartResult {
            part: "config".into(),
            restore_seconds: restored,
            verify_seconds: t.elapsed().as_secs_f64(),
            differences,
            secret_key: None,
        });
    }
    let total = started.elapsed().as_secs_f64();
    let ok = results.iter().all(|r| r.differences.is_empty());
    let mut text = format!(
        "drill of snapshot {} ({}):\n",
        id.short(),
        snap.time.format("%Y-%m-%d %H:%M:%S")
    );
    for r in &results {
        text += &format!(
            "  {:<8} restored in {:>7.1}s, verified in {:>7.1}s: {}\n",
            r.part,
            r.restore_seconds,
            r.verify_seconds,
            if r.differences.is_empty() {
                "matches".to_string()
            } else {
                format!("{} difference(s)", r.differences.len())
            }
        );
        let keys = super::databases::key_lines("secretKey check", r.secret_key.as_ref());
        for d in keys.iter().chain(&r.differences) {
            text += &format!("    {}\n", esc(d));
        }
        record(
            Sample::new(
                "drydock_drill_recovery_seconds",
                r.restore_seconds + r.verify_seconds,
            )
            .label("part", &r.part),
        );
    }
    record(Sample::new("drydock_drill_recovery_seconds", total).label("part", "total"));
    record(Sample::new(
        "drydock_drill_success",
        if ok { 1.0 } else { 0.0 },
    ));
    text += &format!(
        "recovery time {total:.1}s: {}\n",
        if ok { "PASSED" } else { "FAILED" }
    );
    Ok(Output {
        text,
        json: json!({"snapshot": id.to_hex(), "passed": ok, "total_seconds": total, "parts": results}),
        exit: if ok { exit::SUCCESS } else { exit::FAILURE },
    })
}
