//! Which snapshots a `--keep-*` policy keeps.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::ids::SnapshotId;

/// The period a snapshot time falls in, as a comparable key.
type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly == 0
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
        assert!(KeepPolicy::default().is_empty());
        assert!(KeepPolicy::default().keep(&s).is_empty());
    }
}
