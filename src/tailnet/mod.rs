//! The `coder.tailnet.v2.Tailnet` service as served on the agent connection.
//!
//! PostTelemetry is accepted and counted. RefreshResumeToken and WorkspaceUpdates answer Unimplemented, as
//! coderd's agent endpoint effectively does. StreamDERPMaps and Coordinate answer Unimplemented until the
//! coordinator lands; an agent keeps retrying them and every Agent RPC keeps working meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agentwire_transport::server::{RequestStream, ResponseSink, Status};

use crate::proto::tailnet::v2 as pb;
use crate::session::Session;

#[derive(Default)]
pub struct TailnetApi {
    telemetry_events: AtomicU64,
}

impl TailnetApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// Telemetry events received since start.
    pub fn telemetry_events(&self) -> u64 {
        self.telemetry_events.load(Ordering::Relaxed)
    }
}

impl pb::TailnetServer for TailnetApi {
    type Context = Arc<Session>;

    async fn post_telemetry(
        &self,
        _: &Arc<Session>,
        request: pb::TelemetryRequest,
    ) -> Result<pb::TelemetryResponse, Status> {
        self.telemetry_events.fetch_add(request.events.len() as u64, Ordering::Relaxed);
        Ok(pb::TelemetryResponse {})
    }

    async fn stream_derp_maps(
        &self,
        _: &Arc<Session>,
        _: pb::StreamDerpMapsRequest,
        _: ResponseSink<pb::DerpMap>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented())
    }

    async fn refresh_resume_token(
        &self,
        _: &Arc<Session>,
        _: pb::RefreshResumeTokenRequest,
    ) -> Result<pb::RefreshResumeTokenResponse, Status> {
        Err(Status::unimplemented())
    }

    async fn coordinate(
        &self,
        _: &Arc<Session>,
        _: RequestStream<pb::CoordinateRequest>,
        _: ResponseSink<pb::CoordinateResponse>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented())
    }

    async fn workspace_updates(
        &self,
        _: &Arc<Session>,
        _: pb::WorkspaceUpdatesRequest,
        _: ResponseSink<pb::WorkspaceUpdate>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented())
    }
}
