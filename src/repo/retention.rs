//! Which snapshots a `--keep-*` policy keeps, and which snapshot times can be believed.
//!
//! A snapshot's `time` is written by whoever wrote the manifest, so anyone able to add a
//! snapshot could date it in 2099 and become `latest` and every `--keep-*` bucket's newest,
//! pushing real snapshots out. The store's own record of when it wrote the object (S3
//! `LastModified`, a file's mtime) is a clock the manifest's author does not control: a
//! time too far from it is not trusted, and an untrusted snapshot is never `latest`, never
//! fills a `--keep-*` slot, and is never forgotten by a policy (only by naming it).
//!
//! A slot (an hour, day, ISO week or month) keeps two snapshots at most: its newest, as
//! restic does, and the first the store wrote into it. Someone holding the backup-only key
//! writes *now*, after every real snapshot already in the bucket, so whatever it adds to a
//! slot, even backdated into it, can never be that slot's first-written snapshot: the real
//! one stays (FORMAT.md §12 "Retention").

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

/// A trusted snapshot as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dated {
    pub id: SnapshotId,
    /// The manifest's time: which slot the snapshot falls in.
    pub time: DateTime<Utc>,
    /// When the store wrote it, if the store says.
    pub written: Option<DateTime<Utc>>,
}

impl Dated {
    /// The order of writing: the store's time, else the manifest's.
    fn write_order(&self) -> (DateTime<Utc>, DateTime<Utc>, SnapshotId) {
        (self.written.unwrap_or(self.time), self.time, self.id)
    }
}

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

    /// The snapshots kept: the `last` newest, and of each of the `hourly`, `daily`, `weekly`
    /// (ISO weeks) and `monthly` most recent periods that have one, the newest and the
    /// first-written.
    pub fn keep(&self, snapshots: &[Dated]) -> HashSet<SnapshotId> {
        let mut sorted: Vec<&Dated> = snapshots.iter().collect();
        sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let buckets: [(usize, Bucket); 4] = [
            (self.hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
            (self.daily, |t| (t.year(), t.ordinal(), 0, 0)),
            (self.weekly, |t| {
                (t.iso_week().year(), t.iso_week().week(), 0, 0)
            }),
            (self.monthly, |t| (t.year(), t.month(), 0, 0)),
        ];
        let mut kept: HashSet<SnapshotId> = sorted.iter().take(self.last).map(|s| s.id).collect();
        if let (Some(within), Some(newest)) = (self.within, sorted.first()) {
            let since = newest.time - within;
            kept.extend(sorted.iter().filter(|s| s.time >= since).map(|s| s.id));
        }
        for (limit, bucket) in buckets {
            kept.extend(slots(&sorted, bucket, limit));
        }
        kept
    }
}

/// The newest and the first-written snapshot of each of the `limit` most recent periods
/// that have one; `sorted` is newest first.
fn slots(sorted: &[&Dated], bucket: Bucket, limit: usize) -> Vec<SnapshotId> {
    let mut periods: Vec<(&Dated, &Dated)> = Vec::new();
    let mut last_bucket = None;
    for s in sorted {
        let b = bucket(&s.time);
        if last_bucket != Some(b) {
            if periods.len() == limit {
                break;
            }
            periods.push((s, s));
            last_bucket = Some(b);
        } else if let Some((_, first)) = periods.last_mut() {
            if s.write_order() < first.write_order() {
                *first = s;
            }
        }
    }
    periods
        .into_iter()
        .flat_map(|(newest, first)| [newest.id, first.id])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn id(i: u8) -> SnapshotId {
        let mut id = [0u8; 32];
        id[0] = i;
        SnapshotId(id)
    }

    fn snaps() -> Vec<Dated> {
        // Every 6 hours for 40 days, each written a minute after it started.
        (0..160u8)
            .map(|i| {
                let time = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::hours(6 * i as i64);
                Dated {
                    id: id(i),
                    time,
                    written: Some(time + Duration::minutes(1)),
                }
            })
            .collect()
    }

    fn hour_of(s: &[Dated], id: &SnapshotId) -> u32 {
        s.iter().find(|d| d.id == *id).unwrap().time.hour()
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
        // The newest of each day (18:00) and its first-written (00:00).
        assert_eq!(daily.len(), 14);
        assert!(daily.iter().all(|id| [0, 18].contains(&hour_of(&s, id))));
        let mixed = KeepPolicy {
            last: 1,
            daily: 2,
            weekly: 2,
            monthly: 2,
            ..Default::default()
        }
        .keep(&s);
        assert!(mixed.len() >= 3 && mixed.len() <= 13, "{}", mixed.len());
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
    fn a_snapshot_written_later_into_a_slot_never_displaces_its_first() {
        let day = |h| Utc.with_ymd_and_hms(2026, 11, 30, h, 0, 0).unwrap();
        let real = Dated {
            id: id(1),
            time: day(2),
            written: Some(day(3)),
        };
        let daily = KeepPolicy {
            daily: 7,
            ..Default::default()
        };
        // Written the next morning, dated late in the real one's day, or backdated before it.
        for time in [day(23), day(1)] {
            let forged = Dated {
                id: id(2),
                time,
                written: Some(day(23) + Duration::hours(8)),
            };
            let kept = daily.keep(&[real, forged]);
            assert!(kept.contains(&real.id), "{time}: {kept:?}");
        }
        // Without store times, the manifest's order stands in: the earlier one is first.
        let a = Dated {
            written: None,
            ..real
        };
        let b = Dated {
            id: id(3),
            time: day(20),
            written: None,
        };
        assert_eq!(daily.keep(&[a, b]).len(), 2);
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
