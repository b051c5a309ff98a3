//! Database restore: `empty` (schema, parallel COPY, constraints, sequences) or `running`
//! (all data replaced in one transaction, so a failure changes nothing).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{pin_mut, SinkExt, StreamExt};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, CopyInSink, GenericClient};

use super::backup::{harbor_schema, is_plain_table, server_version};
use super::conn::{in_database, pg_error, PgTarget};
use super::encrypted::{KeyCheck, KeyReport};
use super::scratch::{self, Loader};
use super::sql;
use super::workers::{for_each_table, TableWork};
use super::{table_node_name, DatabasePart, SequenceEntry, TableEntry, POST_DATA, PRE_DATA};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::repo::blob::BlobType;
use crate::repo::reader::BlobReader;
use crate::repo::tree::Node;
use crate::repo::writer::OnBytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Into an empty database: schema, data, constraints, sequences.
    Empty,
    /// Into a live Harbor database of the same schema version: data replaced in one transaction.
    Running,
}

#[derive(Debug, Default, Serialize)]
pub struct DbRestoreReport {
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
    pub sequences: usize,
    pub read_only_cleared: bool,
    /// Privilege statements of the snapshot this target could not take ([`Grants`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants_left_out: Vec<String>,
}

/// How to restore a database part.
#[derive(Clone, Debug)]
pub struct DbRestoreOptions {
    pub mode: Mode,
    pub parallel: usize,
    /// Who owns the restored objects (empty mode); default: the restoring role, or the
    /// database's owner when restoring as a superuser.
    pub owner: Option<String>,
}

pub type Progress = Arc<dyn OnBytes + Send + Sync>;

/// The part's tree nodes by name.
pub(crate) async fn nodes(
    reader: &BlobReader,
    part: &DatabasePart,
) -> Result<HashMap<String, Node>> {
    let tree = reader.load_tree(&part.tree).await?;
    Ok(tree
        .nodes
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect())
}

pub(crate) fn node<'a>(nodes: &'a HashMap<String, Node>, name: &str) -> Result<&'a Node> {
    nodes
        .get(name)
        .ok_or_else(|| Error::Integrity(format!("the database part has no {name} entry")))
}

async fn check_versions(client: &Client, part: &DatabasePart, target: &PgTarget) -> Result<()> {
    let (version, num) = server_version(client).await?;
    if num / 10000 < part.major() {
        return Err(Error::Usage(format!(
            "{} runs PostgreSQL {version}, older than the snapshot's source ({}); restore into PostgreSQL {} or newer",
            target.describe(),
            part.server_version,
            part.major()
        )));
    }
    Ok(())
}

/// A connection or a transaction: where `COPY … FROM STDIN` can run.
trait CopyTarget {
    async fn start_copy_in(
        &self,
        sql: &str,
    ) -> std::result::Result<CopyInSink<Bytes>, tokio_postgres::Error>;
}

impl CopyTarget for Client {
    async fn start_copy_in(
        &self,
        sql: &str,
    ) -> std::result::Result<CopyInSink<Bytes>, tokio_postgres::Error> {
        self.copy_in(sql).await
    }
}

impl CopyTarget for tokio_postgres::Transaction<'_> {
    async fn start_copy_in(
        &self,
        sql: &str,
    ) -> std::result::Result<CopyInSink<Bytes>, tokio_postgres::Error> {
        self.copy_in(sql).await
    }
}

/// A table's COPY text from the repository. A small table is one sealed blob, padded and
/// salted: only its recorded length is COPY text (FORMAT.md §5 "Small files").
fn table_text<'a>(
    reader: &'a BlobReader,
    table: &TableEntry,
    content: &'a [BlobId],
    parallel: usize,
) -> impl futures::Stream<Item = Result<Vec<u8>>> + 'a {
    let mut left = table.bytes;
    reader
        .load_stream(content, BlobType::Data, parallel)
        .map(move |chunk| {
            let mut chunk = chunk?;
            chunk.truncate(left.min(chunk.len() as u64) as usize);
            left -= chunk.len() as u64;
            Ok(chunk)
        })
}

/// Every `<enc-v1>` value of the part's tables, read from the repository, checked with
/// `key`: `verify --secret-key` without a database to compare.
pub async fn check_secret_key(
    reader: &BlobReader,
    part: &DatabasePart,
    key: &KeyCheck,
    parallel: usize,
) -> Result<KeyReport> {
    let nodes = nodes(reader, part).await?;
    let mut counts = Vec::with_capacity(part.tables.len());
    for (i, table) in part.tables.iter().enumerate() {
        let n = node(&nodes, &table_node_name(i))?;
        let mut scan = key.scan(table, part.harbor_schema_version);
        let mut chunks = std::pin::pin!(table_text(reader, table, &n.content, parallel));
        while let Some(chunk) = chunks.next().await {
            scan.update(&chunk?);
        }
        counts.push(scan.finish());
    }
    Ok(key.report(counts))
}

/// Stream a table's COPY text from the repository into `COPY … FROM STDIN`.
async fn copy_in<C: CopyTarget>(
    client: &C,
    reader: &BlobReader,
    table: &TableEntry,
    content: &[BlobId],
    parallel: usize,
    progress: &Progress,
) -> Result<u64> {
    let what = format!("loading table {}", table.display());
    let sql = table.copy_sql("FROM STDIN");
    let sink = client
        .start_copy_in(&sql)
        .await
        .map_err(|e| refused(&what, e))?;
    pin_mut!(sink);
    let mut chunks = std::pin::pin!(table_text(reader, table, content, parallel));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        progress.bytes(chunk.len() as u64);
        sink.send(Bytes::from(chunk))
            .await
            .map_err(|e| refused(&what, e))?;
    }
    let rows = sink.finish().await.map_err(|e| refused(&what, e))?;
    if rows != table.rows {
        return Err(Error::Integrity(format!(
            "{what}: loaded {rows} rows, the snapshot records {}",
            table.rows
        )));
    }
    Ok(rows)
}

/// The schema section stored as `name` (pg_dump's SQL; kilobytes to a few megabytes).
async fn load_sql(
    reader: &BlobReader,
    nodes: &HashMap<String, Node>,
    name: &str,
) -> Result<Vec<u8>> {
    let node = node(nodes, name)?;
    // The size comes from the snapshot: reserve no more than a large real schema needs.
    let mut sql = Vec::with_capacity((node.size as usize).min(64 << 20));
    let mut chunks = std::pin::pin!(reader.load_stream(&node.content, BlobType::Data, 4));
    while let Some(data) = chunks.next().await {
        sql.extend(data?);
    }
    Ok(sql)
}

/// Control characters of a server message (it may quote the snapshot) escaped.
fn escaped(s: &str) -> String {
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// The server refused SQL or data from the snapshot (exit 1). Its message may quote the
/// snapshot, so control characters are escaped.
fn refused(at: &str, e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        return pg_error(at, e);
    };
    let hint = if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
        "; the snapshot's SQL, triggers included, runs without superuser rights, so a snapshot that needs them is refused (otherwise grant the restoring role what it lacks)"
    } else {
        ""
    };
    Error::Other(format!(
        "{at}: {} ({}){hint}",
        escaped(db.message()),
        db.code().code()
    ))
}

/// Apply a section that [`sql::checked`] passed, one statement at a time (what psql does,
/// without its meta-commands), stopping at the first error.
/// pg_dump's `ALTER … OWNER TO` statements are skipped: the loading role owns everything.
/// So are privilege statements the target cannot take ([`Grants`]).
async fn apply_sql(
    loader: &Loader,
    client: &Client,
    script: &str,
    section: &str,
    place: &str,
) -> Result<()> {
    for s in sql::statements(script) {
        if s.changes_role() {
            return Err(Error::Refused(format!(
                "the snapshot's {section} schema changes the session's role at {}; pg_dump never writes that, so the snapshot is refused",
                s.label()
            )));
        }
        if s.is_owner_change() || !loader.grants.keep(&s) {
            continue;
        }
        // The extended protocol: the server takes exactly one statement per message, so
        // text the scanner read as one statement can never run as several (a string
        // the server ends elsewhere, e.g. with standard_conforming_strings off).
        client.execute(s.text, &[]).await.map(drop).map_err(|e| {
            refused(
                &format!(
                    "applying the {section} schema to {place} failed at {}",
                    s.label()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// pg_dump's post-data section split for parallel application, as `pg_restore -j` does:
/// indexes and non-foreign-key constraints (each builds an index over one table's rows: the
/// slow part) are independent of each other; foreign keys, triggers and the rest need them.
struct PostData {
    /// Everything before the first entry: SET commands every session needs.
    preamble: String,
    independent: Vec<String>,
    rest: Vec<String>,
}

/// Every entry of pg_dump's SQL starts with a comment header
/// `--\n-- Name: …; Type: TYPE; Schema: …; Owner: …\n--`.
const ENTRY: &str = "\n--\n-- Name: ";

impl PostData {
    fn split(sql: &str) -> PostData {
        let (preamble, entries) = match sql.find(ENTRY) {
            Some(i) => (&sql[..i + 1], &sql[i + 1..]),
            None => (sql, ""),
        };
        let (mut independent, mut rest) = (Vec::new(), Vec::new());
        let mut starts: Vec<usize> = entries.match_indices(&ENTRY[1..]).map(|(i, _)| i).collect();
        starts.push(entries.len());
        for w in starts.windows(2) {
            let entry = &entries[w[0]..w[1]];
            let kind = entry
                .lines()
                .nth(1)
                .and_then(|l| l.split("; Type: ").nth(1))
                .and_then(|t| t.split(';').next())
                .unwrap_or("");
            if matches!(kind, "INDEX" | "CONSTRAINT") {
                independent.push(entry.to_string());
            } else {
                rest.push(entry.to_string());
            }
        }
        PostData {
            preamble: preamble.to_string(),
            independent,
            rest,
        }
    }
}

/// Bytes of COPY text of the table an index or constraint entry is on (0 if none is named).
fn entry_weight(part: &DatabasePart, entry: &str) -> u64 {
    part.tables
        .iter()
        .filter(|t| {
            let q = t.qualified();
            entry.contains(&format!("{q} ")) || entry.contains(&format!("{q}\n"))
        })
        .map(|t| t.bytes)
        .max()
        .unwrap_or(0)
}

/// Apply the post-data section: indexes and constraints on `parallel` sessions at once
/// (those of the largest tables first, each to the least loaded session), then the rest in
/// order on one.
async fn apply_post_data(
    loader: &Loader,
    part: &DatabasePart,
    sql: &str,
    parallel: usize,
    place: &str,
) -> Result<()> {
    let post = PostData::split(sql);
    let sessions = parallel.max(1).min(post.independent.len().max(1));
    let mut scripts = vec![(0u64, post.preamble.clone()); sessions];
    let mut entries: Vec<(u64, &String)> = post
        .independent
        .iter()
        .map(|e| (entry_weight(part, e), e))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (weight, entry) in entries {
        let least = scripts
            .iter_mut()
            .min_by_key(|(w, _)| *w)
            .expect("a session");
        least.0 += weight.max(1);
        least.1.push_str(entry);
    }
    let run = |script: String| async move {
        let client = loader.connect().await?;
        apply_sql(loader, &client, &script, "post-data", place).await
    };
    futures::future::try_join_all(scripts.into_iter().map(|(_, s)| run(s))).await?;
    run(post.preamble + &post.rest.concat()).await
}

async fn set_sequences<C: GenericClient>(client: &C, sequences: &[SequenceEntry]) -> Result<()> {
    for s in sequences {
        // The name goes as a parameter, never spliced into a string literal: a target
        // with standard_conforming_strings off would read backslashes in it as escapes.
        client
            .execute(
                "SELECT pg_catalog.setval($1::text::pg_catalog.regclass, $2, $3)",
                &[&s.qualified(), &s.last_value, &s.is_called],
            )
            .await
            .map_err(|e| pg_error(&format!("setting sequence {}.{}", s.schema, s.name), e))?;
    }
    Ok(())
}

/// What an empty-mode target holds before the restore.
#[derive(Debug, PartialEq)]
enum Contents {
    Empty,
    /// Only the empty `schema_migrations` that Harbor's database image creates at first
    /// start (make/photon/db/initial-registry.sql): as good as empty.
    FreshHarbor,
    /// Harbor core has migrated it to this schema version.
    Harbor(i64),
    /// Tables, views or sequences that are not Harbor's fresh start.
    Other(i64),
}

async fn contents(client: &Client) -> Result<Contents> {
    let inspect = |e| pg_error("inspecting the target database", e);
    let (relations, others): (i64, i64) = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE NOT (n.nspname = 'public' AND c.relname = 'schema_migrations' AND c.relkind = 'r'))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r','p','v','m','S','f')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(inspect)?;
    if relations == 0 {
        return Ok(Contents::Empty);
    }
    if others > 0 {
        return Ok(Contents::Other(relations));
    }
    let (version, _) = harbor_schema(client).await?;
    Ok(match version {
        Some(v) => Contents::Harbor(v),
        None => Contents::FreshHarbor,
    })
}

/// Drop the fresh Harbor database's `schema_migrations`, in one transaction that first
/// locks it and checks again that it is a plain table without row-level security (which
/// could hide rows from this role) and without rows: a Harbor core migrating it meanwhile,
/// or a table that only looks empty, is left alone.
async fn drop_fresh_schema_migrations(client: &Client, target: &PgTarget) -> Result<()> {
    let doing =
        "dropping the fresh Harbor database's empty schema_migrations (connect as its owner)";
    client
        .batch_execute("BEGIN; LOCK TABLE public.schema_migrations IN ACCESS EXCLUSIVE MODE")
        .await
        .map_err(|e| pg_error(doing, e))?;
    let checked = client
        .query_one(
            "SELECT c.relkind = 'r' AND NOT c.relrowsecurity AND NOT EXISTS (SELECT 1 FROM public.schema_migrations)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname = 'schema_migrations'",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0));
    let dropped = match checked {
        Ok(true) => {
            client
                .batch_execute("DROP TABLE public.schema_migrations; COMMIT")
                .await
        }
        Ok(false) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Error::Usage(format!(
                "{} is not empty: its schema_migrations has rows or row-level security; restore into an empty database, or use --mode running",
                target.describe()
            )));
        }
        Err(e) => Err(e),
    };
    if let Err(e) = dropped {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(pg_error(doing, e));
    }
    Ok(())
}

/// Refuse a target that is not empty; make way in a freshly installed Harbor database by
/// dropping its empty `schema_migrations` (the snapshot's schema brings it back).
async fn make_way(client: &Client, target: &PgTarget) -> Result<()> {
    match contents(client).await? {
        Contents::Empty => Ok(()),
        Contents::FreshHarbor => {
            tracing::info!(target = %target.describe(), "the target is a freshly installed Harbor database (an empty schema_migrations only): dropping that table");
            drop_fresh_schema_migrations(client, target).await
        }
        Contents::Harbor(v) => Err(Error::Usage(format!(
            "{} is a Harbor database already migrated to schema version {v}: restore into it with --mode running (Harbor stopped or read-only), or into an empty database",
            target.describe()
        ))),
        Contents::Other(n) => Err(Error::Usage(format!(
            "{} is not empty ({n} tables, views or sequences); restore into an empty database, or use --mode running into a Harbor database",
            target.describe()
        ))),
    }
}

pub async fn restore(
    target: &PgTarget,
    reader: &BlobReader,
    part: &DatabasePart,
    opts: &DbRestoreOptions,
    progress: Progress,
) -> Result<DbRestoreReport> {
    let parallel = opts.parallel;
    let restored = async {
        let nodes = nodes(reader, part).await?;
        // Restore writes: on a standby it could not, and behind a load-balanced service
        // its sessions would land on different servers.
        let (client, _) = target.connect_primary().await?;
        check_versions(&client, part, target).await?;
        progress.total(part.total_bytes());
        let src = Source {
            reader,
            part,
            nodes: &nodes,
            parallel,
            progress: &progress,
        };
        match opts.mode {
            Mode::Empty => restore_empty(target, &client, opts.owner.as_deref(), src).await,
            Mode::Running => restore_running(target, client, src).await,
        }
    };
    restored.await.map_err(|e| in_database(target, e))
}

/// The part being restored, and how fast: what both modes read from.
#[derive(Clone, Copy)]
struct Source<'a> {
    reader: &'a BlobReader,
    part: &'a DatabasePart,
    nodes: &'a HashMap<String, Node>,
    parallel: usize,
    progress: &'a Progress,
}

/// Loads tables into an empty database, each over its own connection's COPY.
struct CopyIn<'a> {
    loader: &'a Loader,
    src: Source<'a>,
}

impl TableWork for CopyIn<'_> {
    type Output = u64;

    async fn setup(&self, client: &Client) -> Result<()> {
        self.loader.enter(client).await
    }

    async fn table(&self, client: &Client, i: usize) -> Result<u64> {
        let src = &self.src;
        let n = node(src.nodes, &table_node_name(i))?;
        let table = &src.part.tables[i];
        copy_in(
            client,
            src.reader,
            table,
            &n.content,
            src.parallel,
            src.progress,
        )
        .await
    }
}

async fn restore_empty(
    target: &PgTarget,
    client: &Client,
    owner: Option<&str>,
    src: Source<'_>,
) -> Result<DbRestoreReport> {
    let part = src.part;
    // Both sections are checked before anything of them is sent, and before the target
    // is touched.
    let pre = sql::checked(&load_sql(src.reader, src.nodes, PRE_DATA).await?)?;
    let post = sql::checked(&load_sql(src.reader, src.nodes, POST_DATA).await?)?;
    make_way(client, target).await?;
    let loader = scratch::loader(client, target, owner).await?;
    let load = load_empty(&loader, target, src, (&pre, &post));
    // On SIGTERM/SIGINT the scratch role is still removed before drydock stops.
    let loaded = tokio::select! {
        loaded = load => loaded,
        signal = scratch::interrupted() => Err(Error::Other(format!(
            "interrupted by {signal}; {} holds part of the snapshot: drop and recreate it before restoring again",
            target.describe()
        ))),
    };
    let grants_left_out = loader.grants.left_out();
    loader.finish(client).await;
    let rows = loaded?;
    if !grants_left_out.is_empty() {
        tracing::warn!(
            left_out = %grants_left_out.join("; "),
            "the snapshot's privileges name roles this server lacks or only a superuser may use; those statements were left out (create the roles and grant again if they matter)"
        );
    }
    Ok(DbRestoreReport {
        tables: part.tables.len(),
        rows,
        bytes: part.total_bytes(),
        sequences: part.sequences.len(),
        read_only_cleared: false,
        grants_left_out,
    })
}

/// Schema, data, constraints and sequences, all as the loading role.
async fn load_empty(
    loader: &Loader,
    target: &PgTarget,
    src: Source<'_>,
    (pre, post): (&str, &str),
) -> Result<u64> {
    let (part, parallel) = (src.part, src.parallel);
    let place = target.describe();
    let first = loader.connect().await?;
    apply_sql(loader, &first, pre, "pre-data", &place).await?;
    let work = CopyIn { loader, src };
    let order = (0..part.tables.len()).collect();
    let loaded = for_each_table(&loader.target, parallel, order, &work).await?;
    apply_post_data(loader, part, post, parallel, &place).await?;
    set_sequences(&first, &part.sequences).await?;
    loader.check_owner(&first).await?;
    Ok(loaded.into_iter().map(|(_, rows)| rows).sum())
}

/// Check that the live database has the snapshot's tables and columns.
async fn check_same_shape(client: &Client, part: &DatabasePart) -> Result<()> {
    let (version, _) = harbor_schema(client).await?;
    if version != part.harbor_schema_version {
        let show = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
        return Err(Error::Usage(format!(
            "the target's Harbor schema version is {}, the snapshot's is {}; run the Harbor release that matches the snapshot (or restore with --mode empty into a new database)",
            show(version),
            show(part.harbor_schema_version)
        )));
    }
    for t in &part.tables {
        let cols: Option<Vec<String>> = client
            .query_opt(
                "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                 GROUP BY c.oid",
                &[&t.schema, &t.name],
            )
            .await
            .map_err(|e| pg_error("comparing the target's tables", e))?
            .map(|r| r.get(0));
        match cols {
            None => {
                return Err(Error::Usage(format!(
                    "the target has no table {}; it is not the same schema",
                    t.display()
                )))
            }
            Some(c) if c != t.columns => {
                return Err(Error::Usage(format!(
                    "table {} has columns {c:?} in the target but {:?} in the snapshot",
                    t.display(),
                    t.columns
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// After a running-mode restore failed once it had set sequences (setval is not
/// transactional), put the values read before it back. When the server dropped the
/// connection (a restart), reconnect, and first ask whether the transaction committed after
/// all: a connection lost in COMMIT leaves that open. `Ok(true)`: it did commit.
async fn put_back_sequences(
    target: &PgTarget,
    client: &Client,
    before: &[SequenceEntry],
    xid: Option<i64>,
) -> Result<bool> {
    if !client.is_closed() {
        // COMMIT failed on a live connection: the transaction rolled back.
        set_sequences(client, before).await?;
        return Ok(false);
    }
    // A restarting server takes a moment to accept connections again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fresh = loop {
        match target.connect().await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    };
    if let Some(xid) = xid {
        let status: Option<String> = fresh
            .query_one("SELECT txid_status($1)", &[&xid])
            .await
            .map_err(|e| pg_error("asking whether the restore committed", e))?
            .get(0);
        match status.as_deref() {
            Some("committed") => return Ok(true),
            Some("in progress") => {
                return Err(Error::Other(format!(
                    "the restore's transaction {xid} is still open on the server, so its outcome is unknown"
                )))
            }
            _ => {}
        }
    }
    set_sequences(&fresh, before).await?;
    Ok(false)
}

async fn restore_running(
    target: &PgTarget,
    mut client: Client,
    src: Source<'_>,
) -> Result<DbRestoreReport> {
    let Source {
        reader,
        part,
        nodes,
        parallel,
        progress,
    } = src;
    check_same_shape(&client, part).await?;
    let order = part.load_order()?;
    // setval is not transactional: remember the live values to put back if COMMIT fails.
    let mut before = Vec::new();
    for s in &part.sequences {
        let r = client
            .query_one(
                &format!("SELECT last_value, is_called FROM {}", s.qualified()),
                &[],
            )
            .await
            .map_err(|e| pg_error(&format!("reading sequence {}.{}", s.schema, s.name), e))?;
        before.push(SequenceEntry {
            last_value: r.get(0),
            is_called: r.get(1),
            ..s.clone()
        });
    }
    let has_properties = is_plain_table(&client, "properties").await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("starting the restore transaction", e))?;
    let mut sequences_touched = false;
    let mut xid: Option<i64> = None;
    let mut loaded = (0, false);
    let outcome = async {
        // The transaction's id: after a connection lost in COMMIT, it tells what happened.
        xid = Some(
            tx.query_one("SELECT txid_current()", &[])
                .await
                .map_err(|e| pg_error("starting the restore transaction", e))?
                .get(0),
        );
        if !part.tables.is_empty() {
            let all: Vec<String> = part.tables.iter().map(TableEntry::qualified).collect();
            tx.batch_execute(&format!("TRUNCATE TABLE {}", all.join(", ")))
                .await
                .map_err(|e| pg_error("emptying the tables", e))?;
        }
        let mut rows = 0;
        for &i in &order {
            let n = node(nodes, &table_node_name(i))?;
            rows += copy_in(&tx, reader, &part.tables[i], &n.content, parallel, progress).await?;
        }
        // A backup taken in read-only mode carries read_only=true: the restored Harbor
        // must accept writes again.
        let mut cleared = false;
        if has_properties {
            cleared = tx
                .execute("UPDATE public.properties SET v = 'false' WHERE k = 'read_only' AND v <> 'false'", &[])
                .await
                .map_err(|e| pg_error("clearing Harbor's read_only flag", e))?
                > 0;
        }
        loaded = (rows, cleared);
        sequences_touched = true;
        set_sequences(&tx, &part.sequences).await?;
        tx.commit().await.map_err(|e| pg_error("committing the restore", e))?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = outcome {
        if !sequences_touched {
            return Err(e);
        }
        // The transaction rolled back; setval did not. Put the live values back.
        match put_back_sequences(target, &client, &before, xid).await {
            Ok(false) => return Err(e),
            Ok(true) => tracing::warn!(
                error = %e,
                "the connection was lost in COMMIT, but the restore transaction committed"
            ),
            Err(again) => {
                let values: Vec<String> = before
                    .iter()
                    .map(|s| format!("{}={}", s.qualified(), s.last_value))
                    .collect();
                tracing::error!(sequences = %values.join(","), "the values to set back");
                return Err(Error::Other(format!(
                    "{e}; the sequences it had set could not be put back ({again}): set them to the values logged above"
                )));
            }
        }
    }
    let (rows, read_only_cleared) = loaded;
    Ok(DbRestoreReport {
        tables: part.tables.len(),
        rows,
        bytes: part.total_bytes(),
        sequences: part.sequences.len(),
        read_only_cleared,
        grants_left_out: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::PostData;

    #[test]
    fn post_data_splits_indexes_and_constraints_from_the_rest() {
        let sql = "\\restrict k\nSET statement_timeout = 0;\n\n\
            --\n-- Name: project project_pkey; Type: CONSTRAINT; Schema: public; Owner: o\n--\n\n\
            ALTER TABLE ONLY public.project\n    ADD CONSTRAINT project_pkey PRIMARY KEY (project_id);\n\n\
            --\n-- Name: idx_a; Type: INDEX; Schema: public; Owner: o\n--\n\n\
            CREATE INDEX idx_a ON public.audit_log USING btree (op_time);\n\n\
            --\n-- Name: blob fk; Type: FK CONSTRAINT; Schema: public; Owner: o\n--\n\n\
            ALTER TABLE ONLY public.blob ADD CONSTRAINT fk FOREIGN KEY (x) REFERENCES public.project(project_id);\n\n\
            --\n-- Name: t tr; Type: TRIGGER; Schema: public; Owner: o\n--\n\n\
            CREATE TRIGGER tr BEFORE UPDATE ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n\
            \\unrestrict k\n";
        let post = PostData::split(sql);
        assert_eq!(
            post.preamble,
            "\\restrict k\nSET statement_timeout = 0;\n\n"
        );
        assert_eq!(post.independent.len(), 2);
        assert!(post.independent[0].contains("PRIMARY KEY"));
        assert!(post.independent[1].contains("CREATE INDEX idx_a"));
        assert_eq!(post.rest.len(), 2);
        assert!(post.rest[0].contains("FOREIGN KEY"));
        assert!(post.rest[1].contains("CREATE TRIGGER") && post.rest[1].contains("\\unrestrict"));
        // Nothing lost or repeated.
        let joined = post.preamble.clone() + &post.independent.concat() + &post.rest.concat();
        assert_eq!(joined.len(), sql.len());
    }
}
