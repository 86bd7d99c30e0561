//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn script_completed(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::WorkspaceAgentScriptCompletedRequest,
) -> Result<pb::WorkspaceAgentScriptCompletedResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
