//! The `coder.agent.v2.Agent` service: one module per concern, as in Coder's `coderd/agentapi`.
//!
//! Every handler gets the [`AgentApi`] (shared: store, limits) and the caller's [`Session`] (fixed at connect).
//! None of them reads the agent row: what they need of it is in the session, and what they write goes through
//! the session's [`agentwire_store::AgentScope`], directly for durable writes or through a batcher for telemetry.

pub(crate) mod apps;
mod banners;
mod boundary;
mod connections;
mod context;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lifecycle;
pub(crate) mod logs;
mod manifest;
mod metadata;
mod resources;
mod scripts;
mod stats;
mod subagents;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;
use std::time::Duration;

use agentwire_store::Store;
use agentwire_transport::server::Status;

pub use self::apps::{APP_HEALTH_KIND, APP_STATUS_KIND, DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES};
pub use self::banners::{Banners, DEFAULT_BANNER_REFRESH_INTERVAL};
pub use self::error::RpcError;
pub use self::lifecycle::LIFECYCLE_UPDATE_KIND;
pub use self::logs::{EVENT_FIRST_LOGS, EVENT_LOGS_OVERFLOW};
pub use self::manifest::{check_wildcard_access_url, git_auth_configs, is_git_provider};
pub use self::metadata::{
    DEFAULT_MAX_METADATA_ERROR_BYTES, DEFAULT_MAX_METADATA_KEYS_BYTES, DEFAULT_MAX_METADATA_KEY_CHARS,
    DEFAULT_MAX_METADATA_VALUE_BYTES,
};
pub use self::resources::{
    CONSECUTIVE_NOKS_PERCENT, DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL, DEFAULT_RESOURCES_MONITORING_DEBOUNCE,
    DEFAULT_RESOURCES_MONITORING_NUM_DATAPOINTS, MINIMUM_NOKS_PERCENT,
};
pub use self::subagents::AGENT_NAME_REGEX;
use crate::proto::agent::v2 as pb;
use crate::session::Session;

/// How often agents are told to send stats (`UpdateStatsResponse.report_interval`); Coder's default.
pub const DEFAULT_STATS_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of the Agent service.
#[derive(Debug, Clone)]
pub struct AgentApiConfig {
    /// See [`DEFAULT_STATS_REPORT_INTERVAL`].
    pub stats_report_interval: Duration,
    /// The URL agents and users reach this server at; the manifest's `vs_code_port_proxy_uri` and app URLs build on it.
    pub access_url: String,
    /// Wildcard host for subdomain apps (`*.apps.example.com`), if any: coderd's `--wildcard-access-url`, checked
    /// by [`check_wildcard_access_url`].
    pub app_hostname: String,
    /// Manifest `disable_direct_connections` (Coder's `DERP.Config.BlockDirect`): agents relay only through DERP.
    pub disable_direct_connections: bool,
    /// Manifest `derp_force_websockets` (Coder's `DERP.Config.ForceWebSockets`).
    pub derp_force_websockets: bool,
    /// Manifest `git_auth_configs`: how many external-auth providers of a Git type the deployment has
    /// ([`git_auth_configs`] of their types).
    pub git_auth_configs: u32,
    /// See [`metadata::DEFAULT_MAX_METADATA_VALUE_BYTES`].
    pub max_metadata_value_bytes: usize,
    /// See [`metadata::DEFAULT_MAX_METADATA_ERROR_BYTES`].
    pub max_metadata_error_bytes: usize,
    /// See [`metadata::DEFAULT_MAX_METADATA_KEYS_BYTES`].
    pub max_metadata_keys_bytes: usize,
    /// See [`resources::DEFAULT_RESOURCES_MONITORING_NUM_DATAPOINTS`].
    pub resources_monitoring_num_datapoints: i32,
    /// See [`resources::DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL`].
    pub resources_monitoring_collection_interval: Duration,
    /// See [`resources::DEFAULT_RESOURCES_MONITORING_DEBOUNCE`].
    pub resources_monitoring_debounce: Duration,
    /// See [`boundary::DEFAULT_MAX_BOUNDARY_LOGS_PER_BATCH`].
    pub max_boundary_logs_per_batch: usize,
    /// See [`context::DEFAULT_MAX_CONTEXT_RESOURCES`].
    pub max_context_resources: usize,
    /// See [`context::DEFAULT_MAX_CONTEXT_BODY_BYTES`].
    pub max_context_body_bytes: usize,
    /// See [`context::DEFAULT_MAX_CONTEXT_TOTAL_BODY_BYTES`].
    pub max_context_total_body_bytes: usize,
    /// See [`banners::DEFAULT_BANNER_REFRESH_INTERVAL`].
    pub banner_refresh_interval: Duration,
}

impl Default for AgentApiConfig {
    fn default() -> Self {
        AgentApiConfig {
            stats_report_interval: DEFAULT_STATS_REPORT_INTERVAL,
            access_url: "http://127.0.0.1:3000".to_owned(),
            app_hostname: String::new(),
            disable_direct_connections: false,
            derp_force_websockets: false,
            git_auth_configs: 0,
            max_metadata_value_bytes: metadata::DEFAULT_MAX_METADATA_VALUE_BYTES,
            max_metadata_error_bytes: metadata::DEFAULT_MAX_METADATA_ERROR_BYTES,
            max_metadata_keys_bytes: metadata::DEFAULT_MAX_METADATA_KEYS_BYTES,
            resources_monitoring_num_datapoints: resources::DEFAULT_RESOURCES_MONITORING_NUM_DATAPOINTS,
            resources_monitoring_collection_interval: resources::DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL,
            resources_monitoring_debounce: resources::DEFAULT_RESOURCES_MONITORING_DEBOUNCE,
            max_boundary_logs_per_batch: boundary::DEFAULT_MAX_BOUNDARY_LOGS_PER_BATCH,
            max_context_resources: context::DEFAULT_MAX_CONTEXT_RESOURCES,
            max_context_body_bytes: context::DEFAULT_MAX_CONTEXT_BODY_BYTES,
            max_context_total_body_bytes: context::DEFAULT_MAX_CONTEXT_TOTAL_BODY_BYTES,
            banner_refresh_interval: banners::DEFAULT_BANNER_REFRESH_INTERVAL,
        }
    }
}

/// The Agent service. One per server; sessions pass themselves to every call.
pub struct AgentApi {
    pub store: Store,
    pub config: AgentApiConfig,
    /// Agents known to be over their log budget, so BatchCreateLogs answers them without a query.
    log_overflow: logs::OverflowedAgents,
    /// The DERP map as the tailnet's poller last read it; without it, GetManifest reads the store.
    derp_map: Option<tokio::sync::watch::Receiver<crate::tailnet::derp_map::Current>>,
    /// Served while no map is stored and the watched one is not read yet (the embedded relay's region).
    derp_default: Option<Arc<crate::proto::tailnet::v2::DerpMap>>,
    /// The banners GetServiceBanner and GetAnnouncementBanners answer; read per call until watched.
    banners: Arc<Banners>,
}

impl AgentApi {
    pub fn new(store: Store, config: AgentApiConfig) -> Self {
        let banners = Banners::new(store.clone());
        AgentApi {
            store,
            config,
            log_overflow: logs::OverflowedAgents::default(),
            derp_map: None,
            derp_default: None,
            banners,
        }
    }

    /// Serves the banners from a snapshot that a task of its own refreshes every `banner_refresh_interval` and on an
    /// operator's announced write, until `stop`, instead of reading them per call.
    pub fn with_watched_banners(self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.banners.watch(self.config.banner_refresh_interval, stop);
        self
    }

    /// The banners served, for their counters.
    pub fn banners(&self) -> &Arc<Banners> {
        &self.banners
    }

    /// Serves the manifest's DERP map from `maps`, the poller StreamDERPMaps watches, instead of reading it per call.
    /// Keeps the poller running for as long as this service lives.
    pub fn with_derp_maps(mut self, maps: &Arc<crate::tailnet::derp_map::DerpMaps>) -> Self {
        self.derp_map = Some(maps.subscribe());
        self.derp_default = maps.default_map();
        self
    }
}

impl pb::AgentServer for AgentApi {
    type Context = Arc<Session>;

    async fn get_manifest(
        &self,
        session: &Arc<Session>,
        request: pb::GetManifestRequest,
    ) -> Result<pb::Manifest, Status> {
        Ok(crate::tailnet::coderd_relay::manifest(
            session.coderd_relay.as_deref(),
            manifest::get_manifest(self, session, request),
        )
        .await?)
    }
    async fn get_service_banner(
        &self,
        session: &Arc<Session>,
        request: pb::GetServiceBannerRequest,
    ) -> Result<pb::ServiceBanner, Status> {
        Ok(banners::get_service_banner(self, session, request).await?)
    }
    async fn update_stats(
        &self,
        session: &Arc<Session>,
        request: pb::UpdateStatsRequest,
    ) -> Result<pb::UpdateStatsResponse, Status> {
        Ok(stats::update_stats(self, session, request).await?)
    }
    async fn update_lifecycle(
        &self,
        session: &Arc<Session>,
        request: pb::UpdateLifecycleRequest,
    ) -> Result<pb::Lifecycle, Status> {
        Ok(lifecycle::update_lifecycle(self, session, request).await?)
    }
    async fn batch_update_app_healths(
        &self,
        session: &Arc<Session>,
        request: pb::BatchUpdateAppHealthRequest,
    ) -> Result<pb::BatchUpdateAppHealthResponse, Status> {
        Ok(apps::batch_update_app_healths(self, session, request).await?)
    }
    async fn update_startup(
        &self,
        session: &Arc<Session>,
        request: pb::UpdateStartupRequest,
    ) -> Result<pb::Startup, Status> {
        Ok(lifecycle::update_startup(self, session, request).await?)
    }
    async fn batch_update_metadata(
        &self,
        session: &Arc<Session>,
        request: pb::BatchUpdateMetadataRequest,
    ) -> Result<pb::BatchUpdateMetadataResponse, Status> {
        Ok(metadata::batch_update_metadata(self, session, request).await?)
    }
    async fn batch_create_logs(
        &self,
        session: &Arc<Session>,
        request: pb::BatchCreateLogsRequest,
    ) -> Result<pb::BatchCreateLogsResponse, Status> {
        Ok(logs::batch_create_logs(self, session, request).await?)
    }
    async fn get_announcement_banners(
        &self,
        session: &Arc<Session>,
        request: pb::GetAnnouncementBannersRequest,
    ) -> Result<pb::GetAnnouncementBannersResponse, Status> {
        Ok(banners::get_announcement_banners(self, session, request).await?)
    }
    async fn script_completed(
        &self,
        session: &Arc<Session>,
        request: pb::WorkspaceAgentScriptCompletedRequest,
    ) -> Result<pb::WorkspaceAgentScriptCompletedResponse, Status> {
        Ok(scripts::script_completed(self, session, request).await?)
    }
    async fn get_resources_monitoring_configuration(
        &self,
        session: &Arc<Session>,
        request: pb::GetResourcesMonitoringConfigurationRequest,
    ) -> Result<pb::GetResourcesMonitoringConfigurationResponse, Status> {
        Ok(resources::get_resources_monitoring_configuration(self, session, request).await?)
    }
    async fn push_resources_monitoring_usage(
        &self,
        session: &Arc<Session>,
        request: pb::PushResourcesMonitoringUsageRequest,
    ) -> Result<pb::PushResourcesMonitoringUsageResponse, Status> {
        Ok(resources::push_resources_monitoring_usage(self, session, request).await?)
    }
    async fn report_connection(
        &self,
        session: &Arc<Session>,
        request: pb::ReportConnectionRequest,
    ) -> Result<(), Status> {
        Ok(connections::report_connection(self, session, request).await?)
    }
    async fn create_sub_agent(
        &self,
        session: &Arc<Session>,
        request: pb::CreateSubAgentRequest,
    ) -> Result<pb::CreateSubAgentResponse, Status> {
        Ok(subagents::create_sub_agent(self, session, request).await?)
    }
    async fn delete_sub_agent(
        &self,
        session: &Arc<Session>,
        request: pb::DeleteSubAgentRequest,
    ) -> Result<pb::DeleteSubAgentResponse, Status> {
        Ok(subagents::delete_sub_agent(self, session, request).await?)
    }
    async fn list_sub_agents(
        &self,
        session: &Arc<Session>,
        request: pb::ListSubAgentsRequest,
    ) -> Result<pb::ListSubAgentsResponse, Status> {
        Ok(subagents::list_sub_agents(self, session, request).await?)
    }
    async fn report_boundary_logs(
        &self,
        session: &Arc<Session>,
        request: pb::ReportBoundaryLogsRequest,
    ) -> Result<pb::ReportBoundaryLogsResponse, Status> {
        Ok(boundary::report_boundary_logs(self, session, request).await?)
    }
    async fn update_app_status(
        &self,
        session: &Arc<Session>,
        request: pb::UpdateAppStatusRequest,
    ) -> Result<pb::UpdateAppStatusResponse, Status> {
        Ok(apps::update_app_status(self, session, request).await?)
    }
    async fn push_context_state(
        &self,
        session: &Arc<Session>,
        request: pb::PushContextStateRequest,
    ) -> Result<pb::PushContextStateResponse, Status> {
        Ok(context::push_context_state(self, session, request).await?)
    }
}
