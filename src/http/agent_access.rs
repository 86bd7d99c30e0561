//! What every user-facing endpoint about one agent checks before anything else, in coderd's order and words
//! (`httpmw.ExtractWorkspaceAgentAndWorkspaceParam`, then the authorization check): the user's API token (401),
//! the agent id in the path (400), and that the agent exists and its workspace is the caller's (404).

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::error::ApiError;
use super::user_auth::{agent_id_param, authenticate_user, RESOURCE_NOT_FOUND};
use crate::server::AppState;

/// The caller's user id and the agent's id, once the caller may reach that agent; otherwise coderd's answer.
pub async fn user_and_agent(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    agent: &str,
) -> Result<(Uuid, Uuid), ApiError> {
    let user_id = authenticate_user(state, headers, query).await?;
    let agent_id = agent_id_param(agent)?;
    // One query: the agent exists, is not deleted, and its workspace is the caller's.
    match state.store().agent_metadata_for_user(user_id, agent_id).await {
        Ok(Some(_)) => Ok((user_id, agent_id)),
        Ok(None) => Err(ApiError::new(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND)),
        Err(err) => {
            tracing::error!(error = %err, "fetching workspace agent");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error fetching workspace agent.")
                .detail(err.to_string()))
        }
    }
}
