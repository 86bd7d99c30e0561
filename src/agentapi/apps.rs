//! BatchUpdateAppHealths and UpdateAppStatus (Coder's `apps.go`).
//!
//! Both write rows of this agent's apps only: the scope's statements carry the agent id, so an id or slug of
//! another agent's app matches nothing and is reported as unknown.

use agentwire_store::App;
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

use pb::update_app_status_request::AppStatusState;
use pb::AppHealth;

/// Coder rejects an app status message longer than this many bytes ("Message is too long.").
pub const DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES: usize = 160;

/// Coder's `WorkspaceEvent` kinds published here (both carry the agent id).
pub const APP_HEALTH_KIND: &str = "app_health";
pub const APP_STATUS_KIND: &str = "agt_app_status_update";

pub(super) async fn batch_update_app_healths(
    _api: &AgentApi,
    session: &Session,
    request: pb::BatchUpdateAppHealthRequest,
) -> Result<pb::BatchUpdateAppHealthResponse, RpcError> {
    if request.updates.is_empty() {
        return Ok(pb::BatchUpdateAppHealthResponse {});
    }
    // Fast path, one transaction (read this agent's apps + one UPDATE per changed app), all or nothing: taken when
    // every id and health is well-formed, which is what a correct agent always sends.
    let parsed: Option<Vec<(Uuid, agentwire_store::AppHealth)>> =
        request.updates.iter().map(|u| Some((Uuid::from_slice(&u.id).ok()?, db_health(u.health)?))).collect();
    if let Some(updates) = parsed {
        let outcome = session
            .scope
            .batch_update_app_healths(&updates)
            .await
            .map_err(RpcError::store("update workspace app health"))?;
        if outcome.unknown.is_empty() && outcome.no_healthcheck.is_empty() {
            if !outcome.changed.is_empty() {
                publish(session, APP_HEALTH_KIND).await?;
            }
            return Ok(pb::BatchUpdateAppHealthResponse {});
        }
    }
    // Something is wrong and nothing was written. Coder reports the first bad update in request order, with the
    // app's slug; re-read the apps to say exactly that (an error path only, so the extra read is fine).
    let apps = session.scope.list_apps().await.map_err(RpcError::store("get workspace apps by agent ID"))?;
    Err(first_invalid_update(&request.updates, &apps)
        .unwrap_or_else(|| RpcError::invalid("workspace apps changed during the update; retry")))
}

/// Coder's checks, in Coder's order, for the first update that fails one.
fn first_invalid_update(
    updates: &[pb::batch_update_app_health_request::HealthUpdate],
    apps: &[App],
) -> Option<RpcError> {
    for u in updates {
        let Ok(id) = Uuid::from_slice(&u.id) else {
            return Some(RpcError::invalid(format!(
                "parse workspace app ID {}: invalid UUID (got {} bytes)",
                go_quote(&u.id),
                u.id.len()
            )));
        };
        let Some(app) = apps.iter().find(|a| a.id == id) else {
            return Some(RpcError::invalid(format!("workspace app ID \"{id}\" not found")));
        };
        if app.healthcheck_url.is_empty() {
            return Some(RpcError::invalid(format!(
                "workspace app \"{id}\" ({:?}) does not have healthchecks enabled",
                app.slug
            )));
        }
        if db_health(u.health).is_none() {
            let name = AppHealth::try_from(u.health)
                .map(|h| h.as_str_name().to_owned())
                .unwrap_or_else(|_| u.health.to_string());
            return Some(RpcError::invalid(format!(
                "unknown health status {name:?} for app \"{id}\" ({:?})",
                app.slug
            )));
        }
    }
    None
}

fn db_health(health: i32) -> Option<agentwire_store::AppHealth> {
    use agentwire_store::AppHealth as Db;
    match AppHealth::try_from(health).ok()? {
        AppHealth::Unspecified => None,
        AppHealth::Disabled => Some(Db::Disabled),
        AppHealth::Initializing => Some(Db::Initializing),
        AppHealth::Healthy => Some(Db::Healthy),
        AppHealth::Unhealthy => Some(Db::Unhealthy),
    }
}

/// Go's `%q` of a byte slice (ASCII part): what Coder's error shows of an id that is not 16 bytes.
fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

pub(super) async fn update_app_status(
    _api: &AgentApi,
    session: &Session,
    request: pb::UpdateAppStatusRequest,
) -> Result<pb::UpdateAppStatusResponse, RpcError> {
    // Coder answers these with a codersdk error whose message is what reaches the agent.
    if request.message.len() > DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES {
        return Err(RpcError::invalid("Message is too long."));
    }
    let state = match AppStatusState::try_from(request.state) {
        Ok(AppStatusState::Working) => "working",
        Ok(AppStatusState::Idle) => "idle",
        Ok(AppStatusState::Complete) => "complete",
        Ok(AppStatusState::Failure) => "failure",
        Err(_) => return Err(RpcError::invalid("Invalid state provided.")),
    };
    let message = ui_sanitize(&request.message);
    let uri = Some(request.uri.as_str()).filter(|u| !u.is_empty());
    // One transaction: the app by (this agent, slug), its previous state, the insert.
    let outcome = session
        .scope
        .insert_app_status(&request.slug, state, &message, uri)
        .await
        .map_err(RpcError::store("insert workspace app status"))?;
    if outcome.is_none() {
        return Err(RpcError::invalid("Failed to get workspace app."));
    }
    publish(session, APP_STATUS_KIND).await?;
    Ok(pb::UpdateAppStatusResponse {})
}

async fn publish(session: &Session, kind: &str) -> Result<(), RpcError> {
    session.scope.publish_workspace_event(kind).await.map_err(RpcError::store("publish workspace update"))
}

/// Coder's `UISanitize`, for text shown in the dashboard: drops HTML tags and ANSI escape sequences, turns every
/// run of whitespace into one space, drops other non-printable characters, and trims.
pub(crate) fn ui_sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ … final`) and OSC (`ESC ] … BEL|ESC \`) sequences; any other escape drops one char.
                match chars.next() {
                    Some('[') => {
                        for n in chars.by_ref() {
                            if ('@'..='~').contains(&n) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(n) = chars.next() {
                            if n == '\u{7}' || (n == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '<' if chars.peek().is_some_and(|n| n.is_ascii_alphabetic() || *n == '/' || *n == '!') => {
                for n in chars.by_ref() {
                    if n == '>' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {
                if !space {
                    out.push(' ');
                    space = true;
                }
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                space = false;
            }
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use agentwire_store::pubsub::workspace_owner_channel;
    use agentwire_store::NewApp;

    use super::super::test_support::{another_agent, fixture, Fixture};
    use super::*;
    use pb::batch_update_app_health_request::HealthUpdate;

    async fn app(f: &Fixture, agent_id: Uuid, slug: &str, healthcheck: bool) -> Uuid {
        let healthcheck_url = if healthcheck { "http://localhost:8080/health".to_owned() } else { String::new() };
        f.store
            .admin()
            .add_app(agent_id, &NewApp { slug: slug.to_owned(), healthcheck_url, ..Default::default() })
            .await
            .expect("app")
    }

    fn update(id: Uuid, health: AppHealth) -> HealthUpdate {
        HealthUpdate { id: id.as_bytes().to_vec().into(), health: health as i32 }
    }

    async fn health_of(f: &Fixture, scope: &agentwire_store::AgentScope, id: Uuid) -> String {
        let _ = f;
        scope.list_apps().await.expect("apps").into_iter().find(|a| a.id == id).expect("app").health
    }

    #[tokio::test]
    async fn healths_are_written_in_one_transaction_and_announced() {
        let f = fixture().await;
        let a = app(&f, f.agent.id, "code", true).await;
        let b = app(&f, f.agent.id, "web", true).await;
        let mut sub =
            f.store.pubsub().subscribe(&workspace_owner_channel(f.session.agent().owner_id)).await.expect("sub");
        let before = f.store.queries().snapshot();
        let req = pb::BatchUpdateAppHealthRequest {
            updates: vec![update(a, AppHealth::Healthy), update(b, AppHealth::Initializing)],
        };
        batch_update_app_healths(&f.api, &f.session, req).await.expect("update");
        let diff = f.store.queries().snapshot().since(&before);
        // b is unchanged (apps with a healthcheck start `initializing`): 1 read + 1 update, one transaction.
        assert_eq!(diff.get("GetWorkspaceAppHealthsByAgentID"), 1, "{diff:?}");
        assert_eq!(diff.get("UpdateWorkspaceAppHealthByID"), 1, "{diff:?}");
        assert_eq!((diff.total(), diff.commits, diff.notifications), (2, 1, 1), "{diff:?}");
        assert_eq!(
            diff.get("GetWorkspaceAgentStateBySelf") + diff.get("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken"),
            0
        );
        assert_eq!(health_of(&f, &f.session.scope, a).await, "healthy");
        assert_eq!(health_of(&f, &f.session.scope, b).await, "initializing");
        assert_eq!(
            sub.try_recv().expect("event"),
            format!(
                r#"{{"kind":"app_health","workspace_id":"{}","agent_id":"{}"}}"#,
                f.session.agent().workspace_id,
                f.agent.id
            )
        );

        // Nothing changed: no write, no event.
        let req = pb::BatchUpdateAppHealthRequest { updates: vec![update(a, AppHealth::Healthy)] };
        batch_update_app_healths(&f.api, &f.session, req).await.expect("same");
        assert!(sub.try_recv().is_none());

        // No updates: no work at all.
        let before = f.store.queries().snapshot();
        batch_update_app_healths(&f.api, &f.session, pb::BatchUpdateAppHealthRequest::default()).await.expect("empty");
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 0);
    }

    #[tokio::test]
    async fn the_first_bad_update_fails_the_call_before_anything_is_written() {
        let f = fixture().await;
        let a = app(&f, f.agent.id, "code", true).await;
        let plain = app(&f, f.agent.id, "docs", false).await;
        let stranger = Uuid::new_v4();
        let cases: Vec<(Vec<HealthUpdate>, String)> = vec![
            (
                vec![update(a, AppHealth::Unhealthy), update(stranger, AppHealth::Healthy)],
                format!("workspace app ID \"{stranger}\" not found"),
            ),
            (
                vec![update(a, AppHealth::Unhealthy), update(plain, AppHealth::Healthy)],
                format!("workspace app \"{plain}\" (\"docs\") does not have healthchecks enabled"),
            ),
            (
                vec![update(a, AppHealth::Unspecified)],
                format!("unknown health status \"APP_HEALTH_UNSPECIFIED\" for app \"{a}\" (\"code\")"),
            ),
            (
                vec![HealthUpdate { id: vec![1, 2, b'a'].into(), health: AppHealth::Healthy as i32 }],
                r#"parse workspace app ID "\x01\x02a": invalid UUID (got 3 bytes)"#.to_owned(),
            ),
        ];
        for (updates, text) in cases {
            let err = batch_update_app_healths(&f.api, &f.session, pb::BatchUpdateAppHealthRequest { updates })
                .await
                .expect_err("invalid");
            assert_eq!(err.to_string(), text);
            assert_eq!(health_of(&f, &f.session.scope, a).await, "initializing", "all or nothing");
        }
        let req = pb::BatchUpdateAppHealthRequest { updates: vec![update(a, AppHealth::Unhealthy)] };
        batch_update_app_healths(&f.api, &f.session, req).await.expect("still usable");
        assert_eq!(health_of(&f, &f.session.scope, a).await, "unhealthy");
    }

    #[tokio::test]
    async fn another_agents_app_ids_and_slugs_change_nothing() {
        let f = fixture().await;
        let (other, other_session) = another_agent(&f.store, "bob").await;
        let theirs = app(&f, other.id, "theirs", true).await;
        let req = pb::BatchUpdateAppHealthRequest { updates: vec![update(theirs, AppHealth::Unhealthy)] };
        let err = batch_update_app_healths(&f.api, &f.session, req).await.expect_err("not ours");
        assert_eq!(err.to_string(), format!("workspace app ID \"{theirs}\" not found"));
        assert_eq!(health_of(&f, &other_session.scope, theirs).await, "initializing");

        let status = pb::UpdateAppStatusRequest { slug: "theirs".into(), message: "hi".into(), ..Default::default() };
        let err = update_app_status(&f.api, &f.session, status).await.expect_err("not ours");
        assert_eq!(err.to_string(), "Failed to get workspace app.");
        // Their app has no status yet: inserting one reports no previous state.
        let probe = other_session.scope.insert_app_status("theirs", "idle", "", None).await.expect("probe");
        assert_eq!(probe.expect("their app").previous_state, None);
    }

    #[tokio::test]
    async fn app_status_is_validated_sanitised_stored_and_announced() {
        let f = fixture().await;
        app(&f, f.agent.id, "claude", false).await;
        let mut sub =
            f.store.pubsub().subscribe(&workspace_owner_channel(f.session.agent().owner_id)).await.expect("sub");

        let long = pb::UpdateAppStatusRequest { slug: "claude".into(), message: "x".repeat(161), ..Default::default() };
        let err = update_app_status(&f.api, &f.session, long).await.expect_err("too long");
        assert_eq!(err.to_string(), "Message is too long.");
        let bad = pb::UpdateAppStatusRequest { slug: "claude".into(), state: 7, ..Default::default() };
        assert_eq!(
            update_app_status(&f.api, &f.session, bad).await.expect_err("state").to_string(),
            "Invalid state provided."
        );
        let missing = pb::UpdateAppStatusRequest { slug: "nope".into(), ..Default::default() };
        assert_eq!(
            update_app_status(&f.api, &f.session, missing).await.expect_err("slug").to_string(),
            "Failed to get workspace app."
        );

        let before = f.store.queries().snapshot();
        let ok = pb::UpdateAppStatusRequest {
            slug: "claude".into(),
            state: AppStatusState::Complete as i32,
            message: "x".repeat(160),
            uri: "https://example.com/pr/1".into(),
        };
        update_app_status(&f.api, &f.session, ok).await.expect("status");
        let diff = f.store.queries().snapshot().since(&before);
        assert_eq!(diff.get("InsertWorkspaceAppStatus"), 1);
        assert_eq!((diff.total(), diff.notifications), (3, 1), "{diff:?}");
        assert!(sub.try_recv().expect("event").contains(r#""kind":"agt_app_status_update""#));
        // The stored state is the one just written (read back through the next insert's "previous state").
        let probe = f.session.scope.insert_app_status("claude", "idle", "", None).await.expect("probe");
        assert_eq!(probe.expect("app").previous_state.as_deref(), Some("complete"));
    }

    #[test]
    fn sanitising_matches_the_dashboard_rules() {
        assert_eq!(ui_sanitize("  \x1b[31mred\x1b[0m  and\n\tmore  "), "red and more");
        assert_eq!(ui_sanitize("<b>bold</b> a < b"), "bold a < b");
        assert_eq!(ui_sanitize("\x1b]0;title\x07ok\u{0}"), "ok");
    }
}
