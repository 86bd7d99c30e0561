//! The HTTP surface: the agent endpoint, health and metrics.

pub mod agent_rpc;
pub mod coordinate;
pub mod error;
pub mod insights;
pub mod user_auth;
pub mod watch_metadata;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::server::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/workspaceagents/me/rpc", get(agent_rpc::agent_rpc))
        .route("/api/v2/workspaceagents/{id}/watch-metadata", get(watch_metadata::watch_metadata))
        .route("/api/v2/insights/daus", get(insights::deployment_daus))
        .route("/api/v2/deployment/stats", get(insights::deployment_stats))
        .route("/api/v2/templates/{id}", get(insights::template))
        .route("/api/v2/templates/{id}/daus", get(insights::template_daus))
        .route("/api/v2/workspaceagents/{id}/coordinate", get(coordinate::coordinate))
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render(state.store()))
}

/// Serves the HTTP surface on `listener` until `stop` fires. Nagle is off on every connection, as in Go: with it,
/// a small RPC over WebSocket waits on delayed ACKs (a round trip measured ~30× slower here).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "setting TCP_NODELAY");
        }
    });
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
