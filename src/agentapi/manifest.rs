//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn get_manifest(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::GetManifestRequest,
) -> Result<pb::Manifest, RpcError> {
    Err(RpcError::Unimplemented)
}
