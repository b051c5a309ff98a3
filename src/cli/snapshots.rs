//! `drydock snapshots`: list every snapshot (with the identity, or the maintenance key).

use clap::Args;
use serde_json::json;

use super::{Context, Output};
use crate::error::{exit, Error, Result};
use crate::ids::{ByteSize, SnapshotId};
use crate::repo::retention::WriteTimes;
use crate::repo::snapshot::{Meta, Snapshot};
use crate::term::esc;

#[derive(Args, Debug)]
pub struct SnapshotsArgs {}

/// What one row shows: the metadata, and with the identity the manifest too.
type Row = (SnapshotId, Result<(Meta, Option<Snapshot>)>);

pub async fn run(ctx: &Context, _args: SnapshotsArgs) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    // With the identity, the manifests (sizes, Harbor version); otherwise the summaries.
    let (rows, written): (Vec<Row>, WriteTimes) = if repo.keys.has_identity() {
        let (all, written) = repo.load_snapshots_written().await?;
        let rows = all
            .into_iter()
            .map(|(id, s)| (id, s.map(|s| (s.meta(), Some(s)))))
            .collect();
        (rows, written)
    } else {
        let (all, written) = repo.load_metas_written().await?;
        let rows = all
            .into_iter()
            .map(|(id, m)| (id, m.map(|m| (m, None))))
            .collect();
        (rows, written)
    };
    Ok(listing(&rows, &written))
}

fn listing(all: &[Row], written: &WriteTimes) -> Output {
    let mut text = format!(
        "{:<8}  {:<20}  {:<16}  {:<12}  {:<8}  {:>10}  {:>10}  {:<20}  {}\n",
        "ID", "TIME", "HOST", "PARTS", "QUIESCED", "LOGICAL", "STORED", "EXPIRES", "TAGS"
    );
    let mut json_rows = Vec::new();
    let mut unreadable = 0;
    for (id, row) in all {
        match row {
            Ok((m, snap)) => {
                let (text_row, json_row) = row_of(id, m, snap.as_ref(), written);
                text += &text_row;
                json_rows.push(json_row);
            }
            Err(e) => {
                unreadable += 1;
                text += &format!("{:<8}  unreadable: {}\n", id.short(), esc(e));
                json_rows.push(unreadable_row(id, e));
            }
        }
    }
    text += &format!("{} snapshot(s)\n", all.len());
    Output {
        text,
        json: json!({ "snapshots": json_rows }),
        exit: if unreadable > 0 {
            exit::INTEGRITY
        } else {
            exit::SUCCESS
        },
    }
}

fn unreadable_row(id: &SnapshotId, e: &Error) -> serde_json::Value {
    json!({"id": id.to_hex(), "short_id": id.short(), "error": e.to_string()})
}

fn row_of(
    id: &SnapshotId,
    m: &Meta,
    snap: Option<&Snapshot>,
    written: &WriteTimes,
) -> (String, serde_json::Value) {
    let tags: Vec<String> = m
        .tags
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    let sizes = snap.map(|s| (s.summary.logical_bytes, s.summary.stored_bytes));
    let size = |n: Option<u64>| n.map(|n| ByteSize(n).to_string()).unwrap_or("-".into());
    let quiesced = snap.and_then(|s| s.quiesced);
    let mut text = format!(
        "{:<8}  {:<20}  {:<16}  {:<12}  {:<8}  {:>10}  {:>10}  {:<20}  {}\n",
        id.short(),
        m.time.format("%Y-%m-%d %H:%M:%S"),
        esc(&m.host),
        esc(m.parts.join(",")),
        super::show::quiesced_word(quiesced),
        size(sizes.map(|s| s.0)),
        size(sizes.map(|s| s.1)),
        m.expires
            .map(|e| e.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        tags.join(" ")
    );
    let distrust = written.distrust(id, m.time);
    if let Some(why) = &distrust {
        text += &format!("{:<8}  ! time not trusted: {why}\n", "");
    }
    let json = json!({
        "id": id.to_hex(), "short_id": id.short(), "time": m.time, "host": m.host,
        "time_trusted": distrust.is_none(), "untrusted_because": distrust,
        "written": written.0.get(id),
        "tags": m.tags, "parts": m.parts, "expires": m.expires,
        "harbor_version": snap.and_then(|s| s.harbor_version.clone()),
        "quiesced": quiesced,
        "logical_bytes": sizes.map(|s| s.0), "stored_bytes": sizes.map(|s| s.1),
    });
    (text, json)
}
