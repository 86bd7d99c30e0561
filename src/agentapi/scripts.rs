//! ScriptCompleted (Coder's `scripts.go`): how long each startup/shutdown/cron script ran and how it ended.
//!
//! Validation and texts are Coder's. One deliberate difference: Coder accepts any script id the foreign key accepts,
//! including another agent's scripts (a known looseness); here the insert only happens for a script of this agent,
//! and any other id is refused with nothing written.

use agentwire_store::{ScriptTiming, UnixMicros};
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: what an agent sends for "never set".
const GO_ZERO_TIME_UNIX_SECONDS: i64 = -62_135_596_800;
/// `Timestamp.IsValid`'s upper bound: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

pub(super) async fn script_completed(
    _api: &AgentApi,
    session: &Session,
    request: pb::WorkspaceAgentScriptCompletedRequest,
) -> Result<pb::WorkspaceAgentScriptCompletedResponse, RpcError> {
    let timing = request.timing.ok_or_else(|| RpcError::invalid("script timing is required"))?;
    let script_id = Uuid::from_slice(&timing.script_id).map_err(|_| {
        RpcError::invalid(format!("script id from bytes: invalid UUID (got {} bytes)", timing.script_id.len()))
    })?;
    let started_at = required_time(timing.start.as_ref())
        .ok_or_else(|| RpcError::invalid("script start time is required and cannot be zero"))?;
    let ended_at = required_time(timing.end.as_ref())
        .ok_or_else(|| RpcError::invalid("script end time is required and cannot be zero"))?;
    if started_at > ended_at {
        return Err(RpcError::invalid("script start time cannot be after end time"));
    }
    // Coder maps an unknown enum value to "" and lets the database refuse it; the refusal is made here instead, with
    // the same prefix, so it reads as a bad request rather than a database failure.
    let stage = match pb::timing::Stage::try_from(timing.stage) {
        Ok(pb::timing::Stage::Start) => "start",
        Ok(pb::timing::Stage::Stop) => "stop",
        Ok(pb::timing::Stage::Cron) => "cron",
        Err(_) => return Err(insert_error(format!("invalid script timing stage {}", timing.stage))),
    };
    let status = match pb::timing::Status::try_from(timing.status) {
        Ok(pb::timing::Status::Ok) => "ok",
        Ok(pb::timing::Status::ExitFailure) => "exit_failure",
        Ok(pb::timing::Status::TimedOut) => "timed_out",
        Ok(pb::timing::Status::PipesLeftOpen) => "pipes_left_open",
        Err(_) => return Err(insert_error(format!("invalid script timing status {}", timing.status))),
    };
    let row = ScriptTiming {
        script_id,
        started_at,
        ended_at,
        exit_code: i64::from(timing.exit_code),
        stage: stage.to_owned(),
        status: status.to_owned(),
    };
    match session.scope.insert_script_timing(&row).await {
        Ok(true) => Ok(pb::WorkspaceAgentScriptCompletedResponse {}),
        Ok(false) => Err(insert_error(format!("script {script_id} is not a script of this agent"))),
        // Coder's unique key on (script_id, started_at): the agent reported this run already.
        Err(e) if e.is_unique_violation() => {
            Err(insert_error(format!("timing of script {script_id} started at {started_at}us already recorded")))
        }
        Err(e) => Err(RpcError::store("insert workspace agent script timings into database")(e)),
    }
}

fn insert_error(detail: String) -> RpcError {
    RpcError::invalid(format!("insert workspace agent script timings into database: {detail}"))
}

/// Microseconds of a timestamp Go's `IsValid()` accepts and that is not Go's zero time; `None` otherwise.
fn required_time(ts: Option<&prost_types::Timestamp>) -> Option<UnixMicros> {
    let t = ts?;
    let valid = (GO_ZERO_TIME_UNIX_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds)
        && (0..1_000_000_000).contains(&t.nanos);
    let zero = t.seconds == GO_ZERO_TIME_UNIX_SECONDS && t.nanos == 0;
    if !valid || zero {
        return None;
    }
    // In range by the check above, so this cannot overflow.
    Some(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use agentwire_store::NewScript;

    use super::super::test_support::{another_agent, fixture};
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 2_000 })
    }

    fn timing(script: Uuid, start: i64, end: i64) -> pb::Timing {
        pb::Timing {
            script_id: script.as_bytes().to_vec().into(),
            start: ts(start),
            end: ts(end),
            exit_code: 3,
            stage: pb::timing::Stage::Cron as i32,
            status: pb::timing::Status::ExitFailure as i32,
        }
    }

    fn req(t: pb::Timing) -> pb::WorkspaceAgentScriptCompletedRequest {
        pb::WorkspaceAgentScriptCompletedRequest { timing: Some(t) }
    }

    #[tokio::test]
    async fn records_the_timing_in_one_statement() {
        let f = fixture().await;
        let script = f
            .store
            .admin()
            .add_script(f.agent.id, &NewScript { script: "make".into(), ..Default::default() })
            .await
            .expect("script");
        let before = f.store.queries().snapshot();
        script_completed(&f.api, &f.session, req(timing(script, 100, 160))).await.expect("insert");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!(d.total(), 1, "one guarded INSERT … SELECT, no agent read: {d:?}");
        assert_eq!(d.get("InsertWorkspaceAgentScriptTimings"), 1);
        let rows = f.session.scope.script_timings().await.expect("read");
        assert_eq!(
            rows,
            vec![ScriptTiming {
                script_id: script,
                started_at: 100_000_002,
                ended_at: 160_000_002,
                exit_code: 3,
                stage: "cron".into(),
                status: "exit_failure".into(),
            }]
        );
    }

    #[tokio::test]
    async fn every_stage_and_status_maps() {
        let f = fixture().await;
        let script = f
            .store
            .admin()
            .add_script(f.agent.id, &NewScript { script: "x".into(), ..Default::default() })
            .await
            .expect("script");
        let cases = [
            (pb::timing::Stage::Start, pb::timing::Status::Ok, "start", "ok"),
            (pb::timing::Stage::Stop, pb::timing::Status::TimedOut, "stop", "timed_out"),
            (pb::timing::Stage::Cron, pb::timing::Status::PipesLeftOpen, "cron", "pipes_left_open"),
        ];
        for (i, (stage, status, _, _)) in cases.iter().enumerate() {
            let t = pb::Timing { stage: *stage as i32, status: *status as i32, ..timing(script, i as i64 + 1, 50) };
            script_completed(&f.api, &f.session, req(t)).await.expect("insert");
        }
        let rows = f.session.scope.script_timings().await.expect("read");
        let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.stage.as_str(), r.status.as_str())).collect();
        assert_eq!(got, cases.iter().map(|c| (c.2, c.3)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn validation_errors_in_coders_words() {
        let f = fixture().await;
        let script = Uuid::new_v4();
        let zero = Some(prost_types::Timestamp { seconds: GO_ZERO_TIME_UNIX_SECONDS, nanos: 0 });
        let bad_nanos = Some(prost_types::Timestamp { seconds: 1, nanos: -1 });
        let cases: Vec<(pb::WorkspaceAgentScriptCompletedRequest, String)> = vec![
            (pb::WorkspaceAgentScriptCompletedRequest { timing: None }, "script timing is required".into()),
            (
                req(pb::Timing { script_id: vec![9; 15].into(), ..timing(script, 1, 2) }),
                "script id from bytes: invalid UUID (got 15 bytes)".into(),
            ),
            (
                req(pb::Timing { start: None, ..timing(script, 1, 2) }),
                "script start time is required and cannot be zero".into(),
            ),
            (
                req(pb::Timing { start: zero, ..timing(script, 1, 2) }),
                "script start time is required and cannot be zero".into(),
            ),
            (
                req(pb::Timing { end: bad_nanos, ..timing(script, 1, 2) }),
                "script end time is required and cannot be zero".into(),
            ),
            (
                req(pb::Timing { end: ts(MAX_TIMESTAMP_SECONDS + 1), ..timing(script, 1, 2) }),
                "script end time is required and cannot be zero".into(),
            ),
            (req(timing(script, 3, 2)), "script start time cannot be after end time".into()),
            (
                req(pb::Timing { stage: 7, ..timing(script, 1, 2) }),
                "insert workspace agent script timings into database: invalid script timing stage 7".into(),
            ),
            (
                req(pb::Timing { status: -1, ..timing(script, 1, 2) }),
                "insert workspace agent script timings into database: invalid script timing status -1".into(),
            ),
        ];
        let before = f.store.queries().snapshot();
        for (request, text) in cases {
            let err = script_completed(&f.api, &f.session, request).await.expect_err(&text);
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
        // The Unix epoch is a real time to Go, not its zero value: accepted up to the script check.
        let err = script_completed(&f.api, &f.session, req(timing(script, 0, 0))).await.expect_err("unknown script");
        assert!(err.to_string().ends_with("is not a script of this agent"), "{err}");
    }

    #[tokio::test]
    async fn duplicate_run_is_refused_with_a_clear_text() {
        let f = fixture().await;
        let script = f
            .store
            .admin()
            .add_script(f.agent.id, &NewScript { script: "x".into(), ..Default::default() })
            .await
            .expect("script");
        script_completed(&f.api, &f.session, req(timing(script, 1, 2))).await.expect("first");
        let err = script_completed(&f.api, &f.session, req(timing(script, 1, 5))).await.expect_err("duplicate");
        assert!(err.to_string().contains("already recorded"), "{err}");
        assert_eq!(f.session.scope.script_timings().await.expect("read").len(), 1);
    }

    #[tokio::test]
    async fn another_agents_script_is_refused_and_untouched() {
        let f = fixture().await;
        let (other, other_session) = another_agent(&f.store, "bob").await;
        let theirs = f
            .store
            .admin()
            .add_script(other.id, &NewScript { script: "x".into(), ..Default::default() })
            .await
            .expect("script");
        let err = script_completed(&f.api, &f.session, req(timing(theirs, 1, 2))).await.expect_err("not mine");
        assert_eq!(
            err.to_string(),
            format!(
                "insert workspace agent script timings into database: script {theirs} is not a script of this agent"
            )
        );
        assert!(other_session.scope.script_timings().await.expect("read").is_empty());
        // Their own session may.
        script_completed(&f.api, &other_session, req(timing(theirs, 1, 2))).await.expect("theirs");
        assert!(f.session.scope.script_timings().await.expect("read").is_empty());
    }
}
