//! Compare a live database with a snapshot: per table row count and content checksum,
//! computed the same way on both sides, inside one consistent snapshot of the live side.

use std::collections::BTreeSet;

use futures::{pin_mut, StreamExt};
use serde::Serialize;
use tokio_postgres::Client;

use super::backup::harbor_schema;
use super::conn::{pg_error, PgTarget};
use super::workers::{export_snapshot, for_each_table, join_snapshot, Exported, TableWork};
use super::{DatabasePart, RowDigest, TableEntry};
use crate::error::Result;

#[derive(Debug, Default, Serialize)]
pub struct DbVerifyReport {
    pub tables_checked: usize,
    pub rows_checked: u64,
    /// One line per difference; empty when the database matches.
    pub differences: Vec<String>,
}

async fn digest(client: &Client, table: &TableEntry) -> Result<RowDigest> {
    let what = format!("reading table {}", table.display());
    let stream = client
        .copy_out(&table.copy_sql("TO STDOUT"))
        .await
        .map_err(|e| pg_error(&what, e))?;
    pin_mut!(stream);
    let mut d = RowDigest::default();
    while let Some(piece) = stream.next().await {
        d.update(&piece.map_err(|e| pg_error(&what, e))?);
    }
    Ok(d)
}

/// Digests tables inside the exported snapshot: row count and checksum.
struct Digests<'a> {
    snapshot: &'a Exported,
    tables: &'a [TableEntry],
}

impl TableWork for Digests<'_> {
    type Output = (u64, String);

    async fn setup(&self, client: &Client) -> Result<()> {
        join_snapshot(client, self.snapshot).await
    }

    async fn table(&self, client: &Client, i: usize) -> Result<(u64, String)> {
        let d = digest(client, &self.tables[i]).await?;
        Ok((d.rows, d.checksum()))
    }
}

pub async fn verify(
    target: &PgTarget,
    part: &DatabasePart,
    parallel: usize,
) -> Result<DbVerifyReport> {
    let main = target.connect().await?;
    let snapshot = export_snapshot(target, &main, "verify").await?;
    let mut report = DbVerifyReport::default();
    let (version, _) = harbor_schema(&main).await?;
    if version != part.harbor_schema_version {
        report.differences.push(format!(
            "Harbor schema version: live {:?}, snapshot {:?}",
            version, part.harbor_schema_version
        ));
    }
    let live: BTreeSet<(String, String)> = main
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing tables", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let in_snapshot: BTreeSet<(String, String)> = part
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    for (s, n) in live.difference(&in_snapshot) {
        report.differences.push(format!(
            "table {s}.{n}: in the database, not in the snapshot"
        ));
    }
    let present: Vec<usize> = (0..part.tables.len())
        .filter(|&i| {
            let t = &part.tables[i];
            let here = live.contains(&(t.schema.clone(), t.name.clone()));
            if !here {
                report.differences.push(format!(
                    "table {}: in the snapshot, missing from the database",
                    t.display()
                ));
            }
            here
        })
        .collect();
    let work = Digests {
        snapshot: &snapshot,
        tables: &part.tables,
    };
    let found = for_each_table(target, parallel, present, &work).await?;
    for (i, (rows, checksum)) in found {
        let t = &part.tables[i];
        report.tables_checked += 1;
        report.rows_checked += rows;
        if rows != t.rows {
            report.differences.push(format!(
                "table {}: {rows} rows in the database, {} in the snapshot",
                t.display(),
                t.rows
            ));
        } else if checksum != t.checksum {
            report.differences.push(format!(
                "table {}: same row count ({rows}) but different content",
                t.display()
            ));
        }
    }
    Ok(report)
}
