//! `--postgres [NAME=]URL`, repeatable: which server each of a snapshot's databases goes to.
//!
//! A snapshot holds one database per `backup --postgres` (Harbor's `registry`, and before
//! 2.9 Notary's `notary_server` and `notary_signer`), each named by its database name at
//! backup. Restore, verify and drill take them back by that name: `NAME=URL` says it
//! outright (a restore into CloudNativePG's `app` database needs it when the snapshot holds
//! several); a bare URL goes to the only database, or to the one whose name it ends in.

use super::postgres_target;
use crate::error::{Error, Result};
use crate::harbor::db::encrypted::{KeyCheck, KeyReport};
use crate::harbor::db::{DatabasePart, PgTarget};

/// One `--postgres` value: an optional snapshot database name and the URL.
fn split(value: &str) -> (Option<&str>, &str) {
    match value.split_once('=') {
        Some((name, url)) if !name.contains("://") && !name.is_empty() => (Some(name), url),
        _ => (None, value),
    }
}

fn names(parts: &[DatabasePart]) -> String {
    let v: Vec<&str> = parts.iter().map(|d| d.database.as_str()).collect();
    v.join(", ")
}

/// Pair every `--postgres` value with the snapshot database it is for.
pub fn match_targets<'a>(
    parts: &'a [DatabasePart],
    values: &[String],
) -> Result<Vec<(&'a DatabasePart, PgTarget)>> {
    let mut out: Vec<(&DatabasePart, PgTarget)> = Vec::new();
    for value in values {
        let (name, url) = split(value);
        let target = postgres_target(url)?;
        let part = match name {
            Some(n) => parts.iter().find(|d| d.database == n).ok_or_else(|| {
                Error::Usage(format!(
                    "--postgres {n}=…: the snapshot holds no database {n:?} (it holds: {})",
                    names(parts)
                ))
            })?,
            None if parts.len() == 1 => &parts[0],
            None => parts
                .iter()
                .find(|d| d.database == target.dbname)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "the snapshot holds several databases ({}): say which one {} is for with --postgres NAME=URL",
                        names(parts),
                        target.describe()
                    ))
                })?,
        };
        if out.iter().any(|(p, _)| p.database == part.database) {
            return Err(Error::Usage(format!(
                "--postgres names database {:?} twice",
                part.database
            )));
        }
        out.push((part, target));
    }
    Ok(out)
}

/// Backup: every `--postgres` URL, each database named once.
pub fn backup_targets(values: &[String]) -> Result<Vec<PgTarget>> {
    let mut out: Vec<PgTarget> = Vec::new();
    for value in values {
        let target = postgres_target(value)?;
        if out.iter().any(|t| t.dbname == target.dbname) {
            return Err(Error::Usage(format!(
                "--postgres names two databases called {:?}: a snapshot holds each database name once",
                target.dbname
            )));
        }
        out.push(target);
    }
    Ok(out)
}

/// The key `verify` and `drill` check a snapshot's databases with: the first secretKey in
/// its configuration part. `None` when it holds none: backup warned then.
pub async fn snapshot_key(
    reader: &crate::repo::reader::BlobReader,
    snap: &crate::repo::snapshot::Snapshot,
) -> Result<Option<KeyCheck>> {
    let keys = match &snap.parts.config {
        Some(part) => crate::harbor::config::secret_keys(reader, part).await?,
        None => Vec::new(),
    };
    let several = keys.len() > 1;
    let Some((path, key)) = keys.into_iter().next() else {
        tracing::info!(
            "the snapshot holds no Harbor secretKey: its <enc-v1> values are not checked"
        );
        return Ok(None);
    };
    if several {
        tracing::info!(key = %path.display(), "the snapshot holds several secretKeys; checking with the first");
    }
    Ok(Some(KeyCheck::new(path.display().to_string(), key)))
}

/// `db: secretKey /etc/core/key: registry.access_secret: 2 opened, 0 did not` lines for a
/// text report.
pub fn key_lines(label: &str, report: Option<&KeyReport>) -> Vec<String> {
    let Some(r) = report else {
        return Vec::new();
    };
    if r.columns.is_empty() {
        return vec![format!(
            "{label}: secretKey {}: no <enc-v1> values in the database",
            r.key_file
        )];
    }
    r.summary()
        .into_iter()
        .map(|l| format!("{label}: secretKey {}: {l}", r.key_file))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_at_a_name_before_the_url_only() {
        assert_eq!(
            split("registry=postgresql://app@h/app"),
            (Some("registry"), "postgresql://app@h/app")
        );
        assert_eq!(
            split("postgresql://h/app?sslmode=disable"),
            (None, "postgresql://h/app?sslmode=disable")
        );
    }
}
