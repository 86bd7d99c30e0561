//! `LookupSql` on Coder's schema: the token lookup as coderd's agent middleware does it, users' API keys,
//! `site_configs`, and a watcher's metadata read.

use uuid::Uuid;

use super::CoderDb;
use crate::backend::LookupSql;
use crate::model::*;
use crate::StoreError;

impl LookupSql for CoderDb {
    async fn resolve_agent_by_token(&self, _token: Uuid) -> Result<Option<ResolvedAgent>, StoreError> {
        Err(StoreError::Invalid("coder backend: resolve_agent_by_token not yet written".into()))
    }
    async fn site_config(&self, _key: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Invalid("coder backend: site_config not yet written".into()))
    }
    async fn user_by_api_key(&self, _key_id: &str, _hashed_secret: &str) -> Result<Option<Uuid>, StoreError> {
        Err(StoreError::Invalid("coder backend: user_by_api_key not yet written".into()))
    }
    async fn agent_metadata_for_user(
        &self,
        _user_id: Uuid,
        _agent_id: Uuid,
    ) -> Result<Option<Vec<Metadata>>, StoreError> {
        Err(StoreError::Invalid("coder backend: agent_metadata_for_user not yet written".into()))
    }
}
