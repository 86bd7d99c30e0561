//! The relay's HTTP routes, as coderd mounts its embedded relay: `GET /derp` upgraded either with `Upgrade: DERP`
//! (tailscale's `derphttp.Handler`: a 101 with the server's key, then DERP on the raw connection) or as a WebSocket
//! with the `derp` subprotocol (Coder's `WithWebsocketSupport`, the fallback clients use when a proxy refuses the
//! first), and `GET /derp/latency-check`, which answers 200 for clients measuring latency over HTTP when UDP is
//! blocked. With the relay off (`--derp-server-enable=false`) both are 404, as coderd leaves them unmounted.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{CONNECTION, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::conn;
use super::frame::{HEADER_LEN, PROTOCOL_VERSION};
use crate::server::AppState;

/// Sent by tailscale clients that learnt the server's key from its TLS certificate and skip the 101 response.
/// This server presents no such certificate, so real clients never send it; one that does is refused, since
/// hyper always writes the 101 and the client would read it as DERP frames.
const FAST_START_HEADER: &str = "derp-fast-start";
/// Slack over the largest frame for one WebSocket message: Go's client writes through a 4 KiB buffer, so a
/// message may hold the end of one frame and the start of the next.
const WS_MESSAGE_SLACK: usize = 4096;

fn header(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

pub async fn derp(State(state): State<AppState>, request: Request) -> Response {
    let Some(relay) = state.tailnet().derp_relay().cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let upgrade = header(request.headers(), UPGRADE).to_ascii_lowercase();
    if upgrade != "websocket" && upgrade != "derp" {
        return (StatusCode::UPGRADE_REQUIRED, "DERP requires connection upgrade").into_response();
    }
    // Early tailscale clients said `Upgrade: WebSocket` and spoke raw DERP; only the subprotocol means WebSocket.
    let websocket = upgrade == "websocket" && header(request.headers(), SEC_WEBSOCKET_PROTOCOL).contains("derp");
    if !websocket && header(request.headers(), FAST_START_HEADER) == "1" {
        return (StatusCode::BAD_REQUEST, "Derp-Fast-Start is not supported: this server sends its key in the 101")
            .into_response();
    }
    let Some(admission) = relay.admit() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the DERP relay holds its maximum of connections").into_response();
    };
    let stop = state.shutdown_token().clone();
    let (mut parts, body) = request.into_parts();
    if websocket {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => upgrade.protocols(["derp"]),
            Err(rejection) => return rejection.into_response(),
        };
        if upgrade.selected_protocol().is_none() {
            return (StatusCode::BAD_REQUEST, "client must speak the derp subprotocol").into_response();
        }
        let config = relay.config();
        let max = HEADER_LEN + config.max_client_info_size.max(2 * 32 + config.max_packet_size) + WS_MESSAGE_SLACK;
        return upgrade.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| async move {
            let io: agentwire_transport::io::WsByteStream<_, Message> =
                agentwire_transport::io::WsByteStream::new(socket);
            conn::serve(io, admission, stop).await
        });
    }
    let mut request = Request::from_parts(parts, body);
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => conn::serve(hyper_util::rt::TokioIo::new(upgraded), admission, stop).await,
            Err(err) => tracing::debug!(error = %err, "DERP upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "DERP")
        .header(CONNECTION, "Upgrade")
        .header("Derp-Version", PROTOCOL_VERSION.to_string())
        .header("Derp-Public-Key", relay.public_key().hex())
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub async fn latency_check(State(state): State<AppState>) -> StatusCode {
    if state.tailnet().derp_relay().is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}
