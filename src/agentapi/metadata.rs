//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn batch_update_metadata(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::BatchUpdateMetadataRequest,
) -> Result<pb::BatchUpdateMetadataResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
