//! The metrics snapshotter over HTTP, shaped as coderd answers: deployment and template daily active users,
//! deployment stats, and a template with its `active_user_count` and `build_time_stats`.
//!
//! Every route needs a user's API token (as coderd's API key middleware: 401 without one). The aggregates come from
//! the snapshots only; the template routes read the template row itself, as coderd's template middleware does.
//! Before the first refresh each answers as the seed's coderd: DAUs with no entries, deployment stats a 400 "still
//! processing", a template's `active_user_count` −1 and build times null.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::user_auth::{authenticate_user as authenticate, RESOURCE_NOT_FOUND};
use crate::metrics_cache::{date_string, rfc3339, BuildTimeStats, DauSeries, DeploymentStats, TransitionStats};
use crate::server::AppState;

/// coderd's message while the first deployment stats refresh has not finished.
pub const STATS_PROCESSING: &str = "Deployment stats are still processing!";

/// `tz_offset` as coderd's query parser reads it (absent: 0).
fn tz_offset(query: &HashMap<String, String>) -> Result<i32, ApiError> {
    match query.get("tz_offset") {
        None => Ok(0),
        Some(v) => v.trim().parse::<i32>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "Query parameters have invalid values.")
                .validation("tz_offset", format!("Query param \"tz_offset\" must be a valid integer: {v:?}"))
        }),
    }
}

/// `codersdk.DAUEntry`.
#[derive(Debug, Serialize)]
pub struct DauEntryJson {
    pub date: String,
    pub amount: i64,
}

/// `codersdk.DAUsResponse`.
#[derive(Debug, Serialize)]
pub struct DausJson {
    pub entries: Vec<DauEntryJson>,
    pub tz_hour_offset: i32,
}

impl DausJson {
    /// The seed's handler answers a missing series with no entries (and offset 0).
    fn from_series(series: Option<&DauSeries>) -> Self {
        match series {
            None => DausJson { entries: Vec::new(), tz_hour_offset: 0 },
            Some(s) => DausJson {
                entries: s
                    .entries
                    .iter()
                    .map(|e| DauEntryJson { date: date_string(e.day), amount: e.amount })
                    .collect(),
                tz_hour_offset: s.tz_hour_offset,
            },
        }
    }
}

/// `GET /api/v2/insights/daus?tz_offset=N`.
pub async fn deployment_daus(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authenticate(&state, &headers, &query).await {
        return e.into_response();
    }
    let offset = match tz_offset(&query) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    Json(DausJson::from_series(state.metrics_cache().deployment_daus(offset).as_deref())).into_response()
}

/// A template id from the path, and the template (coderd's template middleware: 400, then 404).
async fn template_param(state: &AppState, raw: &str) -> Result<agentwire_store::aggregates::TemplateRow, ApiError> {
    let id = Uuid::parse_str(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid UUID {raw:?}.")).detail(e.to_string()))?;
    match state.store().template_by_id(id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(ApiError::new(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND)),
        Err(err) => {
            tracing::error!(error = %err, "fetching a template");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error fetching template.")
                .detail(err.to_string()))
        }
    }
}

/// `GET /api/v2/templates/{id}/daus?tz_offset=N`.
pub async fn template_daus(
    State(state): State<AppState>,
    Path(template): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authenticate(&state, &headers, &query).await {
        return e.into_response();
    }
    let template = match template_param(&state, &template).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let offset = match tz_offset(&query) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    Json(DausJson::from_series(state.metrics_cache().template_daus(template.id, offset).as_deref())).into_response()
}

/// `codersdk.WorkspaceConnectionLatencyMS`.
#[derive(Debug, Serialize)]
#[allow(non_snake_case)]
pub struct LatencyJson {
    pub P50: f64,
    pub P95: f64,
}

/// `codersdk.WorkspaceDeploymentStats`.
#[derive(Debug, Serialize)]
pub struct WorkspaceStatsJson {
    pub pending: i64,
    pub building: i64,
    pub running: i64,
    pub failed: i64,
    pub stopped: i64,
    pub connection_latency_ms: LatencyJson,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
}

/// `codersdk.SessionCountDeploymentStats`.
#[derive(Debug, Serialize)]
pub struct SessionCountJson {
    pub vscode: i64,
    pub ssh: i64,
    pub jetbrains: i64,
    pub reconnecting_pty: i64,
}

/// `codersdk.DeploymentStats`.
#[derive(Debug, Serialize)]
pub struct DeploymentStatsJson {
    pub aggregated_from: String,
    pub collected_at: String,
    pub next_update_at: String,
    pub workspaces: WorkspaceStatsJson,
    pub session_count: SessionCountJson,
}

impl From<&DeploymentStats> for DeploymentStatsJson {
    fn from(s: &DeploymentStats) -> Self {
        DeploymentStatsJson {
            aggregated_from: rfc3339(s.aggregated_from),
            collected_at: rfc3339(s.collected_at),
            next_update_at: rfc3339(s.next_update_at),
            workspaces: WorkspaceStatsJson {
                pending: s.workspaces.pending,
                building: s.workspaces.building,
                running: s.workspaces.running,
                failed: s.workspaces.failed,
                stopped: s.workspaces.stopped,
                connection_latency_ms: LatencyJson { P50: s.latency_p50_ms, P95: s.latency_p95_ms },
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
            },
            session_count: SessionCountJson {
                vscode: s.session_count_vscode,
                ssh: s.session_count_ssh,
                jetbrains: s.session_count_jetbrains,
                reconnecting_pty: s.session_count_reconnecting_pty,
            },
        }
    }
}

/// `GET /api/v2/deployment/stats`.
pub async fn deployment_stats(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authenticate(&state, &headers, &query).await {
        return e.into_response();
    }
    match state.metrics_cache().deployment_stats() {
        Some(stats) => Json(DeploymentStatsJson::from(&*stats)).into_response(),
        None => ApiError::new(StatusCode::BAD_REQUEST, STATS_PROCESSING).into_response(),
    }
}

/// `codersdk.TransitionStats`: milliseconds, null when unknown.
#[derive(Debug, Serialize)]
#[allow(non_snake_case)]
pub struct TransitionStatsJson {
    pub P50: Option<i64>,
    pub P95: Option<i64>,
}

impl From<TransitionStats> for TransitionStatsJson {
    fn from(t: TransitionStats) -> Self {
        TransitionStatsJson { P50: t.p50, P95: t.p95 }
    }
}

/// `codersdk.TemplateBuildTimeStats`, keyed by transition.
#[derive(Debug, Serialize)]
pub struct BuildTimeStatsJson {
    pub start: TransitionStatsJson,
    pub stop: TransitionStatsJson,
    pub delete: TransitionStatsJson,
}

impl From<BuildTimeStats> for BuildTimeStatsJson {
    fn from(b: BuildTimeStats) -> Self {
        BuildTimeStatsJson { start: b.start.into(), stop: b.stop.into(), delete: b.delete.into() }
    }
}

/// The fields of `codersdk.Template` this server has.
#[derive(Debug, Serialize)]
pub struct TemplateJson {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub organization_id: String,
    pub name: String,
    pub display_name: String,
    pub active_version_id: Option<String>,
    /// Unique users; −1 until the first refresh, as the seed's `TemplateUniqueUsers`.
    pub active_user_count: i64,
    pub build_time_stats: BuildTimeStatsJson,
}

/// `GET /api/v2/templates/{id}`.
pub async fn template(
    State(state): State<AppState>,
    Path(template): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authenticate(&state, &headers, &query).await {
        return e.into_response();
    }
    let t = match template_param(&state, &template).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let cache = state.metrics_cache();
    Json(TemplateJson {
        id: t.id.to_string(),
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        organization_id: t.organization_id.to_string(),
        name: t.name,
        display_name: t.display_name,
        active_version_id: t.active_version_id.map(|v| v.to_string()),
        active_user_count: cache.template_unique_users(t.id).unwrap_or(-1),
        build_time_stats: cache.template_build_time_stats(t.id).into(),
    })
    .into_response()
}
