//! What every user-facing endpoint checks first, in coderd's order and words: the user's API token (401), then the
//! agent in the path (400 for a bad id; the 404 is the caller's, once it knows the user may not see the agent).

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::agent_rpc::{session_token, TOKEN_COOKIE};
use super::error::ApiError;
use crate::server::AppState;

/// coderd's `SignedOutErrorMessage`, the message of every 401 its API key check answers.
pub const SIGNED_OUT: &str = "You are signed out or your session has expired. Please sign in again to continue.";

/// coderd's `httpapi.ResourceNotFound` message: an agent that does not exist and one the caller may not see are
/// indistinguishable.
pub const RESOURCE_NOT_FOUND: &str = "Resource not found or you do not have access to this resource";

/// The caller's user id from its API token (header, cookie or query parameter), or coderd's 401.
pub async fn authenticate_user(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Uuid, ApiError> {
    let Some(token) = session_token(headers, query) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, SIGNED_OUT)
            .detail(format!("Cookie {TOKEN_COOKIE:?} or query parameter must be provided.")));
    };
    match state.store().user_by_api_key(&token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(ApiError::new(StatusCode::UNAUTHORIZED, SIGNED_OUT).detail("API key is invalid or expired.")),
        Err(err) => {
            tracing::error!(error = %err, "checking an API key");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error checking the API key.")
                .detail(err.to_string()))
        }
    }
}

/// An agent id from the path, or coderd's 400.
pub fn agent_id_param(agent: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(agent).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid UUID {agent:?}.")).detail(err.to_string())
    })
}
