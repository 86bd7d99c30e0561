//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn push_context_state(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::PushContextStateRequest,
) -> Result<pb::PushContextStateResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
