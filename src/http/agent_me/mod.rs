//! The HTTP endpoints a Coder v2.30 agent, and the `coder` CLI inside a workspace, call besides the RPC endpoint,
//! with coderd's semantics, status codes and JSON bodies (`{"message": …, "detail": …, "validations": …}`):
//!
//! | endpoint | module | what |
//! | --- | --- | --- |
//! | `GET /api/v2/workspaceagents/me/reinit` | [`reinit`] | the prebuild re-initialisation stream: server-sent pings until the agent or the server goes |
//! | `GET …/me/gitsshkey` | [`gitsshkey`] | the workspace owner's SSH key pair for `coder gitssh`, made on first use |
//! | `POST …/me/log-source`, `PATCH …/me/logs` | [`logs`] | log sources and log lines, through the RPC path's writer |
//! | `PATCH …/me/app-status` | [`app_status`] | an app's status, as `coder exp mcp` reports it |
//! | `GET …/me/external-auth` (and the legacy `…/me/gitauth`) | [`external_auth`] | no providers: coderd's answers |
//! | `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity` | [`instance_identity`] | no agent authenticates by instance: coderd's refusal |
//!
//! Every `me/…` endpoint authenticates the agent exactly as the RPC endpoint does
//! ([`super::agent_rpc::authenticate_agent`]: token from the `Coder-Session-Token` header, the session cookie or the
//! query parameter, resolved in one query), before it reads the body. Bodies are read as coderd's `httpapi.Read`
//! reads them: the first JSON value, unknown fields ignored, an empty body an `EOF` error; and bounded by
//! [`DEFAULT_MAX_REQUEST_BODY`].

pub mod app_status;
pub mod external_auth;
pub mod gitsshkey;
pub mod instance_identity;
pub mod logs;
pub mod reinit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentwire_store::ResolvedAgent;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::agent_rpc::{authenticate_agent, AgentRefusal};
use super::error::ApiError;
use crate::server::{AgentHttpLimits, AppState};

/// The largest request body these endpoints read. coderd sets none; this is the dRPC message limit (Coder's 4 MiB,
/// [`agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE`]), so a batch of log lines the RPC path takes fits here
/// too, and a client cannot make the server hold more than this per request. Past it: 413.
pub const DEFAULT_MAX_REQUEST_BODY: usize = agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE;

/// Settings of the `me/…` endpoints: the server's limits for them, and coderd's heartbeat.
#[derive(Debug, Clone)]
pub struct AgentMeConfig {
    /// [`crate::server::ServeConfig::agent_http`]: defaults [`DEFAULT_MAX_REQUEST_BODY`],
    /// [`reinit::DEFAULT_MAX_REINIT_STREAMS`] and [`reinit::DEFAULT_MAX_REINIT_STREAMS_PER_AGENT`].
    pub limits: AgentHttpLimits,
    /// How often the reinit stream sends `event: ping` (coderd's `HeartbeatInterval`, 15 s).
    pub reinit_heartbeat: Duration,
}

impl Default for AgentMeConfig {
    fn default() -> Self {
        AgentMeConfig::with_limits(AgentHttpLimits::default())
    }
}

impl AgentMeConfig {
    /// The limits `serve` was given, with coderd's heartbeat.
    pub fn with_limits(limits: AgentHttpLimits) -> Self {
        AgentMeConfig { limits, reinit_heartbeat: super::watch_metadata::PING_INTERVAL }
    }
}

/// What the `me/…` handlers share: the server, their settings and the open reinit streams.
#[derive(Clone)]
pub struct MeState {
    pub app: AppState,
    pub config: Arc<AgentMeConfig>,
    pub reinit: Arc<reinit::ReinitStreams>,
}

impl MeState {
    pub fn new(app: AppState, config: AgentMeConfig) -> Self {
        let limits = &config.limits;
        let reinit =
            Arc::new(reinit::ReinitStreams::new(limits.max_reinit_streams, limits.max_reinit_streams_per_agent));
        MeState { app, config: Arc::new(config), reinit }
    }
}

/// The endpoints with the server's settings.
pub fn routes(app: AppState) -> Router {
    let config = AgentMeConfig::with_limits(app.config().agent_http.clone());
    routes_with(MeState::new(app, config))
}

/// The endpoints over `state`.
pub fn routes_with(state: MeState) -> Router {
    let limit = state.config.limits.max_request_body;
    Router::new()
        .route("/api/v2/workspaceagents/me/reinit", get(reinit::reinit))
        .route("/api/v2/workspaceagents/me/gitsshkey", get(gitsshkey::git_ssh_key))
        .route("/api/v2/workspaceagents/me/log-source", post(logs::post_log_source))
        .route("/api/v2/workspaceagents/me/logs", patch(logs::patch_logs))
        .route("/api/v2/workspaceagents/me/app-status", patch(app_status::patch_app_status))
        .route("/api/v2/workspaceagents/me/external-auth", get(external_auth::external_auth))
        // coderd keeps the old name for agents before v2.2, on the same handler.
        .route("/api/v2/workspaceagents/me/gitauth", get(external_auth::external_auth))
        .route("/api/v2/workspaceagents/aws-instance-identity", post(instance_identity::aws))
        .route("/api/v2/workspaceagents/azure-instance-identity", post(instance_identity::azure))
        .route("/api/v2/workspaceagents/google-instance-identity", post(instance_identity::google))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The calling agent, authenticated as the RPC endpoint authenticates it; otherwise coderd's refusal.
pub struct MeAgent(pub ResolvedAgent);

impl FromRequestParts<MeState> for MeAgent {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &MeState) -> Result<Self, Response> {
        // A query string that does not parse has no token in it; the header and cookie still count.
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
        match authenticate_agent(&state.app, &parts.headers, &query).await {
            Ok(agent) => Ok(MeAgent(agent)),
            Err(AgentRefusal { error, .. }) => Err(error.into_response()),
        }
    }
}

/// coderd's `httpapi.Read`, up to its validation: the first JSON value of the body (what Go's decoder reads;
/// trailing bytes are not looked at), or 400 "Request body must be valid JSON." with the decoder's error.
pub fn read_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, ApiError> {
    let invalid =
        |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "Request body must be valid JSON.").detail(detail);
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.")
                .detail(format!("request bodies are limited to {limit} bytes"))
        } else {
            invalid(rejection.body_text())
        }
    })?;
    match serde_json::Deserializer::from_slice(&body).into_iter::<T>().next() {
        None => Err(invalid("EOF".to_owned())),
        Some(Err(err)) => Err(invalid(err.to_string())),
        Some(Ok(value)) => Ok(value),
    }
}

/// coderd's answer for a `validate:"required"` field left empty, for each such field in declaration order.
pub fn required(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    let mut err = ApiError::new(StatusCode::BAD_REQUEST, "Validation failed.");
    for (field, value) in fields {
        if value.is_empty() {
            err = err.validation(field, r#"Validation failed for tag "required" with value: """#);
        }
    }
    if err.validations.is_empty() {
        Ok(())
    } else {
        Err(err)
    }
}

/// A success body as coderd's `httpapi.Write` sends it: JSON and a newline, `application/json; charset=utf-8`.
pub fn write_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
        }
        Err(err) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "An internal server error occurred.")
            .detail(err.to_string())
            .into_response(),
    }
}

/// Go's `%q` of a string (`strconv.Quote`): what coderd's messages show of a value the client sent.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go_does() {
        assert_eq!(go_quote(""), r#""""#);
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\u{1}\u{7f}é\u{85}"), r#""\n\t\x01\x7fé\u0085""#);
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Body {
        #[serde(default)]
        a: String,
    }

    #[test]
    fn bodies_are_read_as_gos_decoder_reads_them() {
        let ok = |s: &'static str| read_json::<Body>(Ok(Bytes::from_static(s.as_bytes())), 10);
        assert_eq!(ok(r#"{"a":"x","unknown":1} trailing"#).unwrap(), Body { a: "x".into() });
        let err = ok("  ").unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str(), err.detail.as_str()),
            (StatusCode::BAD_REQUEST, "Request body must be valid JSON.", "EOF")
        );
        assert_eq!(ok(r#"{"a":1}"#).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn required_fields_are_listed_in_order() {
        assert!(required(&[("signature", "s"), ("document", "d")]).is_ok());
        let err = required(&[("signature", ""), ("document", "")]).unwrap_err();
        assert_eq!(err.message, "Validation failed.");
        let fields: Vec<&str> = err.validations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["signature", "document"]);
        assert_eq!(err.validations[0].detail, r#"Validation failed for tag "required" with value: """#);
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    /// The server's defaults for these endpoints are the ones their modules name.
    #[test]
    fn the_server_defaults_are_the_endpoints_defaults() {
        let defaults = AgentMeConfig::default();
        assert_eq!(defaults.limits.max_request_body, DEFAULT_MAX_REQUEST_BODY);
        assert_eq!(defaults.limits.max_reinit_streams, reinit::DEFAULT_MAX_REINIT_STREAMS);
        assert_eq!(defaults.limits.max_reinit_streams_per_agent, reinit::DEFAULT_MAX_REINIT_STREAMS_PER_AGENT);
        assert_eq!(defaults.reinit_heartbeat, super::super::watch_metadata::PING_INTERVAL);
    }
}
