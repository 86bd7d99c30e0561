//! `GET /api/v2/workspaceagents/{id}/watch-metadata`: an agent's metadata as server-sent events, as coderd
//! serves it to the dashboard and `coder show`.
//!
//! The caller is a user (an API token `<id>-<secret>`, from the same header, cookie or query parameter as the
//! agent endpoint) who must own the agent's workspace. The stream is an `event: data` with the full metadata, then
//! another each time a `workspace_agent_metadata_batch` notification names the agent, with an `event: ping` every
//! 15 s. Notifications come through the store's pubsub: on PostgreSQL, LISTEN/NOTIFY, so an update an agent sends
//! to one replica reaches watchers on every replica. The subscription is taken before the first read, so no
//! update falls between the two. The stream ends when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use agentwire_store::pubsub::{decode_metadata_batch_payload, METADATA_BATCH_CHANNEL};
use agentwire_store::{now_micros, Metadata, Subscription, UnixMicros};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use crate::server::AppState;

/// coderd's `HeartbeatInterval` for server-sent events.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

use super::user_auth::{agent_id_param, authenticate_user};
pub use super::user_auth::{RESOURCE_NOT_FOUND, SIGNED_OUT};

/// `codersdk.WorkspaceAgentMetadata`.
#[derive(Debug, Serialize)]
pub struct WorkspaceAgentMetadata<'a> {
    pub result: MetadataResult<'a>,
    pub description: MetadataDescription<'a>,
}

/// `codersdk.WorkspaceAgentMetadataResult`.
#[derive(Debug, Serialize)]
pub struct MetadataResult<'a> {
    /// RFC 3339 in UTC, as Go marshals a `time.Time`.
    pub collected_at: String,
    /// Whole seconds since `collected_at` (coderd sends it beside the time against clock skew).
    pub age: i64,
    pub value: &'a str,
    pub error: &'a str,
}

/// `codersdk.WorkspaceAgentMetadataDescription`.
#[derive(Debug, Serialize)]
pub struct MetadataDescription<'a> {
    pub display_name: &'a str,
    pub key: &'a str,
    pub script: &'a str,
    pub interval: i64,
    pub timeout: i64,
}

/// The JSON array of one `data` event, in the store's order (display order, then key: coderd's sort).
pub fn metadata_json(rows: &[Metadata], now: UnixMicros) -> String {
    let items: Vec<WorkspaceAgentMetadata<'_>> = rows
        .iter()
        .map(|m| WorkspaceAgentMetadata {
            result: MetadataResult {
                collected_at: go_time(m.collected_at),
                age: age_seconds(m.collected_at, now),
                value: &m.value,
                error: &m.error,
            },
            description: MetadataDescription {
                display_name: &m.display_name,
                key: &m.key,
                script: &m.script,
                interval: m.interval,
                timeout: m.timeout,
            },
        })
        .collect();
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned())
}

/// A never-collected row (the column's default, 0) is Go's zero time, as in coderd's schema.
fn go_time(micros: UnixMicros) -> String {
    if micros == 0 {
        return "0001-01-01T00:00:00Z".to_owned();
    }
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", in_day / 3600, in_day % 3600 / 60, in_day % 60);
    if frac != 0 {
        // RFC3339Nano: the fraction without trailing zeros.
        out.push('.');
        out.push_str(format!("{frac:06}").trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `int64(time.Since(collected_at).Seconds())`; from Go's zero time that saturates at the largest duration.
fn age_seconds(collected_at: UnixMicros, now: UnixMicros) -> i64 {
    if collected_at == 0 {
        return i64::MAX / 1_000_000_000;
    }
    now.saturating_sub(collected_at) / 1_000_000
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn data_event(rows: &[Metadata]) -> Event {
    Event::default().event("data").data(metadata_json(rows, now_micros()))
}

/// coderd's `event: error` carries a `codersdk.Response`.
fn error_event(message: &str, detail: String) -> Event {
    let body = serde_json::json!({ "message": message, "detail": detail });
    Event::default().event("error").data(body.to_string())
}

struct Watch {
    state: AppState,
    user: Uuid,
    agent_id: Uuid,
    sub: Subscription,
    ping: tokio::time::Interval,
    initial: Option<Vec<Metadata>>,
    done: bool,
}

impl Watch {
    /// The next event, or `None` when the stream ends (shutdown, pubsub gone, the agent gone, an error sent).
    async fn next(&mut self) -> Option<Event> {
        if let Some(initial) = self.initial.take() {
            return Some(data_event(&initial));
        }
        if self.done {
            return None;
        }
        loop {
            let payload = tokio::select! {
                biased;
                _ = self.state.shutdown_token().cancelled() => return None,
                _ = self.ping.tick() => return Some(Event::default().event("ping")),
                payload = self.sub.recv() => payload?,
            };
            let Some(ids) = decode_metadata_batch_payload(&payload) else {
                tracing::warn!(len = payload.len(), "ignoring a malformed workspace_agent_metadata_batch payload");
                continue;
            };
            if !ids.contains(&self.agent_id) {
                continue;
            }
            self.done = true;
            return match self.state.store().agent_metadata_for_user(self.user, self.agent_id).await {
                Ok(Some(rows)) => {
                    self.done = false;
                    Some(data_event(&rows))
                }
                Ok(None) => Some(error_event(RESOURCE_NOT_FOUND, "the workspace agent is gone".to_owned())),
                Err(err) => {
                    tracing::error!(error = %err, agent_id = %self.agent_id, "re-reading watched metadata");
                    Some(error_event("Internal error getting metadata.", err.to_string()))
                }
            };
        }
    }
}

pub async fn watch_metadata(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let internal = |what: &str, err: agentwire_store::StoreError| {
        tracing::error!(error = %err, "{what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error {what}.")).detail(err.to_string())
    };
    // coderd's middleware order: the API key (401), then the agent parameter (400, 404).
    let user = match authenticate_user(&state, &headers, &query).await {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    let agent_id = match agent_id_param(&agent) {
        Ok(id) => id,
        Err(err) => return err.into_response(),
    };
    // Subscribe first: an update flushed between the read and a later subscription would be lost.
    let sub = match state.store().pubsub().subscribe(METADATA_BATCH_CHANNEL).await {
        Ok(sub) => sub,
        Err(err) => return internal("subscribing to metadata updates", err).into_response(),
    };
    let initial = match state.store().agent_metadata_for_user(user, agent_id).await {
        Ok(Some(rows)) => rows,
        Ok(None) => return ApiError::new(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND).into_response(),
        Err(err) => return internal("getting metadata", err).into_response(),
    };
    let ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let watch = Watch { state, user, agent_id, sub, ping, initial: Some(initial), done: false };
    let events = futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<_, Infallible>(event), watch))
    });
    // As coderd: no buffering by proxies in between.
    let no_buffering = [(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))];
    (no_buffering, Sse::new(events)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_go_rfc3339_in_utc() {
        assert_eq!(go_time(0), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(go_time(1_700_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(go_time(1_709_164_800_500_000), "2024-02-29T00:00:00.5Z");
        assert_eq!(go_time(951_782_399_123_450), "2000-02-28T23:59:59.12345Z");
        assert_eq!(age_seconds(1_000_000, 3_999_999), 2);
        assert_eq!(age_seconds(0, 3_999_999), 9_223_372_036);
    }

    #[test]
    fn metadata_has_coders_shape() {
        let row = Metadata {
            key: "cpu".into(),
            display_name: "CPU".into(),
            script: "top".into(),
            value: "12%".into(),
            error: String::new(),
            timeout: 1_000_000_000,
            interval: 10_000_000_000,
            collected_at: 1_700_000_000_000_000,
            display_order: 0,
        };
        let json = metadata_json(&[row], 1_700_000_005_000_000);
        assert_eq!(
            json,
            r#"[{"result":{"collected_at":"2023-11-14T22:13:20Z","age":5,"value":"12%","error":""},"description":{"display_name":"CPU","key":"cpu","script":"top","interval":10000000000,"timeout":1000000000}}]"#
        );
        assert_eq!(metadata_json(&[], 0), "[]");
    }
}
