//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn batch_update_app_healths(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::BatchUpdateAppHealthRequest,
) -> Result<pb::BatchUpdateAppHealthResponse, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn update_app_status(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::UpdateAppStatusRequest,
) -> Result<pb::UpdateAppStatusResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
