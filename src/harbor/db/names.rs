//! Harbor's names in a snapshot's database part, read from the stored COPY text without
//! restoring it: the projects (`project.name`, those not deleted) and repositories
//! (`repository.name`, `project/…`). `restore --project` cross-checks the registry part
//! against them.

use std::collections::BTreeSet;

use futures::StreamExt;

use super::restore::{node, nodes};
use super::{table_node_name, DatabasePart, TableEntry};
use crate::error::{Error, Result};
use crate::repo::blob::BlobType;
use crate::repo::reader::BlobReader;

/// The projects and repositories Harbor's database knew at the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HarborNames {
    pub projects: BTreeSet<String>,
    pub repositories: BTreeSet<String>,
}

/// A table of Harbor's schema (`public.NAME`) in the part, with its index.
fn table<'a>(part: &'a DatabasePart, name: &str) -> Option<(usize, &'a TableEntry)> {
    part.tables
        .iter()
        .enumerate()
        .find(|(_, t)| t.schema == "public" && t.name == name)
}

/// Whether this part is Harbor's core database (it has both tables).
pub fn is_harbor(part: &DatabasePart) -> bool {
    table(part, "project").is_some() && table(part, "repository").is_some()
}

/// The names in Harbor's `project` and `repository` tables; `None` if the part is not
/// Harbor's core database.
pub async fn read(reader: &BlobReader, part: &DatabasePart) -> Result<Option<HarborNames>> {
    if !is_harbor(part) {
        return Ok(None);
    }
    let nodes = nodes(reader, part).await?;
    let mut names = HarborNames::default();
    let projects = column_values(reader, part, &nodes, "project", &["name", "deleted"]).await?;
    // A deleted project keeps its row (renamed `name#id`), marked `deleted`.
    names.projects = projects
        .into_iter()
        .filter(|row| row[1].as_deref() != Some("t"))
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    let repos = column_values(reader, part, &nodes, "repository", &["name"]).await?;
    names.repositories = repos
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    Ok(Some(names))
}

/// The values of `wanted` columns, row by row (`None` for NULL or a missing column).
async fn column_values(
    reader: &BlobReader,
    part: &DatabasePart,
    nodes: &std::collections::HashMap<String, crate::repo::tree::Node>,
    name: &str,
    wanted: &[&str],
) -> Result<Vec<Vec<Option<String>>>> {
    let (i, t) = table(part, name).expect("checked by is_harbor");
    let at: Vec<Option<usize>> = wanted
        .iter()
        .map(|w| t.columns.iter().position(|c| c == w))
        .collect();
    if at[0].is_none() {
        return Err(Error::Integrity(format!(
            "the database part's table public.{name} has no column {}",
            wanted[0]
        )));
    }
    let n = node(nodes, &table_node_name(i))?;
    let mut rows = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    // A small table is one padded blob: only its recorded length is COPY text.
    let mut left = t.bytes;
    let mut chunks = std::pin::pin!(reader.load_stream(&n.content, BlobType::Data, 4));
    while let Some(chunk) = chunks.next().await {
        let mut chunk = chunk?;
        chunk.truncate(left.min(chunk.len() as u64) as usize);
        left -= chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        let complete = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        for line in pending[..complete].split(|&b| b == b'\n') {
            if !line.is_empty() {
                rows.push(pick(&fields(line), &at));
            }
        }
        pending.drain(..complete);
    }
    if !pending.is_empty() {
        rows.push(pick(&fields(&pending), &at));
    }
    Ok(rows)
}

fn pick(fields: &[Option<String>], at: &[Option<usize>]) -> Vec<Option<String>> {
    at.iter()
        .map(|i| i.and_then(|i| fields.get(i).cloned().flatten()))
        .collect()
}

/// The fields of one line of PostgreSQL's COPY text: tab-separated, `\N` for NULL,
/// backslash escapes (`\t`, `\n`, `\\`, octal `\ooo`, hex `\xhh`…) decoded.
pub fn fields(line: &[u8]) -> Vec<Option<String>> {
    line.split(|&b| b == b'\t')
        .map(|f| (f != b"\\N").then(|| unescape(f)))
        .collect()
}

fn unescape(f: &[u8]) -> String {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'\\' || i + 1 == f.len() {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        let digits = |i: usize, max: usize, radix: u32| {
            f[i..]
                .iter()
                .take(max)
                .take_while(|b| (**b as char).is_digit(radix))
                .count()
        };
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let n = 1 + digits(i, 2, 8);
                let s = std::str::from_utf8(&f[i - 1..i - 1 + n]).expect("ASCII digits");
                out.push(u8::from_str_radix(s, 8).unwrap_or(0));
                i += n - 1;
            }
            b'x' if digits(i, 2, 16) > 0 => {
                let n = digits(i, 2, 16);
                let s = std::str::from_utf8(&f[i..i + n]).expect("ASCII digits");
                out.push(u8::from_str_radix(s, 16).unwrap_or(0));
                i += n;
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields() {
        let f = fields(b"1\tlibrary\t\\N\tf");
        assert_eq!(
            f,
            vec![
                Some("1".into()),
                Some("library".into()),
                None,
                Some("f".into())
            ]
        );
        assert_eq!(
            fields(b"a\\tb\\\\c\\nd\\101\\x42\\q"),
            vec![Some("a\tb\\c\nd".to_string() + "AB" + "q")]
        );
        // A lone trailing backslash and odd escapes do not panic.
        assert_eq!(fields(b"x\\"), vec![Some("x\\".into())]);
        assert_eq!(fields(b"\\x"), vec![Some("x".into())]);
        assert_eq!(fields(b"\\777").len(), 1);
    }
}
