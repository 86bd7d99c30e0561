//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn create_sub_agent(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::CreateSubAgentRequest,
) -> Result<pb::CreateSubAgentResponse, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn delete_sub_agent(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::DeleteSubAgentRequest,
) -> Result<pb::DeleteSubAgentResponse, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn list_sub_agents(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::ListSubAgentsRequest,
) -> Result<pb::ListSubAgentsResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
