//! The database part: one consistent point in time of Harbor's PostgreSQL database.
//!
//! Backup: a REPEATABLE READ, READ ONLY transaction exports its snapshot; `--parallel`
//! connections import it and COPY tables concurrently through the chunker; the schema
//! comes from `pg_dump --schema-only --snapshot` (pre-data and post-data); sequence values
//! are read inside the same snapshot. Restore: `empty` (pre-data, parallel COPY, post-data,
//! sequences) or `running` (everything replaced in one transaction).

pub mod backup;
pub mod conn;
pub mod encrypted;
mod grants;
pub mod names;
pub mod restore;
mod scratch;
pub mod sql;
pub mod tools;
pub mod verify;
mod workers;

use std::io::Read;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::BlobId;

pub use conn::PgTarget;

/// Node names in the database part's tree.
pub const PRE_DATA: &str = "pre-data.sql";
pub const POST_DATA: &str = "post-data.sql";

pub fn table_node_name(i: usize) -> String {
    format!("table-{i:06}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabasePart {
    /// `SHOW server_version` and `server_version_num` of the source.
    pub server_version: String,
    pub server_version_num: i32,
    pub database: String,
    /// The pg_dump that wrote the schema sections.
    pub pg_dump_version: String,
    /// Harbor's `schema_migrations.version` and `dirty`, when the table exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harbor_schema_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harbor_schema_dirty: Option<bool>,
    /// A tree: `pre-data.sql`, `post-data.sql`, and `table-NNNNNN` (COPY text of table N).
    pub tree: BlobId,
    pub tables: Vec<TableEntry>,
    pub sequences: Vec<SequenceEntry>,
    /// Foreign keys as (referencing table, referenced table) indexes into `tables`.
    #[serde(default)]
    pub foreign_keys: Vec<(usize, usize)>,
}

impl DatabasePart {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }

    pub fn major(&self) -> i32 {
        self.server_version_num / 10000
    }

    /// Tables in an order where every referenced table comes before those referencing it.
    pub fn load_order(&self) -> crate::Result<Vec<usize>> {
        let n = self.tables.len();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(child, parent) in &self.foreign_keys {
            if child < n && parent < n && child != parent {
                parents[child].push(parent);
            }
        }
        // Depth-first, parents before children, with an explicit stack: the foreign keys
        // come from the snapshot, and a forged chain of 300 000 must not overflow the stack.
        let mut state = vec![0u8; n]; // 0 new, 1 visiting, 2 done
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<(usize, usize)> = Vec::new(); // (table, next parent to look at)
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            stack.push((root, 0));
            while let Some((i, next)) = stack.last_mut() {
                let i = *i;
                let Some(&p) = parents[i].get(*next) else {
                    state[i] = 2;
                    order.push(i);
                    stack.pop();
                    continue;
                };
                *next += 1;
                match state[p] {
                    0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        return Err(crate::Error::Usage(format!(
                            "the foreign keys around table {} form a cycle; running-mode restore cannot order the load",
                            self.tables[root].qualified()
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(order)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// COPY column list, in order (generated columns excluded).
    pub columns: Vec<String>,
    pub rows: u64,
    /// Bytes of COPY text.
    pub bytes: u64,
    /// Order-independent content checksum ([`RowDigest`]).
    pub checksum: String,
}

impl TableEntry {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn copy_sql(&self, direction: &str) -> String {
        if self.columns.is_empty() {
            format!("COPY {} {direction}", self.qualified())
        } else {
            let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
            format!(
                "COPY {} ({}) {direction}",
                self.qualified(),
                cols.join(", ")
            )
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SequenceEntry {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

impl SequenceEntry {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Row count and an order-independent checksum of COPY text: the wrapping sum of the first
/// 16 bytes (little-endian u128) of BLAKE3 of every row line. Rows may come in any physical
/// order and still give the same value; duplicate rows count twice.
#[derive(Default)]
pub struct RowDigest {
    line: blake3::Hasher,
    sum: u128,
    pub rows: u64,
    pub bytes: u64,
}

impl RowDigest {
    pub fn update(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.line.update(&data[..i]);
            let h = self.line.finalize();
            self.sum = self.sum.wrapping_add(u128::from_le_bytes(
                h.as_bytes()[..16].try_into().expect("16 bytes"),
            ));
            self.rows += 1;
            self.line.reset();
            data = &data[i + 1..];
        }
        self.line.update(data);
    }

    pub fn checksum(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// A blocking reader over chunks sent from an async task, digesting rows as they pass (and
/// checking their `<enc-v1>` values when given a [`TableScan`]).
///
/// [`TableScan`]: encrypted::TableScan
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    pub digest: RowDigest,
    pub scan: Option<encrypted::TableScan>,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>, scan: Option<encrypted::TableScan>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            digest: RowDigest::default(),
            scan,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.digest.update(&b);
                    if let Some(scan) = &mut self.scan {
                        scan.update(&b);
                    }
                    self.current = b;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_digest_ignores_order_and_split_points() {
        let mut a = RowDigest::default();
        a.update(b"1\tx\n2\ty\n3\tz\n");
        let mut b = RowDigest::default();
        for piece in [&b"3\tz\n2"[..], b"\ty", b"\n1\tx\n"] {
            b.update(piece);
        }
        assert_eq!((a.rows, a.checksum()), (b.rows, b.checksum()));
        let mut c = RowDigest::default();
        c.update(b"1\tx\n2\ty\n3\tZ\n");
        assert_ne!(a.checksum(), c.checksum());
        let mut d = RowDigest::default();
        d.update(b"1\tx\n1\tx\n");
        assert_eq!(d.rows, 2);
        assert_ne!(d.checksum(), RowDigest::default().checksum());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    fn part(fks: Vec<(usize, usize)>) -> DatabasePart {
        let t = |n: &str| TableEntry {
            schema: "public".into(),
            name: n.into(),
            columns: vec![],
            rows: 0,
            bytes: 0,
            checksum: String::new(),
        };
        DatabasePart {
            server_version: "15".into(),
            server_version_num: 150000,
            database: "registry".into(),
            pg_dump_version: "15".into(),
            harbor_schema_version: None,
            harbor_schema_dirty: None,
            tree: BlobId([0; 32]),
            tables: vec![t("tag"), t("artifact"), t("repository"), t("project")],
            sequences: vec![],
            foreign_keys: fks,
        }
    }

    #[test]
    fn load_order_puts_parents_first_and_finds_cycles() {
        let p = part(vec![(0, 1), (1, 2), (2, 3), (1, 1)]);
        assert_eq!(p.load_order().unwrap(), vec![3, 2, 1, 0]);
        assert!(part(vec![(0, 1), (1, 0)]).load_order().is_err());
    }

    #[test]
    fn load_order_survives_a_forged_chain_of_foreign_keys() {
        let n = 300_000;
        let mut p = part(Vec::new());
        p.tables = (0..n).map(|_| p.tables[0].clone()).collect();
        p.foreign_keys = (0..n - 1).map(|i| (i, i + 1)).collect();
        let order = p.load_order().unwrap();
        assert_eq!(order.len(), n);
        assert_eq!(order[0], n - 1);
    }
}
