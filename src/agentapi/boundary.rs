//! ReportBoundaryLogs (Coder's `boundary_logs.go`, API 2.7/2.9): the network boundary's allow/deny decisions for
//! processes confined in the workspace.
//!
//! As in Coder, only an oversized batch is an error. Everything else is best effort: every decision is emitted as a
//! structured `boundary_request` log line, and when the batch names a session (a UUID) the decisions are stored in one
//! transaction that also creates the session on first sight. A storage failure, or a session id that belongs to
//! another agent (tighter than Coder, which would append to it), is logged and answered with success.
//!
//! Left out: Coder's in-memory `BoundaryUsageTracker` (allowed/denied counts for telemetry); this server has no
//! telemetry to feed.

use agentwire_store::{now_micros, BoundaryLog, UnixMicros};
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// Coder's cap on decisions per call.
pub const DEFAULT_MAX_BOUNDARY_LOGS_PER_BATCH: usize = 1000;

pub(super) async fn report_boundary_logs(
    api: &AgentApi,
    session: &Session,
    request: pb::ReportBoundaryLogsRequest,
) -> Result<pb::ReportBoundaryLogsResponse, RpcError> {
    if request.logs.is_empty() {
        return Ok(pb::ReportBoundaryLogsResponse {});
    }
    let max = api.config.max_boundary_logs_per_batch;
    if request.logs.len() > max {
        return Err(RpcError::invalid(format!("batch size {} exceeds maximum of {max}", request.logs.len())));
    }
    let now = now_micros();
    let agent = &session.agent();
    let mut rows = Vec::with_capacity(request.logs.len());
    for log in request.logs {
        // Logs without a resource, or of a kind this server does not know, are skipped as in Coder.
        let Some(pb::boundary_log::Resource::HttpRequest(http)) = log.resource else { continue };
        let decision = if log.allowed { "allow" } else { "deny" };
        tracing::info!(
            target: "boundary_request",
            workspace_id = %agent.workspace_id,
            workspace_name = %agent.workspace_name,
            agent_name = %agent.name,
            template_id = %agent.template_id,
            template_version_id = %agent.template_version_id,
            method = %http.method,
            url = %http.url,
            decision,
            matched_rule = %http.matched_rule,
            "boundary_request"
        );
        rows.push(BoundaryLog {
            id: Uuid::new_v4(),
            sequence_number: i64::from(log.sequence_number),
            created_at: log.time.as_ref().and_then(micros).unwrap_or(now),
            method: http.method,
            detail: http.url,
            // The rule only means something for an allowed request.
            matched_rule: log.allowed.then_some(http.matched_rule),
        });
    }
    let Ok(session_id) = Uuid::parse_str(&request.session_id) else {
        // Pre-2.9 agents send no session: Coder logs the decisions and stores nothing.
        return Ok(pb::ReportBoundaryLogsResponse {});
    };
    match session.scope.insert_boundary_logs(session_id, &request.confined_process_name, &rows).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(agent_id = %session.agent_id(), %session_id,
            "boundary session belongs to another agent; logs not stored"),
        Err(err) => tracing::warn!(agent_id = %session.agent_id(), %session_id, error = %err,
            "insert boundary logs"),
    }
    Ok(pb::ReportBoundaryLogsResponse {})
}

fn micros(t: &prost_types::Timestamp) -> Option<UnixMicros> {
    t.seconds.checked_mul(1_000_000)?.checked_add(i64::from(t.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture};
    use super::*;

    fn http(allowed: bool, seq: i32) -> pb::BoundaryLog {
        pb::BoundaryLog {
            allowed,
            time: Some(prost_types::Timestamp { seconds: 10, nanos: 0 }),
            sequence_number: seq,
            resource: Some(pb::boundary_log::Resource::HttpRequest(pb::boundary_log::HttpRequest {
                method: "GET".into(),
                url: "https://example.com/".into(),
                matched_rule: "example.com".into(),
            })),
        }
    }

    fn req(session: &str, logs: Vec<pb::BoundaryLog>) -> pb::ReportBoundaryLogsRequest {
        pb::ReportBoundaryLogsRequest { logs, session_id: session.into(), confined_process_name: "claude".into() }
    }

    #[tokio::test]
    async fn empty_oversized_and_sessionless_batches() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        report_boundary_logs(&f.api, &f.session, req(&Uuid::new_v4().to_string(), vec![])).await.expect("empty");
        let many: Vec<_> = (0..1001).map(|i| http(true, i)).collect();
        let err = report_boundary_logs(&f.api, &f.session, req(&Uuid::new_v4().to_string(), many))
            .await
            .expect_err("too many");
        assert_eq!(err.to_string(), "batch size 1001 exceeds maximum of 1000");
        for sid in ["", "not-a-uuid"] {
            report_boundary_logs(&f.api, &f.session, req(sid, vec![http(true, 0)])).await.expect("logged only");
        }
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
    }

    #[tokio::test]
    async fn stores_decisions_with_their_session_in_one_transaction() {
        let f = fixture().await;
        let sid = Uuid::new_v4().to_string();
        let exactly_max: Vec<_> = (0..1000).map(|i| http(i % 2 == 0, i)).collect();
        let before = f.store.queries().snapshot();
        report_boundary_logs(&f.api, &f.session, req(&sid, exactly_max)).await.expect("store");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits, d.rollbacks), (1, 1, 0), "{d:?}");
        assert_eq!(d.get("InsertBoundarySession"), 1);
        assert!(d.get("InsertBoundaryLogs") >= 1);
        // Skipped entries (no resource) do not fail the batch; the same session is reused.
        let no_resource = pb::BoundaryLog { resource: None, ..http(true, 5) };
        let before = f.store.queries().snapshot();
        report_boundary_logs(&f.api, &f.session, req(&sid, vec![no_resource, http(false, 1001)])).await.expect("again");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.commits, d.get("InsertBoundaryLogs")), (1, 1));
    }

    #[tokio::test]
    async fn another_agents_session_is_not_written_and_not_an_error() {
        let f = fixture().await;
        let (_, other) = another_agent(&f.store, "bob").await;
        let sid = Uuid::new_v4().to_string();
        report_boundary_logs(&f.api, &other, req(&sid, vec![http(true, 0)])).await.expect("theirs");
        let before = f.store.queries().snapshot();
        report_boundary_logs(&f.api, &f.session, req(&sid, vec![http(true, 1)])).await.expect("soft failure");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.commits, d.rollbacks, d.get("InsertBoundaryLogs")), (0, 1, 0), "{d:?}");
    }

    #[tokio::test]
    async fn storage_failures_are_not_rpc_errors() {
        let f = fixture().await;
        // A negative sequence number breaks the table's CHECK: Coder logs insert failures and answers success.
        let before = f.store.queries().snapshot();
        report_boundary_logs(&f.api, &f.session, req(&Uuid::new_v4().to_string(), vec![http(true, -1)]))
            .await
            .expect("soft failure");
        assert_eq!(f.store.queries().snapshot().since(&before).commits, 0);
    }
}
