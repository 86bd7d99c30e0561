//! The HTTP surface: the agent endpoint, health and metrics.

pub mod agent_rpc;
pub mod error;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::server::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/workspaceagents/me/rpc", get(agent_rpc::agent_rpc))
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render(state.store()))
}
