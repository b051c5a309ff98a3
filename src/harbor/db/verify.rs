//! Compare a live database with a snapshot: per table row count and content checksum,
//! computed the same way on both sides, inside one consistent snapshot of the live side.

use std::collections::BTreeSet;

use futures::{pin_mut, StreamExt};
use serde::Serialize;
use tokio_postgres::Client;

use super::backup::harbor_schema;
use super::conn::{pg_error, PgTarget};
use super::encrypted::{ColumnCount, KeyCheck, KeyReport, TableScan};
use super::workers::{export_snapshot, for_each_table, join_snapshot, Exported, TableWork};
use super::{DatabasePart, RowDigest, TableEntry};
use crate::error::Result;

#[derive(Debug, Default, Serialize)]
pub struct DbVerifyReport {
    pub tables_checked: usize,
    pub rows_checked: u64,
    /// One line per difference (a secretKey that does not open the database's values is
    /// one); empty when the database matches.
    pub differences: Vec<String>,
    /// What the snapshot's secretKey opened, when the snapshot holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<KeyReport>,
}

async fn digest(
    client: &Client,
    table: &TableEntry,
    mut scan: Option<TableScan>,
) -> Result<(RowDigest, Vec<ColumnCount>)> {
    let what = format!("reading table {}", table.display());
    let stream = client
        .copy_out(&table.copy_sql("TO STDOUT"))
        .await
        .map_err(|e| pg_error(&what, e))?;
    pin_mut!(stream);
    let mut d = RowDigest::default();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| pg_error(&what, e))?;
        d.update(&piece);
        if let Some(s) = &mut scan {
            s.update(&piece);
        }
    }
    Ok((d, scan.map(TableScan::finish).unwrap_or_default()))
}

/// Digests tables inside the exported snapshot: row count and checksum (and `<enc-v1>`
/// counts, given a key).
struct Digests<'a> {
    snapshot: &'a Exported,
    tables: &'a [TableEntry],
    key: Option<&'a KeyCheck>,
    schema_version: Option<i64>,
}

impl TableWork for Digests<'_> {
    type Output = (u64, String, Vec<ColumnCount>);

    async fn setup(&self, client: &Client) -> Result<()> {
        join_snapshot(client, self.snapshot).await
    }

    async fn table(&self, client: &Client, i: usize) -> Result<Self::Output> {
        let table = &self.tables[i];
        let scan = self.key.map(|k| k.scan(table, self.schema_version));
        let (d, secrets) = digest(client, table, scan).await?;
        Ok((d.rows, d.checksum(), secrets))
    }
}

/// Compare the database at `target` with `part`; with `key`, also decrypt every
/// `<enc-v1>` value read on the way (the snapshot's secretKey must open them).
pub async fn verify(
    target: &PgTarget,
    part: &DatabasePart,
    parallel: usize,
    key: Option<&KeyCheck>,
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
        key,
        schema_version: part.harbor_schema_version,
    };
    let mut found = for_each_table(target, parallel, present, &work).await?;
    if let Some(k) = key {
        let r = k.report(found.iter_mut().map(|(_, (_, _, s))| std::mem::take(s)));
        report.differences.extend(r.failures("this snapshot"));
        report.secret_key = Some(r);
    }
    for (i, (rows, checksum, _)) in found {
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
