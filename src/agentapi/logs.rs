//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn batch_create_logs(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::BatchCreateLogsRequest,
) -> Result<pb::BatchCreateLogsResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
