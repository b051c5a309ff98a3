//! `drydock forget`: drop snapshots by name, policy, expiry or Velero; `--prune` reclaims
//! space.
//!
//! Whatever the policy, forget keeps the newest trusted snapshot of every host and part set
//! (unless it is named), and a snapshot whose time the store contradicts
//! ([`crate::repo::retention::distrust`]) neither fills a `--keep-*` slot nor is forgotten by one: forged
//! snapshots dated in the future cannot push real ones out.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use clap::Args;
use serde_json::json;

use super::prune::{PruneArgs, SAFETY_DELAY};
use super::{Context, Output};
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::repo::retention::{Dated, KeepPolicy, WriteTimes};
use crate::repo::snapshot::{self, Meta};
use crate::repo::{lock, Repository};
use crate::store::Store;
use crate::velero::{self, backups::VeleroBackup};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget by id or unique prefix, whatever the policy says.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest and the first-written snapshot of each of the last N hours that have
    /// one (the first-written is what a later, forged snapshot cannot displace).
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
    /// Keep every snapshot taken within DURATION (`30d`, `72h`) of the newest one.
    #[arg(long, value_name = "DURATION", value_parser = super::backup::parse_duration)]
    pub keep_within: Option<chrono::Duration>,
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
    /// Apply --keep-* even when one host and part set got more than 48 snapshots in the last
    /// 24 hours. By default forget then refuses (exit 4): such a burst is how snapshots
    /// forged with a leaked backup-only key would push real ones out of their slots.
    #[arg(long)]
    pub allow_burst: bool,
    /// With --prune: how old a deletion mark must be before its packs are deleted.
    #[arg(long, value_name = "DURATION", default_value = SAFETY_DELAY, value_parser = super::backup::parse_duration_or_zero)]
    pub safety_delay: chrono::Duration,
}

impl ForgetArgs {
    fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            within: self.keep_within,
        }
    }
}

/// What is known of every snapshot before anything is decided.
struct Facts {
    snapshots: Vec<(SnapshotId, Meta)>,
    /// Why a snapshot's time is not believed.
    untrusted: HashMap<SnapshotId, String>,
    /// Kept by the `--keep-*` policy (trusted snapshots only); `None` without a policy.
    kept: Option<HashSet<SnapshotId>>,
    /// The newest trusted snapshot of each host and part set.
    newest: HashSet<SnapshotId>,
    named: HashSet<SnapshotId>,
    velero: BTreeMap<String, VeleroBackup>,
}

/// Why a snapshot goes.
fn reasons(id: &SnapshotId, snap: &Meta, args: &ForgetArgs, facts: &Facts) -> Vec<String> {
    let now = Utc::now();
    let mut why = Vec::new();
    if facts.named.contains(id) {
        why.push("named on the command line".into());
    }
    if args.expired {
        if let Some(e) = snap.expires.filter(|e| *e <= now) {
            why.push(format!("expired {}", e.format("%Y-%m-%d %H:%M")));
        }
    }
    match snap
        .tags
        .get(velero::TAG_BACKUP)
        .and_then(|n| facts.velero.get(n))
    {
        // Velero writes velero-backup.json only when the backup ends: a young backup
        // without it may still be running, not deleted.
        Some(VeleroBackup::Gone) if unfinished(snap, now) => {}
        Some(VeleroBackup::Gone) => why.push("its Velero backup is gone".into()),
        Some(VeleroBackup::Expired(t)) => why.push(format!(
            "its Velero backup expired {}",
            t.format("%Y-%m-%d %H:%M")
        )),
        _ => {}
    }
    let dropped = facts.kept.as_ref().is_some_and(|kept| !kept.contains(id));
    if dropped && !facts.untrusted.contains_key(id) {
        why.push("not kept by the --keep-* policy".into());
    }
    why
}

/// How long a Velero backup may run before a missing `velero-backup.json` means deleted.
const VELERO_UNFINISHED_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// Whether the snapshot's Velero backup may still be running: it started (by the time in
/// its schedule name, else the snapshot's) less than the grace ago.
fn unfinished(snap: &Meta, now: chrono::DateTime<Utc>) -> bool {
    let started = snap
        .tags
        .get(velero::TAG_BACKUP)
        .and_then(|n| velero::started_of(n))
        .unwrap_or(snap.time);
    now - started < VELERO_UNFINISHED_GRACE
}

/// Why a snapshot that has reasons to go stays all the same.
fn keep_anyway(id: &SnapshotId, snap: &Meta, facts: &Facts) -> Option<String> {
    if facts.named.contains(id) || !facts.newest.contains(id) {
        return None;
    }
    Some(format!(
        "the newest snapshot of host {} with parts {}; name it to forget it",
        crate::term::esc(&snap.host),
        crate::term::esc(snap.parts.join(","))
    ))
}

/// Every snapshot (one unreadable is an error: forget would misjudge the rest; one not
/// authentic is no snapshot and is skipped), with when the store wrote each.
async fn readable_snapshots(
    repo: &Repository,
    named: &HashSet<SnapshotId>,
) -> Result<(Vec<(SnapshotId, Meta)>, WriteTimes)> {
    let (all, written) = repo.load_metas_written().await?;
    let mut snapshots = Vec::new();
    for (id, s) in all {
        let s = match s {
            Ok(s) => s,
            Err(Error::Unauthentic(why)) => {
                tracing::warn!("forget ignores snapshots/{id}: {why}");
                continue;
            }
            // Named on the command line: forgotten whatever it holds (how an unreadable
            // snapshot that stops forget and prune is removed).
            Err(e) if named.contains(&id) => {
                tracing::warn!("forgetting snapshots/{id}, which is unreadable: {e}");
                snapshots.push((id, unreadable_meta()));
                continue;
            }
            Err(e) => {
                return Err(Error::Integrity(format!(
                    "snapshot {} is unreadable ({e}); run `drydock check`",
                    id.short()
                )))
            }
        };
        snapshots.push((id, s));
    }
    Ok((snapshots, written))
}

/// What stands for a named snapshot that cannot be read: it counts in no group.
fn unreadable_meta() -> Meta {
    Meta {
        time: chrono::DateTime::<Utc>::MIN_UTC,
        host: String::new(),
        tags: Default::default(),
        expires: None,
        parts: vec!["unreadable".into()],
        program: String::new(),
    }
}

/// The newest trusted snapshot of each (host, parts) group.
fn newest_per_group(
    snapshots: &[(SnapshotId, Meta)],
    untrusted: &HashMap<SnapshotId, String>,
) -> HashSet<SnapshotId> {
    // Per (host, parts): the greatest (time, id).
    type Newest = (chrono::DateTime<Utc>, SnapshotId);
    let mut newest: HashMap<(&str, &[String]), Newest> = HashMap::new();
    for (id, s) in snapshots
        .iter()
        .filter(|(id, _)| !untrusted.contains_key(id))
    {
        let entry = newest.entry((&s.host, &s.parts)).or_insert((s.time, *id));
        *entry = (*entry).max((s.time, *id));
    }
    newest.into_values().map(|(_, id)| id).collect()
}

/// More snapshots than this of one host and part set within [`BURST_WINDOW`] is a burst.
const BURST_LIMIT: usize = 48;
const BURST_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Refuse a --keep-* policy while a burst of snapshots sits in one group: they would take
/// every slot of the period they are in, and a holder of the backup-only key can write them
/// as easily as the CronJob (FORMAT.md §13). Counted by the store's write time when known.
fn refuse_bursts(
    snapshots: &[(SnapshotId, Meta)],
    written: &WriteTimes,
    untrusted: &HashMap<SnapshotId, String>,
) -> Result<()> {
    let since = Utc::now() - BURST_WINDOW;
    let mut recent: HashMap<(&str, &[String]), usize> = HashMap::new();
    for (id, s) in snapshots
        .iter()
        .filter(|(id, _)| !untrusted.contains_key(id))
    {
        if written.time(id).unwrap_or(s.time) >= since {
            *recent.entry((&s.host, &s.parts)).or_default() += 1;
        }
    }
    match recent.into_iter().find(|(_, n)| *n > BURST_LIMIT) {
        None => Ok(()),
        Some(((host, parts), n)) => Err(Error::Refused(format!(
            "{n} snapshots of host {} with parts {} were written in the last 24 hours (more than {BURST_LIMIT}); refusing to apply --keep-* while they could push real snapshots out: look at them with `drydock snapshots`, forget unwanted ones by id, or pass --allow-burst",
            crate::term::esc(host),
            crate::term::esc(parts.join(","))
        ))),
    }
}

async fn velero_states(
    store: Option<&dyn Store>,
    snapshots: &[(SnapshotId, Meta)],
) -> Result<BTreeMap<String, VeleroBackup>> {
    let mut states = BTreeMap::new();
    let Some(store) = store else {
        return Ok(states);
    };
    for (_, s) in snapshots {
        if let Some(name) = s.tags.get(velero::TAG_BACKUP) {
            if !states.contains_key(name) {
                let state = velero::backups::lookup(store, name, Utc::now()).await?;
                states.insert(name.clone(), state);
            }
        }
    }
    Ok(states)
}

async fn gather(
    repo: &Repository,
    args: &ForgetArgs,
    velero_store: Option<&dyn Store>,
) -> Result<Facts> {
    let mut named = HashSet::new();
    for spec in &args.snapshots {
        named.insert(repo.find_snapshot_id(spec).await?);
    }
    let (snapshots, written) = readable_snapshots(repo, &named).await?;
    let untrusted: HashMap<SnapshotId, String> = snapshots
        .iter()
        .filter_map(|(id, s)| Some((*id, written.distrust(id, s.time)?)))
        .collect();
    if !args.allow_burst && !args.policy().is_empty() {
        refuse_bursts(&snapshots, &written, &untrusted)?;
    }
    let times: Vec<Dated> = snapshots
        .iter()
        .filter(|(id, _)| !untrusted.contains_key(id))
        .map(|(id, s)| Dated {
            id: *id,
            time: s.time,
            written: written.time(id),
        })
        .collect();
    Ok(Facts {
        kept: Some(args.policy())
            .filter(|p| !p.is_empty())
            .map(|p| p.keep(&times)),
        newest: newest_per_group(&snapshots, &untrusted),
        velero: velero_states(velero_store, &snapshots).await?,
        untrusted,
        named,
        snapshots,
    })
}

pub async fn run(ctx: &Context, args: ForgetArgs) -> Result<Output> {
    if args.policy().is_empty() && !args.expired && !args.follow_velero && args.snapshots.is_empty()
    {
        return Err(Error::Usage(
            "nothing to forget by: name snapshots, or give --keep-* counts, --expired and/or --follow-velero".into(),
        ));
    }
    let velero_store = match args.follow_velero {
        true => Some(ctx.velero_store().await?),
        false => None,
    };
    let repo = ctx.open_repo().await?;
    repo.config.check_writable()?;
    let facts = gather(&repo, &args, velero_store.as_deref()).await?;
    let verb = if args.dry_run {
        "would forget"
    } else {
        "forget"
    };
    let mut text = String::new();
    let mut forgotten = Vec::new();
    let mut kept_anyway = Vec::new();
    let mut remaining = 0;
    // Forgotten, but Object Lock retains their objects: marked, deleted by a later prune.
    let mut held = Vec::new();
    for (id, s) in &facts.snapshots {
        let when = s.time.format("%Y-%m-%d %H:%M:%S");
        if let Some(why) = facts.untrusted.get(id) {
            text += &format!(
                "untrusted {} {when}: {why}; no --keep-* policy counts it\n",
                id.short()
            );
        }
        let why = reasons(id, s, &args, &facts);
        if why.is_empty() {
            remaining += 1;
            continue;
        }
        if let Some(keep) = keep_anyway(id, s, &facts) {
            remaining += 1;
            text += &format!(
                "keep {} {when} ({}): {keep}
",
                id.short(),
                crate::term::esc(why.join("; "))
            );
            kept_anyway.push(json!({"id": id.to_hex(), "short_id": id.short(), "reasons": why, "kept_because": keep}));
            continue;
        }
        text += &format!(
            "{verb} {} {when} ({})
",
            id.short(),
            crate::term::esc(why.join("; "))
        );
        if !args.dry_run
            && !lock::delete_unless_retained(repo.store.as_ref(), &snapshot::key(id)).await?
        {
            held.push(*id);
        }
        forgotten.push(
            json!({"id": id.to_hex(), "short_id": id.short(), "time": s.time, "reasons": why}),
        );
    }
    if !held.is_empty() {
        held.sort();
        text += &format!(
            "{} of them are under Object Lock retention: marked forgotten, deleted by a prune after their date\n",
            held.len()
        );
        crate::repo::prune::write_record(&repo, Vec::new(), held, Utc::now()).await?;
    }
    text += &format!(
        "{} snapshot(s) forgotten, {remaining} remain\n",
        forgotten.len()
    );
    crate::metrics::record(crate::metrics::Sample::new(
        "drydock_snapshots",
        remaining as f64,
    ));
    let untrusted: Vec<String> = facts.untrusted.keys().map(|id| id.to_hex()).collect();
    let mut out = json!({"forgotten": forgotten, "kept_anyway": kept_anyway, "untrusted": untrusted,
        "remaining": remaining, "dry_run": args.dry_run});
    if args.prune {
        let p = super::prune::run_prune(
            repo,
            &PruneArgs {
                safety_delay: args.safety_delay,
                dry_run: args.dry_run,
                repack_threshold: super::prune::DEFAULT_REPACK_THRESHOLD,
                repack_cold: false,
            },
        )
        .await?;
        text += &p.text;
        out["prune"] = p.json;
    }
    Ok(Output::ok(text, out))
}
