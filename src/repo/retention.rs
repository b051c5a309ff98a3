//! Which snapshots a `--keep-*` policy keeps, and which snapshot times can be believed.
//!
//! A snapshot's `time` is written by whoever wrote the manifest, so anyone able to add a
//! snapshot could date it in 2099 and become `latest` and every `--keep-*` bucket's newest,
//! pushing real snapshots out. The store's own record of when it wrote the object (S3
//! `LastModified`, a file's mtime) is a clock the manifest's author does not control: a
//! time too far from it is not trusted, and an untrusted snapshot is never `latest`, never
//! fills a `--keep-*` slot, and is never forgotten by a policy (only by naming it).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

use crate::ids::SnapshotId;

/// How far a manifest's time may run ahead of the store's write time: clock skew between
/// the backup host and the store.
pub const AHEAD_MAX: Duration = Duration::minutes(15);

/// How far it may lag behind: a snapshot records when its backup started and is written
/// when it ends, and a large registry can take a day or more to copy.
pub const BEHIND_MAX: Duration = Duration::hours(72);

/// The store's write time of every snapshot object, from one listing.
#[derive(Clone, Debug, Default)]
pub struct WriteTimes(pub HashMap<SnapshotId, DateTime<Utc>>);

impl WriteTimes {
    /// Why snapshot `id`'s claimed time is not believed, or `None`.
    pub fn distrust(&self, id: &SnapshotId, claimed: DateTime<Utc>) -> Option<String> {
        distrust(claimed, self.0.get(id).copied(), Utc::now())
    }

    /// When the store wrote snapshot `id`, if it says.
    pub fn time(&self, id: &SnapshotId) -> Option<DateTime<Utc>> {
        self.0.get(id).copied()
    }
}

/// Why a snapshot's time is not believed, or `None` when it is. `written` is the store's
/// time for the object (`None` when the store does not say; then only the future is
/// checked, against this machine's clock).
pub fn distrust(
    claimed: DateTime<Utc>,
    written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    if claimed > now + AHEAD_MAX {
        return Some(format!("its time {} is in the future", fmt(claimed)));
    }
    let written = written?;
    if claimed > written + AHEAD_MAX {
        return Some(format!(
            "its time {} is after the store wrote it ({})",
            fmt(claimed),
            fmt(written)
        ));
    }
    if claimed < written - BEHIND_MAX {
        return Some(format!(
            "its time {} is more than {} h before the store wrote it ({})",
            fmt(claimed),
            BEHIND_MAX.num_hours(),
            fmt(written)
        ));
    }
    None
}

/// The period a snapshot time falls in, as a comparable key.
type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    /// Keep every snapshot this close to the newest one.
    pub within: Option<Duration>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly == 0
            && self.within.is_none()
    }

    /// The snapshots kept: the `last` newest, and the newest of each of the `hourly`,
    /// `daily`, `weekly` (ISO weeks) and `monthly` most recent periods that have one.
    pub fn keep(&self, snapshots: &[(SnapshotId, DateTime<Utc>)]) -> HashSet<SnapshotId> {
        let mut sorted: Vec<&(SnapshotId, DateTime<Utc>)> = snapshots.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let buckets: [(usize, Bucket); 4] = [
            (self.hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
            (self.daily, |t| (t.year(), t.ordinal(), 0, 0)),
            (self.weekly, |t| {
                (t.iso_week().year(), t.iso_week().week(), 0, 0)
            }),
            (self.monthly, |t| (t.year(), t.month(), 0, 0)),
        ];
        let mut kept: HashSet<SnapshotId> =
            sorted.iter().take(self.last).map(|(id, _)| *id).collect();
        if let (Some(within), Some((_, newest))) = (self.within, sorted.first()) {
            let since = *newest - within;
            kept.extend(
                sorted
                    .iter()
                    .filter(|(_, t)| *t >= since)
                    .map(|(id, _)| *id),
            );
        }
        for (limit, bucket) in buckets {
            let mut last_bucket = None;
            let mut count = 0;
            for (id, t) in &sorted {
                if count == limit {
                    break;
                }
                let b = bucket(t);
                if last_bucket != Some(b) {
                    kept.insert(*id);
                    last_bucket = Some(b);
                    count += 1;
                }
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snaps() -> Vec<(SnapshotId, DateTime<Utc>)> {
        // Every 6 hours for 40 days.
        (0..160u8)
            .map(|i| {
                let mut id = [0u8; 32];
                id[0] = i;
                (
                    SnapshotId(id),
                    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap()
                        + chrono::Duration::hours(6 * i as i64),
                )
            })
            .collect()
    }

    #[test]
    fn policies() {
        let s = snaps();
        assert_eq!(
            KeepPolicy {
                last: 3,
                ..Default::default()
            }
            .keep(&s)
            .len(),
            3
        );
        let daily = KeepPolicy {
            daily: 7,
            ..Default::default()
        }
        .keep(&s);
        assert_eq!(daily.len(), 7);
        // The newest of each day: the 18:00 snapshots.
        assert!(daily
            .iter()
            .all(|id| s.iter().find(|(i, _)| i == id).unwrap().1.hour() == 18));
        let mixed = KeepPolicy {
            last: 1,
            daily: 2,
            weekly: 2,
            monthly: 2,
            ..Default::default()
        }
        .keep(&s);
        assert!(mixed.len() >= 3 && mixed.len() <= 7, "{}", mixed.len());
        let within = KeepPolicy {
            within: Some(Duration::days(2)),
            ..Default::default()
        }
        .keep(&s);
        // Two days back from the newest, every 6 hours, both ends included.
        assert_eq!(within.len(), 9);
        assert!(KeepPolicy::default().is_empty());
        assert!(KeepPolicy::default().keep(&s).is_empty());
    }

    #[test]
    fn times_far_from_the_stores_are_not_trusted() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let written = Some(now - Duration::hours(1));
        // A backup that started two hours before it was written is fine.
        assert_eq!(distrust(now - Duration::hours(3), written, now), None);
        // A few minutes of clock skew too.
        assert_eq!(distrust(now - Duration::minutes(50), written, now), None);
        let future = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
        assert!(distrust(future, written, now).unwrap().contains("future"));
        assert!(distrust(future, None, now).unwrap().contains("future"));
        assert!(distrust(now, written, now)
            .unwrap()
            .contains("after the store wrote it"));
        let backdated = now - Duration::days(40);
        assert!(distrust(backdated, written, now)
            .unwrap()
            .contains("before the store wrote it"));
        // Without the store's time only the future can be told.
        assert_eq!(distrust(backdated, None, now), None);
    }
}
