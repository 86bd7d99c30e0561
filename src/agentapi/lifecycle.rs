//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn update_lifecycle(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::UpdateLifecycleRequest,
) -> Result<pb::Lifecycle, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn update_startup(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::UpdateStartupRequest,
) -> Result<pb::Startup, RpcError> {
    Err(RpcError::Unimplemented)
}
