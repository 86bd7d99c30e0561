//! The entry point of the `agentapi_requests` fuzz target (`fuzz/agentapi/`), behind the `fuzzing` feature.
//!
//! [`dispatch`] decodes request bytes as the chosen RPC's request type with prost, exactly as the generated router
//! does, and calls the real handler. It stops short of turning the handler's [`RpcError`] into a dRPC status, so the
//! target can tell a refused request (`Invalid`) from a database failure (`Store`), which no request should cause
//! against a healthy store.

use std::sync::Arc;

use prost::Message;

use super::{
    apps, banners, boundary, connections, context, lifecycle, logs, manifest, metadata, pb, resources, scripts, stats,
    subagents, AgentApi, RpcError,
};
use crate::session::Session;

/// What became of one request.
#[derive(Debug)]
pub enum Dispatched {
    /// The bytes are not a message of the RPC's request type; the router answers these without a handler.
    Undecodable(prost::DecodeError),
    /// The handler answered; the reply, encoded as it would go on the wire.
    Answered(Vec<u8>),
    /// The handler failed.
    Failed(RpcError),
}

macro_rules! rpcs {
    ($($variant:ident => $request:ty, $handler:path;)*) => {
        /// Every RPC of `coder.agent.v2.Agent`, in `agent.proto` order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Rpc {
            $($variant,)*
        }

        impl Rpc {
            pub const ALL: &'static [Rpc] = &[$(Rpc::$variant,)*];

            /// The method name, as in the dRPC path.
            pub fn name(self) -> &'static str {
                match self {
                    $(Rpc::$variant => stringify!($variant),)*
                }
            }
        }

        /// Decodes `body` as `rpc`'s request and, if it decodes, runs the handler for `session`.
        pub async fn dispatch(api: &AgentApi, session: &Arc<Session>, rpc: Rpc, body: &[u8]) -> Dispatched {
            match rpc {
                $(Rpc::$variant => match <$request>::decode(body) {
                    Err(e) => Dispatched::Undecodable(e),
                    Ok(request) => match $handler(api, session, request).await {
                        Ok(reply) => Dispatched::Answered(reply.encode_to_vec()),
                        Err(e) => Dispatched::Failed(e),
                    },
                },)*
            }
        }
    };
}

rpcs! {
    GetManifest => pb::GetManifestRequest, manifest::get_manifest;
    GetServiceBanner => pb::GetServiceBannerRequest, banners::get_service_banner;
    UpdateStats => pb::UpdateStatsRequest, stats::update_stats;
    UpdateLifecycle => pb::UpdateLifecycleRequest, lifecycle::update_lifecycle;
    BatchUpdateAppHealths => pb::BatchUpdateAppHealthRequest, apps::batch_update_app_healths;
    UpdateStartup => pb::UpdateStartupRequest, lifecycle::update_startup;
    BatchUpdateMetadata => pb::BatchUpdateMetadataRequest, metadata::batch_update_metadata;
    BatchCreateLogs => pb::BatchCreateLogsRequest, logs::batch_create_logs;
    GetAnnouncementBanners => pb::GetAnnouncementBannersRequest, banners::get_announcement_banners;
    ScriptCompleted => pb::WorkspaceAgentScriptCompletedRequest, scripts::script_completed;
    GetResourcesMonitoringConfiguration => pb::GetResourcesMonitoringConfigurationRequest,
        resources::get_resources_monitoring_configuration;
    PushResourcesMonitoringUsage => pb::PushResourcesMonitoringUsageRequest,
        resources::push_resources_monitoring_usage;
    ReportConnection => pb::ReportConnectionRequest, connections::report_connection;
    CreateSubAgent => pb::CreateSubAgentRequest, subagents::create_sub_agent;
    DeleteSubAgent => pb::DeleteSubAgentRequest, subagents::delete_sub_agent;
    ListSubAgents => pb::ListSubAgentsRequest, subagents::list_sub_agents;
    ReportBoundaryLogs => pb::ReportBoundaryLogsRequest, boundary::report_boundary_logs;
    UpdateAppStatus => pb::UpdateAppStatusRequest, apps::update_app_status;
    PushContextState => pb::PushContextStateRequest, context::push_context_state;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table covers the service: a new RPC in `agent.proto` must be added here, or it goes unfuzzed.
    #[test]
    fn every_agent_method_is_dispatchable() {
        let paths: Vec<String> = Rpc::ALL.iter().map(|r| format!("/coder.agent.v2.Agent/{}", r.name())).collect();
        assert_eq!(paths, pb::agent_methods::ALL);
    }

    #[tokio::test]
    async fn a_request_reaches_its_handler() {
        let f = super::super::test_support::fixture().await;
        let request = pb::UpdateStatsRequest::default().encode_to_vec();
        let Dispatched::Answered(reply) = dispatch(&f.api, &f.session, Rpc::UpdateStats, &request).await else {
            panic!("UpdateStats failed");
        };
        let reply = pb::UpdateStatsResponse::decode(&reply[..]).unwrap();
        assert_eq!(reply.report_interval.unwrap().seconds, 30);
        assert!(matches!(dispatch(&f.api, &f.session, Rpc::GetManifest, &[0xff]).await, Dispatched::Undecodable(_)));
        let bad = pb::UpdateLifecycleRequest::default().encode_to_vec();
        assert!(matches!(
            dispatch(&f.api, &f.session, Rpc::UpdateLifecycle, &bad).await,
            Dispatched::Failed(RpcError::Invalid(_))
        ));
    }
}
