//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn update_stats(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::UpdateStatsRequest,
) -> Result<pb::UpdateStatsResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
