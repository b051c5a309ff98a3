//! Thawing archived packs (GLACIER, DEEP_ARCHIVE) before a command reads them
//! (FORMAT.md §6.1, docs/OPERATIONS.md "Archival storage classes").
//!
//! One listing gives every pack's storage class; only the packs a command needs that sit in
//! a delayed class are looked at (HeadObject: `x-amz-restore`), and RestoreObject goes out
//! for exactly those not thawed or thawing. A second run, after an interrupted one, finds
//! them thawing or thawed and asks for nothing again. Then it waits, polling with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::pack;
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{ByteSize, PackId};
use crate::store::{StorageClass, Thaw, ThawTier};

/// How a command thaws what it reads.
#[derive(Clone, Debug)]
pub struct ThawOptions {
    pub tier: ThawTier,
    /// How long S3 keeps the thawed copy readable.
    pub days: u32,
    /// Report what would be thawed; ask for nothing.
    pub dry_run: bool,
}

/// What a thaw found and did; `--json` reports it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThawReport {
    /// Needed packs in a delayed class, and their bytes.
    pub packs: usize,
    pub bytes: u64,
    /// RestoreObject requests this run sent.
    pub requested: usize,
    /// Packs an earlier request is still thawing, or has thawed.
    pub thawing: usize,
    pub thawed: usize,
    pub tier: String,
    pub cost_class: String,
    pub days: u32,
    pub dry_run: bool,
    /// The pack keys that needed (or, with `--dry-run`, would need) a RestoreObject.
    pub to_thaw: Vec<String>,
}

/// The packs holding every blob the snapshots reach (trees are read to find them: they
/// are never archived).
pub async fn packs_for(
    reader: &super::reader::BlobReader,
    index: &super::index::MasterIndex,
    snapshots: &[super::snapshot::Snapshot],
) -> Result<HashSet<PackId>> {
    let blobs = super::prune::referenced(reader, snapshots).await?;
    Ok(blobs
        .iter()
        .filter_map(|id| index.get(id))
        .map(|loc| loc.pack)
        .collect())
}

/// A pack in a delayed class, as the listing gave it.
#[derive(Clone, Debug)]
struct Archived {
    key: String,
    size: u64,
    class: StorageClass,
}

impl std::fmt::Debug for Thawer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thawer").field("opts", &self.opts).finish()
    }
}

pub struct Thawer {
    repo: Arc<Repository>,
    opts: ThawOptions,
    /// Packs already seen readable in this run: a GET that fails anyway (an object moved
    /// to an archive tier since) goes through [`thaw_one`](Self::thaw_one).
    ready: std::sync::Mutex<HashSet<String>>,
}

/// The first poll interval: `DRYDOCK_THAW_POLL_MS` (tests), else a minute; AWS's quickest
/// thaw (Expedited) takes 1–5 minutes.
fn first_poll() -> Duration {
    let ms = std::env::var("DRYDOCK_THAW_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(60_000);
    Duration::from_millis(ms)
}

impl Thawer {
    pub fn new(repo: Arc<Repository>, opts: ThawOptions) -> Arc<Self> {
        Arc::new(Thawer {
            repo,
            opts,
            ready: Default::default(),
        })
    }

    pub fn options(&self) -> &ThawOptions {
        &self.opts
    }

    /// Make `packs` readable: thaw those in a delayed class, then wait for them (unless
    /// `--dry-run`, which only reports).
    pub async fn prepare(&self, packs: &HashSet<PackId>) -> Result<ThawReport> {
        let wanted: HashSet<String> = packs.iter().map(pack::key).collect();
        let archived: Vec<Archived> = self
            .repo
            .store
            .list_classes(pack::PREFIX)
            .await?
            .into_iter()
            .filter(|o| o.class.delayed() && wanted.contains(&o.key))
            .map(|o| Archived {
                key: o.key,
                size: o.size,
                class: o.class,
            })
            .collect();
        self.refuse_missing_tier(&archived)?;
        let mut report = ThawReport {
            packs: archived.len(),
            bytes: archived.iter().map(|a| a.size).sum(),
            tier: self.opts.tier.as_str().into(),
            cost_class: self.opts.tier.cost_class().into(),
            days: self.opts.days,
            dry_run: self.opts.dry_run,
            ..Default::default()
        };
        let states = self.states(&archived).await?;
        let mut pending = Vec::new();
        for a in &archived {
            match &states[&a.key] {
                Thaw::Ready { .. } => report.thawed += 1,
                Thaw::Ongoing => {
                    report.thawing += 1;
                    pending.push(a.clone());
                }
                Thaw::NotRequested => {
                    report.to_thaw.push(a.key.clone());
                    pending.push(a.clone());
                }
            }
        }
        report.to_thaw.sort();
        if self.opts.dry_run || archived.is_empty() {
            return Ok(report);
        }
        tracing::info!(
            "thaw: {} archived packs ({}) needed: {} thawed, {} thawing, {} to thaw now ({} tier, kept {} days)",
            report.packs,
            ByteSize(report.bytes),
            report.thawed,
            report.thawing,
            report.to_thaw.len(),
            self.opts.tier.as_str(),
            self.opts.days
        );
        for key in &report.to_thaw {
            self.repo
                .store
                .request_thaw(key, self.opts.tier, self.opts.days)
                .await?;
            report.requested += 1;
        }
        self.wait(pending).await?;
        self.ready
            .lock()
            .expect("lock")
            .extend(archived.into_iter().map(|a| a.key));
        Ok(report)
    }

    /// A pack a GET found archived (InvalidObjectState) although the plan did not: thaw it
    /// and wait, unless `--dry-run`, where it stays an error.
    pub async fn thaw_one(&self, pack: &PackId, why: Error) -> Result<()> {
        let key = pack::key(pack);
        if self.opts.dry_run || self.ready.lock().expect("lock").contains(&key) {
            return Err(why);
        }
        tracing::warn!("thaw: {why}; thawing it");
        let state = self.repo.store.cold_state(&key).await?;
        let archived = Archived {
            key: key.clone(),
            size: 0,
            class: state.class,
        };
        self.refuse_missing_tier(std::slice::from_ref(&archived))?;
        if state.thaw == Thaw::NotRequested {
            self.repo
                .store
                .request_thaw(&key, self.opts.tier, self.opts.days)
                .await?;
        }
        self.wait(vec![archived]).await?;
        self.ready.lock().expect("lock").insert(key);
        Ok(())
    }

    /// A whole pack; one a GET finds archived is thawed first.
    pub async fn get_pack(&self, pack: &PackId) -> Result<bytes::Bytes> {
        let key = pack::key(pack);
        match self.repo.store.get(&key).await {
            Err(Error::Cold(why)) => {
                self.thaw_one(pack, Error::Cold(why)).await?;
                self.repo.store.get(&key).await
            }
            other => other,
        }
    }

    /// DEEP_ARCHIVE has no Expedited tier: say so before anything is asked.
    fn refuse_missing_tier(&self, archived: &[Archived]) -> Result<()> {
        match archived
            .iter()
            .find(|a| self.opts.tier.typical_minutes(&a.class).is_none())
        {
            Some(a) => Err(Error::Usage(format!(
                "{} is in {}, which has no {} thaw tier; use --thaw-tier Standard or Bulk",
                a.key,
                a.class,
                self.opts.tier.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// Each pack's thaw state, a few HeadObject requests at a time.
    async fn states(&self, archived: &[Archived]) -> Result<HashMap<String, Thaw>> {
        let keys: Vec<String> = archived.iter().map(|a| a.key.clone()).collect();
        let found: Vec<Result<(String, Thaw)>> = stream::iter(keys)
            .map(|key| {
                let store = self.repo.store.clone();
                async move {
                    let state = store.cold_state(&key).await?;
                    Ok((key, state.thaw))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        found.into_iter().collect()
    }

    /// Poll until every pack in `pending` is thawed, with backoff, logging progress and
    /// an ETA from AWS's published time for the tier.
    async fn wait(&self, mut pending: Vec<Archived>) -> Result<()> {
        let total = pending.len();
        let total_bytes: u64 = pending.iter().map(|a| a.size).sum();
        let bound = pending
            .iter()
            .filter_map(|a| self.opts.tier.typical_minutes(&a.class))
            .max()
            .unwrap_or(0);
        let started = Instant::now();
        let first = first_poll();
        let mut every = first;
        while !pending.is_empty() {
            tokio::time::sleep(every).await;
            every = (every * 2).min(first * 15);
            let states = self.states(&pending).await?;
            pending.retain(|a| !matches!(states[&a.key], Thaw::Ready { .. }));
            let ready_bytes: u64 = total_bytes - pending.iter().map(|a| a.size).sum::<u64>();
            tracing::info!(
                "thaw: {}/{total} packs ready ({} of {}), waited {}, {}",
                total - pending.len(),
                ByteSize(ready_bytes),
                ByteSize(total_bytes),
                minutes(started.elapsed().as_secs() / 60),
                eta(bound, started.elapsed()),
            );
        }
        Ok(())
    }
}

/// `90` → `1h30m`.
fn minutes(m: u64) -> String {
    match m {
        m if m >= 60 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{m}m"),
    }
}

/// What to expect, from AWS's upper bound for the tier (`bound` minutes).
fn eta(bound: u64, elapsed: Duration) -> String {
    let left = bound.saturating_sub(elapsed.as_secs() / 60);
    if left == 0 {
        format!(
            "past the tier's typical {} (S3 may take longer)",
            minutes(bound)
        )
    } else {
        format!(
            "ETA within about {} (the tier's typical {})",
            minutes(left),
            minutes(bound)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_waits_and_etas() {
        assert_eq!(minutes(5), "5m");
        assert_eq!(minutes(90), "1h30m");
        assert_eq!(
            eta(300, Duration::from_secs(60 * 60)),
            "ETA within about 4h00m (the tier's typical 5h00m)"
        );
        assert!(eta(5, Duration::from_secs(600)).starts_with("past"));
    }

    #[test]
    fn deep_archive_has_no_expedited_tier() {
        let deep: StorageClass = "deep_archive".parse().unwrap();
        assert!(deep.delayed());
        assert_eq!(ThawTier::Expedited.typical_minutes(&deep), None);
        assert_eq!(ThawTier::Bulk.typical_minutes(&deep), Some(48 * 60));
        let ir: StorageClass = "GLACIER_IR".parse().unwrap();
        assert!(!ir.delayed());
        assert!("NOT A CLASS".parse::<StorageClass>().is_err());
    }
}
