//! `drydock backup`: one snapshot of the parts named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use clap::Args;
use serde_json::json;

use super::{default_parallel, Context, Output};
use crate::error::{exit, Error, Result};
use crate::harbor::{config, db, registry};
use crate::ids::ByteSize;
use crate::progress::Progress;
use crate::repo::snapshot::{Parts, Snapshot, Summary, VERSION};
use crate::repo::writer::BlobWriter;
use crate::velero;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A configuration file or directory to include (repeatable): harbor.yml, /etc/core/key,
    /// a mounted Secret. Symlinks inside directories are kept as symlinks.
    #[arg(long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// A tag K=V recorded in the snapshot (repeatable).
    #[arg(long = "tag", value_name = "K=V", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// The Velero backup this snapshot goes with (tags velero.io/backup-name, and
    /// velero.io/schedule-name when the name is `<schedule>-YYYYMMDDhhmmss`).
    #[arg(long, value_name = "NAME")]
    pub velero_backup: Option<String>,
    /// How long the snapshot is kept by `forget --expired`, like Velero's --ttl (720h, 30d, 90m).
    #[arg(long, default_value = "720h", value_parser = parse_duration)]
    pub ttl: chrono::Duration,
    /// A Harbor database: postgresql://user@host:port/db (libpq PG* variables and
    /// ~/.pgpass fill the gaps; the password never goes in this argument). Repeatable:
    /// Harbor 2.8 and older keep Notary in notary_server and notary_signer; each database
    /// is captured in its own snapshot while Harbor is read-only, and named by its name.
    #[arg(long, env = "DRYDOCK_POSTGRES", value_name = "URL")]
    pub postgres: Vec<String>,
    /// Back up even when Harbor's schema_migrations is marked dirty.
    #[arg(long)]
    pub force: bool,
    /// S3 storage class for this backup's data packs, over the one `init --storage-class`
    /// set; metadata and tree packs always stay in STANDARD.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<crate::store::StorageClass>,
    #[command(flatten)]
    pub registry: super::RegistryOpts,
    /// With --harbor-url: check health, record Harbor's version, and hold Harbor read-only
    /// during the backup (the previous value is always put back).
    #[command(flatten)]
    pub harbor: super::HarborOpts,
    /// With --harbor-url: `required` fails the backup (writing nothing) when Harbor cannot
    /// be made read-only; `best-effort` warns and backs up unquiesced; `off` never switches
    /// it. The snapshot records whether it was quiesced.
    #[arg(long, value_enum, default_value = "required", value_name = "MODE")]
    pub harbor_read_only: super::harbor::Quiesce,
    /// Exit 3 (partial) when a snapshot with a database has no Harbor secretKey among the
    /// --config paths, or one that does not decrypt the database's `<enc-v1>` values.
    #[arg(long)]
    pub strict: bool,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Worker threads and concurrent uploads.
    #[arg(long, default_value_t = default_parallel())]
    pub parallel: usize,
}

fn parse_tag(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not K=V")),
    }
}

/// Like [`parse_duration`], and `0`/`0s` too.
pub fn parse_duration_or_zero(s: &str) -> std::result::Result<chrono::Duration, String> {
    if s.trim_end_matches(['s', 'm', 'h', 'd']) == "0" {
        return Ok(chrono::Duration::zero());
    }
    parse_duration(s)
}

/// A Go-style duration (`720h`, `1h30m`, `90s`) or days (`30d`).
pub fn parse_duration(s: &str) -> std::result::Result<chrono::Duration, String> {
    let bad = || format!("{s:?} is not a duration like 720h, 1h30m or 30d");
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || s.trim().is_empty() || total <= 0 {
        return Err(bad());
    }
    chrono::Duration::try_seconds(total).ok_or_else(bad)
}

pub async fn run(ctx: &Context, args: BackupArgs) -> Result<Output> {
    if args.config.is_empty() && args.postgres.is_empty() && !args.registry.given() {
        return Err(Error::Usage(
            "nothing to back up: give --postgres URL, --registry-fs DIR or --registry-s3 URL, and/or --config PATH".into(),
        ));
    }
    config::validate_paths(&args.config)?;
    // Harbor's API and the secretKey check around the snapshot: src/cli/harbor.rs.
    let harbor = args.harbor.clone();
    let key =
        super::harbor::SecretKeyCheck::new(&args.config, !args.postgres.is_empty(), args.strict);
    let db_key = key.key_check();
    let quiesce = args.harbor_read_only;
    super::harbor::around_backup(&harbor, quiesce, key, |state| {
        snapshot(ctx, args, db_key, state)
    })
    .await
}

async fn snapshot(
    ctx: &Context,
    args: BackupArgs,
    db_key: Option<db::encrypted::KeyCheck>,
    harbor: super::harbor::HarborState,
) -> Result<Output> {
    let registry = args.registry.open().await?;
    config::validate_paths(&args.config)?;
    let pg = super::databases::backup_targets(&args.postgres)?;
    let started = Instant::now();
    let time = Utc::now();
    let repo = ctx.open_repo().await?;
    if let Some(class) = &args.storage_class {
        // A fresh repository handle: nothing has read the class yet.
        let _ = repo.data_class_override.set(class.clone());
    }
    let mut index = repo.load_index().await?;
    // Packs prune has marked for deletion are neither adopted nor reused.
    let marked = crate::repo::prune::marked_packs(&repo).await?;
    repo.adopt_unindexed_packs(&mut index, &marked).await?;
    index.remove_packs(&marked);
    let writer = Arc::new(BlobWriter::new(repo.clone(), &index, args.parallel)?);
    drop(index);
    let progress = Progress::new(ctx.global.progress, "backup", None);

    let collected =
        match back_up_parts(&args, &pg, db_key, registry.as_ref(), &writer, &progress).await {
            Ok(c) => c,
            Err(e) => return Err(writer.abort(e).await),
        };
    let Collected {
        parts,
        counts,
        mut warnings,
        registry_read,
        missing_digests,
        gc_leftovers,
        key_reports,
    } = collected;
    let key_notes = key_outcome(&key_reports, args.strict, &mut warnings);
    let totals = writer.finish().await?;
    progress.finish();

    let db_bytes: u64 = parts.databases.iter().map(|d| d.total_bytes()).sum();
    let registry_bytes = parts.registry.as_ref().map(|r| r.blob_bytes).unwrap_or(0);
    let summary = Summary {
        files: counts.files,
        dirs: counts.dirs,
        logical_bytes: counts.bytes + db_bytes + registry_bytes,
        new_bytes: totals.new_bytes,
        reused_bytes: totals.reused_bytes,
        stored_bytes: totals.stored_bytes,
        new_blobs: totals.new_blobs,
        duration_secs: started.elapsed().as_secs_f64(),
    };
    let part_json = json!({
        "db": parts.databases.first().map(db_json),
        "databases": parts.databases.iter().map(db_json).collect::<Vec<_>>(),
        "registry": parts.registry.as_ref().map(|r| json!({
            "repositories": r.repositories, "tags": r.tags, "blobs": r.blob_count,
            "blob_bytes": r.blob_bytes, "bytes_read": registry_read,
            "missing_digests": missing_digests,
            "gc_leftovers": gc_leftovers.len(),
        })),
        "config": parts.config.as_ref().map(|_| &counts),
    });
    let snapshot = Snapshot {
        version: VERSION,
        time,
        host: args
            .host
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        tags: snapshot_tags(args.tags, args.velero_backup.as_deref()),
        expires: Some(time + args.ttl),
        program: format!("drydock {}", env!("CARGO_PKG_VERSION")),
        harbor_version: harbor.version,
        quiesced: Some(harbor.quiesced),
        parts,
        summary: summary.clone(),
    };
    let id = repo
        .save_snapshot(&snapshot, Some(&writer.references()))
        .await?;
    record_metrics(&summary, &snapshot.parts);
    if let Ok(ids) = repo.list_snapshot_ids().await {
        crate::metrics::record(crate::metrics::Sample::new(
            "drydock_snapshots",
            ids.len() as f64,
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let exit_code = if warnings.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    };
    let mut text = format!("snapshot {} saved:", id.short());
    for d in &snapshot.parts.databases {
        text += &format!(
            " database {} {} tables, {} rows;",
            d.database,
            d.tables.len(),
            d.total_rows()
        );
    }
    if let Some(r) = &snapshot.parts.registry {
        text += &format!(
            " registry {} repositories, {} tags, {} blobs ({} read);",
            r.repositories,
            r.tags,
            r.blob_count,
            ByteSize(registry_read)
        );
    }
    if snapshot.parts.config.is_some() {
        text += &format!(" {} config files;", summary.files);
    }
    let key_json: Vec<serde_json::Value> = key_reports
        .iter()
        .map(|(d, r)| json!({"database": d, "report": r}))
        .collect();
    text += &format!(
        " {} in all, {} new, {} reused, {} uploaded in {:.1}s{}\n",
        ByteSize(summary.logical_bytes),
        ByteSize(summary.new_bytes),
        ByteSize(summary.reused_bytes),
        ByteSize(summary.stored_bytes),
        summary.duration_secs,
        if warnings.is_empty() {
            String::new()
        } else {
            format!(" ({} warnings)", warnings.len())
        },
    );
    let json = json!({
        "snapshot": id.to_hex(),
        "short_id": id.short(),
        "time": time,
        "expires": snapshot.expires,
        "quiesced": harbor.quiesced,
        "parts": part_json,
        "summary": summary,
        "packs_written": totals.packs,
        "warnings": warnings,
        "secret_key_check": key_json,
    });
    for line in key_notes {
        text += &format!("{}\n", crate::term::esc(&line));
    }
    Ok(Output {
        text,
        json,
        exit: exit_code,
    })
}

fn db_json(d: &db::DatabasePart) -> serde_json::Value {
    json!({
        "database": d.database,
        "tables": d.tables.len(), "rows": d.total_rows(), "bytes": d.total_bytes(),
        "sequences": d.sequences.len(), "server_version": d.server_version,
        "harbor_schema_version": d.harbor_schema_version,
    })
}

fn record_metrics(summary: &Summary, parts: &Parts) {
    use crate::metrics::{record, Sample};
    for (kind, v) in [
        ("logical", summary.logical_bytes),
        ("new", summary.new_bytes),
        ("reused", summary.reused_bytes),
        ("stored", summary.stored_bytes),
    ] {
        record(Sample::new("drydock_backup_bytes", v as f64).label("kind", kind));
    }
    let part_bytes = [
        (
            "db",
            (!parts.databases.is_empty())
                .then(|| parts.databases.iter().map(|d| d.total_bytes()).sum()),
        ),
        ("registry", parts.registry.as_ref().map(|r| r.blob_bytes)),
        (
            "config",
            parts.config.as_ref().map(|_| summary.logical_bytes),
        ),
    ];
    for (part, bytes) in part_bytes {
        if let Some(b) = bytes {
            record(Sample::new("drydock_backup_part_bytes", b as f64).label("part", part));
        }
    }
}

/// `--tag` values plus the Velero backup and schedule names.
fn snapshot_tags(
    tags: Vec<(String, String)>,
    velero_backup: Option<&str>,
) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = tags.into_iter().collect();
    if let Some(name) = velero_backup {
        all.insert(velero::TAG_BACKUP.into(), name.into());
        if let Some(schedule) = velero::schedule_of(name) {
            all.entry(velero::TAG_SCHEDULE.into())
                .or_insert_with(|| schedule.into());
        }
    }
    all
}

/// What the parts produced, before the snapshot is written.
struct Collected {
    parts: Parts,
    counts: config::Counts,
    warnings: Vec<String>,
    registry_read: u64,
    missing_digests: Vec<String>,
    /// Digests of blob rows GC has marked whose files are gone (not missing data).
    gc_leftovers: Vec<String>,
    /// Per database: what the captured secretKey opened.
    key_reports: Vec<(String, db::encrypted::KeyReport)>,
}

/// The secretKey check's text lines. A key that does not open the database is a warning,
/// and with --strict one that makes the backup partial (exit 3).
fn key_outcome(
    reports: &[(String, db::encrypted::KeyReport)],
    strict: bool,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let several = reports.len() > 1;
    let mut lines = Vec::new();
    for (database, r) in reports {
        let label = match several {
            true => format!("db {database}"),
            false => "db".into(),
        };
        lines.extend(super::databases::key_lines(&label, Some(r)));
        for f in r.failures("this snapshot") {
            tracing::warn!("{label}: {f}");
            if strict {
                warnings.push(format!("{label}: {f}"));
            }
        }
    }
    lines
}

/// Back up each part named, in the order that keeps references whole: the database first,
/// then the registry's links, then its blobs, then configuration.
async fn back_up_parts(
    args: &BackupArgs,
    pg: &[db::PgTarget],
    key: Option<db::encrypted::KeyCheck>,
    registry: Option<&super::RegistryStore>,
    writer: &Arc<BlobWriter>,
    progress: &Arc<Progress>,
) -> Result<Collected> {
    let mut c = Collected {
        parts: Parts::default(),
        counts: config::Counts::default(),
        warnings: Vec::new(),
        registry_read: 0,
        missing_digests: Vec::new(),
        gc_leftovers: Vec::new(),
        key_reports: Vec::new(),
    };
    // The registry is checked against the digests of whichever database is Harbor core's.
    let mut referenced: Option<db::backup::Referenced> = None;
    let opts = db::backup::DbBackupOptions {
        parallel: args.parallel,
        force: args.force,
        key,
    };
    for target in pg {
        let b = db::backup::backup(target, writer.clone(), &opts, progress.clone()).await?;
        if let Some(r) = b.secret_key {
            c.key_reports.push((b.part.database.clone(), r));
        }
        c.parts.databases.push(b.part);
        if let Some(r) = b.referenced {
            referenced.get_or_insert_with(Default::default).extend(r);
        }
    }
    if let Some(r) = registry {
        let b = registry::backup::backup(
            r.store.clone(),
            r.driver,
            &r.root,
            writer.clone(),
            args.parallel,
            progress.clone(),
        )
        .await?;
        c.registry_read = b.bytes_read;
        c.warnings.extend(b.warnings);
        if let Some(referenced) = &referenced {
            let absent = |digests: &[String]| -> Vec<String> {
                digests
                    .iter()
                    .filter(|d| {
                        registry::Digest::parse(d).map_or(true, |d| !b.digests.contains(&d))
                    })
                    .cloned()
                    .collect()
            };
            c.missing_digests = absent(&referenced.live);
            c.gc_leftovers = absent(&referenced.gc_leftovers);
            if let Some(first) = c.missing_digests.first() {
                c.warnings.push(format!(
                    "the database refers to {} digest(s) the registry part lacks (first: {first}; all in --json missing_digests)",
                    c.missing_digests.len()
                ));
            }
            if !c.gc_leftovers.is_empty() {
                tracing::info!(
                    count = c.gc_leftovers.len(),
                    "blob rows Harbor's GC has marked (status delete, deleting or deletefailed) have no file in the registry: GC leftovers, not missing data"
                );
            }
        }
        c.parts.registry = Some(b.part);
    }
    if !args.config.is_empty() {
        let (writer, progress, paths) = (writer.clone(), progress.clone(), args.config.clone());
        let b = tokio::task::spawn_blocking(move || config::backup(&writer, &paths, &*progress))
            .await
            .map_err(|e| Error::Other(format!("backup task failed: {e}")))??;
        c.parts.config = Some(b.part);
        c.counts = b.counts;
        c.warnings.extend(b.warnings);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("720h").unwrap().num_hours(), 720);
        assert_eq!(parse_duration("720h0m0s").unwrap().num_hours(), 720);
        assert_eq!(parse_duration("1h30m").unwrap().num_minutes(), 90);
        assert_eq!(parse_duration("30d").unwrap().num_days(), 30);
        for bad in ["", "h", "10", "10x", "0h", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("x").is_err());
    }
}
