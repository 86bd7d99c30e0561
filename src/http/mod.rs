//! The HTTP surface: the agent endpoint, health and metrics.

pub mod agent_access;
pub mod agent_me;
pub mod agent_rpc;
pub mod connection;
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

/// Completes a WebSocket upgrade under the server's limits (message, read and write buffer sizes) and hands `serve`
/// the byte stream, with coderd's WebSocket pings (every 15 s, dropped after 30 s of silence) unless they are off;
/// the yamux keepalive underneath does the same one layer down.
pub(crate) fn upgrade_with_limits<F, Fut>(
    upgrade: axum::extract::ws::WebSocketUpgrade,
    state: &AppState,
    serve: F,
) -> axum::response::Response
where
    F: FnOnce(Box<agentwire_transport::io::ws::AxumWs>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use agentwire_transport::io::WsByteStream;
    let config = state.config();
    let max = config.max_ws_message_size;
    let pings = config.ws_ping_interval.map(|every| (every, config.ws_ping_timeout));
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .max_write_buffer_size(config.max_ws_write_buffer.max(crate::server::MIN_WS_WRITE_BUFFER))
        .read_buffer_size(config.ws_read_buffer)
        .on_upgrade(move |socket| async move {
            let io = match pings {
                Some((every, timeout)) => WsByteStream::with_pings(socket, every, timeout),
                None => WsByteStream::new(socket),
            };
            // Boxed: the stream is moved down through several async layers, and each would otherwise reserve room
            // for it in a task that lives as long as the session.
            serve(Box::new(io)).await
        })
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/workspaceagents/me/rpc", get(agent_rpc::agent_rpc))
        .route("/api/v2/workspaceagents/{id}/watch-metadata", get(watch_metadata::watch_metadata))
        .route("/api/v2/insights/daus", get(insights::deployment_daus))
        .route("/api/v2/deployment/stats", get(insights::deployment_stats))
        .route("/api/v2/templates/{id}", get(insights::template))
        .route("/api/v2/templates/{id}/daus", get(insights::template_daus))
        .route("/api/v2/workspaceagents/{id}/coordinate", get(coordinate::coordinate))
        .route("/api/v2/workspaceagents/{id}/connection", get(connection::agent_connection))
        .route("/api/v2/workspaceagents/connection", get(connection::connection_generic))
        .route("/derp", get(crate::derp::http::derp))
        .route("/derp/", get(crate::derp::http::derp))
        .route("/derp/latency-check", get(crate::derp::http::latency_check))
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(agent_me::routes(state))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render(state.store()))
}

/// Serves the HTTP surface on `listener` until `stop` fires. Nagle is off on every connection, as in Go: with it,
/// a small RPC over WebSocket waits on delayed ACKs (a round trip measured ~30× slower here).
///
/// hyper's HTTP/1 server directly rather than `axum::serve`, for one setting axum does not expose: a timer, without
/// which hyper enforces no header-read timeout and a client dribbling its upgrade request holds the connection for
/// ever (see [`crate::server::DEFAULT_HANDSHAKE_TIMEOUT`]). On `stop` no connection is accepted, connections still
/// speaking HTTP finish their request and close, and this returns once they have.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(state.config().handshake_timeout);
    let app = router(state);
    let connections = tokio_util::task::TaskTracker::new();
    while let Some((tcp, _)) = crate::server::accept_until(&listener, &stop).await {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}
