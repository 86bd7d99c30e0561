//! `PATCH /api/v2/workspaceagents/me/app-status`: an app's status (`working`, `idle`, `complete`, `failure`) as
//! `coder exp mcp` reports it from inside the workspace; v2.30 has no RPC for it.
//!
//! coderd's checks in coderd's order (the app by slug, then the message's length, then the state), the message
//! sanitised for the dashboard as the RPC handler does ([`crate::agentapi::apps::ui_sanitize`]), one transaction for
//! the app, its previous status and the insert, Coder's `agt_app_status_update` event, and the workspace's activity
//! bump when the app reports `working` or leaves it. coderd also queues a notification for AI task apps; agentwire
//! has no notifications.

use agentwire_store::AgentScope;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{go_quote, read_json, write_json, MeAgent, MeState};
use crate::agentapi::apps::{ui_sanitize, APP_STATUS_KIND, DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES};
use crate::http::error::ApiError;

/// `codersdk.WorkspaceAppStatusState`s coderd accepts.
const STATES: [&str; 4] = ["working", "idle", "complete", "failure"];
const WORKING: &str = "working";

/// `agentsdk.PatchAppStatus` (its deprecated `icon` and `needs_user_attention` are read and ignored, as coderd does).
#[derive(Debug, Deserialize)]
pub struct PatchAppStatus {
    #[serde(default)]
    pub app_slug: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
}

fn no_app(slug: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, "Failed to get workspace app.")
        .detail(format!("No app found with slug {}", go_quote(slug)))
        .into_response()
}

/// The first of coderd's checks after the app lookup that the request fails.
fn invalid(message: &str, state: &str) -> Option<ApiError> {
    if message.len() > DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES {
        let text = "Message must be less than 160 characters.";
        return Some(
            ApiError::new(StatusCode::BAD_REQUEST, "Message is too long.").detail(text).validation("message", text),
        );
    }
    if !STATES.contains(&state) {
        return Some(
            ApiError::new(StatusCode::BAD_REQUEST, "Invalid state provided.")
                .detail(format!("invalid state: {}", go_quote(state)))
                .validation("state", "State must be one of: complete, failure, working."),
        );
    }
    None
}

pub async fn patch_app_status(
    State(state): State<MeState>,
    MeAgent(agent): MeAgent,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: PatchAppStatus = match read_json(body, state.config.limits.max_request_body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let slug = request.app_slug.unwrap_or_default();
    let message = request.message.unwrap_or_default();
    let app_state = request.state.unwrap_or_default();
    let scope = state.app.store().into_agent_scope(agent);
    if let Some(err) = invalid(&message, &app_state) {
        // coderd looks the app up first: an unknown slug is what it reports even for a bad message or state. The
        // extra read is on this error path only.
        return match scope.list_apps().await {
            Ok(apps) if !apps.iter().any(|a| a.slug == slug) => no_app(&slug),
            Ok(_) => err.into_response(),
            Err(store) => failed("Failed to get workspace app.", &scope, store),
        };
    }
    let uri = request.uri.filter(|u| !u.is_empty());
    let outcome = match scope.insert_app_status(&slug, &app_state, &ui_sanitize(&message), uri.as_deref()).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => return no_app(&slug),
        Err(err) => return failed("Failed to insert workspace app status.", &scope, err),
    };
    if let Err(err) = scope.publish_workspace_event(APP_STATUS_KIND).await {
        // coderd's `publishWorkspaceUpdate` only logs.
        tracing::warn!(error = %err, agent_id = %scope.agent_id(), "publish workspace update");
    }
    // coderd bumps the deadline while an app works and when it stops working, so a workspace is not stopped under a
    // running task and the user has time to look after it ends. A failure is logged there too.
    if app_state == WORKING || outcome.previous_state.as_deref() == Some(WORKING) {
        if let Err(err) = scope.bump_workspace_activity().await {
            tracing::error!(error = %err, workspace_id = %scope.workspace_id(), "activity bump of the workspace");
        }
    }
    write_json(StatusCode::OK, &())
}

fn failed(message: &str, scope: &AgentScope, err: agentwire_store::StoreError) -> Response {
    tracing::error!(error = %err, agent_id = %scope.agent_id(), "{message}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).detail(err.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_come_in_coders_order_with_its_words() {
        assert!(invalid("fine", "working").is_none());
        assert!(invalid(&"m".repeat(160), "idle").is_none(), "160 bytes is allowed");
        let long = invalid(&"m".repeat(161), "bogus").unwrap();
        assert_eq!((long.message.as_str(), long.validations[0].field.as_str()), ("Message is too long.", "message"));
        let state = invalid("", "bogus").unwrap();
        assert_eq!(
            (state.message.as_str(), state.detail.as_str()),
            ("Invalid state provided.", r#"invalid state: "bogus""#)
        );
        assert_eq!(state.validations[0].detail, "State must be one of: complete, failure, working.");
        assert!(invalid("", "").is_some());
    }
}
