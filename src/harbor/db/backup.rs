//! Database backup: one exported snapshot, parallel COPY, schema by pg_dump.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use futures::{pin_mut, StreamExt};
use tokio_postgres::Client;

use super::conn::{different_servers, in_database, pg_error, PgTarget};
use super::encrypted::{ColumnCount, KeyCheck, KeyReport, TableScan};
use super::tools::{self, Tool};
use super::workers::{export_snapshot, for_each_table, join_snapshot, Exported, TableWork};
use super::{
    table_node_name, ChannelReader, DatabasePart, SequenceEntry, TableEntry, POST_DATA, PRE_DATA,
};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::repo::blob::BlobType;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::writer::{BlobWriter, OnBytes};

pub type Progress = Arc<dyn OnBytes + Send + Sync>;

pub struct DbBackupOptions {
    pub parallel: usize,
    /// Back up even if Harbor's schema_migrations is marked dirty.
    pub force: bool,
    /// Check every `<enc-v1>` value against this key (the one the backup captures).
    pub key: Option<KeyCheck>,
}

/// A table as listed inside the snapshot.
struct TableInfo {
    oid: u32,
    entry: TableEntry,
    size: i64,
}

/// What a table's COPY produced.
struct TableData {
    content: Vec<BlobId>,
    rows: u64,
    bytes: u64,
    checksum: String,
    /// `<enc-v1>` counts, when a key is checked.
    secrets: Vec<ColumnCount>,
}

/// Bytes of COPY text handed to the chunker at a time.
const COPY_BATCH: usize = 256 * 1024;

pub async fn server_version(client: &Client) -> Result<(String, i32)> {
    let v: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(|e| pg_error("reading the server version", e))?
        .get(0);
    let n: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| pg_error("reading the server version", e))?
        .get(0);
    let num = n
        .parse()
        .map_err(|_| Error::Other(format!("unexpected server_version_num {n:?}")))?;
    Ok((v, num))
}

/// Whether `public.<name>` is a plain table. A view (or anything else) is never read:
/// selecting from a view runs whatever functions it calls, with the reader's rights, and
/// verify and drill read databases a snapshot created, often as a superuser.
pub async fn is_plain_table(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind = 'r')",
            &[&name],
        )
        .await
        .map_err(|e| pg_error(&format!("looking for table public.{name}"), e))?
        .get(0))
}

/// Harbor's migration version and dirty flag, if `schema_migrations` is a table.
pub async fn harbor_schema(client: &Client) -> Result<(Option<i64>, Option<bool>)> {
    if !is_plain_table(client, "schema_migrations").await? {
        return Ok((None, None));
    }
    let row = client
        .query_opt(
            "SELECT version::bigint, dirty FROM public.schema_migrations LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| pg_error("reading schema_migrations", e))?;
    Ok(match row {
        Some(r) => (Some(r.get(0)), Some(r.get(1))),
        None => (None, None),
    })
}

/// User tables (not partitioned parents: their partitions are copied), largest first.
async fn list_tables(client: &Client) -> Result<Vec<TableInfo>> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, pg_total_relation_size(c.oid)::bigint,
                    coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attgenerated = ''), '{}')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype = 'e')
             ORDER BY n.nspname, c.relname",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing tables", e))?;
    Ok(rows
        .iter()
        .map(|r| TableInfo {
            oid: r.get(0),
            size: r.get(3),
            entry: TableEntry {
                schema: r.get(1),
                name: r.get(2),
                columns: r.get(4),
                rows: 0,
                bytes: 0,
                checksum: String::new(),
            },
        })
        .collect())
}

async fn list_foreign_keys(client: &Client, tables: &[TableInfo]) -> Result<Vec<(usize, usize)>> {
    let pos: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let rows = client
        .query(
            "SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing foreign keys", e))?;
    let mut fks: Vec<(usize, usize)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                *pos.get(&r.get::<_, u32>(0))?,
                *pos.get(&r.get::<_, u32>(1))?,
            ))
        })
        .collect();
    fks.sort();
    fks.dedup();
    Ok(fks)
}

/// Sequence values as the snapshot sees them.
async fn list_sequences(client: &Client) -> Result<Vec<SequenceEntry>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing sequences", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut s = SequenceEntry {
            schema: r.get(0),
            name: r.get(1),
            last_value: 0,
            is_called: false,
        };
        let v = client
            .query_one(
                &format!("SELECT last_value, is_called FROM {}", s.qualified()),
                &[],
            )
            .await
            .map_err(|e| pg_error(&format!("reading sequence {}.{}", s.schema, s.name), e))?;
        s.last_value = v.get(0);
        s.is_called = v.get(1);
        out.push(s);
    }
    Ok(out)
}

/// Run pg_dump for one schema section inside the snapshot and store its output.
async fn dump_section(
    tool: &Tool,
    target: &PgTarget,
    snapshot: &Exported,
    section: &str,
    writer: &Arc<BlobWriter>,
    progress: &Progress,
) -> Result<(Vec<BlobId>, u64)> {
    let mut cmd = Command::new(&tool.path);
    cmd.args([
        "--schema-only",
        "--no-password",
        &format!("--section={section}"),
        &format!("--snapshot={}", snapshot.id),
    ])
    .env_clear()
    .envs(target.libpq_env())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (writer, progress, section) = (writer.clone(), progress.clone(), section.to_string());
    let path = tool.path.display().to_string();
    let elsewhere = different_servers(target);
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Usage(format!("cannot run {path}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let saved = writer.save_stream(stdout, &*progress);
        let status = child
            .wait()
            .map_err(|e| Error::Other(format!("waiting for pg_dump: {e}")))?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            let last = err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            // pg_dump reached a server that does not hold the exported snapshot.
            if last.contains("snapshot") && (last.contains("invalid") || last.contains("import")) {
                return Err(elsewhere);
            }
            return Err(Error::Other(format!(
                "pg_dump --section={section} failed ({status}): {last}"
            )));
        }
        saved
    })
    .await
    .map_err(|e| Error::Other(format!("pg_dump task failed: {e}")))?
}

/// COPY one table out through the chunker, digesting rows on the way.
async fn copy_table(
    client: &Client,
    table: &TableEntry,
    writer: &Arc<BlobWriter>,
    progress: &Progress,
    salt: &crate::repo::blob::Salt,
    scan: Option<TableScan>,
) -> Result<TableData> {
    let what = format!("copying table {}", table.display());
    let stream = client
        .copy_out(&table.copy_sql("TO STDOUT"))
        .await
        .map_err(|e| pg_error(&what, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let (writer, progress, salt) = (writer.clone(), progress.clone(), salt.clone());
    let saver = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader::new(rx, scan);
        let (content, bytes) = writer.save_stream_sealing_small(&mut reader, &*progress, &salt)?;
        Ok::<_, Error>(TableData {
            content,
            rows: reader.digest.rows,
            bytes,
            checksum: reader.digest.checksum(),
            secrets: reader.scan.map(TableScan::finish).unwrap_or_default(),
        })
    });
    pin_mut!(stream);
    let mut failure = None;
    // COPY yields about one message per row: batch them, or the hand-offs between this
    // task and the chunker thread cost more CPU than the data.
    let mut batch = bytes::BytesMut::with_capacity(COPY_BATCH);
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(b) => {
                batch.extend_from_slice(&b);
                if batch.len() >= COPY_BATCH && tx.send(batch.split().freeze()).await.is_err() {
                    break; // the saver stopped; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(pg_error(&what, e));
                break;
            }
        }
    }
    if failure.is_none() && !batch.is_empty() {
        let _ = tx.send(batch.freeze()).await;
    }
    drop(tx);
    let saved = saver
        .await
        .map_err(|e| Error::Other(format!("{what}: task failed: {e}")))?;
    match failure {
        Some(e) => Err(e),
        None => saved,
    }
}

/// Copies tables out inside the exported snapshot.
struct CopyOut<'a> {
    snapshot: &'a Exported,
    tables: &'a [TableInfo],
    writer: &'a Arc<BlobWriter>,
    progress: &'a Progress,
    /// This backup's salt for tables too small to chunk (FORMAT.md §5 "Small files").
    salt: crate::repo::blob::Salt,
    key: Option<&'a KeyCheck>,
    schema_version: Option<i64>,
}

impl TableWork for CopyOut<'_> {
    type Output = TableData;

    async fn setup(&self, client: &Client) -> Result<()> {
        join_snapshot(client, self.snapshot).await
    }

    async fn table(&self, client: &Client, i: usize) -> Result<TableData> {
        let entry = &self.tables[i].entry;
        let scan = self.key.map(|k| k.scan(entry, self.schema_version));
        let data = copy_table(client, entry, self.writer, self.progress, &self.salt, scan).await?;
        tracing::debug!(table = %entry.display(), rows = data.rows, "copied");
        Ok(data)
    }

    async fn finish(&self, client: &Client) -> Result<()> {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error("ending the snapshot transaction", e))
    }
}

/// Copy every table, largest first, over `parallel` connections that share the exported
/// snapshot.
async fn copy_tables(
    target: &PgTarget,
    snapshot: &Exported,
    tables: &[TableInfo],
    writer: &Arc<BlobWriter>,
    opts: &DbBackupOptions,
    schema_version: Option<i64>,
    progress: &Progress,
) -> Result<Vec<TableData>> {
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tables[i].size));
    let work = CopyOut {
        snapshot,
        tables,
        writer,
        progress,
        salt: crate::repo::blob::Salt::generate(),
        key: opts.key.as_ref(),
        schema_version,
    };
    let done = for_each_table(target, opts.parallel, order, &work).await?;
    Ok(done.into_iter().map(|(_, data)| data).collect())
}

fn file_node(name: &str, content: Vec<BlobId>, size: u64) -> Node {
    Node {
        mode: 0o600,
        size,
        content,
        ..Node::new(name, NodeKind::File)
    }
}

/// The registry digests Harbor's database refers to, read in the snapshot, so the
/// registry part can be checked against them.
#[derive(Debug, Default)]
pub struct Referenced {
    /// `artifact` digests, and `blob` rows in use (status `none`).
    pub live: Vec<String>,
    /// `blob` rows Harbor's GC has marked (`delete`, `deleting`, `deletefailed`): their
    /// files may be gone already (src/pkg/blob/models/blob.go), which is no loss.
    pub gc_leftovers: Vec<String>,
}

impl Referenced {
    pub fn extend(&mut self, other: Referenced) {
        self.live.extend(other.live);
        self.gc_leftovers.extend(other.gc_leftovers);
        self.normalize();
    }

    /// Sorted, each digest once, and a digest still live elsewhere is no leftover.
    fn normalize(&mut self) {
        for v in [&mut self.live, &mut self.gc_leftovers] {
            v.sort();
            v.dedup();
        }
        let live = &self.live;
        self.gc_leftovers.retain(|d| live.binary_search(d).is_err());
    }
}

async fn digests(client: &Client, table: &str, sql: &str) -> Result<Vec<String>> {
    let rows = client
        .query(sql, &[])
        .await
        .map_err(|e| pg_error(&format!("reading {table} digests"), e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// `None` for a database without Harbor's `blob` and `artifact` tables (Notary's).
async fn referenced_digests(client: &Client) -> Result<Option<Referenced>> {
    let (blob, artifact) = (
        is_plain_table(client, "blob").await?,
        is_plain_table(client, "artifact").await?,
    );
    if !blob && !artifact {
        return Ok(None);
    }
    let mut r = Referenced::default();
    if artifact {
        r.live = digests(
            client,
            "artifact",
            "SELECT digest::text FROM public.artifact",
        )
        .await?;
    }
    if blob {
        // Harbor added `status` in 2.1; before it every row was live.
        let has_status: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                  WHERE attrelid = 'public.blob'::regclass AND attname = 'status' AND NOT attisdropped)",
                &[],
            )
            .await
            .map_err(|e| pg_error("looking for Harbor's tables", e))?
            .get(0);
        let (live, marked) = match has_status {
            true => (
                "SELECT digest::text FROM public.blob WHERE status IS NULL OR status = 'none'",
                Some("SELECT digest::text FROM public.blob WHERE status <> 'none'"),
            ),
            false => ("SELECT digest::text FROM public.blob", None),
        };
        r.live.extend(digests(client, "blob", live).await?);
        if let Some(sql) = marked {
            r.gc_leftovers = digests(client, "blob", sql).await?;
        }
    }
    r.normalize();
    Ok(Some(r))
}

/// A database backup and the registry digests the database refers to.
pub struct DbBackup {
    pub part: DatabasePart,
    /// `None` when the database is not Harbor core's.
    pub referenced: Option<Referenced>,
    /// What the captured secretKey opened, when one was given.
    pub secret_key: Option<KeyReport>,
}

/// Back up the database at `target` as one consistent snapshot.
pub async fn backup(
    target: &PgTarget,
    writer: Arc<BlobWriter>,
    opts: &DbBackupOptions,
    progress: Progress,
) -> Result<DbBackup> {
    backup_part(target, writer, opts, progress)
        .await
        .map_err(|e| in_database(target, e))
}

async fn backup_part(
    target: &PgTarget,
    writer: Arc<BlobWriter>,
    opts: &DbBackupOptions,
    progress: Progress,
) -> Result<DbBackup> {
    let (main, _) = target.connect_primary().await?;
    let (server_version, server_version_num) = server_version(&main).await?;
    let pg_dump = tools::find("pg_dump", server_version_num / 10000)?;
    let snapshot = export_snapshot(target, &main, "backup").await?;
    let (schema_version, dirty) = harbor_schema(&main).await?;
    if dirty == Some(true) && !opts.force {
        return Err(Error::Usage(format!(
            "Harbor's schema_migrations is dirty (version {}): a migration failed half-way; fix it, or back up anyway with --force",
            schema_version.unwrap_or_default()
        )));
    }
    let mut tables = list_tables(&main).await?;
    let foreign_keys = list_foreign_keys(&main, &tables).await?;
    let sequences = list_sequences(&main).await?;
    let referenced = referenced_digests(&main).await?;
    tracing::info!(tables = tables.len(), sequences = sequences.len(), server = %server_version, "database snapshot taken");

    let (pre, pre_len) =
        dump_section(&pg_dump, target, &snapshot, "pre-data", &writer, &progress).await?;
    let (post, post_len) =
        dump_section(&pg_dump, target, &snapshot, "post-data", &writer, &progress).await?;
    let mut data = copy_tables(
        target,
        &snapshot,
        &tables,
        &writer,
        opts,
        schema_version,
        &progress,
    )
    .await?;
    let secret_key = opts
        .key
        .as_ref()
        .map(|k| k.report(data.iter_mut().map(|d| std::mem::take(&mut d.secrets))));
    main.batch_execute("COMMIT")
        .await
        .map_err(|e| pg_error("ending the backup transaction", e))?;

    let mut tree = Tree {
        nodes: vec![
            file_node(POST_DATA, post, post_len),
            file_node(PRE_DATA, pre, pre_len),
        ],
    };
    for (i, (t, d)) in tables.iter_mut().zip(data).enumerate() {
        t.entry.rows = d.rows;
        t.entry.bytes = d.bytes;
        t.entry.checksum = d.checksum;
        tree.nodes
            .push(file_node(&table_node_name(i), d.content, d.bytes));
    }
    tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let w = writer.clone();
    let bytes = tree.to_bytes();
    let tree_id = tokio::task::spawn_blocking(move || w.save(BlobType::Tree, &bytes))
        .await
        .map_err(|e| Error::Other(format!("saving the table list: {e}")))??;
    let part = DatabasePart {
        server_version,
        server_version_num,
        database: target.dbname.clone(),
        pg_dump_version: pg_dump.version,
        harbor_schema_version: schema_version,
        harbor_schema_dirty: dirty,
        tree: tree_id,
        tables: tables.into_iter().map(|t| t.entry).collect(),
        sequences,
        foreign_keys,
    };
    Ok(DbBackup {
        part,
        referenced,
        secret_key,
    })
}
