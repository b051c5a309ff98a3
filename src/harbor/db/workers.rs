//! Per-table work over parallel connections: backup's COPY out, restore's COPY in and
//! verify's row digests each open up to `--parallel` connections that take tables from one
//! queue.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio_postgres::Client;

use super::conn::{different_servers, pg_error, PgTarget, ServerIdentity};
use crate::error::Result;

/// The transaction a snapshot is exported from or imported into.
pub(super) const SNAPSHOT_TX: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// What each connection does: `setup` once, `table` for each table it takes from the
/// queue, `finish` once the queue is empty.
pub(super) trait TableWork: Sync {
    type Output: Send;

    async fn setup(&self, _client: &Client) -> Result<()> {
        Ok(())
    }

    async fn table(&self, client: &Client, table: usize) -> Result<Self::Output>;

    async fn finish(&self, _client: &Client) -> Result<()> {
        Ok(())
    }
}

/// Run `work` on the tables `order` lists (table indexes, taken in that order) over up to
/// `parallel` connections to `target`. The first failure fails the whole; otherwise each
/// table's output, by table index.
pub(super) async fn for_each_table<W: TableWork>(
    target: &PgTarget,
    parallel: usize,
    order: Vec<usize>,
    work: &W,
) -> Result<Vec<(usize, W::Output)>> {
    let connections = parallel.clamp(1, order.len().max(1));
    let queue = Mutex::new(VecDeque::from(order));
    let done = Mutex::new(Vec::new());
    let workers = (0..connections).map(|_| async {
        let client = target.connect().await?;
        work.setup(&client).await?;
        loop {
            let next = queue.lock().expect("lock").pop_front();
            let Some(i) = next else { break };
            let out = work.table(&client, i).await?;
            done.lock().expect("lock").push((i, out));
        }
        work.finish(&client).await
    });
    futures::future::try_join_all(workers).await?;
    let mut done = done.into_inner().expect("lock");
    done.sort_by_key(|&(i, _)| i);
    Ok(done)
}

/// A snapshot one session exported, and the server instance that holds it.
pub(super) struct Exported {
    pub id: String,
    server: ServerIdentity,
    target: PgTarget,
}

/// Start `main`'s snapshot transaction and export its snapshot.
pub(super) async fn export_snapshot(
    target: &PgTarget,
    main: &Client,
    doing: &str,
) -> Result<Exported> {
    main.batch_execute(SNAPSHOT_TX)
        .await
        .map_err(|e| pg_error(&format!("starting the {doing} transaction"), e))?;
    let id: String = main
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| pg_error("exporting the snapshot", e))?
        .get(0);
    Ok(Exported {
        id,
        server: ServerIdentity::of(main).await?,
        target: target.clone(),
    })
}

/// Make `client`'s transaction see the snapshot another transaction exported, so every
/// connection reads the same point in time. A session on another server is refused first,
/// with a message that says why, instead of the server's "invalid snapshot identifier".
pub(super) async fn join_snapshot(client: &Client, snapshot: &Exported) -> Result<()> {
    if ServerIdentity::of(client).await? != snapshot.server {
        return Err(different_servers(&snapshot.target));
    }
    let snapshot = &snapshot.id;
    client
        .batch_execute(SNAPSHOT_TX)
        .await
        .map_err(|e| pg_error("starting a snapshot transaction", e))?;
    client
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            super::quote_literal(snapshot)
        ))
        .await
        .map_err(|e| pg_error("importing the exported snapshot", e))
}
