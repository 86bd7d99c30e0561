//! A test service that answers as the Go server of the recorded conversation did.

use std::sync::{Arc, Mutex};

use agentwire::proto::agent::v2 as agent;
use agentwire::proto::tailnet::v2 as tailnet;
use agentwire_transport::server::{RequestStream, ResponseSink, Status};
use prost::Message;
use serde_json::Value;

use super::{fixture_dir, unhex};

pub fn index() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn call_for_rpc<'a>(index: &'a Value, rpc: &str) -> &'a Value {
    index["calls"].as_array().unwrap().iter().find(|c| c["rpc"] == rpc).unwrap()
}

/// The recorded server's replies, decoded into our types: what a test service must answer to look like it.
pub fn recorded_reply<M: Message + Default>(index: &Value, rpc: &str, nth: usize) -> M {
    let packets = call_for_rpc(index, rpc)["server_to_client"].as_array().unwrap();
    let messages: Vec<&Value> = packets.iter().filter(|p| p["kind"] == "Message").collect();
    M::decode(&unhex(messages[nth]["data_hex"].as_str().unwrap())[..]).unwrap()
}

/// Answers as the Go server of the recording did: a fixed manifest, lifecycle echoed, empty replies, two DERP maps,
/// and ListSubAgents left to the Unimplemented stub. Everything it receives is kept for the test to check.
pub struct RecordedGoServer {
    pub manifest: agent::Manifest,
    pub derp_maps: Vec<tailnet::DerpMap>,
    pub received: Mutex<Vec<String>>,
}

impl RecordedGoServer {
    fn keep(&self, what: impl std::fmt::Debug) {
        self.received.lock().unwrap().push(format!("{what:?}"));
    }
}

type R<T> = Result<T, Status>;

impl agent::AgentServer for RecordedGoServer {
    type Context = ();
    async fn get_manifest(&self, _: &(), r: agent::GetManifestRequest) -> R<agent::Manifest> {
        self.keep(r);
        Ok(self.manifest.clone())
    }
    async fn get_service_banner(&self, _: &(), _: agent::GetServiceBannerRequest) -> R<agent::ServiceBanner> {
        Err(Status::unimplemented())
    }
    async fn update_stats(&self, _: &(), r: agent::UpdateStatsRequest) -> R<agent::UpdateStatsResponse> {
        self.keep(r);
        Ok(Default::default())
    }
    async fn update_lifecycle(&self, _: &(), r: agent::UpdateLifecycleRequest) -> R<agent::Lifecycle> {
        self.keep(r);
        r.lifecycle.ok_or_else(|| Status::error("no lifecycle"))
    }
    async fn batch_update_app_healths(
        &self,
        _: &(),
        r: agent::BatchUpdateAppHealthRequest,
    ) -> R<agent::BatchUpdateAppHealthResponse> {
        self.keep(r);
        Ok(Default::default())
    }
    async fn update_startup(&self, _: &(), _: agent::UpdateStartupRequest) -> R<agent::Startup> {
        Err(Status::unimplemented())
    }
    async fn batch_update_metadata(
        &self,
        _: &(),
        r: agent::BatchUpdateMetadataRequest,
    ) -> R<agent::BatchUpdateMetadataResponse> {
        self.keep(r);
        Ok(Default::default())
    }
    async fn batch_create_logs(&self, _: &(), r: agent::BatchCreateLogsRequest) -> R<agent::BatchCreateLogsResponse> {
        self.keep(r);
        Ok(Default::default())
    }
    async fn get_announcement_banners(
        &self,
        _: &(),
        _: agent::GetAnnouncementBannersRequest,
    ) -> R<agent::GetAnnouncementBannersResponse> {
        Err(Status::unimplemented())
    }
    async fn script_completed(
        &self,
        _: &(),
        _: agent::WorkspaceAgentScriptCompletedRequest,
    ) -> R<agent::WorkspaceAgentScriptCompletedResponse> {
        Err(Status::unimplemented())
    }
    async fn get_resources_monitoring_configuration(
        &self,
        _: &(),
        _: agent::GetResourcesMonitoringConfigurationRequest,
    ) -> R<agent::GetResourcesMonitoringConfigurationResponse> {
        Err(Status::unimplemented())
    }
    async fn push_resources_monitoring_usage(
        &self,
        _: &(),
        _: agent::PushResourcesMonitoringUsageRequest,
    ) -> R<agent::PushResourcesMonitoringUsageResponse> {
        Err(Status::unimplemented())
    }
    async fn report_connection(&self, _: &(), r: agent::ReportConnectionRequest) -> R<()> {
        self.keep(r);
        Ok(())
    }
    async fn create_sub_agent(&self, _: &(), _: agent::CreateSubAgentRequest) -> R<agent::CreateSubAgentResponse> {
        Err(Status::unimplemented())
    }
    async fn delete_sub_agent(&self, _: &(), _: agent::DeleteSubAgentRequest) -> R<agent::DeleteSubAgentResponse> {
        Err(Status::unimplemented())
    }
    async fn list_sub_agents(&self, _: &(), _: agent::ListSubAgentsRequest) -> R<agent::ListSubAgentsResponse> {
        Err(Status::unimplemented())
    }
    async fn report_boundary_logs(
        &self,
        _: &(),
        _: agent::ReportBoundaryLogsRequest,
    ) -> R<agent::ReportBoundaryLogsResponse> {
        Err(Status::unimplemented())
    }
    async fn update_app_status(&self, _: &(), _: agent::UpdateAppStatusRequest) -> R<agent::UpdateAppStatusResponse> {
        Err(Status::unimplemented())
    }
    async fn push_context_state(
        &self,
        _: &(),
        _: agent::PushContextStateRequest,
    ) -> R<agent::PushContextStateResponse> {
        Err(Status::unimplemented())
    }
}

impl tailnet::TailnetServer for RecordedGoServer {
    type Context = ();
    async fn post_telemetry(&self, _: &(), _: tailnet::TelemetryRequest) -> R<tailnet::TelemetryResponse> {
        Err(Status::unimplemented())
    }
    async fn stream_derp_maps(
        &self,
        _: &(),
        r: tailnet::StreamDerpMapsRequest,
        responses: ResponseSink<tailnet::DerpMap>,
    ) -> R<()> {
        self.keep(r);
        for map in &self.derp_maps {
            responses.send(map).await?;
        }
        Ok(())
    }
    async fn refresh_resume_token(
        &self,
        _: &(),
        _: tailnet::RefreshResumeTokenRequest,
    ) -> R<tailnet::RefreshResumeTokenResponse> {
        Err(Status::unimplemented())
    }
    async fn coordinate(
        &self,
        _: &(),
        _: RequestStream<tailnet::CoordinateRequest>,
        _: ResponseSink<tailnet::CoordinateResponse>,
    ) -> R<()> {
        Err(Status::unimplemented())
    }
    async fn workspace_updates(
        &self,
        _: &(),
        _: tailnet::WorkspaceUpdatesRequest,
        _: ResponseSink<tailnet::WorkspaceUpdate>,
    ) -> R<()> {
        Err(Status::unimplemented())
    }
}

pub fn recorded_service(index: &Value) -> Arc<RecordedGoServer> {
    let derp = "/coder.tailnet.v2.Tailnet/StreamDERPMaps";
    Arc::new(RecordedGoServer {
        manifest: recorded_reply(index, "/coder.agent.v2.Agent/GetManifest", 0),
        derp_maps: vec![recorded_reply(index, derp, 0), recorded_reply(index, derp, 1)],
        received: Mutex::new(Vec::new()),
    })
}
