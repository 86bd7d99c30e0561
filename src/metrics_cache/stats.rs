//! Percentiles as PostgreSQL computes them, template build times, and the deployment stats snapshot.

use std::collections::HashMap;

use agentwire_store::aggregates::{AgentStatsWindow, BuildDuration, WorkspaceStateCounts};
use agentwire_store::UnixMicros;
use uuid::Uuid;

/// PostgreSQL's `percentile_disc(f)` over ascending `sorted`: the first value whose position reaches the fraction
/// (`ceil(f · n)`-th, 1-based), computed in `f64` as PostgreSQL does. `None` when empty.
pub fn percentile_disc<T: Copy>(sorted: &[T], f: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (f * n as f64).ceil();
    // A rank below 1 (f = 0) is the first row, as in PostgreSQL.
    let rank = if rank < 1.0 { 1 } else { (rank as usize).min(n) };
    Some(sorted[rank - 1])
}

/// PostgreSQL's `percentile_cont(f)` over ascending `sorted`: linear interpolation between the neighbours of
/// position `f · (n − 1)`, with PostgreSQL's formula `lo + (hi − lo) · (pos − floor(pos))`. `None` when empty.
pub fn percentile_cont(sorted: &[f64], f: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = f * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor(), pos.ceil());
    let (first, second) = (sorted[lo as usize], sorted[hi as usize]);
    if lo == hi {
        return Some(first);
    }
    Some(first + (second - first) * (pos - lo))
}

/// `codersdk.TransitionStats`: milliseconds, `None` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransitionStats {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
}

/// `codersdk.TemplateBuildTimeStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildTimeStats {
    pub start: TransitionStats,
    pub stop: TransitionStats,
    pub delete: TransitionStats,
}

/// The seed's `convertMillis`: a time ≤ 0 is unknown. Whole milliseconds, truncated.
fn millis(micros: Option<i64>) -> Option<i64> {
    micros.filter(|m| *m > 0).map(|m| m / 1000)
}

fn transition_stats(mut durations: Vec<i64>) -> TransitionStats {
    durations.sort_unstable();
    TransitionStats { p50: millis(percentile_disc(&durations, 0.5)), p95: millis(percentile_disc(&durations, 0.95)) }
}

/// Build time stats per template: every template of `templates` gets an entry (all unknown without builds).
pub fn build_times(templates: &[Uuid], builds: Vec<BuildDuration>) -> HashMap<Uuid, BuildTimeStats> {
    let mut by: HashMap<Uuid, [Vec<i64>; 3]> = templates.iter().map(|t| (*t, Default::default())).collect();
    for b in builds {
        let Some(slots) = by.get_mut(&b.template_id) else { continue };
        match b.transition.as_str() {
            "start" => slots[0].push(b.micros),
            "stop" => slots[1].push(b.micros),
            "delete" => slots[2].push(b.micros),
            _ => {}
        }
    }
    by.into_iter()
        .map(|(t, [start, stop, delete])| {
            (
                t,
                BuildTimeStats {
                    start: transition_stats(start),
                    stop: transition_stats(stop),
                    delete: transition_stats(delete),
                },
            )
        })
        .collect()
}

/// `codersdk.DeploymentStats`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStats {
    pub aggregated_from: UnixMicros,
    pub collected_at: UnixMicros,
    pub next_update_at: UnixMicros,
    pub workspaces: WorkspaceStateCounts,
    /// Milliseconds; −1 without a row reporting a latency, as Coder's query answers.
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub session_count_vscode: i64,
    pub session_count_ssh: i64,
    pub session_count_jetbrains: i64,
    pub session_count_reconnecting_pty: i64,
}

impl DeploymentStats {
    pub fn new(
        aggregated_from: UnixMicros,
        collected_at: UnixMicros,
        next_update_at: UnixMicros,
        agents: &AgentStatsWindow,
        workspaces: WorkspaceStateCounts,
    ) -> Self {
        DeploymentStats {
            aggregated_from,
            collected_at,
            next_update_at,
            workspaces,
            latency_p50_ms: percentile_cont(&agents.latencies_ms, 0.5).unwrap_or(-1.0),
            latency_p95_ms: percentile_cont(&agents.latencies_ms, 0.95).unwrap_or(-1.0),
            rx_bytes: agents.rx_bytes,
            tx_bytes: agents.tx_bytes,
            session_count_vscode: agents.session_count_vscode,
            session_count_ssh: agents.session_count_ssh,
            session_count_jetbrains: agents.session_count_jetbrains,
            session_count_reconnecting_pty: agents.session_count_reconnecting_pty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_edges() {
        assert_eq!(percentile_disc::<i64>(&[], 0.5), None);
        assert_eq!(percentile_disc(&[7], 0.5), Some(7));
        assert_eq!(percentile_disc(&[7], 0.95), Some(7));
        assert_eq!(percentile_disc(&[1, 2], 0.5), Some(1));
        assert_eq!(percentile_disc(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile_disc(&(1..=20).collect::<Vec<_>>(), 0.95), Some(19));
        assert_eq!(percentile_disc(&(1..=100).collect::<Vec<_>>(), 0.95), Some(95));
        assert_eq!(percentile_disc(&[1, 2, 3], 0.0), Some(1));
        assert_eq!(percentile_cont(&[], 0.5), None);
        assert_eq!(percentile_cont(&[4.0], 0.95), Some(4.0));
        assert_eq!(percentile_cont(&[1.0, 2.0], 0.5), Some(1.5));
        assert!((percentile_cont(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95).unwrap() - 4.8).abs() < 1e-12);
    }

    #[test]
    fn build_times_without_builds_and_with_one() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let one = BuildDuration { template_id: b, transition: "start".into(), micros: 2_500_000 };
        let stats = build_times(&[a, b], vec![one]);
        assert_eq!(stats[&a], BuildTimeStats::default(), "no builds: every value unknown");
        assert_eq!(stats[&b].start, TransitionStats { p50: Some(2500), p95: Some(2500) });
        assert_eq!(stats[&b].stop, TransitionStats::default());
        // A zero-length build is unknown, as the seed's `m <= 0`.
        let zero = BuildDuration { template_id: a, transition: "stop".into(), micros: 0 };
        assert_eq!(build_times(&[a], vec![zero])[&a].stop, TransitionStats::default());
    }

    #[test]
    fn deployment_latency_unknown_is_minus_one() {
        let s = DeploymentStats::new(0, 1, 2, &AgentStatsWindow::default(), WorkspaceStateCounts::default());
        assert_eq!((s.latency_p50_ms, s.latency_p95_ms), (-1.0, -1.0));
    }
}
