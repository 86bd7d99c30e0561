//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn get_resources_monitoring_configuration(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::GetResourcesMonitoringConfigurationRequest,
) -> Result<pb::GetResourcesMonitoringConfigurationResponse, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn push_resources_monitoring_usage(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::PushResourcesMonitoringUsageRequest,
) -> Result<pb::PushResourcesMonitoringUsageResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
