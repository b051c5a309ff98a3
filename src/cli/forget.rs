//! `drydock forget`: drop snapshots by policy, expiry or Velero; `--prune` reclaims space.

use std::collections::BTreeMap;

use chrono::Utc;
use clap::Args;
use serde_json::json;

use super::prune::{PruneArgs, SAFETY_DELAY};
use super::{Context, Output};
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::repo::retention::KeepPolicy;
use crate::repo::snapshot::{self, Snapshot};
use crate::velero::{self, backups::VeleroBackup};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: usize,
    /// … of each of the last N days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: usize,
    /// … of each of the last N ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: usize,
    /// … of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: usize,
    /// Forget snapshots past their expiry (backup --ttl), like Velero's TTL.
    #[arg(long)]
    pub expired: bool,
    /// Forget snapshots whose Velero backup is gone from the BSL's backups/ or has expired
    /// (needs --velero-bsl).
    #[arg(long)]
    pub follow_velero: bool,
    /// Then run prune.
    #[arg(long)]
    pub prune: bool,
    /// Say what would be forgotten (and pruned); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --prune: how old a deletion mark must be before its packs are deleted.
    #[arg(long, value_name = "DURATION", default_value = SAFETY_DELAY, value_parser = super::backup::parse_duration_or_zero)]
    pub safety_delay: chrono::Duration,
}

/// Why a snapshot goes.
fn reasons(
    id: &SnapshotId,
    snap: &Snapshot,
    args: &ForgetArgs,
    kept: &std::collections::HashSet<SnapshotId>,
    policy: &KeepPolicy,
    velero_state: Option<&VeleroBackup>,
) -> Vec<String> {
    let now = Utc::now();
    let mut why = Vec::new();
    if args.expired {
        if let Some(e) = snap.expires.filter(|e| *e <= now) {
            why.push(format!("expired {}", e.format("%Y-%m-%d %H:%M")));
        }
    }
    match velero_state {
        Some(VeleroBackup::Gone) => why.push("its Velero backup is gone".into()),
        Some(VeleroBackup::Expired(t)) => why.push(format!(
            "its Velero backup expired {}",
            t.format("%Y-%m-%d %H:%M")
        )),
        _ => {}
    }
    if !policy.is_empty() && !kept.contains(id) {
        why.push("not kept by the --keep-* policy".into());
    }
    why
}

pub async fn run(ctx: &Context, args: ForgetArgs) -> Result<Output> {
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
    };
    if policy.is_empty() && !args.expired && !args.follow_velero {
        return Err(Error::Usage(
            "nothing to forget by: give --keep-* counts, --expired and/or --follow-velero".into(),
        ));
    }
    let velero_store = if args.follow_velero {
        Some(ctx.velero_store().await?)
    } else {
        None
    };
    let repo = ctx.open_repo().await?;
    let mut snapshots = Vec::new();
    for (id, s) in repo.load_snapshots().await? {
        let s = s.map_err(|e| {
            Error::Integrity(format!(
                "snapshot {} is unreadable ({e}); run `drydock check`",
                id.short()
            ))
        })?;
        snapshots.push((id, s));
    }
    let times: Vec<(SnapshotId, chrono::DateTime<Utc>)> =
        snapshots.iter().map(|(id, s)| (*id, s.time)).collect();
    let kept = policy.keep(&times);
    let mut velero_states: BTreeMap<String, VeleroBackup> = BTreeMap::new();
    if let Some(store) = &velero_store {
        for (_, s) in &snapshots {
            if let Some(name) = s.tags.get(velero::TAG_BACKUP) {
                if !velero_states.contains_key(name) {
                    let state = velero::backups::lookup(store.as_ref(), name, Utc::now()).await?;
                    velero_states.insert(name.clone(), state);
                }
            }
        }
    }
    let mut text = String::new();
    let mut forgotten = Vec::new();
    let mut remaining = 0;
    for (id, s) in &snapshots {
        let state = s
            .tags
            .get(velero::TAG_BACKUP)
            .and_then(|n| velero_states.get(n));
        let why = reasons(id, s, &args, &kept, &policy, state);
        if why.is_empty() {
            remaining += 1;
            continue;
        }
        text += &format!(
            "{} {} {} ({})\n",
            if args.dry_run {
                "would forget"
            } else {
                "forget"
            },
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            crate::term::esc(why.join("; "))
        );
        if !args.dry_run {
            repo.store.delete(&snapshot::key(id)).await?;
        }
        forgotten.push(
            json!({"id": id.to_hex(), "short_id": id.short(), "time": s.time, "reasons": why}),
        );
    }
    text += &format!(
        "{} snapshot(s) forgotten, {remaining} remain\n",
        forgotten.len()
    );
    crate::metrics::record(crate::metrics::Sample::new(
        "drydock_snapshots",
        remaining as f64,
    ));
    let mut out = json!({"forgotten": forgotten, "remaining": remaining, "dry_run": args.dry_run});
    if args.prune {
        let p = super::prune::run_prune(
            repo,
            &PruneArgs {
                safety_delay: args.safety_delay,
                dry_run: args.dry_run,
            },
        )
        .await?;
        text += &p.text;
        out["prune"] = p.json;
    }
    Ok(Output::ok(text, out))
}
