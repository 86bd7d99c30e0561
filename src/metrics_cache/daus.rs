//! Daily active users: the series per timezone offset, the seed's `fillEmptyDays`, and its closest-offset lookup.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agentwire_store::aggregates::{ActivityDay, TemplateDayUsers, UserActivityDay, MICROS_PER_DAY};
use uuid::Uuid;

/// Microseconds in an hour: offsets are whole hours.
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// One day of a series: `day` counts days since 1970-01-01 in the series' timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DauEntry {
    pub day: i64,
    pub amount: i64,
}

/// `codersdk.DAUsResponse`: one entry per day from the first active day to the last, empty days included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DauSeries {
    pub tz_hour_offset: i32,
    pub entries: Vec<DauEntry>,
}

/// The seed's `fillEmptyDays`: sorted days with every missing day between two neighbours added.
pub fn fill_empty_days(sorted_days: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(sorted_days.len());
    for &day in sorted_days {
        if let Some(&last) = out.last() {
            let mut next: i64 = last + 1;
            while next < day {
                out.push(next);
                next += 1;
            }
        }
        out.push(day);
    }
    out
}

/// A series from active-user counts by day (days without users are filled with 0 between the first and the last).
pub fn series(tz_hour_offset: i32, counts: &BTreeMap<i64, i64>) -> DauSeries {
    let days: Vec<i64> = counts.keys().copied().collect();
    let entries = fill_empty_days(&days)
        .into_iter()
        .map(|day| DauEntry { day, amount: counts.get(&day).copied().unwrap_or(0) })
        .collect();
    DauSeries { tz_hour_offset, entries }
}

/// The seed's `closest`: the exact offset if present, else the nearest, ties going to the smaller offset so the
/// answer does not depend on map order.
pub fn closest<V>(values: &BTreeMap<i32, V>, offset: i32) -> Option<(i32, &V)> {
    if let Some(v) = values.get(&offset) {
        return Some((offset, v));
    }
    // BTreeMap iterates in ascending key order, so `min_by_key` on the distance keeps the smaller key on a tie.
    values.iter().min_by_key(|(k, _)| (i64::from(**k) - i64::from(offset)).abs()).map(|(k, v)| (*k, v))
}

/// The local day of `micros` at `offset` hours east of UTC.
fn local_day(micros: i64, offset: i32) -> i64 {
    (micros + i64::from(offset) * MICROS_PER_HOUR).div_euclid(MICROS_PER_DAY)
}

/// Counts users by local day for one offset. `rows` must be sorted by user, then UTC day (unique per pair): one
/// pass, since a user's local days then come in non-decreasing order and a repeat is always the previous one.
fn count_by_day(rows: &[UserDay], offset: i32) -> BTreeMap<i64, i64> {
    let mut counts = BTreeMap::new();
    let mut previous: Option<(Uuid, i64)> = None;
    for r in rows {
        // A UTC day's activity lands on at most two local days; the first and last instants say which.
        for day in [local_day(r.first_at, offset), local_day(r.last_at, offset)] {
            if previous != Some((r.user_id, day)) {
                *counts.entry(day).or_insert(0) += 1;
                previous = Some((r.user_id, day));
            }
        }
    }
    counts
}

#[derive(Debug, Clone, Copy)]
struct UserDay {
    user_id: Uuid,
    first_at: i64,
    last_at: i64,
}

/// What the daily-active-user aggregates are computed from.
#[derive(Debug, Clone)]
pub enum Activity {
    /// One row per (template, user, UTC day): every deployment and template offset derives from these.
    Rows(Vec<ActivityDay>),
    /// Folded by the database, a fraction of the rows: per (user, UTC day) across templates, which serves the
    /// deployment DAUs of every offset; per (template, UTC day) counts and per-template unique users, which serve
    /// template DAUs at offset 0 only.
    Folded { user_days: Vec<UserActivityDay>, template_days: Vec<TemplateDayUsers>, unique_users: Vec<(Uuid, i64)> },
}

impl Default for Activity {
    fn default() -> Self {
        Activity::Rows(Vec::new())
    }
}

impl Activity {
    /// Whether template DAUs at these offsets need [`Activity::Rows`].
    pub fn rows_needed(template_offsets: &[i32]) -> bool {
        template_offsets.iter().any(|o| *o != 0)
    }
}

/// Everything the template refresh derives from the activity rows.
#[derive(Debug, Default)]
pub struct DauAggregates {
    pub deployment: BTreeMap<i32, Arc<DauSeries>>,
    pub templates: BTreeMap<i32, HashMap<Uuid, Arc<DauSeries>>>,
    pub unique_users: HashMap<Uuid, i64>,
}

/// Deployment DAUs for `deployment_offsets` (all templates), template DAUs for `template_offsets` and unique users,
/// for the templates in `templates` (others get nothing, as the seed only walks live templates). Folded activity
/// carries template DAUs at offset 0 only (see [`Activity::rows_needed`]); other template offsets are left out.
pub fn aggregate(
    activity: Activity,
    templates: &[Uuid],
    deployment_offsets: &[i32],
    template_offsets: &[i32],
) -> DauAggregates {
    match activity {
        Activity::Rows(rows) => aggregate_rows(rows, templates, deployment_offsets, template_offsets),
        Activity::Folded { mut user_days, template_days, unique_users } => {
            // count_by_day wants (user, UTC day) order; the database's group order is not promised.
            user_days.sort_unstable_by_key(|d| (d.user_id, d.day));
            let deployment: Vec<UserDay> = user_days
                .iter()
                .map(|d| UserDay { user_id: d.user_id, first_at: d.first_at, last_at: d.last_at })
                .collect();
            let mut out =
                DauAggregates { deployment: deployment_series(&deployment, deployment_offsets), ..Default::default() };
            if template_offsets.contains(&0) {
                let mut by_template: HashMap<Uuid, BTreeMap<i64, i64>> =
                    templates.iter().map(|t| (*t, BTreeMap::new())).collect();
                for d in &template_days {
                    if let Some(days) = by_template.get_mut(&d.template_id) {
                        days.insert(d.day, d.users);
                    }
                }
                let per = by_template.iter().map(|(t, days)| (*t, Arc::new(series(0, days)))).collect();
                out.templates.insert(0, per);
            }
            let unique: HashMap<Uuid, i64> = unique_users.into_iter().collect();
            out.unique_users = templates.iter().map(|t| (*t, unique.get(t).copied().unwrap_or(0))).collect();
            out
        }
    }
}

/// Deployment DAUs for each offset from per-(user, UTC day) rows sorted by user, then day.
fn deployment_series(deployment: &[UserDay], offsets: &[i32]) -> BTreeMap<i32, Arc<DauSeries>> {
    offsets.iter().map(|&offset| (offset, Arc::new(series(offset, &count_by_day(deployment, offset))))).collect()
}

fn aggregate_rows(
    mut activity: Vec<ActivityDay>,
    templates: &[Uuid],
    deployment_offsets: &[i32],
    template_offsets: &[i32],
) -> DauAggregates {
    let mut out = DauAggregates::default();
    // Deployment rows: one per (user, UTC day) across templates, widened to the earliest and latest instant.
    activity.sort_unstable_by_key(|a| (a.user_id, a.day));
    let mut deployment: Vec<UserDay> = Vec::with_capacity(activity.len());
    let mut last_key = None;
    for a in &activity {
        match deployment.last_mut() {
            Some(d) if last_key == Some((a.user_id, a.day)) => {
                d.first_at = d.first_at.min(a.first_at);
                d.last_at = d.last_at.max(a.last_at);
            }
            _ => {
                deployment.push(UserDay { user_id: a.user_id, first_at: a.first_at, last_at: a.last_at });
                last_key = Some((a.user_id, a.day));
            }
        }
    }
    out.deployment = deployment_series(&deployment, deployment_offsets);
    // Per template: the rows are already unique per (template, user, day).
    let mut by_template: HashMap<Uuid, Vec<UserDay>> = templates.iter().map(|t| (*t, Vec::new())).collect();
    for a in &activity {
        if let Some(rows) = by_template.get_mut(&a.template_id) {
            rows.push(UserDay { user_id: a.user_id, first_at: a.first_at, last_at: a.last_at });
        }
    }
    for &offset in template_offsets {
        let per: HashMap<Uuid, Arc<DauSeries>> =
            by_template.iter().map(|(t, rows)| (*t, Arc::new(series(offset, &count_by_day(rows, offset))))).collect();
        out.templates.insert(offset, per);
    }
    for (t, rows) in &by_template {
        let mut users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
        users.dedup();
        out.unique_users.insert(*t, users.len() as i64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_gaps_between_days_and_nothing_else() {
        assert_eq!(fill_empty_days(&[]), Vec::<i64>::new());
        assert_eq!(fill_empty_days(&[5]), vec![5]);
        assert_eq!(fill_empty_days(&[5, 6]), vec![5, 6]);
        assert_eq!(fill_empty_days(&[1, 4, 5, 8]), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let s = series(2, &BTreeMap::from([(10, 3), (13, 1)]));
        assert_eq!(s.tz_hour_offset, 2);
        assert_eq!(
            s.entries.iter().map(|e| (e.day, e.amount)).collect::<Vec<_>>(),
            [(10, 3), (11, 0), (12, 0), (13, 1)]
        );
    }

    #[test]
    fn closest_offset_prefers_exact_then_nearest_then_smaller() {
        let m: BTreeMap<i32, &str> = BTreeMap::from([(-2, "a"), (0, "b"), (2, "c"), (5, "d")]);
        assert_eq!(closest(&m, 0), Some((0, &"b")));
        assert_eq!(closest(&m, 1), Some((0, &"b")), "tie between 0 and 2 goes to 0");
        assert_eq!(closest(&m, -1), Some((-2, &"a")), "tie between -2 and 0 goes to -2");
        assert_eq!(closest(&m, 4), Some((5, &"d")));
        assert_eq!(closest(&m, 100), Some((5, &"d")));
        assert_eq!(closest(&m, -100), Some((-2, &"a")));
        assert_eq!(closest(&BTreeMap::<i32, ()>::new(), 0), None);
    }

    #[test]
    fn offsets_move_activity_across_midnight() {
        let (t, u) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let day = 20_000;
        let at = |h: i64| day * MICROS_PER_DAY + h * MICROS_PER_HOUR;
        // Active at 01:00 and 23:00 UTC on one day.
        let rows = vec![ActivityDay { template_id: t, user_id: u, day, first_at: at(1), last_at: at(23) }];
        let agg = aggregate(Activity::Rows(rows), &[t], &[0, -2, 2], &[0]);
        let days = |o: i32| agg.deployment[&o].entries.iter().map(|e| (e.day, e.amount)).collect::<Vec<_>>();
        assert_eq!(days(0), [(day, 1)]);
        assert_eq!(days(-2), [(day - 1, 1), (day, 1)]);
        assert_eq!(days(2), [(day, 1), (day + 1, 1)]);
        assert_eq!(agg.unique_users[&t], 1);
        assert_eq!(agg.templates[&0][&t].entries.len(), 1);
    }
}
