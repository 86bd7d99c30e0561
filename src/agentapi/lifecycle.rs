//! UpdateLifecycle and UpdateStartup (Coder's `lifecycle.go`).
//!
//! Both are rare, durable writes to the agent's own row, committed before the answer. Unlike Coder, neither reads
//! the row first: the lifecycle timestamp rules (`started_at`, `ready_at`) are applied inside the single UPDATE, and
//! startup needs nothing but the agent id the session already holds.

use agentwire_store::{LifecycleState, UnixMicros};
use prost_types::Timestamp;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

use pb::lifecycle::State;
use pb::startup::Subsystem;

/// Coder's `WorkspaceEvent` kind for a lifecycle change; it must carry the agent id.
pub const LIFECYCLE_UPDATE_KIND: &str = "agt_lifecycle_update";
/// Go's zero `time.Time` as a protobuf timestamp (0001-01-01T00:00:00Z): what a Go agent sends for "unset".
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

pub(super) async fn update_lifecycle(
    _api: &AgentApi,
    session: &Session,
    request: pb::UpdateLifecycleRequest,
) -> Result<pb::Lifecycle, RpcError> {
    // A missing message is treated as the zero message, so it fails like an unspecified state.
    let mut lifecycle = request.lifecycle.unwrap_or_default();
    let state = db_lifecycle_state(lifecycle.state)
        .ok_or_else(|| RpcError::invalid(format!("unknown lifecycle state {:?}", enum_name(lifecycle.state))))?;
    let changed_at = match lifecycle.changed_at.as_ref().filter(|t| !is_zero(t)) {
        Some(t) => timestamp_to_micros(t),
        None => {
            // Coder fills in the server's time and echoes it back.
            let now = agentwire_store::now_micros();
            lifecycle.changed_at = Some(micros_to_timestamp(now));
            now
        }
    };
    session
        .scope
        .update_lifecycle(state, changed_at)
        .await
        .map_err(RpcError::store("update workspace agent lifecycle state"))?;
    // Coder returns a publish failure as the call's error (the write itself has been committed).
    session
        .scope
        .publish_workspace_event(LIFECYCLE_UPDATE_KIND)
        .await
        .map_err(RpcError::store("publish workspace update"))?;
    Ok(lifecycle)
}

pub(super) async fn update_startup(
    _api: &AgentApi,
    session: &Session,
    request: pb::UpdateStartupRequest,
) -> Result<pb::Startup, RpcError> {
    let startup = request.startup.unwrap_or_default();
    if !is_go_semver(&startup.version) {
        return Err(RpcError::invalid(format!("invalid agent semver version {:?}", startup.version)));
    }
    let mut subsystems = Vec::with_capacity(startup.subsystems.len());
    for s in &startup.subsystems {
        let db = match Subsystem::try_from(*s) {
            Ok(Subsystem::Envbox) => agentwire_store::Subsystem::Envbox,
            Ok(Subsystem::Envbuilder) => agentwire_store::Subsystem::Envbuilder,
            Ok(Subsystem::Exectrace) => agentwire_store::Subsystem::Exectrace,
            Ok(Subsystem::Unspecified) | Err(_) => {
                let name =
                    Subsystem::try_from(*s).map(|v| v.as_str_name().to_owned()).unwrap_or_else(|_| s.to_string());
                return Err(RpcError::invalid(format!("invalid agent subsystem {name:?}")));
            }
        };
        subsystems.push(db);
    }
    // The store de-duplicates and sorts (envbox, envbuilder, exectrace), as Coder does. The negotiated version is
    // what Coder records in `api_version`.
    session
        .scope
        .update_startup(&startup.version, &startup.expanded_directory, &subsystems, &session.api_version.to_string())
        .await
        .map_err(RpcError::store("update workspace agent startup in database"))?;
    Ok(startup)
}

/// The DB enum for a proto state: same names, lower snake case. Unspecified and unknown numbers have none.
fn db_lifecycle_state(state: i32) -> Option<LifecycleState> {
    Some(match State::try_from(state).ok()? {
        State::Unspecified => return None,
        State::Created => LifecycleState::Created,
        State::Starting => LifecycleState::Starting,
        State::StartTimeout => LifecycleState::StartTimeout,
        State::StartError => LifecycleState::StartError,
        State::Ready => LifecycleState::Ready,
        State::ShuttingDown => LifecycleState::ShuttingDown,
        State::ShutdownTimeout => LifecycleState::ShutdownTimeout,
        State::ShutdownError => LifecycleState::ShutdownError,
        State::Off => LifecycleState::Off,
    })
}

/// How Go prints a proto enum: its name, or the number when it has none.
fn enum_name(state: i32) -> String {
    State::try_from(state).map(|s| s.as_str_name().to_owned()).unwrap_or_else(|_| state.to_string())
}

fn is_zero(t: &Timestamp) -> bool {
    (t.seconds == 0 || t.seconds == GO_ZERO_TIME_SECONDS) && t.nanos == 0
}

/// Microseconds (Postgres' precision, Coder's `dbtime`), saturating rather than overflowing on absurd input.
fn timestamp_to_micros(t: &Timestamp) -> UnixMicros {
    let micros = i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos) / 1_000;
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

fn micros_to_timestamp(us: UnixMicros) -> Timestamp {
    // Euclidean division keeps nanos in 0..1e9 for times before 1970 too.
    let nanos = us.rem_euclid(1_000_000) * 1_000;
    Timestamp { seconds: us.div_euclid(1_000_000), nanos: i32::try_from(nanos).unwrap_or(0) }
}

/// Go's `golang.org/x/mod/semver.IsValid`: a leading `v`, `MAJOR[.MINOR[.PATCH[-PRERELEASE][+BUILD]]]`, no leading
/// zeros in numbers; pre-release and build only after a full `MAJOR.MINOR.PATCH`.
fn is_go_semver(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some(rest) = take_number(rest) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix('.').and_then(take_number) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(mut rest) = rest.strip_prefix('.').and_then(take_number) else {
        return false;
    };
    if let Some(pre) = rest.strip_prefix('-') {
        let end = pre.find('+').unwrap_or(pre.len());
        if !identifiers_ok(&pre[..end], true) {
            return false;
        }
        rest = &pre[end..];
    }
    if let Some(build) = rest.strip_prefix('+') {
        return identifiers_ok(build, false);
    }
    rest.is_empty()
}

/// A decimal number without leading zeros; returns what follows it.
fn take_number(s: &str) -> Option<&str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits > 1 && s.starts_with('0')) {
        return None;
    }
    Some(&s[digits..])
}

/// Dot-separated, non-empty `[0-9A-Za-z-]` identifiers; pre-release numbers may not have leading zeros.
fn identifiers_ok(s: &str, no_leading_zeros: bool) -> bool {
    s.split('.').all(|id| {
        let chars_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let numeric = id.bytes().all(|b| b.is_ascii_digit());
        chars_ok && !(no_leading_zeros && numeric && id.len() > 1 && id.starts_with('0'))
    })
}

#[cfg(test)]
mod tests {
    use agentwire_store::pubsub::workspace_owner_channel;

    use super::super::test_support::fixture;
    use super::*;

    fn req(state: State, changed_at: Option<Timestamp>) -> pb::UpdateLifecycleRequest {
        pb::UpdateLifecycleRequest { lifecycle: Some(pb::Lifecycle { state: state as i32, changed_at }) }
    }

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    const AGENT_ROW_READS: [&str; 2] =
        ["GetAuthenticatedWorkspaceAgentAndBuildByAuthToken", "GetWorkspaceAgentStateBySelf"];

    #[tokio::test]
    async fn lifecycle_applies_coder_timestamp_rules_with_one_write() {
        let f = fixture().await;
        let channel = workspace_owner_channel(f.session.agent().owner_id);
        let mut sub = f.store.pubsub().subscribe(&channel).await.expect("subscribe");

        let before = f.store.queries().snapshot();
        let resp = update_lifecycle(&f.api, &f.session, req(State::Starting, Some(ts(1_000)))).await.expect("starting");
        assert_eq!(resp, pb::Lifecycle { state: State::Starting as i32, changed_at: Some(ts(1_000)) });
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!(diff.total(), 1, "one UPDATE, no agent read: {diff:?}");
        assert_eq!(diff.get("UpdateWorkspaceAgentLifecycleStateByID"), 1);
        assert!(AGENT_ROW_READS.iter().all(|q| diff.get(q) == 0));
        assert_eq!(diff.notifications, 1);
        assert_eq!(
            sub.try_recv().expect("event"),
            format!(
                r#"{{"kind":"agt_lifecycle_update","workspace_id":"{}","agent_id":"{}"}}"#,
                f.session.agent().workspace_id,
                f.agent.id
            )
        );

        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!((st.lifecycle_state.as_str(), st.started_at, st.ready_at), ("starting", Some(1_000_000_000), None));

        update_lifecycle(&f.api, &f.session, req(State::Ready, Some(ts(2_000)))).await.expect("ready");
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!((st.started_at, st.ready_at), (Some(1_000_000_000), Some(2_000_000_000)));

        // Other states leave both timestamps alone.
        update_lifecycle(&f.api, &f.session, req(State::ShuttingDown, Some(ts(3_000)))).await.expect("shutting down");
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!(st.lifecycle_state, "shutting_down");
        assert_eq!((st.started_at, st.ready_at), (Some(1_000_000_000), Some(2_000_000_000)));

        // Starting again clears ready_at.
        update_lifecycle(&f.api, &f.session, req(State::Starting, Some(ts(4_000)))).await.expect("restart");
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!((st.started_at, st.ready_at), (Some(4_000_000_000), None));
    }

    #[tokio::test]
    async fn ready_without_starting_sets_both_and_missing_time_is_the_servers() {
        let f = fixture().await;
        let start = agentwire_store::now_micros();
        let resp = update_lifecycle(&f.api, &f.session, req(State::StartError, None)).await.expect("start error");
        let echoed = resp.changed_at.expect("filled in");
        let at = timestamp_to_micros(&echoed);
        assert!(at >= start);
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!((st.lifecycle_state.as_str(), st.started_at, st.ready_at), ("start_error", Some(at), Some(at)));
    }

    #[tokio::test]
    async fn unknown_states_are_rejected_and_the_session_goes_on() {
        let f = fixture().await;
        let err = update_lifecycle(&f.api, &f.session, req(State::Unspecified, None)).await.expect_err("unspecified");
        assert_eq!(err.to_string(), r#"unknown lifecycle state "STATE_UNSPECIFIED""#);
        let bad = pb::UpdateLifecycleRequest { lifecycle: Some(pb::Lifecycle { state: 42, changed_at: None }) };
        let err = update_lifecycle(&f.api, &f.session, bad).await.expect_err("42");
        assert_eq!(err.to_string(), r#"unknown lifecycle state "42""#);
        let err = update_lifecycle(&f.api, &f.session, pb::UpdateLifecycleRequest { lifecycle: None })
            .await
            .expect_err("missing");
        assert_eq!(err.to_string(), r#"unknown lifecycle state "STATE_UNSPECIFIED""#);
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!(st.lifecycle_state, "created");
        update_lifecycle(&f.api, &f.session, req(State::Ready, Some(ts(5)))).await.expect("still usable");
    }

    fn startup(version: &str, subsystems: &[i32]) -> pb::UpdateStartupRequest {
        pb::UpdateStartupRequest {
            startup: Some(pb::Startup {
                version: version.to_owned(),
                expanded_directory: "/home/coder/project".to_owned(),
                subsystems: subsystems.to_vec(),
            }),
        }
    }

    #[tokio::test]
    async fn startup_is_stored_sorted_and_echoed() {
        let f = fixture().await;
        let subs = [Subsystem::Exectrace as i32, Subsystem::Envbox as i32, Subsystem::Exectrace as i32];
        let before = f.store.queries().snapshot();
        let resp = update_startup(&f.api, &f.session, startup("v2.18.0-rc.1+abc", &subs)).await.expect("startup");
        assert_eq!(resp, startup("v2.18.0-rc.1+abc", &subs).startup.expect("echo"));
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!((diff.total(), diff.get("UpdateWorkspaceAgentStartupByID")), (1, 1), "{diff:?}");
        let st = f.session.scope.state().await.expect("state").expect("row");
        assert_eq!(st.version, "v2.18.0-rc.1+abc");
        assert_eq!(st.expanded_directory, "/home/coder/project");
        assert_eq!(st.subsystems, r#"["envbox","exectrace"]"#);
        assert_eq!(st.api_version, f.session.api_version.to_string());
    }

    #[tokio::test]
    async fn startup_validation_errors_write_nothing() {
        let f = fixture().await;
        let err = update_startup(&f.api, &f.session, startup("2.18.0", &[])).await.expect_err("no v");
        assert_eq!(err.to_string(), r#"invalid agent semver version "2.18.0""#);
        let err = update_startup(&f.api, &f.session, startup("v2.18.0", &[Subsystem::Unspecified as i32]))
            .await
            .expect_err("");
        assert_eq!(err.to_string(), r#"invalid agent subsystem "SUBSYSTEM_UNSPECIFIED""#);
        let err = update_startup(&f.api, &f.session, startup("v2.18.0", &[9])).await.expect_err("9");
        assert_eq!(err.to_string(), r#"invalid agent subsystem "9""#);
        assert_eq!(f.session.scope.state().await.expect("state").expect("row").version, "");
        update_startup(&f.api, &f.session, startup("v2", &[])).await.expect("still usable");
    }

    #[test]
    fn semver_matches_go_x_mod() {
        for ok in ["v1", "v1.2", "v1.2.3", "v0.0.0", "v1.2.3-pre", "v1.2.3-0.a-b", "v1.2.3+meta.01", "v1.2.3-rc.1+b"] {
            assert!(is_go_semver(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "v",
            "v01",
            "v1.02",
            "v1.2-pre",
            "v1.2.3-",
            "v1.2.3-01",
            "v1.2.3-a..b",
            "v1.2.3+",
            "v1.2.3.4",
            "v1.2.3 ",
        ] {
            assert!(!is_go_semver(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_round_trip_in_micros() {
        let t = Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 };
        let us = timestamp_to_micros(&t);
        assert_eq!(us, 1_700_000_000_123_456);
        assert_eq!(micros_to_timestamp(us), Timestamp { seconds: 1_700_000_000, nanos: 123_456_000 });
        assert_eq!(micros_to_timestamp(-1), Timestamp { seconds: -1, nanos: 999_999_000 });
        assert!(is_zero(&ts(GO_ZERO_TIME_SECONDS)));
    }
}
