//! `drydock show`: what a snapshot holds.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{Context, Output};
use crate::error::Error;
use crate::error::Result;
use crate::harbor::config;
use crate::ids::ByteSize;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::term::esc;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Print only the PostgreSQL major of the snapshot's database part (e.g. `18`), for
    /// scripts: the in-cluster drill starts a scratch server of that major. A snapshot
    /// without a database part is a usage error (exit 2).
    #[arg(long)]
    pub postgres_major: bool,
}

/// The PostgreSQL major a restore of `snap` needs: that of its database part, or the
/// highest one should a snapshot ever hold several databases (a server of the highest major
/// can load them all). `None` when the snapshot holds no database.
pub fn postgres_major(snap: &Snapshot) -> Option<i32> {
    snap.parts.databases.iter().map(|d| d.major()).max()
}

pub async fn run(ctx: &Context, args: ShowArgs) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    let (id, snap) = repo.find_snapshot(&args.snapshot).await?;
    if args.postgres_major {
        // Only the manifest is needed: no index load, so this stays quick on a big repository.
        let major = postgres_major(&snap).ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {} has no database part, so no PostgreSQL major",
                id.short()
            ))
        })?;
        return Ok(Output::ok(
            format!("{major}\n"),
            json!({"id": id.to_hex(), "postgres_major": major}),
        ));
    }
    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index, "show")?;
    let mut text = format!(
        "snapshot {} taken {} on {}\nparts: {}\n",
        id.short(),
        snap.time.to_rfc3339(),
        esc(&snap.host),
        snap.parts.names().join(", ")
    );
    for (k, v) in &snap.tags {
        text += &format!("tag: {}={}\n", esc(k), esc(v));
    }
    if let Some(v) = &snap.harbor_version {
        text += &format!("Harbor version: {}\n", esc(v));
    }
    text += &format!(
        "quiesced: {}\n",
        match snap.quiesced {
            Some(true) => "yes (Harbor was read-only for the whole backup)",
            Some(false) => "no (Harbor was not held read-only)",
            None => "unknown (written before drydock recorded it)",
        }
    );
    let mut databases = Vec::new();
    for d in &snap.parts.databases {
        let (t, j) = describe_database(d);
        text += &t;
        databases.push(j);
    }
    let db_json = databases.first().cloned().unwrap_or_default();
    let mut registry_json = serde_json::Value::Null;
    if let Some(r) = &snap.parts.registry {
        let links = crate::harbor::registry::restore::links(&reader, r).await?;
        let mut tags: std::collections::BTreeMap<&str, Vec<&str>> =
            std::collections::BTreeMap::new();
        for l in &links {
            if let Some((repo, tag)) = l.tag() {
                tags.entry(repo).or_default().push(tag);
            }
        }
        text += &format!(
            "\nregistry ({} at {}): {} repositories, {} tags, {} blobs, {}\n",
            esc(&r.driver),
            esc(&r.root),
            r.repositories,
            r.tags,
            r.blob_count,
            ByteSize(r.blob_bytes)
        );
        for (repo, t) in &tags {
            text += &format!("  {}: {}\n", esc(repo), esc(t.join(", ")));
        }
        registry_json = json!({
            "driver": r.driver, "root": r.root, "repositories": tags, "blobs": r.blob_count,
            "blob_bytes": r.blob_bytes, "tags": r.tags,
        });
    }
    let mut config_json = serde_json::Value::Null;
    if let Some(part) = &snap.parts.config {
        let items = config::plan(&reader, part, Path::new("/")).await?;
        text += "\nconfiguration:\n";
        let mut entries = Vec::new();
        for (path, node) in &items {
            let kind = match node.kind {
                NodeKind::File => "file",
                NodeKind::Dir => "dir",
                NodeKind::Symlink => "symlink",
            };
            let extra = match node.kind {
                NodeKind::File => ByteSize(node.size).to_string(),
                NodeKind::Symlink => {
                    format!("-> {}", esc(node.target.as_deref().unwrap_or_default()))
                }
                NodeKind::Dir => String::new(),
            };
            text += &format!(
                "  {:<7} {:04o}  {}  {extra}\n",
                kind,
                node.mode,
                esc(path.display())
            );
            entries.push(
                json!({"path": path, "kind": kind, "mode": node.mode, "size": node.size,
                                "mtime": node.mtime, "target": node.target}),
            );
        }
        config_json = json!({"roots": part.roots.iter().map(|r| &r.path).collect::<Vec<_>>(), "entries": entries});
    }
    Ok(Output::ok(
        text,
        json!({
            "id": id.to_hex(), "time": snap.time, "host": snap.host, "tags": snap.tags,
            "expires": snap.expires, "program": snap.program, "harbor_version": snap.harbor_version, "quiesced": snap.quiesced, "parts": {"db": db_json, "databases": databases, "registry": registry_json, "config": config_json},
            "summary": snap.summary,
        }),
    ))
}

/// One database part: a text section (tables largest first) and its --json object.
fn describe_database(d: &crate::harbor::db::DatabasePart) -> (String, serde_json::Value) {
    let mut text = String::new();
    text += &format!(
        "\ndatabase \"{}\": PostgreSQL {}, Harbor schema version {}{}, {} tables, {} rows, {}\n",
        esc(&d.database),
        esc(&d.server_version),
        d.harbor_schema_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into()),
        if d.harbor_schema_dirty == Some(true) {
            " (dirty)"
        } else {
            ""
        },
        d.tables.len(),
        d.total_rows(),
        ByteSize(d.total_bytes())
    );
    let mut tables: Vec<_> = d.tables.iter().collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    for t in &tables {
        text += &format!(
            "  {:>12} rows  {:>10}  {}\n",
            t.rows,
            ByteSize(t.bytes).to_string(),
            esc(t.display())
        );
    }
    let json = json!({
        "database": d.database, "server_version": d.server_version,
        "harbor_schema_version": d.harbor_schema_version, "harbor_schema_dirty": d.harbor_schema_dirty,
        "pg_dump_version": d.pg_dump_version,
        "tables": d.tables.iter().map(|t| json!({"schema": t.schema, "name": t.name, "rows": t.rows, "bytes": t.bytes})).collect::<Vec<_>>(),
        "sequences": d.sequences.len(),
    });
    (text, json)
}

/// `yes`, `no`, or `-` (unknown: a snapshot from before drydock recorded it).
pub fn quiesced_word(q: Option<bool>) -> &'static str {
    match q {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harbor::db::DatabasePart;
    use crate::repo::snapshot::{Parts, Summary};

    fn snapshot(database: Option<DatabasePart>) -> Snapshot {
        Snapshot {
            version: 1,
            time: chrono::Utc::now(),
            host: "h".into(),
            tags: Default::default(),
            expires: None,
            program: "drydock test".into(),
            harbor_version: None,
            quiesced: None,
            parts: Parts {
                databases: database.into_iter().collect(),
                ..Default::default()
            },
            summary: Summary::default(),
        }
    }

    fn database(server_version_num: i32) -> DatabasePart {
        serde_json::from_value(json!({
            "server_version": "x", "server_version_num": server_version_num,
            "database": "registry", "pg_dump_version": "x", "tree": "00".repeat(32),
            "tables": [], "sequences": [],
        }))
        .unwrap()
    }

    #[test]
    fn postgres_major_is_that_of_the_database_part() {
        assert_eq!(postgres_major(&snapshot(Some(database(180001)))), Some(18));
        assert_eq!(postgres_major(&snapshot(Some(database(150014)))), Some(15));
        assert_eq!(postgres_major(&snapshot(Some(database(130022)))), Some(13));
        assert_eq!(postgres_major(&snapshot(None)), None);
    }
}
