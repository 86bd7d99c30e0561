//! `GET /api/v2/workspaceagents/me/rpc`: the endpoint a Coder agent dials.
//!
//! Everything that can refuse the agent happens before the upgrade, with coderd's status codes and texts: the
//! token (header, cookie or query parameter) resolved to the agent in one query (401 unknown, and 401 too for an
//! agent not on its workspace's latest build unless that build is being stopped: coderd v2.30's query finds no row
//! for it), then the API version (400). Only then is the WebSocket accepted and the session, built from that one
//! lookup, served.

use std::collections::HashMap;

use agentwire_store::ResolvedAgent;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::server::AppState;
use crate::session::ApiVersion;

pub use crate::agent_dial::{TOKEN_COOKIE, TOKEN_HEADER};

/// coderd reads the token from its header, its cookie, or a query parameter, in that order.
pub fn session_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    if let Some(token) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()) {
        return Some(token.to_owned());
    }
    for cookies in headers.get_all(axum::http::header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else { continue };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == TOKEN_COOKIE && !value.is_empty() {
                    return Some(value.to_owned());
                }
            }
        }
    }
    query.get(TOKEN_COOKIE).filter(|t| !t.is_empty()).cloned()
}

/// The version the agent dialed with, if this server speaks it; `newest` is [`newest_version`].
pub fn parse_version(query: &HashMap<String, String>, newest: ApiVersion) -> Result<ApiVersion, ApiError> {
    let unsupported = |detail: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "Unknown or unsupported API version").validation("version", detail)
    };
    let version = match query.get("version") {
        None => return Ok(ApiVersion::DEFAULT),
        Some(v) => v.parse::<ApiVersion>().map_err(unsupported)?,
    };
    if !version.is_supported_up_to(newest) {
        return Err(unsupported(format!(
            "server supports API versions {}.0 through {newest}, not {version}",
            newest.major
        )));
    }
    Ok(version)
}

/// The newest Agent API version served: agentwire's own on its schema, coderd v2.30's beside coderd.
pub fn newest_version(state: &AppState) -> ApiVersion {
    match state.store().schema() {
        agentwire_store::Schema::Agentwire => ApiVersion::CURRENT,
        agentwire_store::Schema::Coder => ApiVersion::CODER_V2_30,
    }
}

/// Why a request of an agent was refused before it was served: coderd's answer, and the reason
/// `agentwire_sessions_refused_total` counts a refused session under (none for a database failure).
#[derive(Debug)]
pub struct AgentRefusal {
    pub reason: Option<&'static str>,
    pub error: ApiError,
}

impl AgentRefusal {
    fn new(reason: &'static str, error: ApiError) -> Self {
        AgentRefusal { reason: Some(reason), error }
    }
}

/// The agent a request's token names (header, cookie or query parameter, as coderd reads it), resolved in one query,
/// or coderd's refusal in its words: 401 without a token, with one that is not a UUID, or with one no live agent
/// holds; 403 for an agent whose build is no longer its workspace's latest, unless that build is being stopped.
/// Every agent endpoint authenticates through this, the RPC endpoint and the `me/…` HTTP endpoints alike.
pub async fn authenticate_agent(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<ResolvedAgent, AgentRefusal> {
    let Some(token) = session_token(headers, query) else {
        return Err(AgentRefusal::new(
            "unauthorized",
            ApiError::new(StatusCode::UNAUTHORIZED, format!("Cookie {TOKEN_COOKIE:?} must be provided.")),
        ));
    };
    if uuid::Uuid::parse_str(&token).is_err() {
        return Err(AgentRefusal::new(
            "unauthorized",
            ApiError::new(StatusCode::UNAUTHORIZED, "Workspace agent token invalid.")
                .detail(format!("An agent token must be a valid UUIDv4. (len {})", token.len())),
        ));
    }
    // coderd v2.30 answers a stale build's agent exactly as an unknown token (its lookup returns no row); the
    // refusal's reason keeps them apart in `agentwire_sessions_refused_total`.
    let not_authorized = |reason| {
        AgentRefusal::new(
            reason,
            ApiError::new(StatusCode::UNAUTHORIZED, "Workspace agent not authorized.").detail(
                "The agent cannot authenticate until the workspace provision job has been completed. If the job is \
                 no longer running, this agent is invalid.",
            ),
        )
    };
    let agent = match state.store().resolve_agent_by_token(&token).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return Err(not_authorized("unauthorized")),
        Err(err) => {
            tracing::error!(error = %err, "resolving an agent token");
            return Err(AgentRefusal {
                reason: None,
                error: ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error checking workspace agent authorization.",
                )
                .detail(err.to_string()),
            });
        }
    };
    if !agent.is_latest_build && !agent.in_shutdown_case {
        tracing::debug!(agent_id = %agent.id, build = agent.build_number, "refusing an agent of an outdated build");
        return Err(not_authorized("stale_build"));
    }
    Ok(agent)
}

pub async fn agent_rpc(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let refuse = |reason: &'static str, err: ApiError| {
        state.metrics().session_refused(reason);
        err.into_response()
    };
    let agent = match authenticate_agent(&state, &headers, &query).await {
        Ok(agent) => agent,
        Err(AgentRefusal { reason: Some(reason), error }) => return refuse(reason, error),
        Err(AgentRefusal { reason: None, error }) => return error.into_response(),
    };
    let version = match parse_version(&query, newest_version(&state)) {
        Ok(version) => version,
        Err(err) => return refuse("bad_version", err),
    };
    let permit = match state.admit(agent.id) {
        Ok(permit) => permit,
        Err(limit) => {
            return refuse(
                "limit",
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many agent connections.").detail(limit),
            )
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // The scope holds the session's one copy of the agent from here on; the closure below and the session's task
    // carry only pointers to it.
    let scope = state.store().into_agent_scope(agent);
    // Authenticated above, so a UUID; kept only if coderd is to see it (relayed Tailnet calls).
    let token = session_token(&headers, &query).and_then(|token| uuid::Uuid::parse_str(&token).ok());
    let session_state = state.clone();
    super::upgrade_with_limits(upgrade, &state, move |io| {
        session_state.run_agent_session(io, scope, version, token, permit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn token_from_header_then_cookie_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_token(&headers, &query(&[("coder_session_token", "q")])), Some("q".into()));
        headers.insert("cookie", "a=b; coder_session_token=c".parse().unwrap());
        assert_eq!(session_token(&headers, &query(&[("coder_session_token", "q")])), Some("c".into()));
        headers.insert(TOKEN_HEADER, "h".parse().unwrap());
        assert_eq!(session_token(&headers, &query(&[])), Some("h".into()));
        assert_eq!(session_token(&HeaderMap::new(), &query(&[])), None);
    }

    #[test]
    fn versions_default_to_2_0_and_newer_minors_are_refused() {
        let ours = ApiVersion::CURRENT;
        assert_eq!(parse_version(&query(&[]), ours).unwrap(), ApiVersion::DEFAULT);
        assert_eq!(parse_version(&query(&[("version", "2.7")]), ours).unwrap(), ApiVersion::new(2, 7));
        let err = parse_version(&query(&[("version", "2.99")]), ours).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "Unknown or unsupported API version");
        assert!(err.validations[0].detail.contains("2.0 through 2.10"), "{:?}", err.validations);
        assert!(parse_version(&query(&[("version", "3.0")]), ours).is_err());
        assert!(parse_version(&query(&[("version", "two")]), ours).is_err());
        // Beside coderd v2.30: nothing newer than it speaks.
        let coders = ApiVersion::CODER_V2_30;
        assert_eq!(parse_version(&query(&[("version", "2.7")]), coders).unwrap(), coders);
        let err = parse_version(&query(&[("version", "2.8")]), coders).unwrap_err();
        assert!(err.validations[0].detail.contains("2.0 through 2.7"), "{:?}", err.validations);
    }
}
