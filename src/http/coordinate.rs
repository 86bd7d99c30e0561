//! `GET /api/v2/workspaceagents/{id}/coordinate`: the client side of coordination, as coderd serves it to the
//! CLI and the dashboard: WebSocket → yamux → dRPC `coder.tailnet.v2.Tailnet`, one fresh peer id per connection,
//! tunnels only to the agent in the URL.
//!
//! The caller is a user with an API token (header, cookie or query parameter, as `watch-metadata`) who must own
//! the agent's workspace; otherwise coderd's 401 / 400 / 404 answers come before the upgrade. A `version` query
//! parameter, when given, must be a tailnet API version this server speaks (2.x).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::error::ApiError;
use super::user_auth::{agent_id_param, authenticate_user, RESOURCE_NOT_FOUND};
use crate::server::AppState;
use crate::tailnet::ClientPeer;

pub async fn coordinate(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let internal = |what: &str, err: agentwire_store::StoreError| {
        tracing::error!(error = %err, "{what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error {what}.")).detail(err.to_string())
    };
    let user_id = match authenticate_user(&state, &headers, &query).await {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    let agent_id = match agent_id_param(&agent) {
        Ok(id) => id,
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
    // One query: the agent exists, is not deleted, and its workspace is the caller's.
    match state.store().agent_metadata_for_user(user_id, agent_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return ApiError::new(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND).into_response(),
        Err(err) => return internal("fetching workspace agent", err).into_response(),
    }
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
        let peer = Arc::new(ClientPeer { user_id, agent_id, peer_id: Uuid::new_v4() });
        let span = tracing::info_span!("coordinate", %agent_id, peer_id = %peer.peer_id, %user_id);
        let _enter = span.enter();
        tracing::info!("client coordinating");
        drop(_enter);
        let end = state.tailnet().serve_client(io, peer, state.shutdown_token().child_token()).await;
        tracing::debug!(?end, %agent_id, "client coordination ended");
    })
}
