//! `GET /api/v2/workspaceagents/{id}/coordinate`: the client side of coordination, as coderd serves it to the
//! CLI and the dashboard: WebSocket → yamux → dRPC `coder.tailnet.v2.Tailnet`, one fresh peer id per connection,
//! tunnels only to the agent in the URL.
//!
//! The caller is a user with an API token (header, cookie or query parameter, as `watch-metadata`) who must own
//! the agent's workspace; otherwise coderd's 401 / 400 / 404 answers come before the upgrade. A `version` query
//! parameter, when given, must be a tailnet API version this server speaks (2.x). A `resume_token` query parameter
//! (from RefreshResumeToken, see [`crate::tailnet::resume`]) gives the connection the peer id it names instead of
//! a fresh one; a token that does not verify is coderd's 401 with a `resume_token` validation, on which Coder's
//! client drops the token and dials again; a token without a key id is ignored, as coderd ignores it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::agent_access::user_and_agent;
use super::error::ApiError;
use crate::server::AppState;
use crate::tailnet::resume::ResumeError;
use crate::tailnet::ClientPeer;

/// coderd's `workspacesdk.CoordinateAPIInvalidResumeToken`.
pub const INVALID_RESUME_TOKEN: &str = "Invalid resume token";

pub async fn coordinate(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (user_id, agent_id) = match user_and_agent(&state, &headers, &query, &agent).await {
        Ok(ids) => ids,
        Err(err) => return err.into_response(),
    };
    if let Some(version) = query.get("version") {
        let supported =
            version.split_once('.').is_some_and(|(major, minor)| major == "2" && minor.parse::<u32>().is_ok());
        if !supported {
            return ApiError::new(StatusCode::BAD_REQUEST, "Unknown or unsupported API version")
                .detail(format!("tailnet API version {version:?} is not 2.x"))
                .into_response();
        }
    }
    let peer_id = match resumed_peer_id(&state, &query).await {
        Ok(peer_id) => peer_id,
        Err(err) => return err.into_response(),
    };
    if state.shutdown_token().is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down.").into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let session_state = state.clone();
    super::upgrade_with_limits(upgrade, &state, move |io| async move {
        let state = session_state;
        let peer = Arc::new(ClientPeer { user_id, agent_id, peer_id });
        let span = tracing::info_span!("coordinate", %agent_id, peer_id = %peer.peer_id, %user_id);
        let _enter = span.enter();
        tracing::info!("client coordinating");
        drop(_enter);
        let end = state.tailnet().serve_client(io, peer, state.shutdown_token().child_token()).await;
        tracing::debug!(?end, %agent_id, "client coordination ended");
    })
}

/// The peer id of a connection: the one its `resume_token` names, or a fresh one (coderd's `handleResumeToken`).
async fn resumed_peer_id(state: &AppState, query: &HashMap<String, String>) -> Result<Uuid, ApiError> {
    let Some(token) = query.get("resume_token").filter(|t| !t.is_empty()) else { return Ok(Uuid::new_v4()) };
    match state.tailnet().resume_tokens().verify(token).await {
        Ok(peer_id) => {
            tracing::debug!(%peer_id, "accepted coordinate resume token for peer");
            Ok(peer_id)
        }
        Err(ResumeError::MissingKeyId) => Ok(Uuid::new_v4()),
        Err(err) => Err(ApiError::new(StatusCode::UNAUTHORIZED, INVALID_RESUME_TOKEN)
            .detail(format!("verify payload: {err}"))
            .validation("resume_token", INVALID_RESUME_TOKEN)),
    }
}
