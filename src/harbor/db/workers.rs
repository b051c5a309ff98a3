//! Per-table work over parallel connections: backup's COPY out, restore's COPY in and
//! verify's row digests each open up to `--parallel` connections that take tables from one
//! queue.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio_postgres::Client;

use super::conn::{pg_error, PgTarget};
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

/// Make `client`'s transaction see the snapshot another transaction exported, so every
/// connection reads the same point in time.
pub(super) async fn join_snapshot(client: &Client, snapshot: &str) -> Result<()> {
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
