//! `POST /api/v2/workspaceagents/me/log-source` and `PATCH …/me/logs`: the HTTP path of agent logs that older
//! agents and tools inside the workspace use, beside the RPC path (BatchCreateLogs).
//!
//! Lines are written by the RPC path's writer ([`crate::agentapi::logs::write_logs`]): the same per-agent budget,
//! checked by the store in the insert's transaction, the same line sanitising, the `agent-logs:<agent>` and
//! workspace notifications. What differs is coderd's HTTP contract: no lines is 400, a level outside Coder's five is
//! 400, and a batch past the budget is 413 "Logs limit exceeded" (with the reason when the agent was already over
//! it) rather than a flag in the answer. One difference: coderd's HTTP path checks only the byte count, so after an
//! overflow a small enough batch is still stored there; here, as on both paths' RPC side, an agent once over its
//! budget stays over it (the store's flag is monotonic) and every later batch is 413.

use agentwire_store::{LogLevel, LogLine, LogSource};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{go_quote, read_json, write_json, MeAgent, MeState};
use crate::agentapi::logs::{write_logs, LogsWritten, INSERT_LOGS};
use crate::http::error::ApiError;

/// Characters of a log source's display name: coderd's column is `varchar(127)`, and PostgreSQL refuses a longer
/// value, which coderd answers as an internal error. So does this server, without the round trip.
pub const MAX_LOG_SOURCE_DISPLAY_NAME_CHARS: usize = 127;

/// `agentsdk.PostLogSourceRequest`.
#[derive(Debug, Deserialize)]
pub struct PostLogSourceRequest {
    #[serde(default, deserialize_with = "go_uuid")]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub icon: Option<String>,
}

/// `codersdk.WorkspaceAgentLogSource`.
#[derive(Debug, Serialize)]
pub struct WorkspaceAgentLogSource {
    pub workspace_agent_id: String,
    pub id: String,
    pub created_at: String,
    pub display_name: String,
    pub icon: String,
}

pub async fn post_log_source(
    State(state): State<MeState>,
    MeAgent(agent): MeAgent,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: PostLogSourceRequest = match read_json(body, state.config.limits.max_request_body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let source = LogSource {
        id: request.id.unwrap_or_default(),
        display_name: request.display_name.unwrap_or_default(),
        icon: request.icon.unwrap_or_default(),
    };
    if source.display_name.chars().count() > MAX_LOG_SOURCE_DISPLAY_NAME_CHARS {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "An internal server error occurred.")
            .detail(format!("value too long for type character varying({MAX_LOG_SOURCE_DISPLAY_NAME_CHARS})"))
            .into_response();
    }
    let agent_id = agent.id;
    let scope = state.app.store().into_agent_scope(agent);
    // A source the agent already has is left as it is, and coderd answers 201 with the request's values all the same.
    if let Err(err) = scope.upsert_log_sources(std::slice::from_ref(&source)).await {
        tracing::error!(error = %err, %agent_id, "inserting a log source");
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "An internal server error occurred.")
            .detail(err.to_string())
            .into_response();
    }
    write_json(
        StatusCode::CREATED,
        &WorkspaceAgentLogSource {
            workspace_agent_id: agent_id.to_string(),
            id: source.id.to_string(),
            created_at: crate::metrics_cache::rfc3339(agentwire_store::now_micros()),
            display_name: source.display_name,
            icon: source.icon,
        },
    )
}

/// `agentsdk.PatchLogs`.
#[derive(Debug, Deserialize)]
pub struct PatchLogs {
    #[serde(default, deserialize_with = "go_uuid")]
    pub log_source_id: Option<Uuid>,
    #[serde(default)]
    pub logs: Option<Vec<Log>>,
}

/// `agentsdk.Log`. coderd stamps lines with its own clock; `created_at` must still be a time Go can read.
#[derive(Debug, Deserialize)]
pub struct Log {
    #[serde(default, deserialize_with = "go_time")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub level: Option<String>,
}

pub async fn patch_logs(
    State(state): State<MeState>,
    MeAgent(agent): MeAgent,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: PatchLogs = match read_json(body, state.config.limits.max_request_body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let logs = request.logs.unwrap_or_default();
    if logs.is_empty() {
        return ApiError::new(StatusCode::BAD_REQUEST, "No logs provided.").into_response();
    }
    let mut lines = Vec::with_capacity(logs.len());
    for log in logs {
        let label = log.level.unwrap_or_default();
        // Older agents send no level: info.
        let level = if label.is_empty() { Ok(LogLevel::Info) } else { label.parse::<LogLevel>() };
        let Ok(level) = level else {
            return ApiError::new(StatusCode::BAD_REQUEST, "Invalid log level provided.")
                .detail(format!("invalid log level: {}", go_quote(&label)))
                .into_response();
        };
        lines.push(LogLine { level, output: log.output.unwrap_or_default() });
    }
    let agent_id = agent.id;
    let scope = state.app.store().into_agent_scope(agent);
    let source = request.log_source_id.unwrap_or_default();
    let write = match write_logs(state.app.store().pubsub().as_ref(), &scope, source, &lines).await {
        Ok(write) => write,
        Err(err) => {
            tracing::error!(error = %err, %agent_id, "{INSERT_LOGS}");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed to upload logs")
                .detail(err.to_string())
                .into_response();
        }
    };
    if let Some(err) = write.event_error {
        // coderd's HTTP path logs a failed workspace event and answers as if it had gone out.
        tracing::warn!(error = %err, %agent_id, "publish workspace update");
    }
    match write.written {
        LogsWritten::Empty | LogsWritten::Stored => write_json(StatusCode::OK, &()),
        LogsWritten::LimitExceeded { newly: true } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Logs limit exceeded").into_response()
        }
        LogsWritten::LimitExceeded { newly: false } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Logs limit exceeded")
                .detail(format!(
                    "the agent's logs are over their limit of {} bytes",
                    state.app.store().options().max_logs_length
                ))
                .into_response()
        }
    }
}

/// Go's `uuid.UUID` JSON: `null` (or absent) leaves it nil; otherwise a string `uuid.Parse` takes (hyphenated,
/// braced, `urn:uuid:` or 32 hex digits).
fn go_uuid<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Uuid>, D::Error> {
    match Option::<String>::deserialize(de)? {
        None => Ok(None),
        Some(s) => Uuid::parse_str(&s).map(Some).map_err(|_| match s.len() {
            32 | 36 | 38 | 45 => serde::de::Error::custom("invalid UUID format"),
            n => serde::de::Error::custom(format!("invalid UUID length: {n}")),
        }),
    }
}

/// Go's `time.Time` JSON: `null` (or absent) leaves it zero; otherwise an RFC 3339 string.
fn go_time<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(de)?;
    match value {
        Some(s) if !is_rfc3339(&s) => {
            Err(serde::de::Error::custom(format!("parsing time {}: not RFC 3339", go_quote(&s))))
        }
        other => Ok(other),
    }
}

/// `2006-01-02T15:04:05[.fraction](Z|±07:00)`, with the field ranges Go's parser checks.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let fields = (|| {
        let (_, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        let ok = seps.iter().all(|(i, c)| b.get(*i) == Some(c))
            && (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        ok.then_some(())
    })();
    if fields.is_none() {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] if (*sign == b'+' || *sign == b'-') => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') < 24
                && (m1 - b'0') * 10 + (m2 - b'0') < 60
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_checked_as_go_reads_them() {
        for ok in ["2024-02-29T12:00:00Z", "2024-02-29T12:00:00.123456789Z", "0001-01-01T00:00:00+05:30"] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in ["", "2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29 12:00:00Z", "2024-02-29T12:00:00", "x"] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
        assert!(!is_rfc3339("2024-02-29T12:00:00.Z"));
        assert!(!is_rfc3339("2024-02-29T24:00:00Z"));
    }

    #[test]
    fn source_ids_read_as_gos_uuid_package_reads_them() {
        let id = uuid::uuid!("3b579bf4-1ed8-4b99-87a8-e9a1e3410410");
        for text in [
            "3b579bf4-1ed8-4b99-87a8-e9a1e3410410",
            "{3b579bf4-1ed8-4b99-87a8-e9a1e3410410}",
            "urn:uuid:3b579bf4-1ed8-4b99-87a8-e9a1e3410410",
            "3b579bf41ed84b9987a8e9a1e3410410",
        ] {
            let body: PatchLogs = serde_json::from_str(&format!(r#"{{"log_source_id":"{text}"}}"#)).unwrap();
            assert_eq!(body.log_source_id, Some(id), "{text}");
        }
        let nil: PatchLogs = serde_json::from_str(r#"{"log_source_id":null}"#).unwrap();
        assert_eq!(nil.log_source_id, None);
        let err = serde_json::from_str::<PatchLogs>(r#"{"log_source_id":"abc"}"#).unwrap_err();
        assert!(err.to_string().starts_with("invalid UUID length: 3"), "{err}");
        let err = serde_json::from_str::<PatchLogs>(r#"{"log_source_id":"3b579bf4-1ed8-4b99-87a8-e9a1e341041z"}"#);
        assert!(err.unwrap_err().to_string().starts_with("invalid UUID format"));
    }

    #[test]
    fn a_line_reads_with_or_without_its_fields() {
        let log: Log = serde_json::from_str(r#"{"created_at":null,"output":"x"}"#).unwrap();
        assert_eq!((log.created_at, log.output.as_deref(), log.level), (None, Some("x"), None));
        assert!(serde_json::from_str::<Log>(r#"{"created_at":"yesterday"}"#).is_err());
        assert!(serde_json::from_str::<Log>(r#"{"created_at":"2024-01-01T00:00:00Z","level":"warn"}"#).is_ok());
    }
}
