//! BatchCreateLogs (Coder's `logs.go`): startup-script and agent log lines, under a per-agent byte budget.
//!
//! The budget ([`agentwire_store::DEFAULT_MAX_LOGS_LENGTH`], 1 MiB, tunable through `StoreOptions::max_logs_length`)
//! is checked and charged by the store in the same transaction as the insert, so two concurrent batches cannot both
//! slip under it. The store also replaces NULs and cuts each stored line to `max_log_line_chars` (1,024, Coder's
//! `VARCHAR(1024)` cast) while charging the full length, as Coder does; this module does neither a second time.
//!
//! Coder re-reads the agent row on every call to learn whether the budget is already blown. Here that comes from the
//! session (the flag as it was at connect) and from [`OverflowedAgents`] (agents this process has seen overflow since):
//! the flag never goes back to false, so once either says so the call answers `log_limit_exceeded` without touching
//! the database. An overflow set by another replica is still caught, by the store's atomic check.

use std::collections::HashSet;
use std::sync::Mutex;

use agentwire_store::pubsub::{agent_logs_channel, agent_logs_payload};
use agentwire_store::{AgentScope, InsertLogsOutcome, LogLevel, LogLine, Pubsub};
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// `WorkspaceEvent.kind` published when an agent's first logs arrive.
pub const EVENT_FIRST_LOGS: &str = "agt_first_logs";
/// `WorkspaceEvent.kind` published when an agent crosses its log budget.
pub const EVENT_LOGS_OVERFLOW: &str = "agt_logs_overflow";

/// Agents whose `logs_overflowed` flag this process has seen set.
///
/// Process-wide rather than per session because the flag is monotonic: a reconnecting agent is still over budget.
/// It holds one id per overflowed agent, so it stays small (agents rarely overflow, and a new build makes new agents).
#[derive(Debug, Default)]
pub(crate) struct OverflowedAgents(Mutex<HashSet<Uuid>>);

impl OverflowedAgents {
    fn contains(&self, agent_id: Uuid) -> bool {
        // A poisoned lock only means a panic elsewhere mid-insert; the set is still a valid hint.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains(&agent_id)
    }

    fn insert(&self, agent_id: Uuid) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(agent_id);
    }
}

pub(super) async fn batch_create_logs(
    api: &AgentApi,
    session: &Session,
    request: pb::BatchCreateLogsRequest,
) -> Result<pb::BatchCreateLogsResponse, RpcError> {
    let agent_id = session.agent_id();
    if session.agent().logs_overflowed || api.log_overflow.contains(agent_id) {
        return Ok(pb::BatchCreateLogsResponse { log_limit_exceeded: true });
    }
    if request.logs.is_empty() {
        return Ok(pb::BatchCreateLogsResponse::default());
    }
    let log_source_id = Uuid::from_slice(&request.log_source_id).map_err(|_| {
        RpcError::invalid(format!(
            "parse log source ID {:?}: invalid UUID (got {} bytes)",
            String::from_utf8_lossy(&request.log_source_id),
            request.log_source_id.len()
        ))
    })?;
    // A non-nil source is not checked against the agent's sources, as in Coder: the agent may name sources the
    // manifest does not list, and the rows written are this agent's own whatever the id says.
    let lines: Vec<LogLine> =
        request.logs.into_iter().map(|l| LogLine { level: log_level(l.level), output: l.output }).collect();

    let write = write_logs(api.store.pubsub().as_ref(), &session.scope, log_source_id, &lines)
        .await
        .map_err(RpcError::store(INSERT_LOGS))?;
    if let LogsWritten::LimitExceeded { .. } = write.written {
        api.log_overflow.insert(agent_id);
    }
    if let Some(err) = write.event_error {
        return Err(RpcError::store("publish workspace update")(err));
    }
    // Past the budget is not an error since Coder #12078: the agent stops sending and says so in its own log.
    let log_limit_exceeded = matches!(write.written, LogsWritten::LimitExceeded { .. });
    Ok(pb::BatchCreateLogsResponse { log_limit_exceeded })
}

/// What Coder calls a failed insert of log lines, on both paths.
pub(crate) const INSERT_LOGS: &str = "insert workspace agent logs";

/// What storing one batch of log lines did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogsWritten {
    /// No lines: nothing written, nothing announced.
    Empty,
    /// The lines are stored.
    Stored,
    /// The agent is over its log budget and nothing was stored; `newly` when this batch crossed it.
    LimitExceeded { newly: bool },
}

/// A batch stored and announced.
#[derive(Debug)]
pub(crate) struct LogsWrite {
    pub written: LogsWritten,
    /// Publishing the workspace event the batch called for (`agt_first_logs`, `agt_logs_overflow`) failed; the lines
    /// themselves are as `written` says. Coder's RPC path answers this as an error; its HTTP path only logs it.
    pub event_error: Option<agentwire_store::StoreError>,
}

/// Stores `lines` under `source` (the nil id meaning Coder's "External" source) within the agent's log budget, and
/// sends what Coder sends on both of its paths (BatchCreateLogs and `PATCH /workspaceagents/me/logs`): the
/// `agent-logs:<agent>` notification with `created_after` set before the first new row, and the workspace events
/// for an agent's first logs and for crossing its budget. The budget is checked by the store in the insert's own
/// transaction, so the outcome is the database's, not a snapshot's.
pub(crate) async fn write_logs(
    pubsub: &dyn Pubsub,
    scope: &AgentScope,
    source: Uuid,
    lines: &[LogLine],
) -> Result<LogsWrite, agentwire_store::StoreError> {
    let agent_id = scope.agent_id();
    let (written, event) = match scope.insert_logs(source, lines).await? {
        InsertLogsOutcome::Empty => (LogsWritten::Empty, None),
        InsertLogsOutcome::Inserted { first_id, first_logs, .. } => {
            // Watchers fetch everything after `created_after`; Coder only logs a failure of this one.
            let payload = agent_logs_payload(first_id.saturating_sub(1));
            if let Err(err) = pubsub.publish(&agent_logs_channel(agent_id), &payload).await {
                tracing::warn!(%agent_id, error = %err, "publish workspace agent logs update");
            }
            (LogsWritten::Stored, first_logs.then_some(EVENT_FIRST_LOGS))
        }
        InsertLogsOutcome::LimitExceeded { newly } => {
            (LogsWritten::LimitExceeded { newly }, newly.then_some(EVENT_LOGS_OVERFLOW))
        }
    };
    let event_error = match event {
        Some(kind) => scope.publish_workspace_event(kind).await.err(),
        None => None,
    };
    Ok(LogsWrite { written, event_error })
}

/// Coder's level mapping; anything else (UNSPECIFIED from old agents, or a number this server does not know) is
/// `info`, so a newer agent's level never costs it its log line.
fn log_level(level: i32) -> LogLevel {
    use pb::log::Level;
    match Level::try_from(level) {
        Ok(Level::Trace) => LogLevel::Trace,
        Ok(Level::Debug) => LogLevel::Debug,
        Ok(Level::Warn) => LogLevel::Warn,
        Ok(Level::Error) => LogLevel::Error,
        Ok(Level::Info | Level::Unspecified) | Err(_) => LogLevel::Info,
    }
}

#[cfg(test)]
mod tests {
    use agentwire_store::pubsub::{workspace_owner_channel, Subscription};
    use agentwire_store::DEFAULT_MAX_LOGS_LENGTH;

    use super::super::test_support::{another_agent, fixture, Fixture};
    use super::*;

    fn log(level: pb::log::Level, output: &str) -> pb::Log {
        pb::Log { created_at: None, output: output.to_owned(), level: level as i32 }
    }

    fn request(source: Uuid, logs: Vec<pb::Log>) -> pb::BatchCreateLogsRequest {
        pb::BatchCreateLogsRequest { log_source_id: source.as_bytes().to_vec().into(), logs }
    }

    async fn subscribe(f: &Fixture, channel: String) -> Subscription {
        f.store.pubsub().subscribe(&channel).await.expect("subscribe")
    }

    #[tokio::test]
    async fn inserts_maps_levels_and_notifies_in_one_transaction() {
        let f = fixture().await;
        let mut logs_sub = subscribe(&f, agent_logs_channel(f.agent.id)).await;
        let mut owner_sub = subscribe(&f, workspace_owner_channel(f.session.agent().owner_id)).await;
        let source = Uuid::new_v4();
        use pb::log::Level;
        let before = f.store.queries().snapshot();
        let resp = batch_create_logs(
            &f.api,
            &f.session,
            request(
                source,
                vec![
                    log(Level::Unspecified, "u"),
                    log(Level::Trace, "t"),
                    log(Level::Debug, "d"),
                    log(Level::Info, "i"),
                    log(Level::Warn, "w"),
                    log(Level::Error, "e"),
                    pb::Log { created_at: None, output: "future".into(), level: 99 },
                ],
            ),
        )
        .await
        .expect("insert");
        let d = f.store.queries().snapshot().since(&before);
        assert!(!resp.log_limit_exceeded);
        assert_eq!((d.begins, d.commits, d.rollbacks), (1, 1, 0), "{d:?}");
        // The budget update and one multi-row insert; no agent read, no source insert for a named source.
        assert_eq!(d.get("GetWorkspaceAgentByID"), 0);
        assert_eq!(d.get("UpdateWorkspaceAgentLogsLength"), 1);
        assert_eq!(d.get("InsertWorkspaceAgentLogs"), 1);
        assert_eq!(d.get("InsertWorkspaceAgentLogSources"), 0);
        assert_eq!(d.notifications, 2, "agent-logs + first logs");

        let rows = f.session.scope.logs_after(0).await.expect("read");
        let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.level.as_str(), r.output.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("info", "u"),
                ("trace", "t"),
                ("debug", "d"),
                ("info", "i"),
                ("warn", "w"),
                ("error", "e"),
                ("info", "future")
            ]
        );
        assert!(rows.iter().all(|r| r.log_source_id == source));
        let first = rows[0].id;
        assert_eq!(logs_sub.try_recv().as_deref(), Some(format!(r#"{{"created_after":{}}}"#, first - 1).as_str()));
        let ev = owner_sub.try_recv().expect("first logs event");
        assert!(ev.contains(r#""kind":"agt_first_logs""#) && ev.contains(&f.agent.id.to_string()), "{ev}");

        // Later batches: no first-logs event, and created_after follows the new rows.
        batch_create_logs(&f.api, &f.session, request(source, vec![log(Level::Info, "again")])).await.expect("insert");
        assert!(owner_sub.try_recv().is_none());
        assert_eq!(logs_sub.try_recv().as_deref(), Some(format!(r#"{{"created_after":{}}}"#, first + 6).as_str()));
    }

    #[tokio::test]
    async fn nil_source_is_external_and_long_lines_are_cut_once() {
        let f = fixture().await;
        let long = "x".repeat(1500);
        let before = f.store.queries().snapshot();
        batch_create_logs(&f.api, &f.session, request(Uuid::nil(), vec![log(pb::log::Level::Info, &long)]))
            .await
            .expect("insert");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!(d.get("InsertWorkspaceAgentLogSources"), 1);
        assert_eq!(d.commits, 1);
        let rows = f.session.scope.logs_after(0).await.expect("read");
        assert_eq!(rows[0].output, "x".repeat(1024));
        assert_eq!(
            rows[0].log_source_id,
            uuid::uuid!("3b579bf4-1ed8-4b99-87a8-e9a1e3410410"),
            "Coder's External source"
        );
        // The budget is charged with the full length, as Coder's output_length is.
        assert_eq!(f.session.scope.state().await.expect("state").expect("row").logs_length, 1500);
        let sources = f.session.scope.list_log_sources().await.expect("sources");
        assert_eq!((sources[0].display_name.as_str(), sources[0].icon.as_str()), ("External", "/emojis/1f310.png"));
    }

    #[tokio::test]
    async fn empty_batch_and_bad_source_id() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let resp = batch_create_logs(&f.api, &f.session, pb::BatchCreateLogsRequest::default()).await.expect("empty");
        assert!(!resp.log_limit_exceeded);
        // An empty batch is fine even with a malformed source id, as in Coder (the count comes first).
        let resp = batch_create_logs(
            &f.api,
            &f.session,
            pb::BatchCreateLogsRequest { log_source_id: b"abc".to_vec().into(), logs: vec![] },
        )
        .await
        .expect("empty");
        assert!(!resp.log_limit_exceeded);
        let err = batch_create_logs(
            &f.api,
            &f.session,
            pb::BatchCreateLogsRequest {
                log_source_id: b"abc".to_vec().into(),
                logs: vec![log(pb::log::Level::Info, "x")],
            },
        )
        .await
        .expect_err("bad id");
        assert_eq!(err.to_string(), r#"parse log source ID "abc": invalid UUID (got 3 bytes)"#);
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 0);
    }

    #[tokio::test]
    async fn one_mib_budget_overflows_once_then_short_circuits() {
        let f = fixture().await;
        assert_eq!(f.store.options().max_logs_length, DEFAULT_MAX_LOGS_LENGTH);
        let mut owner_sub = subscribe(&f, workspace_owner_channel(f.session.agent().owner_id)).await;
        let source = Uuid::new_v4();
        // Exactly 1 MiB is allowed (Coder's CHECK is `<=`).
        let kib = "k".repeat(1024);
        let full: Vec<pb::Log> = (0..1024).map(|_| log(pb::log::Level::Info, &kib)).collect();
        let resp = batch_create_logs(&f.api, &f.session, request(source, full)).await.expect("fill");
        assert!(!resp.log_limit_exceeded);
        assert_eq!(f.session.scope.state().await.expect("state").expect("row").logs_length, DEFAULT_MAX_LOGS_LENGTH);
        assert!(owner_sub.try_recv().expect("first logs").contains("agt_first_logs"));

        // One more byte crosses it: nothing stored, the flag set, the overflow event published, no error.
        let before = f.store.queries().snapshot();
        let resp = batch_create_logs(&f.api, &f.session, request(source, vec![log(pb::log::Level::Info, "z")]))
            .await
            .expect("over");
        assert!(resp.log_limit_exceeded);
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1));
        assert_eq!(d.get("UpdateWorkspaceAgentLogOverflowByID"), 1);
        assert_eq!(d.get("InsertWorkspaceAgentLogs"), 0);
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert!(st.logs_overflowed);
        assert_eq!(st.logs_length, DEFAULT_MAX_LOGS_LENGTH);
        assert_eq!(f.session.scope.logs_after(0).await.expect("read").len(), 1024);
        assert!(owner_sub.try_recv().expect("overflow event").contains(r#""kind":"agt_logs_overflow""#));

        // Later calls, on this session or a new one after reconnecting: answered without any query.
        let reconnected = super::super::test_support::session_for(&f.store, &f.agent).await;
        assert!(reconnected.agent().logs_overflowed);
        let before = f.store.queries().snapshot();
        for s in [&f.session, &reconnected] {
            let resp = batch_create_logs(&f.api, s, request(source, vec![log(pb::log::Level::Info, "z")]))
                .await
                .expect("short circuit");
            assert!(resp.log_limit_exceeded);
        }
        let resp = batch_create_logs(&f.api, &f.session, pb::BatchCreateLogsRequest::default()).await.expect("empty");
        assert!(resp.log_limit_exceeded, "Coder checks the flag before the batch size");
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
        assert!(owner_sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_single_batch_over_the_budget_is_refused_whole() {
        let f = fixture().await;
        let big = "b".repeat(600 * 1024);
        let resp = batch_create_logs(
            &f.api,
            &f.session,
            request(Uuid::new_v4(), vec![log(pb::log::Level::Info, &big), log(pb::log::Level::Info, &big)]),
        )
        .await
        .expect("over");
        assert!(resp.log_limit_exceeded);
        assert!(f.session.scope.logs_after(0).await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn writes_only_this_agents_rows_whatever_the_source_id() {
        let f = fixture().await;
        let (other, other_session) = another_agent(&f.store, "bob").await;
        // Another agent's log source id: the rows still belong to the caller, the other agent gets nothing.
        let their_source = Uuid::new_v4();
        batch_create_logs(&f.api, &other_session, request(their_source, vec![log(pb::log::Level::Info, "theirs")]))
            .await
            .expect("theirs");
        batch_create_logs(&f.api, &f.session, request(their_source, vec![log(pb::log::Level::Info, "mine")]))
            .await
            .expect("mine");
        let theirs = other_session.scope.logs_after(0).await.expect("read");
        assert_eq!(theirs.iter().map(|r| r.output.as_str()).collect::<Vec<_>>(), vec!["theirs"]);
        let mine = f.session.scope.logs_after(0).await.expect("read");
        assert_eq!(mine.iter().map(|r| r.output.as_str()).collect::<Vec<_>>(), vec!["mine"]);
        assert_eq!(other_session.scope.state().await.expect("state").expect("row").logs_length, 6);
        // One agent's overflow does not short-circuit another's.
        f.api.log_overflow.insert(f.agent.id);
        let resp =
            batch_create_logs(&f.api, &other_session, request(their_source, vec![log(pb::log::Level::Info, "x")]))
                .await
                .expect("theirs");
        assert!(!resp.log_limit_exceeded);
        assert_ne!(other.id, f.agent.id);
    }
}
