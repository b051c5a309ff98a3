//! `drydock snapshots`: list every snapshot.

use clap::Args;
use serde_json::json;

use super::{Context, Output};
use crate::error::{exit, Result};
use crate::ids::ByteSize;
use crate::term::esc;

#[derive(Args, Debug)]
pub struct SnapshotsArgs {}

pub async fn run(ctx: &Context, _args: SnapshotsArgs) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    let (all, written) = repo.load_snapshots_written().await?;
    let mut text = format!(
        "{:<8}  {:<20}  {:<16}  {:<12}  {:>10}  {:>10}  {:<20}  {}\n",
        "ID", "TIME", "HOST", "PARTS", "LOGICAL", "STORED", "EXPIRES", "TAGS"
    );
    let mut rows = Vec::new();
    let mut unreadable = 0;
    for (id, snap) in &all {
        match snap {
            Ok(s) => {
                let tags: Vec<String> = s
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                    .collect();
                text += &format!(
                    "{:<8}  {:<20}  {:<16}  {:<12}  {:>10}  {:>10}  {:<20}  {}\n",
                    id.short(),
                    s.time.format("%Y-%m-%d %H:%M:%S"),
                    esc(&s.host),
                    s.parts.names().join(","),
                    ByteSize(s.summary.logical_bytes).to_string(),
                    ByteSize(s.summary.stored_bytes).to_string(),
                    s.expires
                        .map(|e| e.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    tags.join(" ")
                );
                let distrust = written.distrust(id, s.time);
                if let Some(why) = &distrust {
                    text += &format!("{:<8}  ! time not trusted: {why}\n", "");
                }
                rows.push(json!({
                    "id": id.to_hex(), "short_id": id.short(), "time": s.time, "host": s.host,
                    "time_trusted": distrust.is_none(), "untrusted_because": distrust,
                    "written": written.0.get(id),
                    "tags": s.tags, "parts": s.parts.names(), "expires": s.expires, "harbor_version": s.harbor_version,
                    "logical_bytes": s.summary.logical_bytes, "stored_bytes": s.summary.stored_bytes,
                }));
            }
            Err(e) => {
                unreadable += 1;
                text += &format!("{:<8}  unreadable: {}\n", id.short(), esc(e));
                rows.push(
                    json!({"id": id.to_hex(), "short_id": id.short(), "error": e.to_string()}),
                );
            }
        }
    }
    text += &format!("{} snapshot(s)\n", all.len());
    let exit = if unreadable > 0 {
        exit::INTEGRITY
    } else {
        exit::SUCCESS
    };
    Ok(Output {
        text,
        json: json!({ "snapshots": rows }),
        exit,
    })
}
