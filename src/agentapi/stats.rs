//! UpdateStats (Coder's `stats.go` and `workspacestats.Reporter`).
//!
//! Every agent reports every `report_interval`, so this is the hottest write: the row goes to the store's stats
//! batcher (one multi-row INSERT per flush for all agents) and the call itself runs no query. Workspace identity
//! comes from the session, which is what Coder's `CachedWorkspaceFields` gives it.

use std::collections::BTreeMap;
use std::time::Duration;

use agentwire_store::StatsReport;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn update_stats(
    api: &AgentApi,
    session: &Session,
    request: pb::UpdateStatsRequest,
) -> Result<pb::UpdateStatsResponse, RpcError> {
    let response =
        pb::UpdateStatsResponse { report_interval: Some(to_proto_duration(api.config.stats_report_interval)) };
    // An agent asks for the interval with an empty request: no work at all.
    let Some(stats) = request.stats else {
        return Ok(response);
    };
    let report = to_report(&stats);
    if !session.scope.enqueue_stats(report) {
        // Full queue or shutting down: Coder would block on its buffer; we drop, and the batcher counts it (a
        // metric). Stats are cumulative telemetry, the next report carries on.
        tracing::debug!(agent_id = %session.agent_id(), "stats batcher queue full; report dropped");
    }
    // `stats.metrics` feed Coder's in-memory Prometheus aggregator only; nothing of them is stored.
    // What Coder does per call for a report with live connections (the deadline bump, `last_used_at`, the
    // `stats_update` workspace event) rides in the stats batcher's flush: once per workspace per flush, in the same
    // transaction as the rows, instead of a write per report.
    Ok(response)
}

fn to_report(stats: &pb::Stats) -> StatsReport {
    // Sorted keys: the same report always serialises to the same JSON text.
    // The names are the agent's: a NUL in one would make the row unstorable and fail the batcher's whole flush.
    let by_proto: BTreeMap<String, i64> =
        stats.connections_by_proto.iter().map(|(k, v)| (agentwire_store::without_nul(k), *v)).collect();
    StatsReport {
        // Serialising a map of strings to integers cannot fail; fall back to an empty object rather than panic.
        connections_by_proto: serde_json::to_string(&by_proto).unwrap_or_else(|_| "{}".to_owned()),
        connection_count: stats.connection_count,
        rx_packets: stats.rx_packets,
        rx_bytes: stats.rx_bytes,
        tx_packets: stats.tx_packets,
        tx_bytes: stats.tx_bytes,
        connection_median_latency_ms: stats.connection_median_latency_ms,
        session_count_vscode: stats.session_count_vscode,
        session_count_jetbrains: stats.session_count_jetbrains,
        session_count_reconnecting_pty: stats.session_count_reconnecting_pty,
        session_count_ssh: stats.session_count_ssh,
        // This RPC is Coder's "legacy" path; `usage = true` rows come from the CLI's usage route.
        usage: false,
    }
}

fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::*;
    use agentwire_store::pubsub::workspace_owner_channel;

    fn stats(connections: i64) -> pb::Stats {
        pb::Stats {
            connections_by_proto: [("ssh".to_owned(), 2), ("vscode".to_owned(), 1)].into_iter().collect(),
            connection_count: connections,
            rx_bytes: 10,
            tx_bytes: 20,
            session_count_ssh: 2,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn empty_request_only_answers_the_interval() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let resp = update_stats(&f.api, &f.session, pb::UpdateStatsRequest { stats: None }).await.expect("stats");
        assert_eq!(resp.report_interval, Some(prost_types::Duration { seconds: 30, nanos: 0 }));
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!((diff.total(), diff.notifications), (0, 0));
        assert_eq!(f.store.batcher_stats().stats.enqueued, 0);
    }

    #[tokio::test]
    async fn reports_are_batched_without_queries() {
        let mut f = fixture().await;
        f.api.config.stats_report_interval = Duration::from_millis(1500);
        let before = f.store.queries().snapshot();
        for _ in 0..5 {
            let resp =
                update_stats(&f.api, &f.session, pb::UpdateStatsRequest { stats: Some(stats(0)) }).await.expect("ok");
            assert_eq!(resp.report_interval, Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }));
        }
        let diff = f.store.queries().snapshot().since(&before);
        // No agent row, no workspace lookup, no insert: all of it waits for the batcher. No connections, no event.
        assert_eq!((diff.total(), diff.notifications), (0, 0), "{diff:?}");
        assert_eq!(f.store.batcher_stats().stats.enqueued, 5);

        f.store.flush().await;
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!(diff.get("InsertWorkspaceAgentStats"), 1, "five reports, one INSERT: {diff:?}");
        assert_eq!(diff.get("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken"), 0);
        assert_eq!(diff.get("GetWorkspaceAgentStateBySelf"), 0);
        assert_eq!(f.store.batcher_stats().stats.items_flushed, 5);
    }

    #[tokio::test]
    async fn live_connections_announce_a_stats_update_once_per_flush() {
        let f = fixture().await;
        let channel = workspace_owner_channel(f.session.agent().owner_id);
        let mut sub = f.store.pubsub().subscribe(&channel).await.expect("subscribe");
        let before = f.store.queries().snapshot();
        for _ in 0..3 {
            update_stats(&f.api, &f.session, pb::UpdateStatsRequest { stats: Some(stats(3)) }).await.expect("ok");
        }
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!((diff.total(), diff.notifications), (0, 0), "the call itself writes nothing: {diff:?}");
        f.store.flush().await;
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!((diff.commits, diff.notifications), (1, 1), "three reports, one flush, one event: {diff:?}");
        let msg = sub.try_recv().expect("event");
        assert_eq!(msg, format!(r#"{{"kind":"stats_update","workspace_id":"{}"}}"#, f.session.agent().workspace_id));
        assert!(sub.try_recv().is_none(), "one event per workspace per flush");
    }

    #[test]
    fn report_carries_every_scalar() {
        let r = to_report(&stats(4));
        assert_eq!(r.connections_by_proto, r#"{"ssh":2,"vscode":1}"#);
        assert_eq!((r.connection_count, r.rx_bytes, r.tx_bytes, r.session_count_ssh), (4, 10, 20, 2));
        assert!(!r.usage);
    }

    #[test]
    fn a_nul_in_a_protocol_name_cannot_reach_the_shared_flush() {
        let mut s = stats(1);
        s.connections_by_proto = [("s\0sh".to_owned(), 1)].into_iter().collect();
        assert_eq!(to_report(&s).connections_by_proto, "{\"s\u{274c}sh\":1}");
    }
}
